//! The `poll` source on the outbox tables users already have (issue 9, items 6 and 7): Debezium's
//! documented outbox DDL (no `schemaversion`, no `timestamp`), with `uuid`, `varchar(36)` and
//! `char(36)` ids, extra columns, binary payloads (`bytea`, `longblob`, `varbinary`), and a
//! partitioned table, on the real PostgreSQL and MariaDB and the real Kafka.
//!
//! `outbox-relay setup --source poll` adds the sequence the claim orders by (rows already there
//! are numbered too); every event then arrives once, in order per aggregate, with its payload
//! byte for byte, and the table is empty afterwards.

mod common;
mod poll_support;

use std::time::Duration;

use common::Reader;
use poll_support::*;
use sea_orm::{ConnectionTrait, DbBackend, Statement, TransactionTrait, Value};

const WAIT: Duration = Duration::from_secs(120);

/// One outbox table shape under test.
struct Ddl {
    /// The `id` column's type.
    id: &'static str,
    /// The `payload` column's type.
    payload: &'static str,
    /// Whether `payload` is binary (the test writes non-UTF-8 bytes there).
    binary: bool,
    /// PostgreSQL: partitioned by a hash of `id` into two partitions, so rows of both sit at the
    /// same physical places (`ctid`s) in their partitions.
    partitioned: bool,
}

/// An unpartitioned table of Debezium's columns with these `id` and `payload` types.
const fn ddl(id: &'static str, payload: &'static str, binary: bool) -> Ddl {
    Ddl {
        id,
        payload,
        binary,
        partitioned: false,
    }
}

fn create(db: Backend, fx: &PollFixture, ddl: &Ddl) -> String {
    let t = fx.q(&fx.name);
    let Ddl { id, payload, .. } = ddl;
    match db {
        // Debezium's documented PostgreSQL outbox, plus two columns of the user's own.
        Backend::Postgres if ddl.partitioned => {
            let part = |n: u32| fx.q(&format!("{}_{n}", fx.name));
            format!(
                "CREATE TABLE {t} (id {id} NOT NULL PRIMARY KEY, aggregatetype varchar(255) NOT NULL, \
                 aggregateid varchar(255) NOT NULL, type varchar(255) NOT NULL, payload {payload}, \
                 tenant text, created_at timestamptz NOT NULL DEFAULT now()) PARTITION BY HASH (id); \
                 CREATE TABLE {} PARTITION OF {t} FOR VALUES WITH (MODULUS 2, REMAINDER 0); \
                 CREATE TABLE {} PARTITION OF {t} FOR VALUES WITH (MODULUS 2, REMAINDER 1)",
                part(0),
                part(1),
            )
        }
        Backend::Postgres => format!(
            "CREATE TABLE {t} (id {id} NOT NULL PRIMARY KEY, aggregatetype varchar(255) NOT NULL, \
             aggregateid varchar(255) NOT NULL, type varchar(255) NOT NULL, payload {payload}, \
             tenant text, created_at timestamptz NOT NULL DEFAULT now())"
        ),
        Backend::MariaDb => format!(
            "CREATE TABLE {t} (id {id} NOT NULL PRIMARY KEY, aggregatetype varchar(255) NOT NULL, \
             aggregateid varchar(255) NOT NULL, type varchar(255) NOT NULL, payload {payload}, \
             tenant varchar(64), created_at datetime(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))"
        ),
        Backend::Sqlite => unreachable!("Debezium reads PostgreSQL and MySQL"),
    }
}

/// What an event is, as written and as Kafka must show it.
#[derive(Debug, Clone)]
struct Written {
    id: String,
    key: String,
    value: Vec<u8>,
}

/// The payload of event `i`: JSON text, or bytes that are not UTF-8 (an Avro-like record).
fn payload(binary: bool, i: usize) -> Vec<u8> {
    if binary {
        vec![0x00, 0xff, 0xfe, 0x80, (i % 256) as u8, 0xc3, 0x28, 0x0a]
    } else {
        serde_json::json!({ "n": i, "text": "ünïcødé" })
            .to_string()
            .into_bytes()
    }
}

