//! The outbox record: one event as a source read it, before the sink turns it into a Kafka
//! message. Neither a source nor the sink owns it; both speak it.

/// Where an event was read, as its dead letter's header says: `dlq.source.lsn` (a WAL position,
/// `X/Y`), `dlq.source.binlog` (a binlog file and offset, or GTID), `dlq.source.table` (a polled
/// table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub header: &'static str,
    pub value: String,
}

/// One column value of an outbox row. Text columns arrive as text (PostgreSQL's text form, so a
/// `jsonb` payload is its text as stored); binary columns (`bytea`, `blob`) arrive as their bytes,
/// so an Avro or Protobuf payload is shipped byte for byte, as Debezium ships it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnValue {
    Text(String),
    Bytes(Vec<u8>),
    /// A value that Kafka Connect does not hold as a string under Debezium (a number, a
    /// boolean, a date or timestamp as a number, a decimal): `text` is its form in a key or a
    /// header, `json` its form in a JSON value (see [`crate::format::postgres_value`]).
    Typed {
        text: String,
        json: String,
    },
}

impl ColumnValue {
    /// The value's bytes, as shipped in a Kafka key, value or header.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            ColumnValue::Text(text) | ColumnValue::Typed { text, .. } => text.as_bytes(),
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
    /// Where the row or message was read.
    pub origin: Origin,
    /// Column name and value (None = NULL), in table order.
    pub columns: Vec<(String, Option<ColumnValue>)>,
}

impl OutboxRecord {
    /// The text value of `column`; None when NULL, absent, or binary.
    pub fn get(&self, column: &str) -> Option<&str> {
        match self.value(column)? {
            ColumnValue::Text(text) | ColumnValue::Typed { text, .. } => Some(text),
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
    pub fn from_event(origin: Origin, event: &outbox_core::OutboxEvent) -> OutboxRecord {
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
        OutboxRecord { origin, columns }
    }
}
