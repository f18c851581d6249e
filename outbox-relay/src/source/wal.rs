//! The PostgreSQL log-tailing source: a logical replication session (pgoutput, protocol 1, with
//! `messages 'true'`) on a named slot and publication.
//!
//! Transport: [`pgwire_replication`]. Of the two maintained crates evaluated:
//! - `pgwire-replication` 0.5 streams pgoutput with messages on, hands us `Begin`/`Commit`/
//!   `Message` parsed and row changes raw, and lets *us* say which LSN is flushed
//!   (`update_applied_lsn`, monotonic, sent within `status_interval` also on an idle stream, and
//!   `start_lsn` to resume from our own acknowledged position). Its keepalive handling keeps
//!   feedback flowing while we apply backpressure. It builds from pure Rust with SCRAM and no TLS
//!   backend, a few small crates.
//! - `pg_walstream` 0.10 decodes every row itself and has `SharedLsnFeedback` for the same
//!   acknowledgement, but its default backend builds `aws-lc-rs` (cmake and a large C build) and
//!   the alternative links system libpq; on a 2-core builder that cost is not worth a decoder
//!   for the two messages we need.
//!
//! So the transport is `pgwire-replication`, and [`super::pgoutput`] decodes `Relation` and
//! `Insert` (fuzzed with proptest). Contract: transactions arrive whole and in commit order
//! (protocol 1 never streams in-progress transactions); for the `message` kind, only messages
//! with the configured prefix, decoded as `outbox_core::OutboxEvent`; for the `wal` kind, only
//! INSERTs into the outbox table become events, every UPDATE/DELETE is ignored, and every
//! INSERT is attributed before it is passed over:
//! - the outbox is the relation the preflight resolved ([`OutboxRelation`]): by OID, by schema
//!   and name (the publication publishes a partitioned outbox via its root), or as one of its
//!   partitions;
//! - a relation the catalog shows to be another table is skipped without reading its values;
//! - a relation nobody can attribute any more (dropped since) is dead-lettered with the reason,
//!   never confirmed past in silence.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use outbox_core::migration::quote;
use pgwire_replication::{PgWireError, ReplicationClient, ReplicationConfig, ReplicationEvent};
use sea_orm::DbBackend;
use sea_orm::sqlx::{self, PgPool};

pub mod lsn;

use super::pgoutput::{Change, DecodeError, Decoder, column_value};
use super::{
    Classified, ColumnValue, Connector, Fault, OutboxRecord, Source, SourceError, SourceEvent,
};
pub use crate::admin::OutboxRelation;
use crate::admin::{self, PreflightError};
use crate::config::{Config, SourceConfig, SourceKind};
use crate::connection::{sqlstate_is_permanent, sqlx_error_is_transient};
use crate::metrics::Metrics;
use crate::record::LogicalEvent;
use crate::slot::{SlotKeeper, SlotLost, SlotState};
pub use lsn::Lsn;

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// Replication messages that pgwire-replication's reader may queue ahead of the relay. The
/// socket's receive buffer, and the walsender behind it, already hold what the relay has not
/// read yet, so a deep queue only holds the same bytes once more on the heap while the session
/// waits for Kafka. 1,024 against the crate's 8,192: peak RSS of a 1M-event drain 24.2–26.0 MB
/// against 26.5–31.3 (four drains each), throughput equal within the noise (BENCHMARKS.md,
/// round 2, part 6).
const REPLICATION_BUFFER: usize = 1024;

/// Why the source stopped.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// The configuration cannot work; retrying will not help.
    #[error("`{key}`: {message}")]
    Config { key: &'static str, message: String },
    /// The replication session failed (network, server, slot busy, ...).
    #[error("replication: {0}")]
    Replication(#[from] PgWireError),
    /// The server sent something we cannot decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// Reading the catalog, to attribute a relation, failed.
    #[error("reading the catalog: {0}")]
    Catalog(#[from] sqlx::Error),
    /// The outbox table, as the server streams it, cannot be relayed; retrying will not help.
    #[error("{0}")]
    Outbox(String),
    /// The server cannot send a published row in UTF-8, the replication connection's encoding
    /// (SQLSTATE 22021 or 22P05): text in a `SQL_ASCII` database that is not UTF-8, or a
    /// character UTF-8 lacks. The server refuses the row itself, so it cannot be dead-lettered,
    /// and a retry meets it again.
    #[error(
        "replication: {source}: the server cannot send a row of publication `{publication}` as \
         UTF-8 (is the database's encoding SQL_ASCII, with text that is not UTF-8?). No retry \
         reads past it: the relay stopped before that transaction. Re-send its events by hand, \
         then move the slot past it with `SELECT pg_replication_slot_advance('{slot}', '<LSN of \
         its COMMIT>')`, and keep such text out of published tables"
    )]
    NotUtf8 {
        source: PgWireError,
        publication: String,
        slot: String,
    },
    /// The server ended the stream.
    #[error("the replication stream ended")]
    Ended,
}