/// Inserts events `range` in one transaction each, as a Debezium user's service does.
async fn write(fx: &PollFixture, ddl: &Ddl, range: std::ops::Range<usize>) -> Vec<Written> {
    let backend = fx.db.get_database_backend();
    let p = |n: usize| match backend {
        DbBackend::Postgres => format!("${n}"),
        _ => "?".to_owned(),
    };
    let mut written = Vec::new();
    for i in range {
        let id = uuid::Uuid::now_v7().to_string();
        let key = format!("order-{}", i % 3);
        let value = payload(ddl.binary, i);
        let (id_param, payload_param, payload_value): (String, String, Value) =
            match (backend, ddl.binary) {
                (DbBackend::Postgres, true) => (
                    format!("CAST({} AS {})", p(1), ddl.id),
                    p(3),
                    value.clone().into(),
                ),
                (DbBackend::Postgres, false) => (
                    format!("CAST({} AS {})", p(1), ddl.id),
                    format!("CAST({} AS {})", p(3), ddl.payload),
                    String::from_utf8(value.clone()).expect("JSON").into(),
                ),
                (_, true) => (p(1), p(3), value.clone().into()),
                (_, false) => (
                    p(1),
                    p(3),
                    String::from_utf8(value.clone()).expect("JSON").into(),
                ),
            };
        let sql = format!(
            "INSERT INTO {} (id, aggregatetype, aggregateid, type, payload, tenant) \
             VALUES ({id_param}, 'Order', {}, 'OrderChanged', {payload_param}, 'acme')",
            fx.q(&fx.name),
            p(2)
        );
        let txn = fx.db.begin().await.expect("begin");
        txn.execute_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [id.clone().into(), key.clone().into(), payload_value],
        ))
        .await
        .expect("insert an event");
        txn.commit().await.expect("commit");
        written.push(Written { id, key, value });
    }
    written
}

