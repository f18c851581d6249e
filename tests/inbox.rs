//! The inbox on real services: a message has one effect however often it arrives, whether it is
//! redelivered, replayed after a crash between the database commit and the offset commit, or
//! retried after a handler error. PostgreSQL and Kafka for the consumer; MariaDB and SQLite too
//! for the table, the duplicate check and the purge.
#![cfg(feature = "inbox")]

use outbox_testkit as support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use outbox::DomainEvent;
use outbox::inbox::{Inbox, InboxError, InboxTable, Outcome, Received};
use rdkafka::ClientConfig;
use rdkafka::Offset;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage, Timestamp};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, Statement};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, DomainEvent)]
#[domain_event(aggregate = "Order")]
struct OrderCreated {
    #[domain_event(aggregate_id)]
    order_id: String,
}

/// Under serde's default tagging the payload is the variant's content; the type header names it.
#[derive(Serialize, Deserialize, DomainEvent)]
#[domain_event(aggregate = "Order")]
enum OrderEvent {
    Shipped {
        #[domain_event(aggregate_id)]
        order_id: String,
        carrier: String,
    },
}

/// A business table with no key on the order: every handled event adds a row, so a duplicate
/// that got through would show as a second row.
async fn create_effects(db: &DatabaseConnection) -> String {
    let table = support::unique("effects");
    db.execute_unprepared(&format!(
        "CREATE TABLE {table} (order_id varchar(255) NOT NULL, note varchar(255) NOT NULL)"
    ))
    .await
    .expect("create the effects table");
    table
}

async fn effect(
    txn: &DatabaseTransaction,
    table: &str,
    order_id: &str,
    note: &str,
) -> Result<(), sea_orm::DbErr> {
    let backend = txn.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => format!("INSERT INTO {table} (order_id, note) VALUES ($1, $2)"),
        _ => format!("INSERT INTO {table} (order_id, note) VALUES (?, ?)"),
    };
    txn.execute_raw(Statement::from_sql_and_values(
        backend,
        sql,
        [order_id.into(), note.into()],
    ))
    .await
    .map(drop)
}

async fn count(db: &DatabaseConnection, sql: &str) -> i64 {
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            sql.to_owned(),
        ))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .unwrap_or_else(|| panic!("{sql}: no row"));
    row.try_get::<i64>("", "n")
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

async fn effects_of(db: &DatabaseConnection, table: &str, order_id: &str) -> i64 {
    count(
        db,
        &format!("SELECT COUNT(*) AS n FROM {table} WHERE order_id = '{order_id}'"),
    )
    .await
}

fn quoted(db: &DatabaseConnection, table: &InboxTable) -> String {
    outbox::migration::quote(db.get_database_backend(), &table.name)
}

/// An inbox of `OrderCreated` and `OrderEvent` whose handler adds one effect row per event;
/// while `failures` is above zero it writes its row, then fails (counting down).
async fn inbox_on(
    db: &DatabaseConnection,
    effects: &str,
    failures: Arc<AtomicU32>,
) -> (Inbox, InboxTable) {
    let table = InboxTable::new(support::unique("Inbox"));
    outbox::inbox::create_table(db, &table)
        .await
        .expect("create the inbox table");
    let (created, shipped) = (effects.to_owned(), effects.to_owned());
    let inbox = Inbox::builder(support::unique("shipping"), db.clone())
        .table(table.clone())
        .handle(move |txn, event: OrderCreated, _: &Received| {
            let (effects, failures) = (created.clone(), failures.clone());
            Box::pin(async move {
                effect(txn, &effects, &event.order_id, "created").await?;
                if failures
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
                {
                    return Err("the handler fails on purpose".into());
                }
                Ok(())
            })
        })
        .handle(move |txn, event: OrderEvent, _: &Received| {
            let effects = shipped.clone();
            Box::pin(async move {
                let OrderEvent::Shipped { order_id, carrier } = event;
                effect(txn, &effects, &order_id, &carrier).await?;
                Ok(())
            })
        })
        .retry_backoff(Duration::from_millis(50), Duration::from_millis(200))
        .build()
        .expect("a valid inbox");
    (inbox, table)
}