impl Classified for WalError {
    fn fault(&self) -> Fault {
        Fault::retry_if(self.is_transient())
    }
}

impl WalError {
    /// Whether reconnecting may help. Sorted by the server's SQLSTATE where there is one (see
    /// [`sqlstate_is_permanent`]): a missing slot or publication, refused credentials or a
    /// privilege will not fix themselves; a busy slot, a restarting server or a broken
    /// connection will.
    pub fn is_transient(&self) -> bool {
        match self {
            WalError::Config { .. } | WalError::Outbox(_) | WalError::NotUtf8 { .. } => false,
            WalError::Replication(e) => match e {
                PgWireError::Server(_) => {
                    replication_sqlstate(e).is_none_or(|code| !sqlstate_is_permanent(code))
                }
                PgWireError::Auth(_) | PgWireError::MessageTooLarge { .. } => false,
                // A certificate or mode mismatch is for good; a handshake cut by the network
                // is not.
                PgWireError::Tls(_) => !crate::connection::is_tls_refusal(e),
                _ => true,
            },
            WalError::Catalog(e) => sqlx_error_is_transient(e),
            WalError::Decode(_) | WalError::Ended => true,
        }
    }
}

/// The SQLSTATE of a server error on the replication connection. `pgwire-replication` reports
/// server errors as text, `<message> (SQLSTATE <code>)`; this reads the code back.
fn replication_sqlstate(error: &PgWireError) -> Option<&str> {
    let PgWireError::Server(text) = error else {
        return None;
    };
    let code = text.rsplit_once("(SQLSTATE ")?.1.strip_suffix(')')?;
    (code.len() == 5 && code.bytes().all(|b| b.is_ascii_alphanumeric())).then_some(code)
}

/// What the rows of one relation are to the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Attribution {
    /// Outbox events.
    Outbox,
    /// Rows of another table of the publication: skipped unread.
    Other,
    /// Rows of a relation that cannot be told apart from the outbox: dead-lettered with this
    /// reason.
    Unattributable(String),
}

pub use crate::connection::PgTarget;

/// A live replication session that yields outbox events in commit order.
pub struct WalStream {
    client: ReplicationClient,
    kind: SourceKind,
    prefix: String,
    decoder: Decoder,
    /// The outbox (the `wal` kind) and the catalog connection that attributes other relations.
    outbox: Option<OutboxRelation>,
    catalog: PgPool,
    publication: String,
    slot: String,
    /// What each announced relation is; forgotten when the server describes it again.
    attribution: HashMap<u32, Attribution>,
    /// The event being handled. It leaves only once handled, so a `next` cancelled while it
    /// waits on the catalog finds it again.
    pending: Option<ReplicationEvent>,
    /// Events already decoded and not yet yielded: the rest of a non-transactional message's
    /// own transaction.
    queued: VecDeque<SourceEvent<Lsn>>,
    /// Between a `Begin` and its `Commit`.
    in_transaction: bool,
    wal_end: u64,
}

/// A session of the `wal` or `message` source: the stream, and the keeper that watches its slot.
pub struct WalSource {
    stream: WalStream,
    /// Heartbeats and slot checks for this session; it reports the slot's loss.
    keeper: Option<SlotKeeper>,
    /// The last position acknowledged, shared with the connector (which confirms it at the end).
    acknowledged: Arc<AtomicU64>,
    metrics: Metrics,
}