async fn debezium_table(db: Backend, ddl: Ddl) {
    let fx = PollFixture::bare(db, "poll_dbz").await;
    fx.exec(&create(db, &fx, &ddl)).await;
    // Rows written before the relay was ever set up are shipped too, and in order: `setup`
    // numbers them in the table's physical order.
    let before = 5;
    // Partitioned: enough rows that the two partitions' physical places drift apart, so a claim
    // that touched the other partition's rows at the places it locked would reorder events.
    let rows = if ddl.partitioned { 150 } else { 30 };
    let mut written = write(&fx, &ddl, 0..before).await;
    if ddl.partitioned {
        // Not on a partitioned table, whose rows `ALTER TABLE` would number partition by
        // partition: `setup` refuses, names why and what to do, and alters nothing.
        let out = fx
            .command("setup")
            .output()
            .expect("running outbox-relay setup");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "setup accepted a partitioned table holding rows"
        );
        assert!(
            stderr.contains("spans several tables") && stderr.contains("while the table is empty"),
            "setup's error does not say why or what to do: {stderr}"
        );
        let seq = fx
            .db
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                format!(
                    "SELECT 1 FROM information_schema.columns WHERE table_name = '{}' \
                     AND column_name = 'seq'",
                    fx.name
                ),
            ))
            .await
            .expect("read the catalog");
        assert!(seq.is_none(), "the refused setup added `seq` anyway");
        // The user drains the table (here: the rows are dropped), and `setup` then succeeds.
        fx.exec(&format!("DELETE FROM {}", fx.q(&fx.name))).await;
        written.clear();
    }
    fx.setup_with_binary();
    // Batches of 4: each claim leaves rows of both partitions behind, which it must not touch.
    let mut config = fx.config();
    config.source.poll.batch_size = 4;
    let relay = InProcess::start(config).await;
    let mut reader = Reader::new(&[&fx.topic()]);
    written.extend(write(&fx, &ddl, before..rows).await);
    reader
        .read_until(
            WAIT,
            |m| m.len() >= written.len(),
            || format!("{db:?} {}", ddl.id),
        )
        .await;
    fx.wait_empty(WAIT).await;
    // Anything shipped twice (a settle that failed and was retried) would arrive by now.
    reader.settle(Duration::from_secs(2)).await;
    let status = relay.stop().await;

    let arrivals = first_arrivals(&reader.messages, &fx.topic());
    for key in ["order-0", "order-1", "order-2"] {
        let want: Vec<&str> = written
            .iter()
            .filter(|w| w.key == key)
            .map(|w| w.id.as_str())
            .collect();
        let got: Vec<&str> = arrivals
            .get(key)
            .map(|ids| ids.iter().map(String::as_str).collect())
            .unwrap_or_default();
        assert_eq!(got, want, "{db:?} {}: order of {key}", ddl.id);
    }
    for w in &written {
        let m = reader
            .messages
            .iter()
            .find(|m| m.id() == w.id)
            .unwrap_or_else(|| panic!("event {} never arrived", w.id));
        assert_eq!(m.key.as_deref(), Some(w.key.as_str()));
        assert_eq!(
            m.headers.get("eventType").map(String::as_str),
            Some("OrderChanged")
        );
        if ddl.binary {
            assert_eq!(
                m.value.as_deref(),
                Some(w.value.as_slice()),
                "bytes of {}",
                w.id
            );
        } else {
            let got: serde_json::Value =
                serde_json::from_slice(m.value.as_deref().unwrap_or_default()).expect("JSON");
            let want: serde_json::Value = serde_json::from_slice(&w.value).expect("JSON");
            assert_eq!(got, want, "value of {}", w.id);
        }
    }
    assert_eq!(
        reader.messages.len(),
        written.len(),
        "{db:?} {}: each event once",
        ddl.id
    );
    assert_eq!(status.attempts, 0, "{:?}", status.last_error);
    fx.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn debezium_uuid_ids_postgres() {
    debezium_table(Backend::Postgres, ddl("uuid", "jsonb", false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn debezium_varchar_ids_postgres() {
    debezium_table(Backend::Postgres, ddl("varchar(36)", "jsonb", false)).await;
}

/// A partitioned outbox: rows are claimed across both partitions and each ships once, in
/// order per aggregate.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn debezium_partitioned_table_postgres() {
    let ddl = Ddl {
        partitioned: true,
        ..ddl("uuid", "jsonb", false)
    };
    debezium_table(Backend::Postgres, ddl).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn debezium_char_ids_mariadb() {
    debezium_table(Backend::MariaDb, ddl("char(36)", "json", false)).await;
}

/// MariaDB 10.7+'s own `UUID` type: what Hibernate 6 makes of a `java.util.UUID` id there (the
/// Quarkus and Spring outbox entities).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn debezium_uuid_ids_mariadb() {
    debezium_table(Backend::MariaDb, ddl("uuid", "json", false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn debezium_varchar_ids_mariadb() {
    debezium_table(Backend::MariaDb, ddl("varchar(36)", "varchar(4000)", false)).await;
}

/// Item 7: an Avro or Protobuf payload in `bytea` ships as its bytes, not as `\x...` text.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bytea_payload_ships_as_bytes_postgres() {
    debezium_table(Backend::Postgres, ddl("uuid", "bytea", true)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn blob_payload_ships_as_bytes_mariadb() {
    debezium_table(Backend::MariaDb, ddl("char(36)", "longblob", true)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn varbinary_payload_ships_as_bytes_mariadb() {
    debezium_table(
        Backend::MariaDb,
        ddl("varchar(36)", "varbinary(1024)", true),
    )
    .await;
}
