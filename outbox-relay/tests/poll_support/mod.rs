//! What the poll source's tests share: an outbox table with its own name and topics on one of
//! the three databases, the relay in-process or as an `outbox-relay run --source poll` process,
//! and the checks on what Kafka received. Services are never optional (see `common`).
#![allow(dead_code)] // each test binary uses a different part

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::time::Duration;

use outbox_core::{DomainEvent, Outbox, OutboxEvent, OutboxTable};
use outbox_relay::Metrics;
use outbox_relay::config::{Config, SourceKind};
use outbox_relay::relay::PollRelay;
use outbox_relay::source::poll::PollStatus;
use outbox_testkit::Process;
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, Statement,
    TransactionTrait,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::common::{self, Received, TestEvent, create_topics, kafka_brokers, service_env, unique};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    MariaDb,
    Sqlite,
}

impl Backend {
    pub fn url(self, name: &str) -> String {
        match self {
            Backend::Postgres => common::database_url(),
            Backend::MariaDb => service_env("MYSQL_URL", "MariaDB"),
            Backend::Sqlite => {
                let path = std::env::temp_dir().join(format!("{name}.sqlite"));
                format!("sqlite://{}?mode=rwc", path.display())
            }
        }
    }
}

/// One outbox table and its topics, on `db`.
pub struct PollFixture {
    pub name: String,
    pub db_kind: Backend,
    pub url: String,
    pub db: DatabaseConnection,
}

impl PollFixture {
    /// A table made by `outbox_core::migration` (the writer's own table).
    pub async fn new(kind: Backend, prefix: &str) -> PollFixture {
        let fixture = PollFixture::bare(kind, prefix).await;
        outbox_core::migration::create_table(&fixture.db, &OutboxTable::new(&fixture.name))
            .await
            .expect("creating the outbox table");
        fixture
    }

    /// The connection and the topics, no table: the test creates its own (see `exec`).
    pub async fn bare(kind: Backend, prefix: &str) -> PollFixture {
        let name = unique(prefix);
        let url = kind.url(&name);
        let mut options = ConnectOptions::new(url.clone());
        options.max_connections(16).sqlx_logging(false);
        let db = Database::connect(options).await.unwrap_or_else(|e| {
            panic!("{kind:?} at {url} is unreachable: {e}. Start it with `scripts/services up`.")
        });
        let fixture = PollFixture {
            name,
            db_kind: kind,
            url,
            db,
        };
        create_topics(&[&fixture.topic(), &fixture.dlq_topic()]).await;
        fixture
    }