impl WalStream {
    /// Starts streaming from `start_lsn` (the relay's acknowledged position; 0 = the slot's).
    /// `outbox` is the preflight's resolution of the table (None for the `message` kind).
    pub async fn connect(
        target: &PgTarget,
        config: &SourceConfig,
        start_lsn: u64,
        outbox: Option<OutboxRelation>,
        catalog: PgPool,
    ) -> Result<WalStream, WalError> {
        // pgoutput parses `publication_names` as a list of SQL identifiers, which folds an
        // unquoted name to lower case: the name is passed quoted, as `setup` created it.
        let quoted_publication = quote(DbBackend::Postgres, &config.publication);
        let repl = ReplicationConfig::new(
            target.host.clone(),
            target.user.clone(),
            target.password.clone(),
            target.database.clone(),
            config.slot.clone(),
            quoted_publication,
        )
        .with_port(target.port)
        .with_tls(target.replication_tls())
        .with_start_lsn(pgwire_replication::Lsn::from_u64(start_lsn))
        .with_status_interval(config.status_interval)
        .with_wakeup_interval(Duration::from_secs(5))
        .with_buffer_size(REPLICATION_BUFFER)
        .with_application_name(format!("outbox-relay {}", config.slot));
        let mut client = ReplicationClient::connect(repl).await?;
        client.wait_started().await?;
        Ok(WalStream {
            client,
            kind: config.kind,
            prefix: config.message_prefix.clone(),
            decoder: Decoder::default(),
            outbox,
            catalog,
            publication: config.publication.clone(),
            slot: config.slot.clone(),
            attribution: HashMap::new(),
            pending: None,
            queued: VecDeque::new(),
            in_transaction: false,
            wal_end: start_lsn,
        })
    }

    /// The next event. Cancel-safe: an event received is kept until it is handled.
    async fn next_event(&mut self) -> Result<SourceEvent<Lsn>, WalError> {
        if let Some(event) = self.queued.pop_front() {
            return Ok(event);
        }
        loop {
            let event =
                match &self.pending {
                    Some(event) => event.clone(),
                    None => {
                        let received = self.client.recv().await.map_err(|e| {
                            match replication_sqlstate(&e) {
                                Some("22021" | "22P05") => WalError::NotUtf8 {
                                    source: e,
                                    publication: self.publication.clone(),
                                    slot: self.slot.clone(),
                                },
                                _ => e.into(),
                            }
                        })?;
                        let Some(event) = received else {
                            return Err(WalError::Ended);
                        };
                        self.pending = Some(event.clone());
                        event
                    }
                };
            let handled = self.handle(event).await;
            self.pending = None;
            if let Some(event) = handled? {
                return Ok(event);
            }
        }
    }

