//! The `poll` source: PostgreSQL, MariaDB/MySQL and SQLite, behind the [`crate::source::Source`] seam.
//!
//! Contract:
//! - **No polling gap.** The relay keeps no cursor. Each cycle claims the oldest rows that exist
//!   now (`ORDER BY seq ... FOR UPDATE SKIP LOCKED` in a transaction; SQLite reads as its single
//!   writer), ships them, and deletes (or marks) them only after Kafka acknowledged every one:
//!   on PostgreSQL the claim itself deletes the rows it locks, and the claiming transaction
//!   commits only after the acknowledgement (`Table::deletes_at_claim`).
//!   A row whose transaction commits late is simply still there on a later cycle.
//! - **At least once.** A failure before the delete rolls the claim back; the rows are claimed
//!   again (duplicates, which consumers drop by the `id` header). No row is ever skipped.
//! - **Per-aggregate order.** One relay ships at a time (`leader`); a batch is shipped in the
//!   order of a sequence the database assigns at INSERT (`seq`, or SQLite's rowid; see
//!   `shape`), and batches are shipped and settled in claim order (on PostgreSQL and SQLite a
//!   second batch is claimed while the first waits for Kafka; see `session`). Never by
//!   `timestamp`, a client clock:
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
//!   are retried by the pipeline with capped exponential backoff, resetting after a settled
//!   batch; the attempts and the last error are in [`PollStatus`] and the logs. Kafka's
//!   permanent errors for one event dead-letter that event, as for every source.
//!
//! Shape: a session is a task that claims a batch, yields it as one transaction (whose position
//! is the batch's number), waits until the pipeline acknowledges that number, settles the rows
//! and commits; the next claim may go out meanwhile (`session`). The claim's transaction lives in the task, so the
//! pipeline's `select!` can drop a `next` at any time; closing the session ends the task, which
//! rolls an unsettled claim back.

mod leader;
mod session;
mod shape;
mod store;
mod table;
mod waiting;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use chrono::Utc;
use sea_orm::{
    ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, QueryResult, RuntimeErr,
};
use tokio::sync::{Mutex, Notify};

use crate::backoff::Backoff;
pub use crate::config::{AfterAck, PollConfig};
use crate::config::{Config, ConfigError};
use crate::format;
use crate::source::{Classified, ColumnValue, Connector, Fault, OutboxRecord, SourceError};
use crate::status::{State, Status};
use leader::Leader;
pub use session::{Batch, BatchRows, PollSession};
pub use shape::SEQUENCE;
use shape::{Catalog, Kind, Shape, Wanted};
pub use store::RELAYED_AT;
use store::Table;

/// Why the polling relay stopped, or what a cycle met.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("database: {0}")]
    Database(#[from] DbErr),
    #[error("database: {0}")]
    Sqlx(#[from] sea_orm::sqlx::Error),
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
        "the outbox table `{table}` lacks the column(s) {}, which the configuration names",
        .columns.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    )]
    MissingColumns {
        table: String,
        columns: Vec<shape::Required>,
    },
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
    #[error("the claiming task ended")]
    Ended,
    #[error(
        "the outbox table `{table}` does not hold the rows of {batch}, which the stored position \
         says were shipped: {found} of its {count} rows are pending, with ids {ids} where \
         {expected} were claimed; was the table recreated, or its sequence reset? Settling or \
         shipping them could drop or repeat events: give the relay a new \
         `kafka.transactional_id` (a new stored position) once the table is as it should be"
    )]
    NotShipped {
        table: String,
        batch: String,
        found: usize,
        count: usize,
        expected: String,
        ids: String,
    },
}

