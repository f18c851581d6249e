//! What the relay's end-to-end tests share: the real services' addresses, an outbox with names
//! no other test uses, the `outbox-relay` binary as a child process, and a Kafka reader.
//!
//! Services are never optional: a missing address fails the test naming the service and the
//! command that starts it.
#![allow(dead_code)] // each test binary uses a different part

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use outbox_core::{DomainEvent, Outbox, OutboxEvent, OutboxTable, WriteMode};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, TransactionTrait};

pub const BIN: &str = env!("CARGO_BIN_EXE_outbox-relay");
pub const AGGREGATE_TYPE: &str = "Order";

// The service lookup and unique names are the workspace's test support (`outbox-testkit`).
#[allow(unused_imports)] // each test binary uses a different part
pub use outbox_testkit::{database_url, kafka_brokers, service_env, unique};

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
        let out = fixture
            .command("setup")
            .output()
            .expect("running outbox-relay setup");
        assert!(
            out.status.success(),
            "setup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
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
        static RUN: AtomicU32 = AtomicU32::new(0);
        let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/relay-logs"));
        std::fs::create_dir_all(&dir).expect("creating target/relay-logs");
        let log = dir.join(format!(
            "{}-{}.log",
            self.name,
            RUN.fetch_add(1, Ordering::Relaxed)
        ));
        let file = std::fs::File::create(&log).expect("creating the relay log");
        let child = self
            .command("run")
            .args(["-X", "message.timeout.ms=600000"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawning outbox-relay run");
        RelayProcess { child, log }
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
        let out = self
            .command("teardown")
            .output()
            .expect("running outbox-relay teardown");
        assert!(
            out.status.success(),
            "teardown failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
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

/// A running `outbox-relay run`; killed when dropped.
pub struct RelayProcess {
    child: Child,
    pub log: PathBuf,
}

impl RelayProcess {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the exit (at most `timeout`).
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        assert!(sent.success());
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "relay did not stop after SIGTERM:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        self.kill();
    }
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

/// One message read back from Kafka.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: Option<Vec<u8>>,
    pub headers: HashMap<String, String>,
}

impl Received {
    pub fn id(&self) -> String {
        self.headers.get("id").cloned().unwrap_or_default()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(self.value.as_deref().unwrap_or(b"null")).expect("value is JSON")
    }
}

/// Reads `topics` from the beginning.
pub struct Reader {
    consumer: StreamConsumer,
    pub messages: Vec<Received>,
}

impl Reader {
    pub fn new(topics: &[&str]) -> Reader {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", kafka_brokers())
            .set("group.id", unique("reader"))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("topic.metadata.refresh.interval.ms", "1000")
            .create()
            .expect("Kafka consumer");
        consumer.subscribe(topics).expect("subscribe");
        Reader {
            consumer,
            messages: Vec::new(),
        }
    }

    /// Reads until `done(messages)` holds; panics after `timeout`, printing what `context` says.
    pub async fn read_until(
        &mut self,
        timeout: Duration,
        done: impl Fn(&[Received]) -> bool,
        context: impl Fn() -> String,
    ) {
        let deadline = Instant::now() + timeout;
        while !done(&self.messages) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out with {} messages\n{}",
                self.messages.len(),
                context()
            );
            let Ok(next) =
                tokio::time::timeout(left.min(Duration::from_secs(1)), self.consumer.recv()).await
            else {
                continue;
            };
            let Ok(m) = next else { continue };
            let headers = outbox_testkit::text_headers(&m);
            self.messages.push(Received {
                topic: m.topic().to_owned(),
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                value: m.payload().map(<[u8]>::to_vec),
                headers,
            });
        }
    }

    /// Keeps reading for `quiet` to catch anything extra (duplicates).
    pub async fn settle(&mut self, quiet: Duration) {
        let deadline = Instant::now() + quiet;
        self.read_until(
            quiet + Duration::from_secs(5),
            |_| Instant::now() >= deadline,
            String::new,
        )
        .await;
    }

    /// Distinct event ids read.
    pub fn ids(&self) -> std::collections::HashSet<String> {
        self.messages.iter().map(Received::id).collect()
    }
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

/// A local address nothing listens on.
pub fn free_local_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").to_string()
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

// ---- For tests on the users' own tables (tests/wal_user_tables.rs).

impl RelayProcess {
    /// Spawns `command` (an `outbox-relay run ...`), logging to `target/relay-logs/<label>-<n>.log`.
    pub fn spawn(mut command: Command, label: &str) -> RelayProcess {
        static RUN: AtomicU32 = AtomicU32::new(0);
        let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/relay-logs"));
        std::fs::create_dir_all(&dir).expect("creating target/relay-logs");
        let log = dir.join(format!(
            "{label}-spawned-{}.log",
            RUN.fetch_add(1, Ordering::Relaxed)
        ));
        let file = std::fs::File::create(&log).expect("creating the relay log");
        let child = command
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawning outbox-relay");
        RelayProcess { child, log }
    }

    /// Waits up to `timeout` for the process to exit on its own; None if it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
