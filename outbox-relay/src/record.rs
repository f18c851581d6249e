//! The outbox record: one event as a source read it, before the sink turns it into a Kafka
//! message. Neither a source nor the sink owns it; both speak it.
//!
//! A record is built once per event, so it allocates only its values: column names are shared
//! ([`ColumnName`]) with the source's description of the table, and the sink moves the values
//! into the Kafka message ([`OutboxRecord::take`]) rather than copying them.

use std::sync::{Arc, LazyLock};

/// A column's name, shared by every record of its table (the source's table description holds
/// it once).
pub type ColumnName = Arc<str>;

/// Where an event was read, as its dead letter's header says: `dlq.source.lsn` (a WAL position,
/// `X/Y`), `dlq.source.binlog` (a binlog file and offset, or GTID), `dlq.source.table` (a polled
/// table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub header: &'static str,
    pub value: OriginValue,
}

/// Where an event was read, kept as the source has it and printed only when it is shown (a
/// dead letter's header): a WAL position costs no text per event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginValue {
    Text(String),
    /// A WAL position, shown as PostgreSQL prints an LSN: `X/Y`.
    Wal(u64),
}

impl std::fmt::Display for OriginValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OriginValue::Text(text) => f.write_str(text),
            OriginValue::Wal(lsn) => write!(f, "{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF),
        }
    }
}

impl From<String> for OriginValue {
    fn from(text: String) -> Self {
        OriginValue::Text(text)
    }
}

impl From<&str> for OriginValue {
    fn from(text: &str) -> Self {
        OriginValue::Text(text.to_owned())
    }
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

    /// The value's bytes ([`ColumnValue::as_bytes`]), its buffer moved rather than copied.
    pub fn into_bytes(self) -> Vec<u8> {
        match self {
            ColumnValue::Text(text) | ColumnValue::Typed { text, .. } => text.into_bytes(),
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
    pub columns: Vec<(ColumnName, Option<ColumnValue>)>,
}

/// The columns of a logical message written by `outbox_core`'s `LogicalMessage` mode, in the
/// order of Debezium's outbox table, created once.
static EVENT_COLUMNS: LazyLock<[ColumnName; 8]> =
    LazyLock::new(|| outbox_core::migration::COLUMNS.map(Arc::from));

/// A logical message written by `outbox_core`'s `LogicalMessage` mode (an
/// [`outbox_core::OutboxEvent`] as JSON), read without copying what it can borrow: the payload
/// is kept as the JSON text the writer stored, not parsed into a document and printed again.
/// The id and the timestamp are parsed (and so checked) and printed as the relay always printed
/// them.
#[derive(Debug, serde::Deserialize)]
pub struct LogicalEvent<'a> {
    id: uuid::Uuid,
    #[serde(rename = "aggregatetype", borrow)]
    aggregate_type: std::borrow::Cow<'a, str>,
    #[serde(rename = "aggregateid", borrow)]
    aggregate_id: std::borrow::Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    event_type: std::borrow::Cow<'a, str>,
    #[serde(rename = "schemaversion", default)]
    schema_version: Option<i32>,
    #[serde(borrow)]
    payload: &'a serde_json::value::RawValue,
    timestamp: chrono::DateTime<chrono::Utc>,
    #[serde(rename = "tracingspancontext", default, borrow)]
    tracing_span_context: Option<std::borrow::Cow<'a, str>>,
}

impl OutboxRecord {
    /// The text value of `column`; None when NULL, absent, or binary.
    pub fn get(&self, column: &str) -> Option<&str> {
        match self.value_of(column)? {
            ColumnValue::Text(text) | ColumnValue::Typed { text, .. } => Some(text),
            ColumnValue::Bytes(_) => None,
        }
    }

    /// The bytes of `column`, text or binary; None when NULL or absent.
    pub fn get_bytes(&self, column: &str) -> Option<&[u8]> {
        self.value_of(column).map(ColumnValue::as_bytes)
    }

    /// The value of `column`; None when NULL or absent.
    pub fn value_of(&self, column: &str) -> Option<&ColumnValue> {
        self.columns
            .iter()
            .find(|(name, _)| **name == *column)
            .and_then(|(_, v)| v.as_ref())
    }

    /// The value of `column`, moved out of the record (None when NULL, absent, or taken).
    pub fn take(&mut self, column: &str) -> Option<ColumnValue> {
        self.columns
            .iter_mut()
            .find(|(name, _)| **name == *column)
            .and_then(|(_, v)| v.take())
    }