impl PollError {
    fn is_transient(&self) -> bool {
        match self {
            PollError::Database(_)
            | PollError::Sqlx(_)
            | PollError::LostLeadership
            | PollError::ClaimTimeout(_)
            | PollError::Ended => true,
            PollError::Config(_)
            | PollError::Unsupported(_)
            | PollError::NoTable { .. }
            | PollError::MissingColumns { .. }
            | PollError::NotReady { .. }
            | PollError::Unfit { .. }
            | PollError::NotShipped { .. } => false,
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
pub type PollStatus = crate::status::StatusReport;

impl Classified for PollError {
    fn fault(&self) -> Fault {
        Fault::retry_if(self.is_transient())
    }
}

/// What the connector and its sessions share: the pool, the table, what is read of it.
pub(crate) struct Outbox {
    config: Config,
    db: DatabaseConnection,
    table: Table,
    /// The columns the relay reads, required and optional.
    wanted: Wanted,
    /// This relay's name in the leadership (SQLite's lease).
    holder: String,
}

impl Outbox {
    /// The outbox of `config.database_url`; the pool connects on first use.
    pub(crate) async fn connect(config: Config) -> Result<Outbox, PollError> {
        let url = config.database_url.clone().unwrap_or_default();
        let mut options = crate::connection::connect_options(&url).map_err(ConfigError::from)?;
        options
            .sqlx_logging(false)
            .max_connections(4)
            .connect_lazy(true)
            .acquire_timeout(Duration::from_secs(5));
        let db = Database::connect(options).await?;
        Outbox::new(config, db)
    }

    pub(crate) fn new(config: Config, db: DatabaseConnection) -> Result<Outbox, PollError> {
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
        let wanted = Wanted::new(&config.kafka, &placed);
        Ok(Outbox {
            config,
            db,
            table,
            wanted,
            holder: uuid::Uuid::now_v7().to_string(),
        })
    }

    fn poll(&self) -> &PollConfig {
        &self.config.source.poll
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
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
    ///   $$ BEGIN
    ///   IF NOT pg_try_advisory_xact_lock_shared(hashtext('outbox-relay'), hashtext(TG_ARGV[0]))
    ///   THEN PERFORM pg_notify(TG_ARGV[0], ''); END IF; RETURN NULL; END $$;
    /// CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    ///   FOR EACH STATEMENT EXECUTE FUNCTION outbox_relay_notify('outbox');
    /// ```
    ///
    /// The trigger notifies only while the relay waits for rows (`waiting.rs` says why and how).
    ///
    /// Rows already in the table are numbered by the `ALTER TABLE`, in the table's physical
    /// order. A PostgreSQL table whose rows live in several tables (partitions, `INHERITS`
    /// children) is numbered one child at a time, which loses the order across them, so `setup`
    /// refuses to add the sequence while such a table holds rows. Then the table is checked as
    /// `run` checks it.
    pub(crate) async fn setup(&self) -> Result<(), PollError> {
        let catalog = Catalog::read(&self.db, &self.table).await?;
        // Nothing is altered on a table the relay could not read anyway.
        shape::require(&self.table, &catalog, &self.wanted)?;
        shape::event_id_is_text(&self.table, &catalog, &self.wanted)?;
        let mut ddl = shape::add_sequence(&self.table, &catalog)?;
        let adds_sequence = catalog.find(self.table.backend, SEQUENCE).is_none();
        if adds_sequence && catalog.spans_tables() {
            self.require_empty().await?;
        }
        if self.table.marks() && catalog.find(self.table.backend, RELAYED_AT).is_none() {
            ddl.push(self.table.add_relayed_at());
        }
        ddl.extend(self.table.notify_trigger(self.channel()));
        for statement in ddl {
            self.db.execute_unprepared(&statement).await?;
        }
        self.shape().await.map(drop)
    }

    /// Stops `setup` on a table whose rows `add_sequence` would number child by child.
    async fn require_empty(&self) -> Result<(), PollError> {
        let statement = sea_orm::Statement::from_string(
            self.table.backend,
            format!("SELECT 1 FROM {} LIMIT 1", self.table.qualified()),
        );
        if self.db.query_one_raw(statement).await?.is_none() {
            return Ok(());
        }
        Err(PollError::Unfit {
            table: self.table.key(),
            problem: format!(
                "it spans several tables (partitions or INHERITS children) and already holds \
                 rows, and adding the `{SEQUENCE}` column would number them one child table at \
                 a time, losing their order across the children; run `outbox-relay setup \
                 --source poll` while the table is empty (let the relay that ships it now drain \
                 it), or add `{SEQUENCE}` yourself, numbered in the order the rows were written"
            ),
        })
    }

    /// PostgreSQL with `LISTEN`: warns when the table has no NOTIFY trigger (the relay is then
    /// woken by `interval` alone), or one that notifies on every insert, as an earlier build's
    /// `setup` created it (`waiting.rs` says what that costs the writers). Neither is a reason
    /// not to run; `setup --source poll` fixes both. A catalog that cannot be read warns
    /// nothing.
    async fn check_notify_trigger(&self) {
        let Some(channel) = self.channel() else {
            return;
        };
        let statement = sea_orm::Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_get_functiondef(t.tgfoid) FROM pg_trigger t \
             WHERE t.tgrelid = to_regclass($1) AND t.tgname = $2",
            [
                self.table.qualified().into(),
                self.table.notify_trigger_name().into(),
            ],
        );
        let definition = match self.db.query_one_raw(statement).await {
            Ok(row) => row.map(|row| row.try_get_by_index::<String>(0)),
            Err(error) => {
                tracing::debug!(%error, "cannot read the NOTIFY trigger");
                return;
            }
        };
        let table = self.table.key();
        match definition {
            None => tracing::warn!(
                %table,
                %channel,
                "the outbox table has no NOTIFY trigger: the relay looks for rows every \
                 `source.poll.interval` only; run `outbox-relay setup --source poll` to create \
                 it, or set `source.poll.listen = false`"
            ),
            Some(Ok(definition)) if !definition.contains(waiting::NOTIFY_GUARD) => {
                tracing::warn!(
                    %table,
                    "the outbox table's NOTIFY trigger notifies on every insert (an earlier \
                     build's `setup` created it), which serializes the service's commits; run \
                     `outbox-relay setup --source poll` again to notify only while the relay \
                     waits"
                )
            }
            Some(_) => {}
        }
    }

    /// The table as it is now, checked for what polling needs.
    async fn shape(&self) -> Result<Shape, PollError> {
        let catalog = Catalog::read(&self.db, &self.table).await?;
        Shape::check(&self.table, &catalog, &self.wanted)
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
            self.in_runs(&self.db, shape, &ids, |run| self.table.delete(shape, run))
                .await?;
            tracing::info!(rows = ids.len(), "purged relayed rows past the retention");
        }
    }

    /// The oldest pending rows (numbered above `after`, if given), in sequence order, as read:
    /// [`Outbox::decode`] makes them records. Apart, so that the claim loop decodes a batch
    /// beside the next claim, not before it.
    async fn claim<C: ConnectionTrait>(
        &self,
        shape: &Shape,
        conn: &C,
        limit: usize,
        after: Option<i64>,
    ) -> Result<Vec<QueryResult>, PollError> {
        let rows = conn
            .query_all_raw(self.table.claim(shape, limit, after))
            .await?;
        if !self.table.claims_ids(shape) {
            return Ok(rows);
        }
        let ids = rows
            .iter()
            .map(|row| row.try_get_by_index::<String>(0))
            .collect::<Result<Vec<_>, _>>()?;
        // In sequence order, as claimed: each run is, and the runs follow the claim.
        let mut fetched = Vec::with_capacity(ids.len());
        for run in self.table.runs(shape, &ids) {
            fetched.extend(conn.query_all_raw(self.table.fetch(shape, run)).await?);
        }
        Ok(fetched)
    }

    /// The highest sequence value of claimed `rows` (`None` without rows).
    fn highest(&self, shape: &Shape, rows: &[QueryResult]) -> Result<Option<i64>, PollError> {
        let mut high = None;
        for row in rows {
            high = high.max(Some(row.try_get_by_index::<i64>(shape.columns.len())?));
        }
        Ok(high)
    }

    /// Claimed `rows` as records with their sequence values.
    fn decode(&self, shape: &Shape, rows: Vec<QueryResult>) -> Result<Vec<Claimed>, PollError> {
        rows.into_iter()
            .map(|row| {
                let values = shape
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(i, column)| match column.kind {
                        // Typed as the wal source types the same column's text.
                        Kind::Text => row.try_get_by_index::<Option<String>>(i).map(|v| {
                            v.map(|text| match column.pg_type {
                                Some((oid, modifier)) => {
                                    format::postgres_value(oid, modifier, text)
                                }
                                None => ColumnValue::Text(text),
                            })
                        }),
                        Kind::Bytes => row
                            .try_get_by_index::<Option<Vec<u8>>>(i)
                            .map(|v| v.map(ColumnValue::Bytes)),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let seq = row.try_get_by_index::<i64>(shape.columns.len())?;
                Ok(Claimed {
                    seq,
                    record: self.table.record(shape, values),
                })
            })
            .collect()
    }

    /// Settles a batch's rows (deletes or marks them) in `conn`: by id a run at a time (see
    /// [`Table::runs`]), or by ranges of sequence values ([`Table::deletes_by_sequence`]), at
    /// most [`SEQUENCE_RUNS_PER_DELETE`] per statement, and then the ranges' last rows by id.
    /// In a transaction, whole or not at all.
    async fn settle<C: ConnectionTrait>(
        &self,
        conn: &C,
        shape: &Shape,
        rows: &Settle,
    ) -> Result<(), DbErr> {
        match rows {
            Settle::Ids(ids) => {
                let now = Utc::now();
                self.in_runs(conn, shape, ids, |run| self.table.settle(shape, run, now))
                    .await
            }
            Settle::Sequences { below_ends, ends } => {
                for part in below_ends.chunks(SEQUENCE_RUNS_PER_DELETE) {
                    execute(conn, self.table.delete_sequences(shape, part)).await?;
                }
                self.in_runs(conn, shape, ends, |run| self.table.delete(shape, run))
                    .await
            }
        }
    }

    /// Runs `statement` of each run of `ids` (see [`Table::runs`]) in `conn`, in order.
    async fn in_runs<C: ConnectionTrait>(
        &self,
        conn: &C,
        shape: &Shape,
        ids: &[String],
        statement: impl Fn(&[String]) -> sea_orm::Statement,
    ) -> Result<(), DbErr> {
        for run in self.table.runs(shape, ids) {
            execute(conn, statement(run)).await?;
        }
        Ok(())
    }

    /// What settles `claimed`, once Kafka acknowledged it: its runs of sequence values, each
    /// but its last row, and the last rows' ids where [`Table::deletes_by_sequence`], else its
    /// event ids; no id where the claim deleted its rows ([`Table::deletes_at_claim`]) and its
    /// commit is the settle.
    fn settle_of(&self, shape: &Shape, claimed: &[Claimed]) -> Settle {
        if self.table.deletes_at_claim(shape) {
            return Settle::Ids(Vec::new());
        }
        if self.table.deletes_by_sequence(shape) {
            return Settle::by_sequence(
                claimed
                    .iter()
                    .filter_map(|c| Some((c.seq, self.event_id(&c.record)?))),
            );
        }
        Settle::Ids(
            claimed
                .iter()
                .filter_map(|c| self.event_id(&c.record).map(str::to_owned))
                .collect(),
        )
    }

    fn event_id<'r>(&self, record: &'r OutboxRecord) -> Option<&'r str> {
        record.get(&self.config.kafka.event_id_field)
    }
}

/// A claimed row: its record, and the sequence value the database gave it at INSERT.
#[derive(Debug, Clone)]
pub(crate) struct Claimed {
    seq: i64,
    record: OutboxRecord,
}

/// The rows a settle deletes or marks (see `Outbox::settle`).
pub(crate) enum Settle {
    /// By event id.
    Ids(Vec<String>),
    /// By ranges of sequence values and ids ([`Table::deletes_by_sequence`]).
    Sequences {
        /// Each run of consecutive sequence values claimed, without its last value (inclusive;
        /// none for a run of one value).
        below_ends: Vec<(i64, i64)>,
        /// The event ids of the runs' last rows.
        ends: Vec<String>,
    },
}

impl Settle {
    /// [`Settle::Sequences`] for claimed rows, given as their sequence values and event ids.
    fn by_sequence<'r>(rows: impl Iterator<Item = (i64, &'r str)> + Clone) -> Settle {
        let runs = consecutive_runs(rows.clone().map(|(seq, _)| seq));
        let is_end = |seq: i64| runs.binary_search_by_key(&seq, |(_, high)| *high).is_ok();
        Settle::Sequences {
            below_ends: runs
                .iter()
                .filter(|(low, high)| low < high)
                .map(|(low, high)| (*low, high - 1))
                .collect(),
            ends: rows
                .filter(|(seq, _)| is_end(*seq))
                .map(|(_, id)| id.to_owned())
                .collect(),
        }
    }
}

