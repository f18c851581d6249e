//! The `poll` source: PostgreSQL, MariaDB/MySQL and SQLite, through the shared [`KafkaSink`].
//!
//! Contract:
//! - **No polling gap.** The relay keeps no cursor. Each cycle claims the oldest rows that exist
//!   now (`ORDER BY seq ... FOR UPDATE SKIP LOCKED` in a transaction; SQLite reads as its single
//!   writer), ships them, and deletes (or marks) them only after Kafka acknowledged every one.
//!   A row whose transaction commits late is simply still there on a later cycle.
//! - **At least once.** A failure before the delete rolls the claim back; the rows are claimed
//!   again (duplicates, which consumers drop by the `id` header). No row is ever skipped.
//! - **Per-aggregate order.** One relay ships at a time ([`leader`]); a batch is shipped in the
//!   order of a sequence the database assigns at INSERT (`seq`, or SQLite's rowid; see
//!   [`shape`]) and settled before the next is claimed. Never by `timestamp`, a client clock:
//!   writers that lock an aggregate's row before inserting its event insert, hence number, its
//!   events in commit order.
//! - **The table as it is.** At start the relay reads the table's columns and types: Debezium's
//!   columns suffice, optional ones may be absent, binary payloads ship as bytes, and ids are
//!   compared in their own type. A table that lacks what polling needs stops the relay at start,
//!   naming the problem (and `outbox-relay setup --source poll` when that fixes it).
//! - **Bounded claims.** Kafka must acknowledge a claimed batch within `claim_timeout`, or the
//!   claim is rolled back and retried, so an outage never holds a transaction (and vacuum's
//!   horizon) open for longer.
//! - **Wake-up.** On PostgreSQL a `LISTEN` on the channel that the setup's trigger notifies on
//!   commit; everywhere, a fallback poll interval (a lost notification costs one interval).
//! - **Failures.** At start, a refused login, a missing table or column stop the relay with an
//!   error; an unreachable database is waited for. Afterwards transient errors (database, Kafka)
//!   are retried with capped exponential backoff, resetting after a settled batch; the attempts and the last error are in
//!   [`PollStatus`] and the logs. Kafka's permanent errors for one event (too large, invalid
//!   topic) dead-letter that event, as the `wal` source does, and the batch goes on.

mod leader;
mod shape;
mod store;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use rdkafka::error::KafkaError;
use sea_orm::{
    ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, IsolationLevel, RuntimeErr,
    TransactionTrait,
};
use serde::Deserialize;
use tokio::sync::Notify;

use crate::backoff::Backoff;
use crate::config::{Config, ConfigError};
use crate::dead_letter::DeadLetter;
use crate::metrics::Metrics;
use crate::sink::{Failure, KafkaMessage, KafkaSink, Router, classify, is_fatal, is_size_error};
use crate::source::{ColumnValue, OutboxRecord};
use leader::Leader;
pub use shape::SEQUENCE;
use shape::{Catalog, Kind, Shape, Wanted};
pub use store::RELAYED_AT;
use store::Table;

/// What happens to a row once Kafka acknowledged it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AfterAck {
    /// Delete it: the table holds only pending events.
    #[default]
    Delete,
    /// Set its `relayed_at` column (added by `setup`), and delete it after `retention`.
    Mark,
}

/// The `[source.poll]` settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollConfig {
    /// Most rows claimed (and shipped) per transaction, 1 to 10000.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// How long an idle relay waits before it looks again without a notification: the only
    /// wake-up on MariaDB and SQLite, the safety net for a lost NOTIFY on PostgreSQL.
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// `delete` (default) or `mark`.
    #[serde(default)]
    pub after_ack: AfterAck,
    /// With `after_ack = "mark"`: how long relayed rows are kept before they are purged.
    #[serde(default = "default_retention", with = "humantime_serde")]
    pub retention: Duration,
    /// PostgreSQL: the channel to `LISTEN` on, notified by the trigger that `setup` creates.
    /// Default: the table's name. Set `listen = false` to rely on the interval alone.
    #[serde(default)]
    pub channel: Option<String>,
    /// PostgreSQL: whether to `LISTEN` (and have `setup` create the trigger).
    #[serde(default = "default_true")]
    pub listen: bool,
    /// How often a standby relay tries to take the leadership over.
    #[serde(default = "default_standby_interval", with = "humantime_serde")]
    pub standby_interval: Duration,
    /// SQLite: how long a lease lasts without renewal (a dead leader is replaced after this).
    #[serde(default = "default_lease_ttl", with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// How long a stop waits for the batch in flight to be acknowledged before it gives up on
    /// it (the rows stay, and are shipped again after the restart).
    #[serde(default = "default_drain_timeout", with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// The longest a claimed batch waits for Kafka's acknowledgements; then the claim is rolled
    /// back and retried after a backoff. It bounds how long the claiming transaction stays open
    /// during a Kafka outage (an open transaction holds back vacuum on PostgreSQL), whatever
    /// the producer's `message.timeout.ms`.
    #[serde(default = "default_claim_timeout", with = "humantime_serde")]
    pub claim_timeout: Duration,
}

