//! What the relay's end-to-end tests share: the real services' addresses, an outbox with names
//! no other test uses, the `outbox-relay` binary as a child process, and a Kafka reader.
//!
//! Services are never optional: a missing address fails the test naming the service and the
//! command that starts it.
#![allow(dead_code)] // each test binary uses a different part

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::Ordering;

use outbox_core::{DomainEvent, Outbox, OutboxEvent, OutboxTable, WriteMode};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, TransactionTrait};

pub const BIN: &str = env!("CARGO_BIN_EXE_outbox-relay");
pub const AGGREGATE_TYPE: &str = "Order";

// The service lookup, unique names, the child process and the Kafka reader are the workspace's
// test support (`outbox-testkit`), shared with the services example's end-to-end test.
#[allow(unused_imports)] // each test binary uses a different part
pub use outbox_testkit::{
    Process as RelayProcess, Reader, Received, database_url, free_local_addr, kafka_brokers,
    run_successfully, service_env, unique,
};

/// A domain event for tests: aggregate `Order`, any id, type and payload.
#[derive(Debug, Clone)]
pub struct TestEvent {
    pub aggregate_id: String,
    pub event_type: &'static str,
    pub payload: serde_json::Value,
}

impl DomainEvent for TestEvent {
    fn aggregate_type(&self) -> &'static str {
        AGGREGATE_TYPE
    }
    fn aggregate_id(&self) -> String {
        self.aggregate_id.clone()
    }
    fn event_type(&self) -> &'static str {
        self.event_type
    }
    fn payload(&self) -> Result<serde_json::Value, serde_json::Error> {
        Ok(self.payload.clone())
    }
}

pub fn event(aggregate_id: impl Into<String>, payload: serde_json::Value) -> TestEvent {
    TestEvent {
        aggregate_id: aggregate_id.into(),
        event_type: "OrderChanged",
        payload,
    }
}

pub async fn postgres(max: u32) -> DatabaseConnection {
    let url = database_url();
    let mut options = ConnectOptions::new(url.clone());
    options.max_connections(max).sqlx_logging(false);
    Database::connect(options).await.unwrap_or_else(|e| {
        panic!("PostgreSQL at {url} is unreachable: {e}. Start it with `scripts/services up`.")
    })
}

/// One outbox with its own table, slot, publication and topics.
pub struct Fixture {
    pub name: String,
    pub mode: WriteMode,
    pub db: DatabaseConnection,
    torn_down: std::sync::atomic::AtomicBool,
}

impl Fixture {
    /// Creates the table (unless tableless), the topics, and runs `outbox-relay setup`.
    pub async fn new(prefix: &str, mode: WriteMode) -> Fixture {
        let name = unique(prefix);
        let db = postgres(16).await;
        let fixture = Fixture {
            name,
            mode,
            db,
            torn_down: false.into(),
        };
        if !fixture.tableless() {
            outbox_core::migration::create_table(&fixture.db, &OutboxTable::new(&fixture.name))
                .await
                .expect("creating the outbox table");
        }
        create_topics(&[&fixture.topic(), &fixture.dlq_topic()]).await;
        run_successfully(fixture.command("setup"), "outbox-relay setup");
        fixture
    }

    fn tableless(&self) -> bool {
        matches!(self.mode, WriteMode::LogicalMessage { .. })
    }

    pub fn outbox(&self) -> Outbox {
        Outbox::new(OutboxTable::new(&self.name)).with_mode(self.mode.clone())
    }

    pub fn topic(&self) -> String {
        format!("{}.{AGGREGATE_TYPE}", self.name)
    }

    pub fn dlq_topic(&self) -> String {
        format!("{}.dlq", self.name)
    }