fn headers(event_id: &str, event_type: Option<&str>) -> OwnedHeaders {
    let headers = OwnedHeaders::new().insert(Header {
        key: "id",
        value: Some(event_id),
    });
    match event_type {
        Some(t) => headers.insert(Header {
            key: "eventType",
            value: Some(t),
        }),
        None => headers,
    }
}

fn order_created(event_id: &str, order_id: &str) -> OwnedMessage {
    OwnedMessage::new(
        Some(
            serde_json::json!({ "order_id": order_id })
                .to_string()
                .into_bytes(),
        ),
        Some(order_id.as_bytes().to_vec()),
        "outbox.event.Order".into(),
        Timestamp::NotAvailable,
        0,
        0,
        Some(headers(event_id, Some("OrderCreated"))),
    )
}

// ---- Kafka ----

async fn topic() -> String {
    support::new_topic("inbox").await
}

async fn produce(topic: &str, event_id: &str, event_type: &str, payload: serde_json::Value) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", support::kafka_brokers())
        .create()
        .expect("producer");
    let key = payload["order_id"].as_str().unwrap_or_default().to_owned();
    producer
        .send(
            FutureRecord::to(topic)
                .key(&key)
                .payload(&payload.to_string())
                .headers(headers(event_id, Some(event_type))),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("produce");
}

async fn produce_order(topic: &str, event_id: &str, order_id: &str) {
    produce(
        topic,
        event_id,
        "OrderCreated",
        serde_json::json!({ "order_id": order_id }),
    )
    .await;
}

async fn first_message(consumer: &StreamConsumer) -> rdkafka::message::BorrowedMessage<'_> {
    tokio::time::timeout(Duration::from_secs(60), consumer.recv())
        .await
        .expect("a message within 60 s")
        .expect("receive")
}

/// Runs the inbox until order `o-end`, produced last, has its effect: every message before it
/// was consumed by then.
async fn run_until_end(
    inbox: &Inbox,
    consumer: &StreamConsumer,
    db: &DatabaseConnection,
    effects: &str,
) {
    run_until(inbox, consumer, || async {
        effects_of(db, effects, "o-end").await == 1
    })
    .await;
}

fn consumer_config(group: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", support::kafka_brokers())
        .set("group.id", group)
        .set("session.timeout.ms", "6000");
    config
}