    /// The record of a logical message written by `outbox_core`'s `LogicalMessage` mode. A JSON
    /// `null` payload is a NULL payload column.
    pub fn from_event(origin: Origin, event: LogicalEvent<'_>) -> OutboxRecord {
        let text = |value: std::borrow::Cow<'_, str>| Some(ColumnValue::Text(value.into_owned()));
        let payload = event.payload.get();
        let values = [
            Some(ColumnValue::Text(event.id.to_string())),
            text(event.aggregate_type),
            text(event.aggregate_id),
            text(event.event_type),
            event
                .schema_version
                .map(|v| ColumnValue::Text(v.to_string())),
            (payload != "null").then(|| ColumnValue::Text(payload.to_owned())),
            Some(ColumnValue::Text(event.timestamp.to_rfc3339())),
            event.tracing_span_context.and_then(text),
        ];
        let columns = EVENT_COLUMNS.iter().cloned().zip(values).collect();
        OutboxRecord { origin, columns }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The record as the `message` source built it before it kept the payload's text: the
    /// whole event parsed into an [`outbox_core::OutboxEvent`], the payload printed again.
    fn reparsed(content: &[u8]) -> Vec<(String, Option<String>)> {
        let event: outbox_core::OutboxEvent =
            serde_json::from_slice(content).unwrap_or_else(|e| panic!("{e}"));
        vec![
            ("id".to_owned(), Some(event.id.to_string())),
            ("aggregatetype".to_owned(), Some(event.aggregate_type)),
            ("aggregateid".to_owned(), Some(event.aggregate_id)),
            ("type".to_owned(), Some(event.event_type)),
            (
                "schemaversion".to_owned(),
                event.schema_version.map(|v| v.to_string()),
            ),
            (
                "payload".to_owned(),
                (!event.payload.is_null()).then(|| event.payload.to_string()),
            ),
            ("timestamp".to_owned(), Some(event.timestamp.to_rfc3339())),
            ("tracingspancontext".to_owned(), event.tracing_span_context),
        ]
    }

    fn read(content: &[u8]) -> Vec<(String, Option<String>)> {
        let event: LogicalEvent<'_> =
            serde_json::from_slice(content).unwrap_or_else(|e| panic!("{e}"));
        let origin = Origin {
            header: "dlq.source.lsn",
            value: "0/1".into(),
        };
        OutboxRecord::from_event(origin, event)
            .columns
            .into_iter()
            .map(|(name, value)| {
                let text = value.map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
                (name.to_string(), text)
            })
            .collect()
    }

    /// What `outbox_core` writes (`serde_json` of an `OutboxEvent`) is shipped byte for byte as
    /// before, when the payload was parsed and printed again.
    #[test]
    fn logical_messages_of_outbox_core_read_as_before() {
        let payloads = [
            serde_json::json!({"total": 3, "lines": [{"sku": "A-1", "qty": 2.5}], "z": null}),
            serde_json::json!({"text": "é \u{1} \"quoted\" \\ \n tab\t", "big": 18446744073709551615u64}),
            serde_json::json!([1, -2, 1.0e-7, 1.5e300, true]),
            serde_json::json!("just a string"),
            serde_json::json!(42),
            serde_json::Value::Null,
        ];
        for (n, payload) in payloads.into_iter().enumerate() {
            let mut event = outbox_core::OutboxEvent::new("Order", "42", "Placed", None, payload);
            if n % 2 == 0 {
                event.schema_version = Some(3);
                event.tracing_span_context =
                    Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned());
            }
            event.aggregate_id = format!("agg \"{n}\" \\ é");
            let content = serde_json::to_vec(&event).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(read(&content), reparsed(&content), "{event:?}");
        }
    }

    /// A message written by hand keeps its payload's text as stored, as the `wal` source ships a
    /// `json` column; what is not an outbox event is still refused.
    #[test]
    fn a_hand_written_payload_is_shipped_as_stored() {
        let content = br#"{"id": "0190a1b2-0000-7000-8000-000000000001", "aggregatetype": "Order",
            "aggregateid": "1", "type": "Placed", "payload": {"b": 1,  "a": [ 2 ]},
            "timestamp": "2026-11-28T20:19:21.773017Z"}"#;
        let columns = read(content);
        assert_eq!(columns[5].1.as_deref(), Some(r#"{"b": 1,  "a": [ 2 ]}"#));
        assert_eq!(
            columns[6].1.as_deref(),
            Some("2026-11-28T20:19:21.773017+00:00")
        );
        for refused in [
            &br#"{"id": "x", "aggregatetype": "O", "aggregateid": "1", "type": "P", "payload": 1, "timestamp": "2026-11-28T20:19:21Z"}"#[..],
            br#"{"id": "0190a1b2-0000-7000-8000-000000000001", "aggregatetype": "O", "aggregateid": "1", "type": "P", "timestamp": "2026-11-28T20:19:21Z"}"#,
            b"not json",
        ] {
            assert!(serde_json::from_slice::<LogicalEvent<'_>>(refused).is_err());
        }
    }
}