    /// `outbox-relay <subcommand>` with this outbox's names.
    pub fn command(&self, subcommand: &str) -> Command {
        let mut c = Command::new(BIN);
        c.arg(subcommand)
            .args([
                "--slot",
                &self.name,
                "--publication",
                &self.name,
                "--table",
                &self.name,
            ])
            .args(["--topic", &format!("{}.${{routedByValue}}", self.name)])
            .args(["--dead-letter-topic", &self.dlq_topic()])
            .args(["--placement", "type:header:eventType"])
            .env("DATABASE_URL", database_url())
            .env("KAFKA_BROKERS", kafka_brokers())
            .env("RUST_LOG", "info,sqlx=warn,outbox_relay=debug");
        if let WriteMode::LogicalMessage { prefix } = &self.mode {
            c.args(["--source", "message", "--message-prefix", prefix]);
        }
        c
    }

    /// Starts `outbox-relay run`, logging to `target/relay-logs/<name>-<n>.log`.
    pub fn start_relay(&self, extra: &[&str]) -> RelayProcess {
        let mut command = self.command("run");
        command
            .args(["-X", "message.timeout.ms=600000"])
            .args(extra);
        RelayProcess::spawn(command, &self.name)
    }

    /// Writes `events` in one transaction through `outbox_core::write_events`.
    pub async fn write(&self, events: &[TestEvent]) -> Vec<OutboxEvent> {
        let txn = self.db.begin().await.expect("begin");
        let written = outbox_core::write_events(
            &txn,
            &self.outbox(),
            events.iter().map(|e| e as &dyn DomainEvent),
        )
        .await
        .expect("write_events");
        txn.commit().await.expect("commit");
        written
    }

    /// Drops the slot, publication and table.
    pub async fn teardown(&self) {
        run_successfully(self.command("teardown"), "outbox-relay teardown");
        if !self.tableless() {
            let _ =
                outbox_core::migration::drop_table(&self.db, &OutboxTable::new(&self.name)).await;
        }
        self.torn_down.store(true, Ordering::Relaxed);
    }

    /// Writes one transaction per batch in `batches`, each of `size` events spread over
    /// aggregates `<prefix>0..<prefix>{aggregates - 1}`, and adds their ids to `ids`.
    pub async fn write_batches(
        &self,
        ids: &mut std::collections::HashSet<String>,
        batches: std::ops::Range<u32>,
        size: u32,
        (prefix, aggregates): (&str, u32),
    ) {
        for batch in batches {
            let events: Vec<_> = (0..size)
                .map(|i| {
                    event(
                        format!("{prefix}{}", i % aggregates),
                        serde_json::json!({"b": batch, "i": i}),
                    )
                })
                .collect();
            ids.extend(
                self.write(&events)
                    .await
                    .into_iter()
                    .map(|r| r.id.to_string()),
            );
        }
    }

    pub async fn row_count(&self) -> i64 {
        let row = self
            .db
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                format!("SELECT count(*) FROM \"{}\"", self.name),
            ))
            .await
            .expect("count")
            .expect("a row");
        row.try_get_by_index(0).expect("count")
    }
}

/// A failed test still drops its slot (which would hold WAL), publication and table. Declare
/// the relay after the fixture, so that it is killed first.
impl Drop for Fixture {
    fn drop(&mut self) {
        if self.torn_down.load(Ordering::Relaxed) {
            return;
        }
        let _ = self.command("teardown").output();
        if !self.tableless() {
            let table = outbox_core::migration::quote(sea_orm::DbBackend::Postgres, &self.name);
            best_effort_sql(None, vec![format!("DROP TABLE IF EXISTS {table}")]);
        }
    }
}

/// Runs `statements` from a `Drop` (a failed test's cleanup), on its own runtime thread, on `db`
/// or a new connection to the test PostgreSQL; errors are ignored, and it never panics.
pub fn best_effort_sql(db: Option<DatabaseConnection>, statements: Vec<String>) {
    let _ = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        if let Ok(runtime) = runtime {
            runtime.block_on(async {
                let db = match db {
                    Some(db) => db,
                    None => postgres(1).await,
                };
                for sql in statements {
                    let _ = db.execute_unprepared(&sql).await;
                }
            });
        }
    })
    .join();
}