    async fn handle(
        &mut self,
        event: ReplicationEvent,
    ) -> Result<Option<SourceEvent<Lsn>>, WalError> {
        Ok(match event {
            ReplicationEvent::KeepAlive { wal_end, .. } => {
                self.wal_end = self.wal_end.max(wal_end.as_u64());
                (!self.in_transaction).then_some(SourceEvent::KeepAlive {
                    end: Lsn(self.wal_end),
                })
            }
            ReplicationEvent::Begin {
                commit_time_micros, ..
            } => {
                self.in_transaction = true;
                Some(SourceEvent::Begin {
                    committed_at_micros: commit_time_micros + PG_EPOCH_OFFSET_MICROS,
                })
            }
            ReplicationEvent::Commit { end_lsn, .. } => {
                self.in_transaction = false;
                self.wal_end = self.wal_end.max(end_lsn.as_u64());
                Some(SourceEvent::Commit {
                    end: Lsn(end_lsn.as_u64()),
                })
            }
            ReplicationEvent::XLogData {
                wal_start,
                wal_end,
                data,
                ..
            } => {
                self.wal_end = self.wal_end.max(wal_end.as_u64());
                self.on_change(wal_start.as_u64(), &data).await?
            }
            ReplicationEvent::Message {
                lsn,
                prefix,
                content,
                ..
            } => {
                if self.kind == SourceKind::Message && prefix == self.prefix {
                    let lsn = Lsn(lsn.as_u64());
                    let event = match serde_json::from_slice::<LogicalEvent<'_>>(&content) {
                        Ok(event) => {
                            SourceEvent::Event(OutboxRecord::from_event(lsn.origin(), event))
                        }
                        Err(e) => SourceEvent::Undecodable {
                            origin: lsn.origin(),
                            content: content.to_vec(),
                            reason: format!("not an outbox event: {e}"),
                        },
                    };
                    Some(self.in_own_transaction(event, lsn))
                } else {
                    None
                }
            }
            ReplicationEvent::StoppedAt { .. } => return Err(WalError::Ended),
        })
    }

    /// `event`, inside a transaction: a non-transactional message gets one of its own, which
    /// ends at its own position.
    fn in_own_transaction(&mut self, event: SourceEvent<Lsn>, lsn: Lsn) -> SourceEvent<Lsn> {
        if self.in_transaction {
            return event;
        }
        self.queued.push_back(event);
        self.queued.push_back(SourceEvent::Commit { end: lsn });
        SourceEvent::Begin {
            committed_at_micros: crate::position::now_micros(),
        }
    }

    async fn on_change(
        &mut self,
        lsn: u64,
        data: &[u8],
    ) -> Result<Option<SourceEvent<Lsn>>, WalError> {
        if self.kind != SourceKind::Wal {
            return Ok(None);
        }
        let (relation, tuple) = match self.decoder.decode(data)? {
            Change::Ignored => return Ok(None),
            Change::Relation(oid) => {
                // A (re)described relation may have been renamed or altered: decide again.
                self.attribution.remove(&oid);
                return Ok(None);
            }
            Change::Insert { relation, tuple } => (relation, tuple),
        };
        match self.attribute(relation).await? {
            Attribution::Other => Ok(None),
            Attribution::Outbox => Ok(Some(self.outbox_row(lsn, relation, tuple)?)),
            Attribution::Unattributable(reason) => {
                let content = self.row_as_json(relation, tuple);
                Ok(Some(SourceEvent::Undecodable {
                    origin: Lsn(lsn).origin(),
                    content,
                    reason,
                }))
            }
        }
    }

    /// What the rows of `oid` (announced by a Relation message) are to the outbox.
    async fn attribute(&mut self, oid: u32) -> Result<Attribution, WalError> {
        if let Some(known) = self.attribution.get(&oid) {
            return Ok(known.clone());
        }
        let (Some(outbox), Some(relation)) = (&self.outbox, self.decoder.relation(oid)) else {
            return Err(WalError::Outbox(
                "the `wal` source started without its outbox table".to_owned(),
            ));
        };
        let named_outbox = relation.schema == outbox.schema && relation.name == outbox.name;
        let shown = format!(
            "{}.{}",
            quote(DbBackend::Postgres, &relation.schema),
            quote(DbBackend::Postgres, &relation.name)
        );
        let of_outbox = if oid == outbox.oid || named_outbox || outbox.partitions.contains(&oid) {
            Some(true)
        } else {
            // Created or attached since the start, or dropped since the row was written. A
            // partition of the outbox (published under its own name) is the outbox, whatever
            // its OID or name.
            let row: Option<(bool,)> = sqlx::query_as(
                "SELECT EXISTS (SELECT 1 FROM pg_partition_ancestors(c.oid) a \
                 JOIN pg_class ac ON ac.oid = a.relid JOIN pg_namespace an ON an.oid = ac.relnamespace \
                 WHERE a.relid <> c.oid AND (a.relid = $2::oid OR (an.nspname = $3 AND ac.relname = $4))) \
                 FROM pg_class c WHERE c.oid = $1::oid",
            )
            .bind(i64::from(oid))
            .bind(i64::from(outbox.oid))
            .bind(&outbox.schema)
            .bind(&outbox.name)
            .fetch_optional(&self.catalog)
            .await?;
            row.map(|(of_outbox,)| of_outbox)
        };
        let attribution = match of_outbox {
            Some(true) => {
                let missing: Vec<&str> = outbox
                    .required
                    .iter()
                    .filter(|c| !relation.columns.iter().any(|col| *col.name == ***c))
                    .map(String::as_str)
                    .collect();
                if !missing.is_empty() {
                    return Err(WalError::Outbox(format!(
                        "the server streams the outbox table {shown} without the column(s) `{}`; \
                         if publication `{}`'s column list leaves them out, add them \
                         (ALTER PUBLICATION ... SET TABLE {} (...))",
                        missing.join("`, `"),
                        self.publication,
                        outbox.quoted()
                    )));
                }
                Attribution::Outbox
            }
            Some(false) => Attribution::Other,
            None => Attribution::Unattributable(format!(
                "an INSERT into {shown} (oid {oid}), a relation that no longer exists: it cannot \
                 be told apart from a partition of the outbox table {}, so it is dead-lettered \
                 rather than skipped",
                outbox.quoted()
            )),
        };
        self.attribution.insert(oid, attribution.clone());
        Ok(attribution)
    }

    /// The event of an outbox row; a row with a value that cannot be read (text that is not
    /// UTF-8) is [`SourceEvent::Unreadable`], with that value's raw bytes and the reason.
    fn outbox_row(
        &self,
        lsn: u64,
        relation: u32,
        tuple: &[u8],
    ) -> Result<SourceEvent<Lsn>, WalError> {
        let mut problem = None;
        let columns = self.decoder.row_with(relation, tuple, |column, raw| {
            let value = raw.map(|raw| {
                column_value(column, raw).unwrap_or_else(|p| {
                    problem.get_or_insert_with(|| format!("column `{}` {p}", column.name));
                    ColumnValue::Bytes(raw.to_vec())
                })
            });
            (std::sync::Arc::clone(&column.name), value)
        })?;
        let record = OutboxRecord {
            origin: Lsn(lsn).origin(),
            columns,
        };
        Ok(match problem {
            None => SourceEvent::Event(record),
            Some(problem) => {
                let id = record
                    .get_bytes("id")
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default()
                    .into_owned();
                SourceEvent::Unreadable {
                    reason: format!("outbox row with id `{id}` cannot be decoded: {problem}"),
                    record,
                }
            }
        })
    }

    /// A row of an unattributable relation, for its dead letter: its columns as a JSON object
    /// (text shown lossily), or nothing when the tuple itself is malformed.
    fn row_as_json(&self, relation: u32, tuple: &[u8]) -> Vec<u8> {
        let Ok(row) = self.decoder.row(relation, tuple) else {
            return Vec::new();
        };
        let object: serde_json::Map<String, serde_json::Value> = row
            .into_iter()
            .map(|(column, raw)| {
                let value = raw.map_or(serde_json::Value::Null, |raw| {
                    String::from_utf8_lossy(raw).into_owned().into()
                });
                (column.name.to_string(), value)
            })
            .collect();
        serde_json::to_vec(&object).unwrap_or_default()
    }
}