fn default_batch_size() -> usize {
    1000
}
fn default_interval() -> Duration {
    Duration::from_millis(500)
}
fn default_retention() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_true() -> bool {
    true
}
fn default_standby_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_lease_ttl() -> Duration {
    Duration::from_secs(10)
}
fn default_drain_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_claim_timeout() -> Duration {
    Duration::from_secs(30)
}

impl Default for PollConfig {
    fn default() -> Self {
        PollConfig {
            batch_size: default_batch_size(),
            interval: default_interval(),
            after_ack: AfterAck::default(),
            retention: default_retention(),
            channel: None,
            listen: true,
            standby_interval: default_standby_interval(),
            lease_ttl: default_lease_ttl(),
            drain_timeout: default_drain_timeout(),
            claim_timeout: default_claim_timeout(),
        }
    }
}

impl PollConfig {
    /// Checks the ranges serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| ConfigError::Invalid {
            key,
            message: message.to_owned(),
        };
        if !(1..=10_000).contains(&self.batch_size) {
            return Err(invalid(
                "source.poll.batch_size",
                "must be between 1 and 10000",
            ));
        }
        if self.claim_timeout.is_zero() {
            return Err(invalid("source.poll.claim_timeout", "must be above zero"));
        }
        if self.interval.is_zero() || self.standby_interval.is_zero() {
            return Err(invalid(
                "source.poll.interval",
                "intervals must be above zero",
            ));
        }
        if self.lease_ttl <= self.interval {
            return Err(invalid(
                "source.poll.lease_ttl",
                "must be longer than source.poll.interval",
            ));
        }
        if self.channel.as_deref() == Some("") {
            return Err(invalid("source.poll.channel", "must not be empty"));
        }
        Ok(())
    }
}

/// Why the polling relay stopped, or what a cycle met.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("database: {0}")]
    Database(#[from] DbErr),
    #[error("database: {0}")]
    Sqlx(#[from] sea_orm::sqlx::Error),
    #[error("kafka ({context}): {source}")]
    Kafka {
        context: &'static str,
        source: KafkaError,
    },
    #[error("the poll source supports PostgreSQL, MariaDB/MySQL and SQLite, not {0}")]
    Unsupported(String),
    #[error("another relay took the leadership over")]
    LostLeadership,
    #[error(
        "the outbox table `{table}` does not exist (or this database role cannot see it); \
         check `source.table` and `source.schema`"
    )]
    NoTable { table: String },
    #[error(
        "the outbox table `{table}` lacks the column(s) {}, which the relay reads",
        .columns.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")
    )]
    MissingColumns { table: String, columns: Vec<String> },
    #[error(
        "the outbox table `{table}` is not ready for polling: {problem}; \
         run `outbox-relay setup --source poll` with the same table settings"
    )]
    NotReady { table: String, problem: String },
    #[error("the outbox table `{table}` cannot be polled: {problem}")]
    Unfit { table: String, problem: String },
    #[error(
        "Kafka did not acknowledge the claimed batch within `source.poll.claim_timeout` \
         ({0:?}); the claim was rolled back"
    )]
    ClaimTimeout(Duration),
}

impl PollError {
    fn is_transient(&self) -> bool {
        match self {
            PollError::Database(_)
            | PollError::Sqlx(_)
            | PollError::LostLeadership
            | PollError::ClaimTimeout(_) => true,
            PollError::Kafka { context, .. } => *context != "producer configuration",
            PollError::Config(_)
            | PollError::Unsupported(_)
            | PollError::NoTable { .. }
            | PollError::MissingColumns { .. }
            | PollError::NotReady { .. }
            | PollError::Unfit { .. } => false,
        }
    }

    /// Whether the relay, while starting, waits and tries again (the database is not reachable
    /// yet) rather than stopping: a login or database the server refuses, and a bad URL, are
    /// mistakes that no retry fixes.
    fn is_transient_at_start(&self) -> bool {
        match self {
            PollError::Database(error) => !refused_for_good(error),
            other => other.is_transient(),
        }
    }
}