/// How many runs of sequence values one settling `DELETE` names: a batch of consecutive rows
/// is one run, and a batch that skipped rows (writers still in flight) has a few; the bound
/// keeps a statement of a scattered batch within the server's packet size.
const SEQUENCE_RUNS_PER_DELETE: usize = 256;

/// `seqs` as inclusive runs of consecutive values, ascending; a value seen twice counts once.
pub(crate) fn consecutive_runs(seqs: impl Iterator<Item = i64>) -> Vec<(i64, i64)> {
    let mut sorted: Vec<i64> = seqs.collect();
    sorted.sort_unstable();
    let mut runs: Vec<(i64, i64)> = Vec::new();
    for seq in sorted {
        match runs.last_mut() {
            Some((_, high)) if high.checked_add(1) == Some(seq) => *high = seq,
            Some((_, high)) if *high == seq => {}
            _ => runs.push((seq, seq)),
        }
    }
    runs
}

/// Opens claiming sessions on the outbox table, while this relay holds the leadership.
pub struct PollConnector {
    outbox: Arc<Outbox>,
    status: Status,
    shape: Option<Arc<Shape>>,
    wake: Arc<Notify>,
    listener: Option<tokio::task::JoinHandle<()>>,
    /// Held across sessions; a session's task holds the lock while it claims.
    leader: Arc<Mutex<Option<Leader>>>,
    /// The last batch number handed out: batches are numbered across sessions.
    batches: Arc<AtomicU64>,
}

