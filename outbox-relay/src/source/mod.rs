//! Sources: where committed outbox events are read, in commit order.
//!
//! A source yields [`SourceEvent`]s: each transaction as `Begin`, its events, `Commit`, and
//! keepalives between transactions. Positions are PostgreSQL LSNs; the relay acknowledges a
//! transaction's commit LSN only after Kafka acknowledged all of its events.

pub mod pgoutput;
pub mod poll;
pub mod wal;

pub use wal::WalSource;

/// One outbox event as read from the log: the outbox columns by name, values in PostgreSQL's
/// text form (so `payload` is the jsonb text as stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRecord {
    /// Where the row or message sits in the WAL.
    pub lsn: u64,
    /// Column name and text value (None = NULL), in table order.
    pub columns: Vec<(String, Option<String>)>,
}

impl OutboxRecord {
    /// The text value of `column`; None when NULL or absent.
    pub fn get(&self, column: &str) -> Option<&str> {
        self.columns
            .iter()
            .find(|(name, _)| name == column)
            .and_then(|(_, v)| v.as_deref())
    }

    /// The record of a logical message written by `outbox_core`'s `LogicalMessage` mode.
    pub fn from_event(lsn: u64, event: &outbox_core::OutboxEvent) -> OutboxRecord {
        let columns = vec![
            ("id".to_owned(), Some(event.id.to_string())),
            (
                "aggregatetype".to_owned(),
                Some(event.aggregate_type.clone()),
            ),
            ("aggregateid".to_owned(), Some(event.aggregate_id.clone())),
            ("type".to_owned(), Some(event.event_type.clone())),
            (
                "schemaversion".to_owned(),
                event.schema_version.map(|v| v.to_string()),
            ),
            (
                "payload".to_owned(),
                (!event.payload.is_null()).then(|| event.payload.to_string()),
            ),
            ("timestamp".to_owned(), Some(event.timestamp.to_rfc3339())),
            (
                "tracingspancontext".to_owned(),
                event.tracing_span_context.clone(),
            ),
        ];
        OutboxRecord { lsn, columns }
    }
}

/// What a source yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceEvent {
    /// A transaction starts; its events follow, then `Commit`.
    Begin {
        /// Commit time, microseconds since 2000-01-01 (PostgreSQL epoch).
        commit_time_micros: i64,
    },
    /// One outbox event of the current transaction.
    Event(OutboxRecord),
    /// A message with the outbox prefix that is not an outbox event: it goes to the dead-letter
    /// topic, as it is, so nothing is dropped silently.
    Undecodable {
        lsn: u64,
        content: Vec<u8>,
        reason: String,
    },
    /// The transaction ends; acknowledging `end_lsn` tells PostgreSQL it may drop its WAL.
    Commit { end_lsn: u64 },
    /// The server's WAL end, between transactions: with nothing pending, acknowledging it keeps
    /// an idle outbox from holding WAL.
    KeepAlive { wal_end: u64 },
}

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
pub const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;