/// Whether the server refused the connection for a reason only a change of configuration
/// fixes, by error code: authentication (PostgreSQL class 28, MariaDB/MySQL 1045 and 1698), an
/// unknown database (3D000, 1049), no access to it (42501, 1044), a bad URL or TLS setup.
fn refused_for_good(error: &DbErr) -> bool {
    use sea_orm::sqlx::Error;
    let (DbErr::Conn(RuntimeErr::SqlxError(error))
    | DbErr::Exec(RuntimeErr::SqlxError(error))
    | DbErr::Query(RuntimeErr::SqlxError(error))) = error
    else {
        return false;
    };
    match error.as_ref() {
        Error::Configuration(_) | Error::Tls(_) => true,
        Error::Database(error) => {
            if let Some(mysql) =
                error.try_downcast_ref::<sea_orm::sqlx::mysql::MySqlDatabaseError>()
            {
                return matches!(mysql.number(), 1044 | 1045 | 1049 | 1698);
            }
            if error
                .try_downcast_ref::<sea_orm::sqlx::postgres::PgDatabaseError>()
                .is_some()
            {
                return error.code().is_some_and(|code| {
                    code.starts_with("28") || code == "3D000" || code == "42501"
                });
            }
            // SQLite: the file cannot be opened, or is not a database.
            error
                .code()
                .is_some_and(|code| matches!(code.as_ref(), "14" | "26"))
        }
        _ => false,
    }
}

/// What a running relay shows of itself: whether it leads, its retries and last error, counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PollStatus {
    /// Whether this relay is the one shipping.
    pub leader: bool,
    /// Failed attempts at the current batch since the last success.
    pub attempts: u32,
    /// The last error, kept after recovery.
    pub last_error: Option<String>,
    /// Events Kafka acknowledged (dead letters excluded).
    pub published: u64,
    /// Events sent to the dead-letter topic.
    pub dead_lettered: u64,
}

/// The polling relay: one outbox table, one Kafka sink.
pub struct PollRelay {
    config: Config,
    db: DatabaseConnection,
    table: Table,
    /// The columns the relay reads, required and optional.
    wanted: Wanted,
    router: Router,
    metrics: Metrics,
    holder: String,
    status: Arc<Mutex<PollStatus>>,
}

/// How one cycle ended.
enum Cycle {
    /// `n` rows were shipped and settled.
    Shipped(usize),
    /// Kafka did not acknowledge the batch within the drain timeout during a stop.
    Abandoned,
}

impl PollRelay {
    /// A relay for `config.database_url` (a `postgres://`, `mysql://` (MariaDB too) or
    /// `sqlite://` URL). The pool connects on first use, so that [`PollRelay::run`] can wait for
    /// a database that is not up yet, and still stop at once on a refused login.
    pub async fn connect(config: Config, metrics: Metrics) -> Result<PollRelay, PollError> {
        let url = config.database_url.clone().unwrap_or_default();
        let mut options = crate::connection::connect_options(&url).map_err(ConfigError::from)?;
        options
            .sqlx_logging(false)
            .max_connections(4)
            .connect_lazy(true)
            .acquire_timeout(Duration::from_secs(5));
        let db = Database::connect(options).await?;
        PollRelay::new(config, db, metrics)
    }

    /// A relay on an existing connection pool (its own connections: the lock connection is
    /// taken out of the pool for as long as the relay leads).
    pub fn new(
        config: Config,
        db: DatabaseConnection,
        metrics: Metrics,
    ) -> Result<PollRelay, PollError> {
        config.validate()?;
        config.source.poll.validate()?;
        let backend = db.get_database_backend();
        if !matches!(
            backend,
            DbBackend::Postgres | DbBackend::MySql | DbBackend::Sqlite
        ) {
            return Err(PollError::Unsupported(format!("{backend:?}")));
        }
        let placements = config.placements()?;
        let placed: Vec<String> = placements.iter().map(|p| p.column.clone()).collect();
        let table = Table::new(
            backend,
            config.source.schema.as_deref(),
            &config.source.table,
            config.source.poll.after_ack == AfterAck::Mark,
        );
        let wanted = Wanted::new(&config.kafka.route_by_field, &placed);
        let router = Router::new(&config.kafka, placements);
        Ok(PollRelay {
            config,
            db,
            table,
            wanted,
            router,
            metrics,
            holder: uuid::Uuid::now_v7().to_string(),
            status: Arc::new(Mutex::new(PollStatus::default())),
        })
    }