impl PollConnector {
    /// The connector for `config`'s table; the pool connects on first use.
    pub async fn connect(config: &Config, status: &Status) -> Result<PollConnector, PollError> {
        let outbox = Outbox::connect(config.clone()).await?;
        Ok(PollConnector::on(Arc::new(outbox), status))
    }

    /// Returns once this relay holds the leadership: it checks the one it holds (a failed
    /// session may have been the lock connection's), else waits for it, standing by.
    async fn take_leadership(&self, leader: &mut Option<Leader>) -> Result<(), SourceError> {
        let outbox = &self.outbox;
        let ttl = outbox.poll().lease_ttl;
        let retry = &outbox.config.retry;
        let mut backoff = Backoff::new(retry.initial_backoff, retry.max_backoff);
        loop {
            if let Some(lead) = leader.as_ref() {
                if matches!(lead.holds(&outbox.db, &outbox.table, ttl).await, Ok(true)) {
                    return Ok(());
                }
                tracing::warn!("lost the leadership; standing by");
                if let Some(lost) = leader.take() {
                    lost.release(&outbox.db, &outbox.table).await;
                }
            }
            match Leader::try_acquire(&outbox.db, &outbox.table, &outbox.holder, ttl).await {
                Ok(Some(taken)) => {
                    tracing::info!(table = %outbox.table.key(), "leading: this relay ships the outbox");
                    *leader = Some(taken);
                    return Ok(());
                }
                Ok(None) => {
                    if self.status.snapshot().state != State::Standby {
                        tracing::info!(table = %outbox.table.key(), "standing by: another relay leads the outbox table");
                    }
                    self.status.set_state(State::Standby);
                    tokio::time::sleep(outbox.poll().standby_interval).await;
                }
                Err(error) if error.is_transient() => {
                    tracing::warn!(%error, "taking the leadership failed; retrying");
                    tokio::time::sleep(backoff.wait()).await;
                }
                Err(error) => return Err(SourceError::fatal(error)),
            }
        }
    }

