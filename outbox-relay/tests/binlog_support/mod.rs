//! What the binlog source's tests share: an outbox table with a name no other test uses on the
//! real MariaDB (its binlog on: `scripts/services up`), a relay configuration for it with a
//! replica id of its own, and a reader of what a session yields. MariaDB is never optional: a
//! missing address fails the test naming it.
#![allow(dead_code)] // each test binary uses a different part

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use outbox_core::OutboxTable;
use outbox_relay::config::{Config, SourceKind};
use outbox_relay::source::binlog::{BinlogPosition, Source, SourceEvent};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};

#[allow(unused_imports)] // each test binary uses a different part
pub use outbox_testkit::{kafka_brokers, mariadb, mysql_url, service_env, unique};

/// The least-privilege user `scripts/services` makes for the binlog source.
pub fn relay_url() -> String {
    service_env("MYSQL_RELAY_URL", "MariaDB")
}

/// A replica id no other session of this machine's tests uses (the server drops the older of
/// two connections with one id).
pub fn server_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    10_000 + (std::process::id() % 1_000) * 100 + NEXT.fetch_add(1, Ordering::Relaxed)
}

/// One outbox table (outbox_core's DDL unless told otherwise) and the relay's config for it.
pub struct BinlogFixture {
    pub name: String,
    pub db: DatabaseConnection,
    pub config: Config,
}

impl BinlogFixture {
    /// The writer's own table (`outbox_core::migration`), the relay as the least-privilege user.
    pub async fn new(prefix: &str) -> BinlogFixture {
        let fixture = BinlogFixture::bare(prefix).await;
        outbox_core::migration::create_table(&fixture.db, &OutboxTable::new(&fixture.name))
            .await
            .expect("creating the outbox table");
        fixture
    }

    /// No table yet.
    pub async fn bare(prefix: &str) -> BinlogFixture {
        let name = unique(prefix);
        let db = mariadb().await;
        let mut config = Config {
            database_url: Some(relay_url()),
            ..Config::default()
        };
        config.kafka.brokers = Some("127.0.0.1:1".into());
        config.source.kind = SourceKind::Binlog;
        config.source.table = name.clone();
        config.source.binlog.server_id = server_id();
        config.source.binlog.position_key = Some(name.clone());
        config.source.binlog.heartbeat_interval = Duration::from_millis(300);
        config.source.binlog.flush_interval = Duration::from_millis(50);
        BinlogFixture { name, db, config }
    }

    pub async fn exec(&self, sql: &str) {
        self.db
            .execute_unprepared(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// One outbox row's INSERT (outbox_core's columns).
    pub fn insert_sql(&self, aggregate: &str, payload: &str) -> String {
        format!(
            "INSERT INTO `{}` (id, aggregatetype, aggregateid, type, payload, `timestamp`) \
             VALUES (UUID(), 'Order', '{aggregate}', 'OrderChanged', '{payload}', NOW(6))",
            self.name
        )
    }

    pub async fn insert(&self, aggregate: &str, payload: &str) {
        self.exec(&self.insert_sql(aggregate, payload)).await;
    }

    pub async fn row_count(&self) -> i64 {
        let row = self
            .db
            .query_one_raw(Statement::from_string(
                sea_orm::DbBackend::MySql,
                format!("SELECT COUNT(*) FROM `{}`", self.name),
            ))
            .await
            .expect("count")
            .expect("a row");
        row.try_get_by_index(0).expect("count")
    }

    /// The stored position row, as text.
    pub async fn stored(&self) -> Option<(String, u64, Option<String>)> {
        let row = self
            .db
            .query_one_raw(Statement::from_sql_and_values(
                sea_orm::DbBackend::MySql,
                "SELECT binlog_file, binlog_offset, gtid FROM outbox_relay_binlog_position \
                 WHERE name = ?",
                [self.name.clone().into()],
            ))
            .await
            .expect("reading the position table")?;
        Some((
            row.try_get_by_index(0).expect("file"),
            row.try_get_by_index(1).expect("offset"),
            row.try_get_by_index(2).expect("gtid"),
        ))
    }
}

impl Drop for BinlogFixture {
    fn drop(&mut self) {
        support_cleanup(
            self.db.clone(),
            vec![
                format!("DROP TABLE IF EXISTS `{}`", self.name),
                format!(
                    "DELETE FROM outbox_relay_binlog_position WHERE name = '{}'",
                    self.name
                ),
            ],
        );
    }
}

fn support_cleanup(db: DatabaseConnection, statements: Vec<String>) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let _ = std::thread::spawn(move || {
        handle.block_on(async move {
            for sql in statements {
                let _ = db.execute_unprepared(&sql).await;
            }
        })
    })
    .join();
}

/// The relay's TOML for `fixture` (a replica id and position row of its own; topics
/// `<name>.Order` and `<name>.dlq`); `extra_tables` is appended (`[kafka.properties]`,
/// `[metrics]`).
pub fn config_file(fixture: &BinlogFixture, extra_tables: &str) -> std::path::PathBuf {
    let b = &fixture.config.source.binlog;
    let text = format!(
        "database_url = \"{url}\"\n\
         [source]\nkind = \"binlog\"\ntable = \"{name}\"\n\
         [source.binlog]\nserver_id = {id}\nposition_key = \"{name}\"\n\
         heartbeat_interval = \"300ms\"\nflush_interval = \"50ms\"\n\
         [kafka]\nbrokers = \"{brokers}\"\ntopic = \"{name}.${{routedByValue}}\"\n\
         dead_letter_topic = \"{name}.dlq\"\n{extra_tables}",
        url = relay_url(),
        name = fixture.name,
        id = b.server_id,
        brokers = kafka_brokers(),
    );
    let path = std::env::temp_dir().join(format!("{}.toml", fixture.name));
    std::fs::write(&path, text).expect("writing the relay config");
    path
}

/// `outbox-relay <subcommand> -c <config>`, the environment's database URL removed.
pub fn relay(config: &std::path::Path, subcommand: &str) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_outbox-relay"));
    c.arg(subcommand)
        .arg("-c")
        .arg(config)
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "info,outbox_relay=debug");
    c
}