    /// A snapshot of the relay's state.
    pub fn status(&self) -> PollStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn update(&self, change: impl FnOnce(&mut PollStatus)) {
        if let Ok(mut status) = self.status.lock() {
            change(&mut status);
        }
    }

    fn poll(&self) -> &PollConfig {
        &self.config.source.poll
    }

    /// The NOTIFY channel, on PostgreSQL when listening is on.
    fn channel(&self) -> Option<&str> {
        let poll = self.poll();
        (self.table.backend == DbBackend::Postgres && poll.listen)
            .then(|| poll.channel.as_deref().unwrap_or(&self.config.source.table))
    }

    /// Prepares the existing outbox table (idempotent): the sequence the claim orders by (`seq`:
    /// PostgreSQL `bigint GENERATED BY DEFAULT AS IDENTITY` and its index, MariaDB/MySQL
    /// `BIGINT NOT NULL AUTO_INCREMENT` with a unique key; SQLite's rowid needs nothing), the
    /// `relayed_at` column in `mark` mode, and on PostgreSQL the NOTIFY trigger:
    ///
    /// ```sql
    /// CREATE OR REPLACE FUNCTION outbox_relay_notify() RETURNS trigger LANGUAGE plpgsql AS
    ///   $$ BEGIN PERFORM pg_notify(TG_ARGV[0], ''); RETURN NULL; END $$;
    /// CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    ///   FOR EACH STATEMENT EXECUTE FUNCTION outbox_relay_notify('outbox');
    /// ```
    ///
    /// Rows already in the table are numbered by the `ALTER TABLE`, in the table's physical
    /// order. Then the table is checked as `run` checks it.
    pub async fn setup(&self) -> Result<(), PollError> {
        let catalog = Catalog::read(&self.db, &self.table).await?;
        // Nothing is altered on a table the relay could not read anyway.
        shape::require(&self.table, &catalog, &self.wanted)?;
        let mut ddl = shape::add_sequence(&self.table, &catalog)?;
        if self.table.marks() && catalog.find(self.table.backend, RELAYED_AT).is_none() {
            ddl.push(self.table.add_relayed_at());
        }
        ddl.extend(self.table.notify_trigger(self.channel()));
        for statement in ddl {
            self.db.execute_unprepared(&statement).await?;
        }
        self.shape().await.map(drop)
    }

    /// The table as it is now, checked for what polling needs.
    async fn shape(&self) -> Result<Shape, PollError> {
        let catalog = Catalog::read(&self.db, &self.table).await?;
        Shape::check(&self.table, &catalog, &self.wanted)
    }

    /// At start: the table's shape and the producer, once the database answers. A problem no
    /// retry fixes is returned; `None` when `shutdown` came first.
    async fn prepare(
        &self,
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Result<Option<(Shape, KafkaSink)>, PollError> {
        let sink = KafkaSink::new(&self.config.kafka).map_err(|source| PollError::Kafka {
            context: "producer configuration",
            source,
        })?;
        let retry = &self.config.retry;
        let mut backoff = Backoff::new(retry.initial_backoff, retry.max_backoff);
        loop {
            let wait = match self.shape().await {
                Ok(shape) => {
                    tracing::info!(table = %self.table.key(), columns = ?shape.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), sequence = %shape.sequence, "outbox table checked");
                    return Ok(Some((shape, sink)));
                }
                Err(error) if error.is_transient_at_start() => self.failed(&error, &mut backoff),
                Err(error) => return Err(error),
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.as_mut() => return Ok(None),
            }
        }
    }

    /// Relays until `shutdown` resolves: the batch in flight is acknowledged and settled (up to
    /// `drain_timeout`), the leadership released, and `Ok` returned. Returns early only on a
    /// permanent error (configuration).
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> Result<(), PollError> {
        let mut shutdown = std::pin::pin!(shutdown);
        let Some((shape, sink)) = self.prepare(&mut shutdown).await? else {
            return Ok(());
        };
        let wake = Arc::new(Notify::new());
        let listener = self.channel().map(|channel| {
            tokio::spawn(listen(
                self.db.get_postgres_connection_pool().clone(),
                channel.to_owned(),
                wake.clone(),
                self.config.retry.max_backoff,
            ))
        });
        let result = self.lead(&shape, sink, &mut shutdown, &wake).await;
        if let Some(listener) = listener {
            listener.abort();
        }
        tracing::info!(
            published = self.metrics.published(),
            dead_lettered = self.metrics.dead_lettered(),
            "poll relay stopped"
        );
        result
    }