impl Source for WalSource {
    type Position = Lsn;

    async fn next(&mut self) -> Result<SourceEvent<Lsn>, SourceError> {
        let Some(keeper) = &mut self.keeper else {
            return Ok(self.stream.next_event().await?);
        };
        tokio::select! {
            biased;
            loss = &mut keeper.lost => match loss {
                Ok(loss) => Err(SourceError::fatal(SlotLost {
                    slot: self.stream.slot.clone(),
                    loss,
                    confirmed: self.acknowledged.load(Ordering::Relaxed),
                })),
                // The keeper ended without a finding (it only ends on one): stop watching it.
                Err(_) => {
                    self.keeper = None;
                    Ok(self.stream.next_event().await?)
                }
            },
            event = self.stream.next_event() => Ok(event?),
        }
    }

    fn acknowledge(&mut self, position: &Lsn) {
        self.stream
            .client
            .update_applied_lsn(pgwire_replication::Lsn::from_u64(position.0));
        self.acknowledged.fetch_max(position.0, Ordering::Relaxed);
        self.metrics.confirmed_lsn(position.0);
    }

    async fn close(mut self) {
        self.keeper = None;
        let _ = self.stream.client.shutdown().await;
    }

    fn lag_bytes(&self) -> Option<u64> {
        Some(
            self.stream
                .wal_end
                .saturating_sub(self.acknowledged.load(Ordering::Relaxed)),
        )
    }
}

/// Opens replication sessions on the slot: the `wal` and `message` sources.
pub struct WalConnector {
    config: Config,
    target: PgTarget,
    metrics: Metrics,
    /// What the preflight resolved: the catalog connection and the outbox table.
    preflight: Option<admin::Preflight>,
    /// The last position acknowledged in this process (0: none yet).
    acknowledged: Arc<AtomicU64>,
}