/// The group's committed offset on partition 0, asked of a fresh client of that group.
async fn committed(group: &str, topic: &str) -> Offset {
    let probe: StreamConsumer = consumer_config(group).create().expect("probe consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    let offsets = probe
        .committed_offsets(tpl, Duration::from_secs(30))
        .expect("committed offsets");
    offsets
        .find_partition(topic, 0)
        .map(|p| p.offset())
        .unwrap_or(Offset::Invalid)
}

/// Runs the inbox until `done` holds (checked every 100 ms), at most 60 s.
async fn run_until<F, Fut>(inbox: &Inbox, consumer: &StreamConsumer, done: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let shutdown = async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !done().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the inbox did not get there in 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    inbox.run(consumer, shutdown).await.expect("the inbox runs");
}

#[tokio::test]
async fn the_same_message_delivered_three_times_has_one_effect() {
    let db = support::postgres().await;
    let effects = create_effects(&db).await;
    let (inbox, table) = inbox_on(&db, &effects, Arc::default()).await;
    let topic = topic().await;
    let event_id = uuid::Uuid::now_v7().to_string();
    for _ in 0..3 {
        produce_order(&topic, &event_id, "o-1").await;
    }
    // A later event: once it has its effect, the three before it were all consumed.
    produce(
        &topic,
        &uuid::Uuid::now_v7().to_string(),
        "Shipped",
        serde_json::json!({ "order_id": "o-end", "carrier": "dhl" }),
    )
    .await;

    let group = support::unique("group");
    let consumer = inbox
        .consumer(&consumer_config(&group), &[&topic])
        .expect("consumer");
    run_until_end(&inbox, &consumer, &db, &effects).await;

    assert_eq!(
        effects_of(&db, &effects, "o-1").await,
        1,
        "three deliveries, one effect"
    );
    let rows = count(
        &db,
        &format!("SELECT COUNT(*) AS n FROM {}", quoted(&db, &table)),
    )
    .await;
    assert_eq!(rows, 2, "one inbox row per event");
    assert_eq!(
        committed(&group, &topic).await,
        Offset::Offset(4),
        "the duplicates' offsets moved on too"
    );
}

#[tokio::test]
async fn a_crash_between_the_database_commit_and_the_offset_commit_has_one_effect() {
    let db = support::postgres().await;
    let effects = create_effects(&db).await;
    let (inbox, _) = inbox_on(&db, &effects, Arc::default()).await;
    let topic = topic().await;
    produce_order(&topic, &uuid::Uuid::now_v7().to_string(), "o-1").await;
    produce_order(&topic, &uuid::Uuid::now_v7().to_string(), "o-end").await;
    let group = support::unique("group");

    {
        // The first consumer commits the database, then dies before committing the offset.
        let crashing = inbox
            .consumer(&consumer_config(&group), &[&topic])
            .expect("consumer");
        let message = first_message(&crashing).await;
        assert_eq!(message.offset(), 0);
        assert_eq!(
            inbox.process(&message).await.expect("handled"),
            Outcome::Handled
        );
        assert_eq!(effects_of(&db, &effects, "o-1").await, 1);
    }
    assert_eq!(
        committed(&group, &topic).await,
        Offset::Invalid,
        "nothing was committed to Kafka, so the message is replayed"
    );

    // A new consumer in the same group is handed the message again; the inbox turns it away.
    let restarted = inbox
        .consumer(&consumer_config(&group), &[&topic])
        .expect("consumer");
    run_until_end(&inbox, &restarted, &db, &effects).await;
    assert_eq!(
        effects_of(&db, &effects, "o-1").await,
        1,
        "replayed after the crash, one effect"
    );
    assert_eq!(committed(&group, &topic).await, Offset::Offset(2));
}

#[tokio::test]
async fn a_handler_error_rolls_back_and_the_message_is_retried() {
    let db = support::postgres().await;
    let effects = create_effects(&db).await;
    let failures = Arc::new(AtomicU32::new(2));
    let (inbox, table) = inbox_on(&db, &effects, failures.clone()).await;
    let topic = topic().await;
    let event_id = uuid::Uuid::now_v7().to_string();
    produce_order(&topic, &event_id, "o-1").await;
    produce_order(&topic, &uuid::Uuid::now_v7().to_string(), "o-end").await;

    // The first attempt, by hand: the error names the event, and nothing of it committed.
    let group = support::unique("group");
    let consumer = inbox
        .consumer(&consumer_config(&group), &[&topic])
        .expect("consumer");
    let message = first_message(&consumer).await;
    let error = inbox
        .process(&message)
        .await
        .expect_err("the handler fails");
    assert!(
        matches!(error, InboxError::Handler { .. }) && !error.is_permanent(),
        "{error}"
    );
    assert!(error.to_string().contains(&event_id), "{error}");
    assert_eq!(
        effects_of(&db, &effects, "o-1").await,
        0,
        "the business row was rolled back"
    );
    let inbox_rows = format!("SELECT COUNT(*) AS n FROM {}", quoted(&db, &table));
    assert_eq!(
        count(&db, &inbox_rows).await,
        0,
        "the inbox row was rolled back"
    );
    drop(message);
    drop(consumer);

    // The run retries it (one more failure, then success) before the next message.
    let consumer = inbox
        .consumer(&consumer_config(&group), &[&topic])
        .expect("consumer");
    run_until_end(&inbox, &consumer, &db, &effects).await;
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "both planned failures happened"
    );
    assert_eq!(
        effects_of(&db, &effects, "o-1").await,
        1,
        "retried until it succeeded, one effect"
    );
    assert_eq!(count(&db, &inbox_rows).await, 2);
}