    async fn lead(
        &self,
        shape: &Shape,
        sink: KafkaSink,
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
        wake: &Notify,
    ) -> Result<(), PollError> {
        let retry = &self.config.retry;
        let mut backoff = Backoff::new(retry.initial_backoff, retry.max_backoff);
        let mut sink: Option<KafkaSink> = Some(sink);
        let mut leader: Option<Leader> = None;
        let mut last_purge: Option<Instant> = None;
        loop {
            let Some(lead) = &leader else {
                let outcome =
                    Leader::try_acquire(&self.db, &self.table, &self.holder, self.poll().lease_ttl)
                        .await;
                let wait = match outcome {
                    Ok(Some(taken)) => {
                        tracing::info!(table = %self.table.key(), "leading: this relay ships the outbox");
                        self.metrics.connected(true);
                        self.update(|s| s.leader = true);
                        leader = Some(taken);
                        continue;
                    }
                    Ok(None) => self.poll().standby_interval,
                    Err(error) if error.is_transient() => self.failed(&error, &mut backoff),
                    Err(error) => return Err(error),
                };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => continue,
                    _ = shutdown.as_mut() => return Ok(()),
                }
            };
            let producer = match &sink {
                Some(producer) => producer,
                None => sink.insert(KafkaSink::connect(&self.config.kafka).await.map_err(
                    |source| PollError::Kafka {
                        context: "producer configuration",
                        source,
                    },
                )?),
            };
            let mut stopping = false;
            let outcome = {
                let cycle = self.cycle(shape, lead, producer);
                tokio::pin!(cycle);
                tokio::select! {
                    outcome = &mut cycle => outcome,
                    _ = shutdown.as_mut() => {
                        stopping = true;
                        match tokio::time::timeout(self.poll().drain_timeout, cycle).await {
                            Ok(outcome) => outcome,
                            Err(_) => Ok(Cycle::Abandoned),
                        }
                    }
                }
            };
            let wait = match outcome {
                Ok(Cycle::Shipped(n)) => {
                    backoff.reset();
                    self.update(|s| s.attempts = 0);
                    if stopping {
                        break;
                    }
                    if self.poll().after_ack == AfterAck::Mark
                        && last_purge.is_none_or(|at| at.elapsed() >= Duration::from_secs(60))
                    {
                        last_purge = Some(Instant::now());
                        if let Err(error) = self.purge(shape).await {
                            tracing::warn!(%error, "purging relayed rows failed; trying again later");
                        }
                    }
                    if n == self.poll().batch_size {
                        continue;
                    }
                    // Idle: a notification, the fallback interval, or the stop.
                    tokio::select! {
                        _ = wake.notified() => continue,
                        _ = tokio::time::sleep(self.poll().interval) => continue,
                        _ = shutdown.as_mut() => break,
                    }
                }
                Ok(Cycle::Abandoned) => break,
                Err(error) => {
                    // A fatal producer is rebuilt; so is one whose batch outlived the claim, which
                    // drops the copies still queued in it (the batch is claimed and sent again).
                    if matches!(&error, PollError::Kafka { source, .. } if is_fatal(source))
                        || matches!(error, PollError::ClaimTimeout(_))
                    {
                        sink = None;
                    }
                    if !error.is_transient() {
                        return Err(error);
                    }
                    if matches!(error, PollError::LostLeadership) {
                        tracing::warn!("lost the leadership; standing by");
                        self.step_down(&mut leader).await;
                    }
                    let wait = self.failed(&error, &mut backoff);
                    if stopping {
                        break;
                    }
                    wait
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.as_mut() => break,
            }
            // A database error may have been the lock connection's: check it before going on.
            if let Some(lead) = &leader
                && !matches!(
                    lead.holds(&self.db, &self.table, self.poll().lease_ttl)
                        .await,
                    Ok(true)
                )
            {
                self.step_down(&mut leader).await;
            }
        }
        if let Some(producer) = &sink
            && let Err(error) = producer.flush(Duration::from_secs(5))
        {
            tracing::debug!(%error, "flushing the producer at stop");
        }
        self.step_down(&mut leader).await;
        Ok(())
    }