/// `outbox-relay setup` for `config`; panics with its output when it fails.
pub fn setup(config: &std::path::Path) {
    let out = relay(config, "setup").output().expect("outbox-relay setup");
    assert!(
        out.status.success(),
        "setup --source binlog failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The aggregates whose first arrivals do not follow the commit order `written` lists, each with
/// its first arrivals; `arrivals` are (key, id) in the order read, duplicates and unknown ids
/// included (ignored).
pub fn aggregates_out_of_commit_order(
    arrivals: impl IntoIterator<Item = (String, String)>,
    written: &std::collections::HashMap<String, Vec<String>>,
) -> Vec<(String, Vec<String>)> {
    let known: std::collections::HashSet<&String> = written.values().flatten().collect();
    let mut seen = std::collections::HashSet::new();
    let mut firsts: std::collections::HashMap<String, Vec<String>> = Default::default();
    for (key, id) in arrivals {
        if known.contains(&id) && seen.insert(id.clone()) {
            firsts.entry(key).or_default().push(id);
        }
    }
    let mut out: Vec<(String, Vec<String>)> = written
        .iter()
        .filter_map(|(aggregate, ids)| {
            let got = firsts.get(aggregate).cloned().unwrap_or_default();
            (got != *ids).then(|| (aggregate.clone(), got))
        })
        .collect();
    out.sort();
    out
}

/// Per aggregate, the first arrival of each written id follows the commit order `written` lists.
pub fn assert_first_arrivals_in_commit_order(
    arrivals: impl IntoIterator<Item = (String, String)>,
    written: &std::collections::HashMap<String, Vec<String>>,
) {
    let wrong = aggregates_out_of_commit_order(arrivals, written);
    if let Some((aggregate, firsts)) = wrong.first() {
        panic!(
            "{} aggregate(s) out of commit order; {aggregate}: first arrivals {firsts:?}, \
             committed {:?}",
            wrong.len(),
            written.get(aggregate)
        );
    }
}

/// What a session yielded, as the tests check it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Begin,
    /// aggregateid, payload
    Event(String, String),
    Commit(BinlogPosition),
    KeepAlive(BinlogPosition),
    Other(String),
}

pub fn seen(event: SourceEvent<BinlogPosition>) -> Seen {
    match event {
        SourceEvent::Begin { .. } => Seen::Begin,
        SourceEvent::Event(record) => {
            let text = |name: &str| {
                record
                    .columns
                    .iter()
                    .find(|(n, _)| **n == *name)
                    .and_then(|(_, v)| v.as_ref())
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .unwrap_or_default()
            };
            Seen::Event(text("aggregateid"), text("payload"))
        }
        SourceEvent::Commit { end } => Seen::Commit(end),
        SourceEvent::KeepAlive { end } => Seen::KeepAlive(end),
        other => Seen::Other(format!("{other:?}")),
    }
}

/// Reads until `events` outbox events arrived (within `within`), returning everything seen.
pub async fn read_events<S: Source<Position = BinlogPosition>>(
    source: &mut S,
    events: usize,
    within: Duration,
) -> Vec<Seen> {
    let mut all = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while all.iter().filter(|s| matches!(s, Seen::Event(..))).count() < events
        || matches!(all.last(), Some(Seen::Event(..) | Seen::Begin))
    {
        let next = tokio::time::timeout_at(deadline, source.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "only {} of {events} events within {within:?}; seen: {all:?}",
                    all.iter().filter(|s| matches!(s, Seen::Event(..))).count()
                )
            })
            .unwrap_or_else(|e| panic!("the binlog session failed: {e}"));
        all.push(seen(next));
    }
    all
}

/// Reads for `quiet`, returning everything seen (no outbox event expected).
pub async fn read_for<S: Source<Position = BinlogPosition>>(
    source: &mut S,
    quiet: Duration,
) -> Vec<Seen> {
    let mut all = Vec::new();
    let deadline = tokio::time::Instant::now() + quiet;
    while let Ok(next) = tokio::time::timeout_at(deadline, source.next()).await {
        all.push(seen(
            next.unwrap_or_else(|e| panic!("the binlog session failed: {e}")),
        ));
    }
    all
}

/// The outbox events among `seen`.
pub fn events(seen: &[Seen]) -> Vec<(String, String)> {
    seen.iter()
        .filter_map(|s| match s {
            Seen::Event(a, p) => Some((a.clone(), p.clone())),
            _ => None,
        })
        .collect()
}
