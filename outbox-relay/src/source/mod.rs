//! Sources: where committed outbox events are read, in commit order.
//!
//! A source yields [`SourceEvent`]s: each transaction as `Begin`, its events, `Commit`, and
//! keepalives between transactions. Positions are PostgreSQL LSNs; the relay acknowledges a
//! transaction's commit LSN only after Kafka acknowledged all of its events.

pub mod binlog;
pub mod pgoutput;
pub mod poll;
pub mod wal;

pub use wal::WalSource;

/// One column value of an outbox row. Text columns arrive as text (PostgreSQL's text form, so a
/// `jsonb` payload is its text as stored); binary columns (`bytea`, `blob`) arrive as their bytes,
/// so an Avro or Protobuf payload is shipped byte for byte, as Debezium ships it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnValue {
    Text(String),
    Bytes(Vec<u8>),
}

impl ColumnValue {
    /// The value's bytes, as shipped in a Kafka key, value or header.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            ColumnValue::Text(text) => text.as_bytes(),
            ColumnValue::Bytes(bytes) => bytes,
        }
    }
}

impl From<String> for ColumnValue {
    fn from(text: String) -> Self {
        ColumnValue::Text(text)
    }
}

/// One outbox event as read from a source: the outbox columns by name, in table order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRecord {
    /// Where the row or message sits in the WAL (0 for sources without a log position).
    pub lsn: u64,
    /// Column name and value (None = NULL), in table order.
    pub columns: Vec<(String, Option<ColumnValue>)>,
}

impl OutboxRecord {
    /// The text value of `column`; None when NULL, absent, or binary.
    pub fn get(&self, column: &str) -> Option<&str> {
        match self.value(column)? {
            ColumnValue::Text(text) => Some(text),
            ColumnValue::Bytes(_) => None,
        }
    }

    /// The bytes of `column`, text or binary; None when NULL or absent.
    pub fn get_bytes(&self, column: &str) -> Option<&[u8]> {
        self.value(column).map(ColumnValue::as_bytes)
    }

    fn value(&self, column: &str) -> Option<&ColumnValue> {
        self.columns
            .iter()
            .find(|(name, _)| name == column)
            .and_then(|(_, v)| v.as_ref())
    }

    /// The record of a logical message written by `outbox_core`'s `LogicalMessage` mode.
    pub fn from_event(lsn: u64, event: &outbox_core::OutboxEvent) -> OutboxRecord {
        let columns: Vec<(String, Option<String>)> = vec![
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
        let columns = columns
            .into_iter()
            .map(|(name, value)| (name, value.map(ColumnValue::Text)))
            .collect();
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
    /// A message with the outbox prefix that is not an outbox event, or a row that cannot be
    /// attributed to a table: it goes to the dead-letter topic, as it is, so nothing is dropped
    /// silently.
    Undecodable {
        lsn: u64,
        content: Vec<u8>,
        reason: String,
    },
    /// An outbox row with a value that cannot be read (text that is not UTF-8): it goes to the
    /// dead-letter topic with the reason, that value as its raw bytes, and the stream goes on.
    Unreadable {
        record: OutboxRecord,
        reason: String,
    },
    /// The transaction ends; acknowledging `end_lsn` tells PostgreSQL it may drop its WAL.
    Commit { end_lsn: u64 },
    /// The server's WAL end, between transactions: with nothing pending, acknowledging it keeps
    /// an idle outbox from holding WAL.
    KeepAlive { wal_end: u64 },
}

/// Whether a PostgreSQL error is a mistake that no retry can fix, by its SQLSTATE: refused
/// credentials (class 28), a missing database (3D000) or schema (3F000), a missing or forbidden
/// object such as a table, slot or publication (class 42), an unsupported feature (class 0A), or
/// a server not set up for it (55000: `wal_level` is not `logical`, an invalidated slot). Every
/// other code, a busy slot (55006) and a restarting server (class 57) among them, may pass.
pub fn sqlstate_is_permanent(code: &str) -> bool {
    matches!(code.get(..2), Some("28" | "42" | "0A")) || matches!(code, "3D000" | "3F000" | "55000")
}

/// Whether a failed catalog query may pass on a retry: a network fault, a busy pool or a server
/// error whose SQLSTATE is not [`sqlstate_is_permanent`].
pub fn sqlx_error_is_transient(error: &sea_orm::sqlx::Error) -> bool {
    use sea_orm::sqlx::Error;
    match error {
        Error::Database(e) => e.code().is_none_or(|code| !sqlstate_is_permanent(&code)),
        // A certificate the configured CA does not vouch for (rustls reports it as invalid
        // data) is refused for good; a connection cut or refused by the network is not.
        Error::Io(e) => {
            !(e.kind() == std::io::ErrorKind::InvalidData && e.to_string().contains("certificate"))
        }
        Error::PoolTimedOut | Error::PoolClosed | Error::WorkerCrashed | Error::Protocol(_) => true,
        _ => false,
    }
}

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
pub const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;