    /// Runs `sql` (DDL, or anything without values).
    pub async fn exec(&self, sql: &str) {
        self.db
            .execute_unprepared(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// `name` quoted for this database.
    pub fn q(&self, name: &str) -> String {
        outbox_core::migration::quote(self.db.get_database_backend(), name)
    }

    /// Drops the table (the trigger goes with it) or the SQLite file.
    pub async fn teardown(self) {
        outbox_core::migration::drop_table(&self.db, &OutboxTable::new(&self.name))
            .await
            .expect("dropping the outbox table");
        self.db.close().await.ok();
        if let Some(path) = self
            .url
            .strip_prefix("sqlite://")
            .and_then(|p| p.split('?').next())
        {
            std::fs::remove_file(path).ok();
        }
    }

    pub fn outbox(&self) -> Outbox {
        Outbox::new(OutboxTable::new(&self.name))
    }

    pub fn topic(&self) -> String {
        format!("{}.{}", self.name, common::AGGREGATE_TYPE)
    }

    pub fn dlq_topic(&self) -> String {
        format!("{}.dlq", self.name)
    }

    /// The relay's configuration: this table, its topics, a short poll interval.
    pub fn config(&self) -> Config {
        let mut config = Config {
            database_url: Some(self.url.clone()),
            ..Config::default()
        };
        config.source.kind = SourceKind::Poll;
        config.source.table = self.name.clone();
        config.source.poll.interval = Duration::from_millis(100);
        config.source.poll.lease_ttl = Duration::from_secs(3);
        config.kafka.brokers = Some(kafka_brokers());
        config.kafka.topic = format!("{}.${{routedByValue}}", self.name);
        config.kafka.dead_letter_topic = self.dlq_topic();
        config.kafka.additional_placement = vec!["type:header:eventType".to_owned()];
        config.retry.initial_backoff = Duration::from_millis(50);
        config.retry.max_backoff = Duration::from_millis(500);
        config
    }

    /// Runs `setup` for this table.
    pub async fn setup(&self, config: Config) {
        let relay =
            PollRelay::new(config, self.db.clone(), Metrics::new()).expect("relay configuration");
        relay.setup().await.expect("poll setup");
    }

    /// Writes `events` in one transaction.
    pub async fn write(&self, events: &[TestEvent]) -> Vec<OutboxEvent> {
        let txn = self.db.begin().await.expect("begin");
        let written = self.write_in(&txn, events).await;
        txn.commit().await.expect("commit");
        written
    }

    /// Writes `events` in `txn` (left open).
    pub async fn write_in(
        &self,
        txn: &DatabaseTransaction,
        events: &[TestEvent],
    ) -> Vec<OutboxEvent> {
        outbox_core::write_events(
            txn,
            &self.outbox(),
            events.iter().map(|e| e as &dyn DomainEvent),
        )
        .await
        .expect("writing events")
    }

    pub async fn row_count(&self) -> i64 {
        let backend = self.db.get_database_backend();
        let sql = format!(
            "SELECT COUNT(*) FROM {}",
            outbox_core::migration::quote(backend, &self.name)
        );
        let row = self
            .db
            .query_one_raw(Statement::from_string(backend, sql))
            .await
            .expect("counting rows")
            .expect("a row");
        row.try_get_by_index::<i64>(0).expect("a count")
    }

    /// Waits until the table is empty (every row shipped and deleted).
    pub async fn wait_empty(&self, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let rows = self.row_count().await;
            if rows == 0 {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{rows} rows still in {}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `outbox-relay setup --source poll` for this table (the index and the NOTIFY trigger).
    pub fn setup_with_binary(&self) {
        let out = self
            .command("setup")
            .output()
            .expect("running outbox-relay setup");
        assert!(
            out.status.success(),
            "setup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The `outbox-relay` binary with this outbox's settings.
    pub fn command(&self, subcommand: &str) -> Command {
        let mut c = Command::new(common::BIN);
        c.arg(subcommand)
            .args(["--source", "poll", "--table", &self.name])
            .args(["--topic", &format!("{}.${{routedByValue}}", self.name)])
            .args(["--dead-letter-topic", &self.dlq_topic()])
            .args(["--placement", "type:header:eventType"])
            .env("DATABASE_URL", &self.url)
            .env("KAFKA_BROKERS", kafka_brokers())
            .env("RUST_LOG", "info,sqlx=warn,outbox_relay=debug");
        c
    }
}

/// The relay running in this process, with its own connections and producer.
pub struct InProcess {
    pub stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<Result<(), outbox_relay::RelayError>>,
    pub status: std::sync::Arc<std::sync::Mutex<Option<PollStatus>>>,
}

impl InProcess {
    pub async fn start(config: Config) -> InProcess {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,outbox_relay=info"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
        let relay = PollRelay::connect(config, Metrics::new())
            .await
            .expect("relay connects");
        let (stop, stopped) = oneshot::channel::<()>();
        let status = std::sync::Arc::new(std::sync::Mutex::new(None));
        let seen = status.clone();
        let task = tokio::spawn(async move {
            let result = relay
                .run(async move {
                    stopped.await.ok();
                })
                .await;
            if let Ok(mut s) = seen.lock() {
                *s = Some(relay.status());
            }
            result
        });
        InProcess {
            stop: Some(stop),
            task,
            status,
        }
    }

    /// Stops gracefully; returns the relay's final status.
    pub async fn stop(mut self) -> PollStatus {
        if let Some(stop) = self.stop.take() {
            stop.send(()).ok();
        }
        let result = tokio::time::timeout(Duration::from_secs(30), &mut self.task)
            .await
            .expect("the relay stops within 30 s")
            .expect("the relay task");
        result.expect("the relay stops cleanly");
        self.status
            .lock()
            .ok()
            .and_then(|s| s.clone())
            .unwrap_or_default()
    }
}

/// An `outbox-relay run --source poll` process: the testkit's [`Process`] (its log in
/// `target/relay-logs`, SIGKILLed when dropped), with the poll relay's own questions.
pub struct RelayChild(Process);

impl std::ops::Deref for RelayChild {
    type Target = Process;
    fn deref(&self) -> &Process {
        &self.0
    }
}

impl std::ops::DerefMut for RelayChild {
    fn deref_mut(&mut self) -> &mut Process {
        &mut self.0
    }
}

impl RelayChild {
    pub fn spawn(fixture: &PollFixture, label: &str) -> RelayChild {
        RelayChild::spawn_with(fixture, label, &[])
    }

    /// `outbox-relay run` with `extra` arguments.
    pub fn spawn_with(fixture: &PollFixture, label: &str, extra: &[&str]) -> RelayChild {
        RelayChild::spawn_env(fixture, label, extra, &[])
    }

    /// As `spawn_with`, with environment variables set (or overridden, e.g. `DATABASE_URL`).
    pub fn spawn_env(
        fixture: &PollFixture,
        label: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> RelayChild {
        let mut command = fixture.command("run");
        command.args(extra).envs(env.iter().copied());
        RelayChild(Process::spawn(
            command,
            &format!("{}-{label}", fixture.name),
        ))
    }

    /// Waits up to `timeout` for the process to exit on its own; its exit code, or `None` if
    /// it still runs (or was killed by a signal).
    pub fn exit_within(&mut self, timeout: Duration) -> Option<i32> {
        self.0.wait_exit(timeout).and_then(|status| status.code())
    }

    pub fn is_leading(&self) -> bool {
        self.log_text()
            .contains("leading: this relay ships the outbox")
    }
}

/// `n` events on `aggregates` aggregates, round robin; payload `{"seq": i}`.
pub fn events(prefix: &str, aggregates: usize, n: usize) -> Vec<TestEvent> {
    (0..n)
        .map(|i| {
            common::event(
                format!("{prefix}-{}", i % aggregates),
                serde_json::json!({ "seq": i }),
            )
        })
        .collect()
}

/// Checks that every written event arrived (on the topic, with key, headers and value as
/// written), and that for each key the first arrivals are in write order. Returns the number of
/// duplicate deliveries.
pub fn check_delivery(written: &[OutboxEvent], received: &[Received], topic: &str) -> usize {
    let mut first: HashMap<String, &Received> = HashMap::new();
    let mut order: HashMap<String, Vec<String>> = HashMap::new();
    let mut duplicates = 0;
    for m in received.iter().filter(|m| m.topic == topic) {
        let id = m.id();
        if first.contains_key(&id) {
            duplicates += 1;
            continue;
        }
        order
            .entry(m.key.clone().unwrap_or_default())
            .or_default()
            .push(id.clone());
        first.insert(id, m);
    }
    let mut expected: HashMap<String, Vec<String>> = HashMap::new();
    for e in written {
        let m = first
            .get(&e.id.to_string())
            .unwrap_or_else(|| panic!("event {} ({}) never arrived", e.id, e.aggregate_id));
        assert_eq!(
            m.key.as_deref(),
            Some(e.aggregate_id.as_str()),
            "key of {}",
            e.id
        );
        assert_eq!(
            m.headers.get("eventType").map(String::as_str),
            Some(e.event_type.as_str())
        );
        assert_eq!(m.json(), e.payload, "value of {}", e.id);
        expected
            .entry(e.aggregate_id.clone())
            .or_default()
            .push(e.id.to_string());
    }
    let written_ids: HashSet<String> = written.iter().map(|e| e.id.to_string()).collect();
    for (key, ids) in &expected {
        let got: Vec<&String> = order
            .get(key)
            .map(|v| v.iter().filter(|id| written_ids.contains(*id)).collect())
            .unwrap_or_default();
        let want: Vec<&String> = ids.iter().collect();
        assert_eq!(got, want, "per-key order for {key}");
    }
    duplicates
}

/// A small deterministic generator for the tests' random holds and choices.
pub struct Dice(u64);

impl Dice {
    pub fn new(seed: u64) -> Dice {
        Dice(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// Per key, the ids in the order of their first arrival on `topic`.
pub fn first_arrivals(received: &[Received], topic: &str) -> HashMap<String, Vec<String>> {
    let mut seen = HashSet::new();
    let mut order: HashMap<String, Vec<String>> = HashMap::new();
    for m in received.iter().filter(|m| m.topic == topic) {
        if seen.insert(m.id()) {
            order
                .entry(m.key.clone().unwrap_or_default())
                .or_default()
                .push(m.id());
        }
    }
    order
}