    pub(crate) fn on(outbox: Arc<Outbox>, status: &Status) -> PollConnector {
        PollConnector {
            outbox,
            status: status.clone(),
            shape: None,
            wake: Arc::new(Notify::new()),
            listener: None,
            leader: Arc::new(Mutex::new(None)),
            batches: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Connector for PollConnector {
    type Source = PollSession;

    fn name(&self) -> &'static str {
        "poll"
    }

    async fn preflight(&mut self) -> Result<(), SourceError> {
        let shape = match self.outbox.shape().await {
            Ok(shape) => shape,
            // A login or database the server refuses is a mistake; an unreachable one is waited for.
            Err(error) if error.is_transient_at_start() => {
                return Err(SourceError::transient(error));
            }
            Err(error) => return Err(SourceError::fatal(error)),
        };
        tracing::info!(table = %self.outbox.table.key(), columns = ?shape.columns.iter().map(|c| &*c.name).collect::<Vec<_>>(), sequence = %shape.sequence, "outbox table checked");
        self.shape = Some(Arc::new(shape));
        if self.listener.is_none()
            && let Some(channel) = self.outbox.channel()
        {
            self.outbox.check_notify_trigger().await;
            self.listener = Some(tokio::spawn(listen(
                self.outbox.db.get_postgres_connection_pool().clone(),
                channel.to_owned(),
                self.wake.clone(),
                self.outbox.config.retry.max_backoff,
            )));
        }
        Ok(())
    }

    /// `resume`: the last batch acknowledged in this process, or the one stored in Kafka (the
    /// exactly-once mode); its rows still pending are settled without shipping them again.
    ///
    /// The poll source has no durable position of its own (no `durable_position`, so no gap
    /// check): the table is its position. A pending row is unshipped unless the stored batch
    /// names it; rows settled by an at-least-once run were acknowledged by Kafka first, so none
    /// is missing. A stored batch past the lowest pending sequence value is normal (a row
    /// whose writer committed late, or a crash before the settle), not a gap.
    async fn open(&mut self, resume: Option<Batch>) -> Result<PollSession, SourceError> {
        let Some(shape) = self.shape.clone() else {
            return Err(SourceError::fatal(PollError::Ended));
        };
        let mut leader = self.leader.clone().lock_owned().await;
        self.take_leadership(&mut leader).await?;
        Ok(PollSession::start(
            self.outbox.clone(),
            shape,
            leader,
            self.wake.clone(),
            self.batches.clone(),
            resume,
        ))
    }

    /// Takes the leadership, or keeps it; a standby waits here.
    async fn lead(&mut self) -> Result<(), SourceError> {
        let leader = self.leader.clone();
        let mut leader = leader.lock().await;
        self.take_leadership(&mut leader).await
    }

    async fn finish(&mut self) {
        if let Some(listener) = self.listener.take() {
            listener.abort();
        }
        if let Some(lead) = self.leader.lock().await.take() {
            lead.release(&self.outbox.db, &self.outbox.table).await;
        }
    }
}

/// Runs `statement`; one without values may hold several statements (MariaDB's delete).
async fn execute<C: ConnectionTrait>(conn: &C, statement: sea_orm::Statement) -> Result<(), DbErr> {
    match statement.values {
        Some(_) => conn.execute_raw(statement).await.map(drop),
        None => conn.execute_unprepared(&statement.sql).await.map(drop),
    }
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

/// The `outbox-relay` subcommands for the poll source besides `run` and `status`: `setup`,
/// `teardown`.
pub async fn command(config: Config, command: &str) -> Result<(), PollError> {
    let outbox = Outbox::connect(config).await?;
    let table = &outbox.table;
    match command {
        "setup" => {
            outbox.setup().await?;
            println!(
                "outbox table {} is ready for polling (ordered by `{}`)",
                table.qualified(),
                if table.backend == DbBackend::Sqlite {
                    "rowid"
                } else {
                    SEQUENCE
                }
            );
        }
        // The sequence, its index and the trigger belong to the table and go with it.
        _ => println!(
            "nothing to tear down for the poll source: the sequence, index and trigger of {} go with the table",
            table.qualified()
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Settle;

    /// Each run of consecutive values is deleted as a range that stops one short of its end
    /// (the index entry the range reads last is then the batch's own row, never a writer's),
    /// and the ends go by id; a run of one value is its end.
    #[test]
    fn a_sequence_settle_stops_each_range_one_short_and_names_the_ends_by_id() {
        let rows = [(7, "g"), (3, "c"), (4, "d"), (5, "e"), (9, "i"), (8, "h")];
        let Settle::Sequences { below_ends, ends } = Settle::by_sequence(rows.into_iter()) else {
            panic!("not a sequence settle");
        };
        // Runs 3..=5 and 7..=9.
        assert_eq!(below_ends, vec![(3, 4), (7, 8)]);
        assert_eq!(ends, vec!["e", "i"]);

        let Settle::Sequences { below_ends, ends } =
            Settle::by_sequence([(1, "a"), (3, "c"), (4, "d")].into_iter())
        else {
            panic!("not a sequence settle");
        };
        assert_eq!(below_ends, vec![(3, 3)]);
        assert_eq!(ends, vec!["a", "d"]);
    }
}