/// Sets `topic`'s `max.message.bytes` on the broker (to make an event oversize, or fit again).
pub async fn set_max_message_bytes(topic: &str, bytes: usize) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .create()
        .expect("Kafka admin client");
    let value = bytes.to_string();
    let config = AlterConfig::new(ResourceSpecifier::Topic(topic)).set("max.message.bytes", &value);
    let results = admin
        .alter_configs([&config], &AdminOptions::new())
        .await
        .expect("alter_configs");
    for r in results {
        assert!(r.is_ok(), "setting max.message.bytes of {topic}: {r:?}");
    }
}

/// `topics` with 4 partitions each.
pub async fn create_topics(topics: &[&str]) {
    outbox_testkit::create_topics(topics, 4).await;
}

/// Reads until every id in `expected` was seen. Incremental: each call looks only at the
/// messages that arrived since the previous one.
pub fn has_all(expected: &std::collections::HashSet<String>) -> impl Fn(&[Received]) -> bool + '_ {
    let looked_at = std::cell::Cell::new(0);
    let missing = std::cell::RefCell::new(expected.clone());
    move |messages| {
        let mut missing = missing.borrow_mut();
        for m in &messages[looked_at.get()..] {
            if let Some(id) = m.headers.get("id") {
                missing.remove(id);
            }
        }
        looked_at.set(messages.len());
        missing.is_empty()
    }
}

/// Per partition, in offset order: duplicates must be exactly one re-delivered tail (the events
/// after the acknowledged position, sent again from its start). Returns the duplicate count.
pub fn check_duplicates_are_one_tail(messages: &[Received]) -> usize {
    let mut by_partition: HashMap<(String, i32), Vec<&Received>> = HashMap::new();
    for m in messages {
        by_partition
            .entry((m.topic.clone(), m.partition))
            .or_default()
            .push(m);
    }
    let mut duplicates = 0;
    for (partition, mut ms) in by_partition {
        ms.sort_by_key(|m| m.offset);
        let ids: Vec<String> = ms.iter().map(|m| m.id()).collect();
        let mut first_seen: HashMap<&str, usize> = HashMap::new();
        let mut repeat_at = None;
        for (j, id) in ids.iter().enumerate() {
            if let Some(&i) = first_seen.get(id.as_str()) {
                repeat_at = Some((i, j));
                break;
            }
            first_seen.insert(id, j);
        }
        let Some((i, j)) = repeat_at else { continue };
        let tail = &ids[i..j];
        let again = &ids[j..(j + tail.len()).min(ids.len())];
        assert_eq!(
            tail, again,
            "partition {partition:?}: the re-delivered block is not the unacknowledged tail"
        );
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        let dups = ids.len() - distinct.len();
        assert_eq!(
            dups,
            tail.len(),
            "partition {partition:?}: duplicates outside the re-delivered tail"
        );
        duplicates += dups;
    }
    duplicates
}

/// The outage tests stop and start shared services, so within a binary they run one at a time.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `scripts/services <action> <service>` (stop, start) for the outage tests.
pub fn services(action: &str, service: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/services");
    let status = Command::new(script)
        .args([action, service])
        .status()
        .unwrap_or_else(|e| panic!("running scripts/services {action} {service}: {e}"));
    assert!(
        status.success(),
        "scripts/services {action} {service} failed"
    );
}

/// Starts `service` again if the test panics while it is down, so a failed outage test does not
/// leave the next tests without it.
pub struct Restart(pub &'static str);
impl Drop for Restart {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Best effort, and never a second panic.
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/services");
            let _ = Command::new(script).args(["start", self.0]).status();
        }
    }
}

/// A plain HTTP/1.1 GET: (status code, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let (code, _, body) = http_get_authorized(addr, path, None);
    (code, body)
}

/// A plain HTTP/1.1 GET with an `Authorization` value: (status code, head, body).
pub fn http_get_authorized(
    addr: &str,
    path: &str,
    authorization: Option<&str>,
) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("metrics at {addr}: {e}"));
    let auth = authorization
        .map(|a| format!("authorization: {a}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: x\r\n{auth}connection: close\r\n\r\n"
    )
    .expect("request");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("response");
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (code, head.to_owned(), body.to_owned())
}
