//! What a domain event is, and the outbox row it becomes.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::Error;

/// An event that a service emits about one aggregate. Derive it with `#[derive(DomainEvent)]`.
///
/// The relay routes on [`aggregate_type`](Self::aggregate_type) (topic
/// `outbox.event.<aggregatetype>`), keys the Kafka message by
/// [`aggregate_id`](Self::aggregate_id) (so consumers see one aggregate's events in order), and
/// sends [`payload`](Self::payload) as the value.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a domain event",
    label = "not a domain event",
    note = "add `#[derive(DomainEvent)]` with `#[domain_event(aggregate = \"...\")]` to `{Self}`"
)]
pub trait DomainEvent {
    /// The kind of aggregate, such as `Order`. Part of the topic name.
    fn aggregate_type(&self) -> &'static str;
    /// The aggregate this event is about. The Kafka key.
    fn aggregate_id(&self) -> String;
    /// The event type, such as `OrderCreated`. Stored in the `type` column.
    fn event_type(&self) -> &'static str;
    /// The payload's schema version, when the event declares one.
    fn schema_version(&self) -> Option<i32> {
        None
    }
    /// The payload: the event serialized with serde.
    fn payload(&self) -> Result<serde_json::Value, serde_json::Error>;
}

/// One row of the outbox table, with Debezium's Outbox Event Router column meanings.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OutboxEvent {
    /// Event id, a UUIDv7 (time-ordered). Consumers dedupe on it.
    pub id: Uuid,
    /// Routes the topic.
    #[serde(rename = "aggregatetype")]
    pub aggregate_type: String,
    /// The Kafka key.
    #[serde(rename = "aggregateid")]
    pub aggregate_id: String,
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The payload's schema version, if declared.
    #[serde(
        rename = "schemaversion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub schema_version: Option<i32>,
    /// The serialized event.
    pub payload: serde_json::Value,
    /// When it was written.
    pub timestamp: DateTime<Utc>,
    /// W3C `traceparent` (and `tracestate`) of the writing span.
    #[serde(
        rename = "tracingspancontext",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub tracing_span_context: Option<String>,
}

impl OutboxEvent {
    /// Materializes a domain event: a new UUIDv7 id, now as timestamp, the current trace context.
    pub fn from_event<E: DomainEvent + ?Sized>(event: &E) -> Result<Self, Error> {
        let payload = event.payload().map_err(|source| Error::Serialize {
            aggregate_type: event.aggregate_type().to_owned(),
            event_type: event.event_type().to_owned(),
            source,
        })?;
        Ok(OutboxEvent::new(
            event.aggregate_type(),
            event.aggregate_id(),
            event.event_type(),
            event.schema_version(),
            payload,
        ))
    }

    /// A row with a new UUIDv7 id, now as timestamp, and the current span's trace context.
    pub fn new(
        aggregate_type: impl Into<String>,
        aggregate_id: impl Into<String>,
        event_type: impl Into<String>,
        schema_version: Option<i32>,
        payload: serde_json::Value,
    ) -> Self {
        OutboxEvent {
            id: Uuid::now_v7(),
            aggregate_type: aggregate_type.into(),
            aggregate_id: aggregate_id.into(),
            event_type: event_type.into(),
            schema_version,
            payload,
            timestamp: Utc::now(),
            tracing_span_context: crate::trace::current_span_context(),
        }
    }
}