    /// Deletes the rows marked longer ago than the retention, 10000 at a time.
    async fn purge(&self, shape: &Shape) -> Result<(), PollError> {
        let retention =
            chrono::Duration::from_std(self.poll().retention).unwrap_or(chrono::Duration::MAX);
        let cutoff = Utc::now()
            .checked_sub_signed(retention)
            .unwrap_or(chrono::DateTime::<Utc>::MIN_UTC);
        loop {
            let rows = self
                .db
                .query_all_raw(self.table.expired(shape, cutoff, 10_000))
                .await?;
            let ids = rows
                .iter()
                .map(|row| row.try_get_by_index::<String>(0))
                .collect::<Result<Vec<_>, _>>()?;
            if ids.is_empty() {
                return Ok(());
            }
            execute(&self.db, self.table.delete(shape, &ids)).await?;
            tracing::info!(rows = ids.len(), "purged relayed rows past the retention");
        }
    }

    async fn step_down(&self, leader: &mut Option<Leader>) {
        if let Some(lead) = leader.take() {
            lead.release(&self.db, &self.table).await;
        }
        self.metrics.connected(false);
        self.update(|s| s.leader = false);
    }

    /// Records a transient failure; returns how long to wait before the next attempt.
    fn failed(&self, error: &PollError, backoff: &mut Backoff) -> Duration {
        let wait = backoff.wait();
        let message = error.to_string();
        self.update(|s| {
            s.attempts += 1;
            s.last_error = Some(message);
        });
        tracing::warn!(%error, attempts = self.status().attempts, ?wait, "poll cycle failed; retrying");
        self.metrics.reconnecting(error, wait);
        wait
    }

    /// One claim → ship → settle cycle.
    async fn cycle(
        &self,
        shape: &Shape,
        leader: &Leader,
        sink: &KafkaSink,
    ) -> Result<Cycle, PollError> {
        let ttl = self.poll().lease_ttl;
        let limit = self.poll().batch_size;
        if self.table.backend == DbBackend::Sqlite {
            // SQLite: one writer for the whole database. The leader reads outside a
            // transaction and writes only the short settle, so the service's writers never
            // wait on Kafka.
            if !leader.holds(&self.db, &self.table, ttl).await? {
                return Err(PollError::LostLeadership);
            }
            let records = self.claim(shape, &self.db, limit).await?;
            self.report_lag(&records);
            if records.is_empty() {
                return Ok(Cycle::Shipped(0));
            }
            self.ship_within_claim(sink, &records).await?;
            execute(&self.db, self.settle(shape, &records)).await?;
            return Ok(Cycle::Shipped(records.len()));
        }
        // READ COMMITTED on MariaDB: its default (REPEATABLE READ) would take gap locks on the
        // index and stall the service's inserts for the length of a Kafka round trip.
        let isolation =
            (self.table.backend == DbBackend::MySql).then_some(IsolationLevel::ReadCommitted);
        let txn = self.db.begin_with_config(isolation, None).await?;
        if !leader.holds(&txn, &self.table, ttl).await? {
            return Err(PollError::LostLeadership);
        }
        let records = self.claim(shape, &txn, limit).await?;
        self.report_lag(&records);
        if records.is_empty() {
            txn.commit().await?;
            return Ok(Cycle::Shipped(0));
        }
        // An error drops `txn`, which rolls the claim back: the rows stay for the next try.
        self.ship_within_claim(sink, &records).await?;
        execute(&txn, self.settle(shape, &records)).await?;
        txn.commit().await?;
        Ok(Cycle::Shipped(records.len()))
    }

