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

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use outbox_core::migration::quote;
use pgwire_replication::{
    Lsn, PgWireError, ReplicationClient, ReplicationConfig, ReplicationEvent,
};
use sea_orm::DbBackend;
use sea_orm::sqlx::{self, PgPool};

use super::pgoutput::{Change, DecodeError, Decoder, column_value};
use super::{
    ColumnValue, OutboxRecord, SourceEvent, sqlstate_is_permanent, sqlx_error_is_transient,
};
use crate::config::{SourceConfig, SourceKind};

/// Why the source stopped.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
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

impl SourceError {
    /// Whether reconnecting may help. Sorted by the server's SQLSTATE where there is one (see
    /// [`sqlstate_is_permanent`]): a missing slot or publication, refused credentials or a
    /// privilege will not fix themselves; a busy slot, a restarting server or a broken
    /// connection will.
    pub fn is_transient(&self) -> bool {
        match self {
            SourceError::Config { .. } | SourceError::Outbox(_) | SourceError::NotUtf8 { .. } => {
                false
            }
            SourceError::Replication(e) => match e {
                PgWireError::Server(_) => {
                    replication_sqlstate(e).is_none_or(|code| !sqlstate_is_permanent(code))
                }
                PgWireError::Auth(_) | PgWireError::MessageTooLarge { .. } => false,
                // A certificate or mode mismatch is for good; a handshake cut by the network
                // is not.
                PgWireError::Tls(_) => !crate::connection::is_tls_refusal(e),
                _ => true,
            },
            SourceError::Catalog(e) => sqlx_error_is_transient(e),
            SourceError::Decode(_) | SourceError::Ended => true,
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

/// The outbox table as the catalog names it, resolved at start by [`crate::admin::preflight`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRelation {
    pub schema: String,
    pub name: String,
    pub oid: u32,
    /// Every partition under it, at any level (empty for a plain table).
    pub partitions: HashSet<u32>,
    /// Columns the relay reads from every row; a Relation without them cannot be relayed.
    pub required: Vec<String>,
}

impl OutboxRelation {
    /// `"schema"."name"`, as SQL and messages show it.
    pub fn quoted(&self) -> String {
        format!(
            "{}.{}",
            quote(DbBackend::Postgres, &self.schema),
            quote(DbBackend::Postgres, &self.name)
        )
    }
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
pub struct WalSource {
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
    wal_end: u64,
}

impl WalSource {
    /// Starts streaming from `start_lsn` (the relay's acknowledged position; 0 = the slot's).
    /// `outbox` is the preflight's resolution of the table (None for the `message` kind).
    pub async fn connect(
        target: &PgTarget,
        config: &SourceConfig,
        start_lsn: u64,
        outbox: Option<OutboxRelation>,
        catalog: PgPool,
    ) -> Result<WalSource, SourceError> {
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
        .with_start_lsn(Lsn::from_u64(start_lsn))
        .with_status_interval(config.status_interval)
        .with_wakeup_interval(Duration::from_secs(5))
        .with_buffer_size(8192)
        .with_application_name(format!("outbox-relay {}", config.slot));
        let mut client = ReplicationClient::connect(repl).await?;
        client.wait_started().await?;
        Ok(WalSource {
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
            wal_end: start_lsn,
        })
    }

    /// The server's WAL end as last reported.
    pub fn wal_end(&self) -> u64 {
        self.wal_end
    }

    /// Tells the server that everything up to `lsn` is safely in Kafka.
    pub fn acknowledge(&self, lsn: u64) {
        self.client.update_applied_lsn(Lsn::from_u64(lsn));
    }

    /// Ends the session, sending CopyDone.
    pub async fn close(mut self) {
        let _ = self.client.shutdown().await;
    }

    /// The next event. Cancel-safe: an event received is kept until it is handled.
    pub async fn next(&mut self) -> Result<SourceEvent, SourceError> {
        loop {
            let event =
                match &self.pending {
                    Some(event) => event.clone(),
                    None => {
                        let received = self.client.recv().await.map_err(|e| {
                            match replication_sqlstate(&e) {
                                Some("22021" | "22P05") => SourceError::NotUtf8 {
                                    source: e,
                                    publication: self.publication.clone(),
                                    slot: self.slot.clone(),
                                },
                                _ => e.into(),
                            }
                        })?;
                        let Some(event) = received else {
                            return Err(SourceError::Ended);
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
    ) -> Result<Option<SourceEvent>, SourceError> {
        Ok(match event {
            ReplicationEvent::KeepAlive { wal_end, .. } => {
                self.wal_end = self.wal_end.max(wal_end.as_u64());
                Some(SourceEvent::KeepAlive {
                    wal_end: self.wal_end,
                })
            }
            ReplicationEvent::Begin {
                commit_time_micros, ..
            } => Some(SourceEvent::Begin { commit_time_micros }),
            ReplicationEvent::Commit { end_lsn, .. } => {
                self.wal_end = self.wal_end.max(end_lsn.as_u64());
                Some(SourceEvent::Commit {
                    end_lsn: end_lsn.as_u64(),
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
                    let lsn = lsn.as_u64();
                    Some(
                        match serde_json::from_slice::<outbox_core::OutboxEvent>(&content) {
                            Ok(event) => SourceEvent::Event(OutboxRecord::from_event(lsn, &event)),
                            Err(e) => SourceEvent::Undecodable {
                                lsn,
                                content: content.to_vec(),
                                reason: format!("not an outbox event: {e}"),
                            },
                        },
                    )
                } else {
                    None
                }
            }
            ReplicationEvent::StoppedAt { .. } => return Err(SourceError::Ended),
        })
    }

    async fn on_change(
        &mut self,
        lsn: u64,
        data: &[u8],
    ) -> Result<Option<SourceEvent>, SourceError> {
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
                    lsn,
                    content,
                    reason,
                }))
            }
        }
    }

    /// What the rows of `oid` (announced by a Relation message) are to the outbox.
    async fn attribute(&mut self, oid: u32) -> Result<Attribution, SourceError> {
        if let Some(known) = self.attribution.get(&oid) {
            return Ok(known.clone());
        }
        let (Some(outbox), Some(relation)) = (&self.outbox, self.decoder.relation(oid)) else {
            return Err(SourceError::Outbox(
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
                    .filter(|c| !relation.columns.iter().any(|col| col.name == **c))
                    .map(String::as_str)
                    .collect();
                if !missing.is_empty() {
                    return Err(SourceError::Outbox(format!(
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
    ) -> Result<SourceEvent, SourceError> {
        let mut problem = None;
        let columns = self
            .decoder
            .row(relation, tuple)?
            .into_iter()
            .map(|(column, raw)| {
                let value = raw.map(|raw| {
                    column_value(column, raw).unwrap_or_else(|p| {
                        problem.get_or_insert_with(|| format!("column `{}` {p}", column.name));
                        ColumnValue::Bytes(raw.to_vec())
                    })
                });
                (column.name.clone(), value)
            })
            .collect();
        let record = OutboxRecord { lsn, columns };
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
                (column.name.clone(), value)
            })
            .collect();
        serde_json::to_vec(&object).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replication_errors_are_sorted_by_sqlstate() {
        let server = |text: &str| SourceError::Replication(PgWireError::Server(text.to_owned()));
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
            SourceError::Replication(PgWireError::Io(std::sync::Arc::new(std::io::Error::from(
                std::io::ErrorKind::ConnectionRefused
            ))))
            .is_transient()
        );
    }
}
