//! Proof that the suite runs against real services, not stand-ins: PostgreSQL's logical
//! decoding sees a committed insert, and a Kafka broker honours transactions — a
//! `read_committed` consumer sees the committed message and never the aborted one. librdkafka's
//! mock cluster writes no abort markers, so it cannot pass the second test.

use outbox_testkit as support;

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use sea_orm::{ConnectionTrait, DbBackend, Statement, TransactionTrait};

#[tokio::test]
async fn postgres_logical_replication_sees_a_committed_insert() {
    let db = support::postgres().await;
    let wal_level = db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SHOW wal_level",
        ))
        .await
        .expect("SHOW wal_level")
        .expect("a row");
    assert_eq!(
        wal_level.try_get::<String>("", "wal_level").unwrap(),
        "logical"
    );

    let table = support::unique("proof");
    let slot = support::unique("proof_slot");
    db.execute_unprepared(&format!(
        "CREATE TABLE {table} (id int PRIMARY KEY, note text)"
    ))
    .await
    .expect("create table");
    db.execute_unprepared(&format!(
        "SELECT pg_create_logical_replication_slot('{slot}', 'test_decoding')"
    ))
    .await
    .expect("create a logical slot (needs wal_level=logical and a free slot)");

    let txn = db.begin().await.expect("begin");
    txn.execute_unprepared(&format!("INSERT INTO {table} VALUES (1, 'committed')"))
        .await
        .expect("insert");
    txn.commit().await.expect("commit");
    let txn = db.begin().await.expect("begin");
    txn.execute_unprepared(&format!("INSERT INTO {table} VALUES (2, 'rolled back')"))
        .await
        .expect("insert");
    txn.rollback().await.expect("rollback");

    let changes = db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            format!("SELECT data FROM pg_logical_slot_get_changes('{slot}', NULL, NULL)"),
        ))
        .await
        .expect("read the slot");
    let data: Vec<String> = changes
        .iter()
        .map(|r| r.try_get::<String>("", "data").unwrap())
        .collect();
    db.execute_unprepared(&format!("SELECT pg_drop_replication_slot('{slot}')"))
        .await
        .expect("drop slot");
    db.execute_unprepared(&format!("DROP TABLE {table}"))
        .await
        .expect("drop table");

    // The slot sees the whole database; keep this test's table only.
    let ours = format!("table public.{table}: ");
    let inserts: Vec<&String> = data
        .iter()
        .filter(|d| d.starts_with(&ours) && d.contains("INSERT"))
        .collect();
    assert_eq!(
        inserts.len(),
        1,
        "exactly the committed insert is decoded: {data:?}"
    );
    assert!(inserts[0].contains("note[text]:'committed'"), "{data:?}");
    assert!(data.iter().any(|d| d.starts_with("COMMIT")), "{data:?}");
}

#[tokio::test]
async fn kafka_read_committed_consumer_never_sees_an_aborted_transaction() {
    let brokers = support::kafka_brokers();
    let topic = support::new_topic("proof-txn").await;

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("transactional.id", support::unique("proof-producer"))
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .expect("transactional producer");
    producer
        .init_transactions(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("Kafka at {brokers} refused init_transactions (is the transaction state log configured?): {e}"));

    for (value, commit) in [("committed", true), ("aborted", false), ("after", true)] {
        producer.begin_transaction().expect("begin transaction");
        producer
            .send(
                FutureRecord::to(&topic).key("k").payload(value),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("produce");
        if commit {
            producer
                .commit_transaction(Duration::from_secs(30))
                .expect("commit");
        } else {
            producer
                .abort_transaction(Duration::from_secs(30))
                .expect("abort");
        }
    }

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", support::unique("proof-group"))
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[&topic]).expect("subscribe");

    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("after") {
        let msg = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("Kafka delivered {seen:?} and then nothing for 60 s"))
            .expect("consume");
        seen.push(String::from_utf8_lossy(msg.payload().unwrap_or_default()).into_owned());
    }
    assert_eq!(
        seen,
        ["committed", "after"],
        "the aborted message must be invisible"
    );
}