    /// The oldest pending rows, in sequence order, as records.
    async fn claim<C: ConnectionTrait>(
        &self,
        shape: &Shape,
        conn: &C,
        limit: usize,
    ) -> Result<Vec<OutboxRecord>, PollError> {
        let mut rows = conn.query_all_raw(self.table.claim(shape, limit)).await?;
        if self.table.claims_ids() {
            let ids = rows
                .iter()
                .map(|row| row.try_get_by_index::<String>(0))
                .collect::<Result<Vec<_>, _>>()?;
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            // In sequence order, as claimed.
            rows = conn.query_all_raw(self.table.fetch(shape, &ids)).await?;
        }
        rows.into_iter()
            .map(|row| {
                let values = shape
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(i, column)| match column.kind {
                        Kind::Text => row
                            .try_get_by_index::<Option<String>>(i)
                            .map(|v| v.map(ColumnValue::Text)),
                        Kind::Bytes => row
                            .try_get_by_index::<Option<Vec<u8>>>(i)
                            .map(|v| v.map(ColumnValue::Bytes)),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(self.table.record(shape, values))
            })
            .collect()
    }

    /// The age of the oldest pending event (the first claimed), as the `lag_seconds` gauge;
    /// zero when nothing is pending. The poll source has no log position to report.
    fn report_lag(&self, records: &[OutboxRecord]) {
        let age = records
            .first()
            .and_then(|r| r.get("timestamp"))
            .and_then(parse_timestamp)
            .map_or(0.0, |at| (Utc::now() - at).as_seconds_f64().max(0.0));
        self.metrics.position(0, 0, age);
    }

    fn settle(&self, shape: &Shape, records: &[OutboxRecord]) -> sea_orm::Statement {
        let ids: Vec<String> = records
            .iter()
            .filter_map(|r| r.get("id").map(str::to_owned))
            .collect();
        self.table.settle(shape, &ids, Utc::now())
    }

    /// [`PollRelay::ship`], within `claim_timeout`.
    async fn ship_within_claim(
        &self,
        sink: &KafkaSink,
        records: &[OutboxRecord],
    ) -> Result<(), PollError> {
        let poll = self.poll();
        // SQLite's leadership is a lease that is not renewed while a batch waits: a batch must
        // end well within it, or a standby could take over while its copies are still queued.
        let bound = match self.table.backend {
            DbBackend::Sqlite => poll.claim_timeout.min(poll.lease_ttl / 2),
            _ => poll.claim_timeout,
        };
        tokio::time::timeout(bound, self.ship(sink, records))
            .await
            .map_err(|_| PollError::ClaimTimeout(bound))?
    }

    /// Sends every record, then waits for every acknowledgement. `Ok` means each record is in
    /// Kafka, on its topic or on the dead-letter topic.
    async fn ship(&self, sink: &KafkaSink, records: &[OutboxRecord]) -> Result<(), PollError> {
        let mut pending = Vec::with_capacity(records.len());
        for record in records {
            let (message, dead) = match self.router.route(record) {
                Ok(message) => (message, None),
                Err(unroutable) => (
                    KafkaMessage::unroutable(record),
                    Some((unroutable.to_string(), false)),
                ),
            };
            let delivery = match dead {
                None => match self.send(sink, &message).await {
                    Ok(delivery) => Ok(delivery),
                    Err(error) if classify(&error) == Failure::Permanent => {
                        Err((error.to_string(), is_size_error(&error)))
                    }
                    Err(error) => return Err(self.kafka_failed("send", error)),
                },
                Some(reason) => Err(reason),
            };
            pending.push((record, message, delivery));
        }
        for (record, message, delivery) in pending {
            let failure = match delivery {
                Ok(delivery) => match delivery.await {
                    Ok(Ok(_)) => {
                        self.metrics.event_published();
                        self.update(|s| s.published += 1);
                        continue;
                    }
                    Ok(Err((error, _))) if classify(&error) == Failure::Permanent => {
                        (error.to_string(), is_size_error(&error))
                    }
                    Ok(Err((error, _))) => return Err(self.kafka_failed("delivery", error)),
                    Err(_) => return Err(self.kafka_failed("delivery", KafkaError::Canceled)),
                },
                Err(failure) => failure,
            };
            self.dead_letter(sink, record, message, failure).await?;
        }
        Ok(())
    }

    /// Hands `message` to the producer, waiting out `QueueFull`.
    async fn send(
        &self,
        sink: &KafkaSink,
        message: &KafkaMessage,
    ) -> Result<rdkafka::producer::DeliveryFuture, KafkaError> {
        loop {
            match sink.send(message) {
                Err(error) if classify(&error) == Failure::Backpressure => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                other => return other,
            }
        }
    }

    /// Sends the dead letter of `record` and waits for its acknowledgement.
    async fn dead_letter(
        &self,
        sink: &KafkaSink,
        record: &OutboxRecord,
        original: KafkaMessage,
        (reason, drop_value): (String, bool),
    ) -> Result<(), PollError> {
        let topic = &self.config.kafka.dead_letter_topic;
        let letter = DeadLetter {
            reason: reason.clone(),
            lsn: 0,
            drop_value,
        };
        let mut message = letter.message(topic, original);
        // A polled row has no WAL position; its table names where it came from.
        message.headers.retain(|(name, _)| name != "dlq.source.lsn");
        message.push_header("dlq.source.table", self.table.key().into_bytes());
        let delivery = self
            .send(sink, &message)
            .await
            .map_err(|e| self.kafka_failed("dead letter", e))?;
        match delivery.await {
            Ok(Ok(_)) => {
                self.metrics.event_dead_lettered(topic, &reason, 0);
                self.update(|s| s.dead_lettered += 1);
                tracing::warn!(id = record.get("id").unwrap_or_default(), %reason, "event dead-lettered");
                Ok(())
            }
            Ok(Err((error, _))) => Err(self.kafka_failed("dead letter", error)),
            Err(_) => Err(self.kafka_failed("dead letter", KafkaError::Canceled)),
        }
    }

    fn kafka_failed(&self, context: &'static str, source: KafkaError) -> PollError {
        self.metrics.event_failed(&source);
        PollError::Kafka { context, source }
    }
}

/// Runs `statement`; one without values may hold several statements (MariaDB's delete).
async fn execute<C: ConnectionTrait>(conn: &C, statement: sea_orm::Statement) -> Result<(), DbErr> {
    match statement.values {
        Some(_) => conn.execute_raw(statement).await.map(drop),
        None => conn.execute_unprepared(&statement.sql).await.map(drop),
    }
}

/// A `timestamp` column as the claim reads it: PostgreSQL's text form (`2026-01-02
/// 03:04:05.123456+00`), MariaDB's `datetime(6)` (UTC, as written), SQLite's RFC 3339.
fn parse_timestamp(text: &str) -> Option<chrono::DateTime<Utc>> {
    let text = text.trim();
    chrono::DateTime::parse_from_rfc3339(text)
        .or_else(|_| chrono::DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%#z"))
        .map(|at| at.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
                .ok()
                .map(|at| at.and_utc())
        })
}

/// `LISTEN`s on `channel` and wakes the relay on each notification (and on each reconnect, in
/// case one was lost meanwhile). Reconnects with capped exponential backoff.
async fn listen(
    pool: sea_orm::sqlx::PgPool,
    channel: String,
    wake: Arc<Notify>,
    max_backoff: Duration,
) {
    use sea_orm::sqlx::postgres::PgListener;
    let mut backoff = Backoff::new(Duration::from_millis(100), max_backoff);
    loop {
        let listening = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(&channel).await?;
            Ok::<_, sea_orm::sqlx::Error>(listener)
        };
        match listening.await {
            Ok(mut listener) => {
                backoff.reset();
                wake.notify_one();
                loop {
                    match listener.recv().await {
                        Ok(_) => wake.notify_one(),
                        Err(error) => {
                            tracing::warn!(%error, "LISTEN connection lost; the poll interval covers the gap");
                            break;
                        }
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, %channel, "cannot LISTEN; relying on the poll interval")
            }
        }
        tokio::time::sleep(backoff.wait()).await;
    }
}

/// The `outbox-relay` subcommands for the poll source (`setup`, `teardown`, `status`, `run`).
pub async fn command(
    config: Config,
    command: &str,
    shutdown: impl Future<Output = ()>,
) -> Result<(), PollError> {
    let metrics = Metrics::new();
    let relay = PollRelay::connect(config, metrics.clone()).await?;
    match command {
        "setup" => {
            relay.setup().await?;
            println!(
                "outbox table {} is ready for polling (ordered by `{}`)",
                relay.table.qualified(),
                if relay.table.backend == DbBackend::Sqlite {
                    "rowid"
                } else {
                    SEQUENCE
                }
            );
        }
        "run" => {
            let dashboard = crate::dashboard::Dashboard::new(&relay.config);
            let _listener = match relay.config.metrics.listen {
                Some(addr) => Some(metrics.serve(addr, dashboard).await.map_err(|e| {
                    ConfigError::Invalid {
                        key: "metrics.listen",
                        message: format!("{addr}: {e}"),
                    }
                })?),
                None => None,
            };
            relay.run(shutdown).await?;
        }
        "status" => {
            let sql = format!("SELECT COUNT(*) FROM {}", relay.table.qualified());
            let row = relay
                .db
                .query_one_raw(sea_orm::Statement::from_string(relay.table.backend, sql))
                .await?;
            let rows = row
                .map(|r| r.try_get_by_index::<i64>(0))
                .transpose()?
                .unwrap_or(0);
            println!("table: {}", relay.table.qualified());
            println!("rows: {rows}");
        }
        // The sequence, its index and the trigger belong to the table and go with it.
        _ => println!(
            "nothing to tear down for the poll source: the sequence, index and trigger of {} go with the table",
            relay.table.qualified()
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_of_each_backend() {
        let want = chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05.123456Z")
            .map(|at| at.with_timezone(&Utc))
            .ok();
        for text in [
            "2026-01-02 03:04:05.123456+00",
            "2026-01-02 05:04:05.123456+02",
            "2026-01-02 03:04:05.123456",
            "2026-01-02T03:04:05.123456+00:00",
        ] {
            assert_eq!(parse_timestamp(text), want, "{text}");
        }
        assert_eq!(parse_timestamp("yesterday"), None);
    }
}