impl WalConnector {
    pub fn new(config: &Config, metrics: &Metrics) -> Result<WalConnector, WalError> {
        let target =
            PgTarget::parse(config.database_url.as_deref().unwrap_or_default()).map_err(|e| {
                WalError::Config {
                    key: "database_url",
                    message: e.0,
                }
            })?;
        Ok(WalConnector {
            config: config.clone(),
            target,
            metrics: metrics.clone(),
            preflight: None,
            acknowledged: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The slot's loss, if `pg_replication_slots` shows it dropped or invalidated.
    async fn slot_lost(&self, catalog: &PgPool) -> Option<SlotLost> {
        let slot = &self.config.source.slot;
        let state = crate::slot::read(catalog, slot).await.ok()?;
        SlotState::loss(state.as_ref()).map(|loss| SlotLost {
            slot: slot.clone(),
            loss,
            confirmed: self.acknowledged.load(Ordering::Relaxed),
        })
    }
}

impl Classified for PreflightError {
    fn fault(&self) -> Fault {
        Fault::retry_if(self.is_transient())
    }
}

impl Connector for WalConnector {
    type Source = WalSource;

    fn name(&self) -> &'static str {
        match self.config.source.kind {
            SourceKind::Message => "message",
            _ => "wal",
        }
    }

    async fn preflight(&mut self) -> Result<(), SourceError> {
        self.preflight = Some(admin::preflight(&self.config).await?);
        Ok(())
    }

    async fn open(&mut self, resume: Option<Lsn>) -> Result<WalSource, SourceError> {
        let Some(preflight) = self.preflight.clone() else {
            return Err(SourceError::fatal(WalError::Outbox(
                "the `wal` source was opened before its preflight".to_owned(),
            )));
        };
        // A slot found gone stops the relay with the remedy, rather than as a bare replication
        // error or a retry loop (the server ends the session of a slot it invalidates; a dropped
        // slot refuses the next one).
        if let Some(lost) = self.slot_lost(&preflight.catalog).await {
            return Err(SourceError::fatal(lost));
        }
        let start = resume.map_or(0, |lsn| lsn.0);
        let connected = WalStream::connect(
            &self.target,
            &self.config.source,
            start,
            preflight.outbox.clone(),
            preflight.catalog.clone(),
        )
        .await;
        let stream = match connected {
            Ok(stream) => stream,
            Err(error) => {
                return Err(match self.slot_lost(&preflight.catalog).await {
                    Some(lost) => SourceError::fatal(lost),
                    None => error.into(),
                });
            }
        };
        Ok(WalSource {
            stream,
            keeper: Some(SlotKeeper::start(
                &self.config.source,
                preflight.catalog.clone(),
                self.metrics.clone(),
            )),
            acknowledged: self.acknowledged.clone(),
            metrics: self.metrics.clone(),
        })
    }

    /// The slot's `confirmed_flush_lsn`.
    async fn durable_position(&mut self) -> Result<Option<Lsn>, SourceError> {
        let Some(preflight) = &self.preflight else {
            return Ok(None);
        };
        let row: Option<(Option<String>,)> = sqlx::query_as(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
        )
        .bind(&self.config.source.slot)
        .fetch_optional(&preflight.catalog)
        .await
        .map_err(SourceError::transient)?;
        Ok(row.and_then(|(lsn,)| lsn).and_then(|lsn| Lsn::parse(&lsn)))
    }

    /// Makes sure the slot confirmed the last acknowledged position: the last standby status
    /// before a stop may not have reached the server.
    async fn finish(&mut self) {
        let confirmed = self.acknowledged.load(Ordering::Relaxed);
        if confirmed == 0 {
            return;
        }
        let confirm = admin::confirm_slot(&self.config, confirmed);
        match tokio::time::timeout(Duration::from_secs(10), confirm).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "confirming the slot's position at stop"),
            Err(_) => tracing::warn!("confirming the slot's position at stop timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replication_errors_are_sorted_by_sqlstate() {
        let server = |text: &str| WalError::Replication(PgWireError::Server(text.to_owned()));
        let missing = server("replication slot \"s\" does not exist (SQLSTATE 42704)");
        assert_eq!(
            replication_sqlstate(&PgWireError::Server("x (SQLSTATE 55006)".into())),
            Some("55006")
        );
        assert!(!missing.is_transient());
        assert!(
            !server("password authentication failed for user \"u\" (SQLSTATE 28P01)")
                .is_transient()
        );
        assert!(
            server("replication slot \"s\" is active for PID 7 (SQLSTATE 55006)").is_transient()
        );
        assert!(
            server("terminating connection due to administrator command (SQLSTATE 57P01)")
                .is_transient()
        );
        assert!(server("no code here").is_transient());
        assert!(
            WalError::Replication(PgWireError::Io(std::sync::Arc::new(std::io::Error::from(
                std::io::ErrorKind::ConnectionRefused
            ))))
            .is_transient()
        );
    }
}