#[tokio::test]
async fn an_unknown_type_stops_the_run_naming_the_event_or_goes_to_the_dead_letter_topic() {
    let db = support::postgres().await;
    let effects = create_effects(&db).await;
    let (inbox, _) = inbox_on(&db, &effects, Arc::default()).await;
    let topic = topic().await;
    let event_id = uuid::Uuid::now_v7().to_string();
    produce(
        &topic,
        &event_id,
        "OrderVanished",
        serde_json::json!({ "order_id": "o-1" }),
    )
    .await;

    let group = support::unique("group");
    let consumer = inbox
        .consumer(&consumer_config(&group), &[&topic])
        .expect("consumer");
    let shutdown = tokio::time::sleep(Duration::from_secs(60));
    let error = inbox
        .run(&consumer, shutdown)
        .await
        .expect_err("an unknown type stops the run");
    assert!(matches!(error, InboxError::Undecodable { .. }), "{error}");
    let text = error.to_string();
    assert!(
        text.contains(&event_id) && text.contains("OrderVanished"),
        "{text}"
    );
    drop(consumer);
    assert_eq!(
        committed(&group, &topic).await,
        Offset::Invalid,
        "its offset was not committed"
    );

    // With a dead-letter topic, it goes there and the stream goes on.
    let dead_letters = support::unique("inbox_dlq");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", support::kafka_brokers())
        .create()
        .expect("producer");
    let effects2 = effects.clone();
    let inbox = Inbox::builder(inbox.consumer_name().to_owned(), db.clone())
        .table(InboxTable::new("unused_if_all_dead_lettered"))
        .handle(move |txn, event: OrderCreated, _: &Received| {
            let effects = effects2.clone();
            Box::pin(async move { Ok(effect(txn, &effects, &event.order_id, "created").await?) })
        })
        .dead_letter(&dead_letters, producer)
        .build()
        .expect("inbox");
    outbox::inbox::create_table(&db, &InboxTable::new("unused_if_all_dead_lettered"))
        .await
        .expect("table");
    produce_order(&topic, &uuid::Uuid::now_v7().to_string(), "o-end").await;
    let consumer = inbox
        .consumer(&consumer_config(&group), &[&topic])
        .expect("consumer");
    run_until_end(&inbox, &consumer, &db, &effects).await;
    let reader: StreamConsumer = consumer_config(&support::unique("dlq-reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("reader");
    reader.subscribe(&[&dead_letters]).expect("subscribe");
    let dead = tokio::time::timeout(Duration::from_secs(60), reader.recv())
        .await
        .expect("a dead letter within 60 s")
        .expect("receive");
    let header = |name: &str| {
        dead.headers()
            .and_then(|h| h.iter().find(|h| h.key == name))
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(header("id").as_deref(), Some(event_id.as_str()));
    assert!(
        header("dlq.reason").is_some_and(|r| r.contains("OrderVanished")),
        "{:?}",
        header("dlq.reason")
    );
}

// ---- The table, the duplicate check and the purge, on each database ----

async fn table_and_duplicate_check(db: DatabaseConnection) {
    let effects = create_effects(&db).await;
    let (inbox, table) = inbox_on(&db, &effects, Arc::new(AtomicU32::new(1))).await;
    // Idempotent migration.
    outbox::inbox::create_table(&db, &table)
        .await
        .expect("create again");

    let event_id = uuid::Uuid::now_v7().to_string();
    let message = order_created(&event_id, "o-1");
    let error = inbox
        .process(&message)
        .await
        .expect_err("the first attempt fails");
    assert!(error.to_string().contains(&event_id), "{error}");
    assert_eq!(effects_of(&db, &effects, "o-1").await, 0, "rolled back");
    assert_eq!(
        inbox.process(&message).await.expect("retry"),
        Outcome::Handled
    );
    for _ in 0..2 {
        assert_eq!(
            inbox.process(&message).await.expect("duplicate"),
            Outcome::Duplicate
        );
    }
    assert_eq!(effects_of(&db, &effects, "o-1").await, 1, "one effect");

    // The enum variant, chosen by the type header; then a payload no type accepts.
    let shipped = OwnedMessage::new(
        Some(br#"{"order_id":"o-2","carrier":"ups"}"#.to_vec()),
        None,
        "outbox.event.Order".into(),
        Timestamp::NotAvailable,
        0,
        1,
        Some(headers("e-2", Some("Shipped"))),
    );
    assert_eq!(
        inbox.process(&shipped).await.expect("shipped"),
        Outcome::Handled
    );
    assert_eq!(effects_of(&db, &effects, "o-2").await, 1);
    let bad = OwnedMessage::new(
        Some(br#"{"carrier":"ups"}"#.to_vec()),
        None,
        "outbox.event.Order".into(),
        Timestamp::NotAvailable,
        0,
        2,
        Some(headers("e-3", Some("OrderCreated"))),
    );
    let error = inbox.process(&bad).await.expect_err("a bad payload");
    assert!(
        error.is_permanent()
            && error.to_string().contains("e-3")
            && error.to_string().contains("order_id"),
        "{error}"
    );

    // A tombstone is no event, with or without an `id` header.
    let tombstone = OwnedMessage::new(
        None,
        Some(b"o-1".to_vec()),
        "outbox.event.Order".into(),
        Timestamp::NotAvailable,
        0,
        3,
        None,
    );
    assert_eq!(
        inbox.process(&tombstone).await.expect("tombstone"),
        Outcome::Tombstone
    );

    // The purge keeps rows younger than the window and deletes older ones, by the database's clock.
    let all = format!("SELECT COUNT(*) AS n FROM {}", quoted(&db, &table));
    assert_eq!(count(&db, &all).await, 2);
    assert_eq!(
        outbox::inbox::purge(&db, &table, None, Duration::from_secs(3600))
            .await
            .expect("purge"),
        0
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let purged = outbox::inbox::purge(
        &db,
        &table,
        Some(inbox.consumer_name()),
        Duration::from_millis(500),
    )
    .await
    .expect("purge");
    assert_eq!(purged, 2);
    assert_eq!(count(&db, &all).await, 0);
    outbox::inbox::drop_table(&db, &table).await.expect("drop");
}

#[tokio::test]
async fn postgres_table_and_duplicate_check() {
    table_and_duplicate_check(support::postgres().await).await;
}

#[tokio::test]
async fn mariadb_table_and_duplicate_check() {
    table_and_duplicate_check(support::mariadb().await).await;
}

#[tokio::test]
async fn sqlite_table_and_duplicate_check() {
    table_and_duplicate_check(support::sqlite().await).await;
}

#[tokio::test]
async fn a_missing_table_stops_the_run_at_start() {
    let db = support::postgres().await;
    let inbox = Inbox::builder("shipping", db)
        .table(InboxTable::new(support::unique("never_created")))
        .handle(|_, _: OrderCreated, _: &Received| Box::pin(async { Ok(()) }))
        .build()
        .expect("inbox");
    let consumer = inbox
        .consumer(&consumer_config(&support::unique("group")), &["unused"])
        .expect("consumer");
    let error = inbox
        .run(&consumer, std::future::pending())
        .await
        .expect_err("no table");
    assert!(
        error.to_string().contains("never_created")
            && error.to_string().contains("CreateInboxTable"),
        "{error}"
    );
}

#[tokio::test]
async fn an_automatic_offset_commit_is_refused() {
    let db = support::sqlite().await;
    let inbox = Inbox::builder("shipping", db)
        .handle(|_, _: OrderCreated, _: &Received| Box::pin(async { Ok(()) }))
        .build()
        .expect("inbox");
    let mut config = consumer_config("g");
    config.set("enable.auto.commit", "true");
    let error = inbox.consumer(&config, &["t"]).err().expect("refused");
    assert!(error.to_string().contains("enable.auto.commit"), "{error}");
}
