//! The Kafka sink: outbox records become Kafka messages in Debezium's Outbox Event Router
//! format, sent by an idempotent (`acks=all`) rdkafka producer, pipelined.
//!
//! Format, Debezium's Outbox Event Router's (its option names in parentheses): topic from the
//! routing column through `topic_regex` and the `topic` replacement (`route.by.field`,
//! `route.topic.regex`, `route.topic.replacement`); key from the key column
//! (`table.field.event.key`); value = the payload column as stored (a NULL payload is a null
//! value, as under Debezium) (`table.field.event.payload`), or rendered as `JsonConverter`
//! renders it when it is expanded or enveloped (`table.expand.json.payload`, `envelope`
//! placements); header `id` (`table.field.event.id`); placed columns as headers (a NULL column
//! is a header with a null value), envelope fields or the partition
//! (`table.fields.additional.placement`); the record timestamp from a column
//! (`table.field.event.timestamp`); `traceparent` (and `tracestate`) from `tracingspancontext`
//! unless `kafka.trace_headers` is off.
//!
//! Errors are sorted by explicit lists (see [`classify`]): `QueueFull` is backpressure, a few
//! codes condemn one message (dead-letter), everything else is transient: the session restarts
//! from the acknowledged position and nothing is skipped.
//!
//! Size limits: Kafka checks `max.message.bytes` (a topic's, else the broker's
//! `message.max.bytes`) against a whole record batch, and refuses every event of a batch over
//! it. So that a size refusal always condemns one event alone, [`KafkaSink::connect`] reads the
//! limits from the cluster ([`SizeLimits`]): the producer's batches are kept within the smallest
//! limit of the topics the relay may route to, and an event whose own batch would be over its
//! topic's limit is refused before it is produced.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use tokio::sync::{mpsc, oneshot};

use crate::config::{KafkaConfig, Placement, PlacementTarget, ValueConverter};
use crate::format::{self, TopicRoute};
use crate::record::{ColumnValue, OutboxRecord};
pub use crate::topic::topic_problem;

mod events;
use events::ProducerEvents;

/// One message for Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaMessage {
    pub topic: String,
    /// None = the partitioner's choice (by key).
    pub partition: Option<i32>,
    /// Milliseconds since the epoch; None = the producer's time.
    pub timestamp: Option<i64>,
    pub key: Option<Vec<u8>>,
    /// None = a null value (a tombstone).
    pub value: Option<Vec<u8>>,
    /// Name and value, in order; a None value is a header with a null value.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl KafkaMessage {
    /// The message of a record that cannot be shipped as it is (the router refused it, or a
    /// value is unreadable): no topic yet (the dead-letter topic is set when it is sent there),
    /// the key, the payload and the `id` header, each as the bytes stored.
    pub fn unroutable(record: &OutboxRecord) -> KafkaMessage {
        KafkaMessage {
            topic: String::new(),
            partition: None,
            timestamp: None,
            key: record.get_bytes("aggregateid").map(<[u8]>::to_vec),
            value: record.get_bytes("payload").map(<[u8]>::to_vec),
            headers: record
                .get_bytes("id")
                .map(|id| vec![("id".to_owned(), Some(id.to_vec()))])
                .unwrap_or_default(),
        }
    }

    /// The message carried back by a failed delivery.
    pub fn from_owned(message: &OwnedMessage) -> KafkaMessage {
        let headers = headers_of(message);
        KafkaMessage {
            topic: message.topic().to_owned(),
            partition: None,
            timestamp: None,
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
            headers,
        }
    }

    /// The value of header `name`; None when absent or null.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// Appends header `name` with a non-null `value`.
    pub fn push_header(&mut self, name: &str, value: Vec<u8>) {
        self.headers.push((name.to_owned(), Some(value)));
    }
}

/// What an error means for the message that met it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The producer queue is full: wait for deliveries, then send the same message again.
    Backpressure,
    /// Kafka will never take this message: dead-letter it and go on.
    Permanent,
    /// Anything else: reconnect and resume from the acknowledged position.
    Transient,
}

/// Codes that condemn one message and not the stream (vector's kafka `service.rs` keeps such
/// lists too). Anything not listed is transient, so an unknown error never skips an event.
const PERMANENT: &[RDKafkaErrorCode] = &[
    RDKafkaErrorCode::MessageSizeTooLarge,
    RDKafkaErrorCode::InvalidMessageSize,
    RDKafkaErrorCode::MessageBatchTooLarge,
    RDKafkaErrorCode::InvalidTopic,
    RDKafkaErrorCode::InvalidRecord,
    RDKafkaErrorCode::InvalidMessage,
    // A record timestamp (`kafka.event_timestamp_field`) outside the broker's bounds
    // (`log.message.timestamp.before/after.max.ms`): no retry brings it inside.
    RDKafkaErrorCode::InvalidTimestamp,
];

/// Codes after which the producer itself is unusable (idempotence broken): the relay builds a
/// new producer before resuming.
const FATAL: &[RDKafkaErrorCode] = &[
    RDKafkaErrorCode::Fatal,
    RDKafkaErrorCode::OutOfOrderSequenceNumber,
    RDKafkaErrorCode::DuplicateSequenceNumber,
    RDKafkaErrorCode::InvalidProducerEpoch,
    RDKafkaErrorCode::UnknownProducerId,
    RDKafkaErrorCode::InvalidProducerIdMapping,
    RDKafkaErrorCode::ProducerFenced,
];

/// Sorts an error by its code.
pub fn classify(error: &KafkaError) -> Failure {
    match error.rdkafka_error_code() {
        Some(RDKafkaErrorCode::QueueFull) => Failure::Backpressure,
        Some(code) if PERMANENT.contains(&code) => Failure::Permanent,
        _ => Failure::Transient,
    }
}

/// Whether Kafka refused the message for its size: its dead letter then goes without the value,
/// which would be refused again.
pub fn is_size_error(error: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        error.rdkafka_error_code(),
        Some(C::MessageSizeTooLarge | C::InvalidMessageSize | C::MessageBatchTooLarge)
    )
}

/// Whether the producer must be rebuilt after `error`.
pub fn is_fatal(error: &KafkaError) -> bool {
    error
        .rdkafka_error_code()
        .is_some_and(|c| FATAL.contains(&c))
}

/// How records are turned into Kafka messages (the Event Router's settings).
#[derive(Debug, Clone)]
pub struct Router {
    route: Result<TopicRoute, String>,
    route_by: String,
    event_id_field: String,
    event_key_field: String,
    payload_field: String,
    timestamp_field: Option<String>,
    placements: Vec<Placement>,
    /// Whether any column goes to the envelope: the value is then `{"payload":..,..}`.
    enveloped: bool,
    value_converter: ValueConverter,
    expand_json_payload: bool,
    tombstone_on_empty_payload: bool,
    trace_headers: bool,
    /// Which uses copy their column rather than move it (see [`Router::shipped`]).
    copies: Copies,
    /// The topic of each routing value seen (see [`Router::topic`]), shared by clones. A lock
    /// rather than a cell: the pipeline's future may run on a multi-thread runtime (the
    /// quickstart spawns it), and uncontended it costs two atomic operations per event.
    topics: Arc<Mutex<HashMap<String, String>>>,
}

/// For each way the router ships a column ([`Use`]), whether a later use ships the same column
/// too, so that its value is copied rather than moved: decided once, from the settings.
#[derive(Debug, Clone, Default)]
struct Copies {
    id: bool,
    /// By placement (false for a placement that is no header).
    headers: Vec<bool>,
    key: bool,
    value: bool,
}

/// A record that cannot be routed: it goes to the dead-letter topic, with this as the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unroutable {
    /// The routing column is NULL.
    #[error("column `{0}` is NULL, so the event has no topic")]
    NoRoutingValue(String),
    /// The routed topic name is not legal in Kafka. Checked here rather than left to the broker:
    /// librdkafka may report such a topic as an unknown (retryable) one, which would stall the
    /// stream behind it.
    #[error("topic `{topic}` is not a legal Kafka topic name: {problem}")]
    IllegalTopic { topic: String, problem: String },
    /// The topic regex or replacement is unusable (see [`KafkaConfig::topic_route`]).
    #[error("no topic route: {0}")]
    NoRoute(String),
    /// The column placed as the partition holds no partition number.
    #[error("column `{column}` (the partition) holds `{value}`, not a partition number")]
    IllegalPartition { column: String, value: String },
    /// The timestamp column holds no timestamp.
    #[error("column `{column}` (the event timestamp) holds `{value}`, not a timestamp")]
    IllegalTimestamp { column: String, value: String },
}

impl Router {
    /// The router of `config`, whose `topic_regex` and `topic` [`KafkaConfig::topic_route`]
    /// has checked at start.
    pub fn new(config: &KafkaConfig, placements: Vec<Placement>) -> Router {
        let mut router = Router {
            // `Config::validate` refuses a route that does not compile; should one reach here
            // anyway, every event is dead-lettered with the reason rather than misrouted.
            route: config.topic_route().map_err(|e| e.to_string()),
            route_by: config.route_by_field.clone(),
            event_id_field: config.event_id_field.clone(),
            event_key_field: config.event_key_field.clone(),
            payload_field: config.payload_field.clone(),
            timestamp_field: config.event_timestamp_field.clone(),
            enveloped: placements
                .iter()
                .any(|p| matches!(p.target, PlacementTarget::Envelope(_))),
            placements,
            value_converter: config.value_converter,
            expand_json_payload: config.expand_json_payload,
            tombstone_on_empty_payload: config.tombstone_on_empty_payload,
            trace_headers: config.trace_headers,
            copies: Copies::default(),
            topics: Arc::default(),
        };
        let copies = |what| {
            router
                .column_of(what)
                .is_some_and(|column| router.used_after(what, column))
        };
        let copies = Copies {
            id: copies(Use::Id),
            headers: (0..router.placements.len())
                .map(|n| copies(Use::Header(n)))
                .collect(),
            key: copies(Use::Key),
            value: copies(Use::Value),
        };
        router.copies = copies;
        router
    }

    /// The Kafka message for `record`. Everything that can refuse the record is decided before
    /// any value is taken, so an `Err` leaves the record whole (for its dead letter); on `Ok`
    /// the values shipped as they are (the id, placed headers, the key, a `string` value) have
    /// been moved out of the record into the message, each column copied only when it is
    /// shipped more than once.
    pub fn route(&self, record: &mut OutboxRecord) -> Result<KafkaMessage, Unroutable> {
        let routed_by = record
            .get(&self.route_by)
            .ok_or_else(|| Unroutable::NoRoutingValue(self.route_by.clone()))?;
        let topic = self.topic(routed_by)?;
        let mut partition = None;
        for placement in &self.placements {
            // A NULL partition leaves it to the partitioner, as Debezium's null does.
            if placement.target == PlacementTarget::Partition
                && let Some(bytes) = record.get_bytes(&placement.column)
            {
                let text = String::from_utf8_lossy(bytes);
                let number = text.trim().parse::<i32>().ok().filter(|p| *p >= 0);
                partition = Some(number.ok_or_else(|| Unroutable::IllegalPartition {
                    column: placement.column.clone(),
                    value: text.into_owned(),
                })?);
            }
        }
        let timestamp = match &self.timestamp_field {
            // A NULL timestamp falls back to the producer's time (Debezium: its own).
            Some(column) => match record.get_bytes(column) {
                None => None,
                Some(bytes) => {
                    let text = String::from_utf8_lossy(bytes);
                    Some(format::timestamp_millis(&text).ok_or_else(|| {
                        Unroutable::IllegalTimestamp {
                            column: column.clone(),
                            value: text.into_owned(),
                        }
                    })?)
                }
            },
            None => None,
        };
        let trace = match record.get("tracingspancontext") {
            Some(context) if self.trace_headers => outbox_core::trace::parse_span_context(context),
            _ => (None, None),
        };
        // A rendered (JSON) value reads the columns; a `string` value is the payload's buffer,
        // taken below.
        let rendered = match self.value_converter {
            ValueConverter::Json => Some(self.json_value(record)),
            ValueConverter::String => None,
        };

        let mut headers = Vec::with_capacity(3 + self.placements.len());
        if let Some(id) = self.shipped(record, Use::Id) {
            headers.push(("id".to_owned(), Some(id.into_bytes())));
        }
        for (n, placement) in self.placements.iter().enumerate() {
            // A NULL column is a header with a null value, as Debezium places it; a column the
            // row does not have places nothing.
            if let PlacementTarget::Header(name) = &placement.target
                && record.columns.iter().any(|(c, _)| **c == *placement.column)
            {
                let value = self.shipped(record, Use::Header(n));
                headers.push((name.clone(), value.map(ColumnValue::into_bytes)));
            }
        }
        let (parent, state) = trace;
        if let Some(parent) = parent {
            headers.push(("traceparent".to_owned(), Some(parent.into_bytes())));
        }
        if let Some(state) = state {
            headers.push(("tracestate".to_owned(), Some(state.into_bytes())));
        }
        let key = self.shipped(record, Use::Key).map(ColumnValue::into_bytes);
        let value = match rendered {
            Some(rendered) => rendered,
            None => self.string_value(record),
        };
        Ok(KafkaMessage {
            topic,
            partition,
            timestamp,
            key,
            value,
            headers,
        })
    }

    /// The topic of routing value `routed_by`, computed once per routing value (up to
    /// [`TOPIC_CACHE`] of them): the regex is not run again for every event of a topic.
    fn topic(&self, routed_by: &str) -> Result<String, Unroutable> {
        let route = match &self.route {
            Ok(route) => route,
            Err(problem) => return Err(Unroutable::NoRoute(problem.clone())),
        };
        if let Ok(topics) = self.topics.lock()
            && let Some(topic) = topics.get(routed_by)
        {
            return Ok(topic.clone());
        }
        let topic = route.topic(routed_by);
        if let Some(problem) = topic_problem(&topic) {
            return Err(Unroutable::IllegalTopic { topic, problem });
        }
        if let Ok(mut topics) = self.topics.lock()
            && topics.len() < TOPIC_CACHE
        {
            topics.insert(routed_by.to_owned(), topic.clone());
        }
        Ok(topic)
    }

    /// The value of the column that `what` ships, moved out of the record when no later use
    /// ships that column too, else copied. The `id` header and the key are shipped from text
    /// only: a binary (`bytea`, `blob`) column leaves them out.
    fn shipped(&self, record: &mut OutboxRecord, what: Use) -> Option<ColumnValue> {
        let column = self.column_of(what)?;
        if matches!(what, Use::Id | Use::Key) && record.get(column).is_none() {
            return None;
        }
        let copied = match what {
            Use::Id => self.copies.id,
            Use::Header(n) => self.copies.headers.get(n).copied().unwrap_or(false),
            Use::Key => self.copies.key,
            Use::Value => self.copies.value,
        };
        if copied {
            record.value_of(column).cloned()
        } else {
            record.take(column)
        }
    }

    /// The column `what` ships, if it ships one.
    fn column_of(&self, what: Use) -> Option<&str> {
        match what {
            Use::Id => Some(&self.event_id_field),
            Use::Header(n) => Some(&self.placements.get(n)?.column),
            Use::Key => Some(&self.event_key_field),
            Use::Value => Some(&self.payload_field),
        }
    }

    /// Whether a use after `what` (in the order id, headers, key, value) ships `column` too.
    fn used_after(&self, what: Use, column: &str) -> bool {
        let headers = self
            .placements
            .iter()
            .enumerate()
            .filter(|(_, p)| matches!(p.target, PlacementTarget::Header(_)))
            .map(|(n, _)| Use::Header(n));
        let value = (self.value_converter == ValueConverter::String).then_some(Use::Value);
        std::iter::once(Use::Id)
            .chain(headers)
            .chain([Use::Key])
            .chain(value)
            .skip_while(|u| *u != what)
            .skip(1)
            .any(|u| self.column_of(u) == Some(column))
    }

    /// Whether the payload is a tombstone: Debezium ships the payload column as it is; under
    /// StringConverter a NULL is a null value whatever the tombstone option says, under
    /// JsonConverter it is `null`; the tombstone option also nulls a text payload that Java's
    /// `trim()` empties (a binary payload is never empty to Debezium, which tests its
    /// `toString()`).
    fn tombstone(&self, payload: Option<&ColumnValue>) -> bool {
        let blank = match payload {
            None => true,
            Some(ColumnValue::Text(text) | ColumnValue::Typed { text, .. }) => {
                text.trim_matches(|c| c <= ' ').is_empty()
            }
            Some(ColumnValue::Bytes(_)) => false,
        };
        blank && self.tombstone_on_empty_payload
    }

    /// The message value under StringConverter: the payload column's bytes, moved out of the
    /// record.
    fn string_value(&self, record: &mut OutboxRecord) -> Option<Vec<u8>> {
        if self.tombstone(record.value_of(&self.payload_field)) {
            return None;
        }
        self.shipped(record, Use::Value)
            .map(ColumnValue::into_bytes)
    }

    /// The message value under JsonConverter: the payload rendered, in an envelope with the
    /// `envelope` placements when there are any.
    fn json_value(&self, record: &OutboxRecord) -> Option<Vec<u8>> {
        let payload = record.value_of(&self.payload_field);
        if self.tombstone(payload) {
            return None;
        }
        if !self.enveloped {
            return Some(format::json_value(payload, self.expand_json_payload));
        }
        // A column the row does not have places nothing; a NULL one is a null field.
        let envelope: Vec<(&str, Option<&ColumnValue>)> = self
            .placements
            .iter()
            .filter_map(|placement| match &placement.target {
                PlacementTarget::Envelope(name) => record
                    .columns
                    .iter()
                    .find(|(c, _)| **c == *placement.column)
                    .map(|(_, value)| (name.as_str(), value.as_ref())),
                _ => None,
            })
            .collect();
        Some(format::json_envelope(
            payload,
            self.expand_json_payload,
            &envelope,
        ))
    }
}

/// One way the router ships a column's value as it is, in the order it ships them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    /// The `id` header.
    Id,
    /// The header of the n-th placement.
    Header(usize),
    /// The key.
    Key,
    /// The value (under StringConverter).
    Value,
}

/// How many routing values' topics a router remembers: far more than the aggregate types of
/// any service; past it, topics are computed per event.
const TOPIC_CACHE: usize = 4096;

/// What Kafka answered for one message: on failure, the error and the message as produced (a
/// dead letter is built from it).
pub type DeliveryOutcome = Result<(), (KafkaError, OwnedMessage)>;

/// The outcome of a message handed over with [`KafkaSink::produce`], under the tag it was given.
#[derive(Debug)]
pub struct DeliveryReport {
    pub tag: usize,
    pub outcome: DeliveryOutcome,
}

/// The delivery of a message handed over with [`KafkaSink::send`]: resolves when Kafka
/// acknowledged it or gave up on it; `Err` if the producer went away first.
pub type Delivery = oneshot::Receiver<DeliveryOutcome>;

/// The tags [`KafkaSink::send`] gives its own messages (the top bit set); the tags of
/// [`KafkaSink::produce`] are below it.
pub const AWAITED_TAG: usize = 1 << (usize::BITS - 1);

/// How many delivery reports [`KafkaSink::reports`] takes at once at most.
const REPORT_BATCH: usize = 1024;

/// The rdkafka producer, idempotent with `acks=all`.
///
/// Deliveries come back without a future per message: a message is produced with a plain tag
/// (rdkafka's delivery opaque), and the producer's events, served on the caller's runtime
/// without a polling thread (`ProducerEvents`), hand each delivery report to a channel that
/// the caller drains in batches ([`KafkaSink::reports`]). A channel belongs to one producer, so
/// a rebuilt producer's reports never mix with the old one's. [`KafkaSink::send`] keeps a future
/// per message for the few callers that await one message at a time.
pub struct KafkaSink {
    /// First, so that it is dropped first: its thread's producer clone goes before the sink's.
    nudger: Nudger,
    /// Held, never read; before the producer, so that its wake-up is turned off while the
    /// producer is alive.
    _events: ProducerEvents,
    producer: Arc<BaseProducer<SinkContext>>,
    refusal: Arc<Mutex<Option<Refusal>>>,
    /// The delivery reports of [`KafkaSink::produce`]'s messages. Locked only by the one task
    /// that drains it, once per batch.
    reports: Mutex<mpsc::UnboundedReceiver<DeliveryReport>>,
    /// The next tag of [`KafkaSink::send`] (below [`AWAITED_TAG`], which is added).
    awaited: AtomicUsize,
    /// The topics' size limits, when read ([`KafkaSink::connect`]); empty, nothing is refused
    /// before the broker refuses it.
    limits: SizeLimits,
    /// Whether batches are compressed: an event's size on the wire is then not known before it
    /// is sent, and only the broker judges it.
    compressed: bool,
}

/// The longest single wait of a nudge's flush: a sink being dropped waits no longer for its
/// nudge thread.
const NUDGE_SLICE: Duration = Duration::from_millis(10);

/// Sends the batches that linger at once, when the caller has nothing more to add to them.
///
/// `linger.ms` lets a batch fill while events stream in; once a source transaction's events
/// are all produced and the source waits for their acknowledgement, waiting out the linger
/// only delays them. librdkafka skips the linger while a flush is under way (`rd_kafka_flush`
/// raises the producer's flushing flag, wakes the broker threads and waits for the queued
/// messages' reports). So a nudge is a flush, on a thread of its own so that the caller never
/// blocks, until everything produced is delivered and for at most the producer's linger: no
/// message waits longer than it would have without the nudge. Holding the flag that long, and
/// not an instant, matters: a message of a topic whose partitions are not known yet joins a
/// partition's queue only when the metadata comes (rdkafka's own `flush` raises the flag for an
/// instant per call, which that message, or a broker thread on a busy machine, misses). Nudges
/// asked for while one runs make one more at most.
struct Nudger {
    ask: Option<std::sync::mpsc::SyncSender<()>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Nudger {
    fn start(
        producer: Arc<BaseProducer<SinkContext>>,
        linger: Duration,
    ) -> Result<Nudger, KafkaError> {
        let (ask, asked) = std::sync::mpsc::sync_channel::<()>(1);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("outbox-nudge".into())
            .spawn(move || {
                while asked.recv().is_ok() {
                    let until = std::time::Instant::now() + linger;
                    while !stopping.load(Ordering::Relaxed) {
                        let left = until.saturating_duration_since(std::time::Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        let slice = i32::try_from(left.min(NUDGE_SLICE).as_millis()).unwrap_or(1);
                        // SAFETY: the handle is the producer's own, alive as long as
                        // `producer` (a clone sharing it) is; librdkafka's flush may run on any
                        // thread, and with event-mode delivery reports (rdkafka's) it only
                        // waits.
                        let flushed = unsafe {
                            rdkafka::bindings::rd_kafka_flush(
                                producer.client().native_ptr(),
                                slice.max(1),
                            )
                        };
                        if flushed == rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
                            break;
                        }
                    }
                }
            })
            .map_err(|error| {
                KafkaError::ClientCreation(format!("starting the producer's nudge thread: {error}"))
            })?;
        Ok(Nudger {
            ask: Some(ask),
            stop,
            thread: Some(thread),
        })
    }

    fn nudge(&self) {
        if let Some(ask) = &self.ask {
            // Full: a nudge is already asked for, and it covers this one.
            let _ = ask.try_send(());
        }
    }
}

/// The names librdkafka takes for the producer's linger: one property.
const LINGER: [&str; 2] = ["linger.ms", "queue.buffering.max.ms"];

/// The names librdkafka takes for the local delivery timeout: one property.
const DELIVERY_TIMEOUT: [&str; 2] = ["message.timeout.ms", "delivery.timeout.ms"];

/// The producer's linger as configured (under either of its names; `client_config` sets one),
/// else librdkafka's default of 5 ms.
fn linger_of(client: &ClientConfig) -> Duration {
    LINGER
        .iter()
        .find_map(|key| client.get(key))
        .and_then(|ms| ms.trim().parse::<f64>().ok())
        .and_then(|ms| Duration::try_from_secs_f64(ms / 1000.0).ok())
        .unwrap_or(Duration::from_millis(5))
}

impl Drop for Nudger {
    /// Stops the thread (within a [`NUDGE_SLICE`]) before the producer goes, so that the
    /// producer is destroyed where the sink is dropped, not on the nudge thread.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.ask = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The size limits Kafka enforces on record batches, as read from the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SizeLimits {
    /// The broker's `message.max.bytes`: the limit of every topic that sets none of its own.
    pub broker: Option<usize>,
    /// Each topic's `max.message.bytes` (the broker's value for a topic that sets none).
    pub topics: HashMap<String, usize>,
}

/// Why the producer's size settings cannot work with the brokers': a configuration mistake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeMismatch {
    #[error(
        "`message.max.bytes`={producer} in `kafka.properties` is larger than the brokers' \
         `message.max.bytes`={broker}: an event between the two is refused by the brokers, and \
         a record batch over {broker} bytes fails every event in it. Set `message.max.bytes` to \
         at most {broker} (or raise the brokers' limit)"
    )]
    ProducerOverBroker { producer: usize, broker: usize },
}

impl SizeLimits {
    /// The limit of `topic`, when known.
    pub fn of(&self, topic: &str) -> Option<usize> {
        self.topics.get(topic).copied()
    }

    /// The largest record batch the producer may build: the smallest limit among the broker's
    /// and those of the topics `may_route_to` accepts (with the topic that sets it), so that a
    /// batch of small events is never refused whole. None when nothing is known.
    pub fn batch_cap(&self, may_route_to: impl Fn(&str) -> bool) -> Option<(usize, Option<&str>)> {
        let topics = self
            .topics
            .iter()
            .filter(|(topic, _)| may_route_to(topic))
            .map(|(topic, limit)| (*limit, Some(topic.as_str())));
        self.broker
            .map(|limit| (limit, None))
            .into_iter()
            .chain(topics)
            .min_by_key(|(limit, _)| *limit)
    }

    /// A user's `message.max.bytes` over the broker's is a mistake (see [`SizeMismatch`]).
    pub fn check(&self, config: &KafkaConfig) -> Result<(), SizeMismatch> {
        let producer = config
            .properties
            .get("message.max.bytes")
            .and_then(|v| v.trim().parse::<usize>().ok());
        match (producer, self.broker) {
            (Some(producer), Some(broker)) if producer > broker => {
                Err(SizeMismatch::ProducerOverBroker { producer, broker })
            }
            _ => Ok(()),
        }
    }

    /// Reads the broker's `message.max.bytes` and the `max.message.bytes` of every topic the
    /// relay may route to (`may_route_to`), within `bound`. Resources the relay may not
    /// describe are left out (unknown, so unchecked).
    ///
    /// Only those topics, and `DESCRIBED_AT_ONCE` at a time: a topic's description is every
    /// one of its settings, and a cluster may hold thousands of topics. On a broker of 1,647
    /// topics an idle relay that described them all in one request peaked at 47 MB RSS (32 MB
    /// of it heap); describing only its route's topics, or all of them 100 at a time (a route
    /// that may reach any topic), 20 MB (5 MB). BENCHMARKS.md, part 8.
    pub async fn read(config: &KafkaConfig, bound: Duration) -> Result<SizeLimits, KafkaError> {
        let admin: AdminClient<DefaultClientContext> = other_client_config(config).create()?;
        let admin = Arc::new(admin);
        let metadata = {
            let admin = Arc::clone(&admin);
            tokio::task::spawn_blocking(move || {
                admin.inner().fetch_metadata(None, bound).map(|m| {
                    let broker = m.brokers().first().map(|b| b.id());
                    let topics: Vec<String> = m
                        .topics()
                        .iter()
                        .map(|t| t.name().to_owned())
                        // Kafka's own (`__consumer_offsets`, `__transaction_state`).
                        .filter(|t| !t.starts_with("__"))
                        .collect();
                    (broker, topics)
                })
            })
            .await
            .map_err(|_| KafkaError::MetadataFetch(RDKafkaErrorCode::OperationTimedOut))??
        };
        let (broker, topics) = metadata;
        let mut resources: Vec<ResourceSpecifier<'_>> = topics
            .iter()
            .filter(|t| may_route_to(config, t))
            .map(|t| ResourceSpecifier::Topic(t))
            .collect();
        if let Some(id) = broker {
            resources.push(ResourceSpecifier::Broker(id));
        }
        let options = AdminOptions::new().request_timeout(Some(bound));
        let mut limits = SizeLimits::default();
        for chunk in resources.chunks(DESCRIBED_AT_ONCE) {
            let described = admin.describe_configs(chunk, &options).await?;
            limits.absorb(described.into_iter().flatten());
        }
        Ok(limits)
    }

    /// Keeps the size limit of each described resource, and nothing else of it.
    fn absorb(&mut self, described: impl Iterator<Item = rdkafka::admin::ConfigResource>) {
        for resource in described {
            let (name, key) = match &resource.specifier {
                rdkafka::admin::OwnedResourceSpecifier::Topic(topic) => {
                    (Some(topic.clone()), "max.message.bytes")
                }
                rdkafka::admin::OwnedResourceSpecifier::Broker(_) => (None, "message.max.bytes"),
                rdkafka::admin::OwnedResourceSpecifier::Group(_) => continue,
            };
            let Some(limit) = resource
                .get(key)
                .and_then(|e| e.value.as_deref())
                .and_then(|v| v.trim().parse::<usize>().ok())
            else {
                continue;
            };
            match name {
                Some(topic) => {
                    self.topics.insert(topic, limit);
                }
                None => self.broker = Some(limit),
            }
        }
    }
}

/// How many topics one `DescribeConfigs` request of [`SizeLimits::read`] names.
const DESCRIBED_AT_ONCE: usize = 100;

/// Whether the relay may route an event to `topic` under `config`: the dead-letter topic, and,
/// under Debezium's default regex with a replacement of one `${routedByValue}` between literal
/// text, the topics of that shape; under any other route, every topic.
fn may_route_to(config: &KafkaConfig, topic: &str) -> bool {
    if topic == config.dead_letter_topic {
        return true;
    }
    let default_regex = config.topic_regex == crate::format::TopicRoute::DEFAULT_REGEX;
    let shape = config.topic.split_once("${routedByValue}");
    match shape {
        Some((prefix, suffix))
            if default_regex
                && ![prefix, suffix]
                    .iter()
                    .any(|part| part.contains(['$', '\\'])) =>
        {
            topic.len() >= prefix.len() + suffix.len()
                && topic.starts_with(prefix)
                && topic.ends_with(suffix)
        }
        _ => true,
    }
}

/// The size of the record batch that holds `message` alone, as the broker measures it against
/// `max.message.bytes` (uncompressed, record format v2): the 61-byte batch header and the
/// record, whose lengths are zigzag varints.
pub fn single_batch_size(message: &KafkaMessage) -> usize {
    fn varint(value: i64) -> usize {
        let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
        let mut bytes = 1;
        while zigzag >= 0x80 {
            zigzag >>= 7;
            bytes += 1;
        }
        bytes
    }
    fn field(bytes: Option<&[u8]>) -> usize {
        match bytes {
            Some(b) => varint(b.len() as i64) + b.len(),
            None => varint(-1),
        }
    }
    const BATCH_HEADER: usize = 61;
    // Attributes, and timestamp and offset deltas of 0 (the first record of its batch).
    let mut record = 1 + varint(0) + varint(0);
    record += field(message.key.as_deref());
    record += field(message.value.as_deref());
    record += varint(message.headers.len() as i64);
    for (name, value) in &message.headers {
        record += field(Some(name.as_bytes())) + field(value.as_deref());
    }
    BATCH_HEADER + varint(record as i64) + record
}

/// Why the brokers refused the relay's connections: a mistake of configuration (credentials,
/// trust, TLS setup) that no reconnect fixes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Refusal {
    code: RDKafkaErrorCode,
    reason: String,
}

/// librdkafka reports a failed TLS handshake or SASL exchange only through the error callback
/// (the client itself just keeps reconnecting); this context keeps the first such refusal for
/// [`KafkaSink::preflight`], and passes every error on to the log. It also routes each delivery
/// report by its tag: to the waiter of a [`KafkaSink::send`], or to the reports channel.
struct SinkContext {
    refusal: Arc<Mutex<Option<Refusal>>>,
    reports: mpsc::UnboundedSender<DeliveryReport>,
    /// The waiters of [`KafkaSink::send`]'s messages, by tag.
    awaited: Mutex<HashMap<usize, oneshot::Sender<DeliveryOutcome>>>,
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = usize;

    /// Runs where the producer's events are served ([`ProducerEvents`]). A failure carries its
    /// message back (copied; a success copies nothing).
    fn delivery(&self, result: &DeliveryResult<'_>, tag: usize) {
        let outcome = match result {
            Ok(_) => Ok(()),
            Err((error, message)) => Err((error.clone(), message.detach())),
        };
        if tag & AWAITED_TAG != 0 {
            let waiter = self
                .awaited
                .lock()
                .ok()
                .and_then(|mut waiters| waiters.remove(&tag));
            // A waiter that went away no longer wants the outcome.
            if let Some(waiter) = waiter {
                let _ = waiter.send(outcome);
            }
            return;
        }
        // The receiver lives as long as the producer's sink; once it is gone nobody waits.
        let _ = self.reports.send(DeliveryReport { tag, outcome });
    }
}

/// Error codes that mean the brokers will refuse every connection until the configuration
/// changes. Anything else (refused connections, timeouts, brokers down) is transient.
const REFUSALS: &[RDKafkaErrorCode] = &[
    RDKafkaErrorCode::SSL,
    RDKafkaErrorCode::Authentication,
    RDKafkaErrorCode::SaslAuthenticationFailed,
    RDKafkaErrorCode::UnsupportedSASLMechanism,
    RDKafkaErrorCode::IllegalSASLState,
    RDKafkaErrorCode::ClusterAuthorizationFailed,
];

impl ClientContext for SinkContext {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "kafka client error");
        let Some(code) = error.rdkafka_error_code() else {
            return;
        };
        if REFUSALS.contains(&code)
            && let Ok(mut refusal) = self.refusal.lock()
        {
            refusal.get_or_insert_with(|| Refusal {
                code,
                reason: reason.to_owned(),
            });
        }
    }
}

/// What a refusal most likely needs changed, in the configuration's own terms.
fn refusal_hint(code: RDKafkaErrorCode) -> &'static str {
    match code {
        RDKafkaErrorCode::SSL => {
            "the TLS handshake failed: check `ssl.ca.location` (the CA that issued the brokers' \
             certificates), the broker address against the certificate's names, and \
             `security.protocol` against the listener"
        }
        RDKafkaErrorCode::ClusterAuthorizationFailed => {
            "the brokers authenticated the relay but do not authorize it: the idempotent \
             producer needs the IdempotentWrite permission on the cluster"
        }
        _ => {
            "SASL authentication failed: check `sasl.mechanism`, `sasl.username` and \
             `sasl.password` (or `kafka.sasl_password_file`)"
        }
    }
}

/// A message's headers as [`KafkaMessage::headers`] holds them: in order, a null value kept as
/// `None` (Debezium sends a NULL placed column as a header with a null value).
pub fn headers_of<M: Message>(message: &M) -> Vec<(String, Option<Vec<u8>>)> {
    message
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default()
}

/// The settings of the relay's other Kafka clients (the admin client, the consumers of the
/// dead letters and of the offsets topic): the brokers and `kafka.properties` (TLS and SASL pass
/// through; producer-only properties are ignored by them).
pub fn other_client_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    if let Some(brokers) = &kafka.brokers {
        client.set("bootstrap.servers", brokers);
    }
    for (k, v) in &kafka.properties {
        client.set(k, v);
    }
    client
}

/// The producer's settings: defaults, then every configured property, then the guarantees.
fn client_config(config: &KafkaConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    // Defaults, each overridable by `kafka.properties`. One whose property is configured under
    // another of its names is left out: librdkafka takes the names as one property, and
    // `ClientConfig` applies its entries in no set order, so the default could win.
    let unset = |names: [&str; 2]| !names.iter().any(|n| config.properties.contains_key(*n));
    client
        // The Java producer's partitioner (Debezium's): a key lands on the same partition as
        // under Debezium, so switching relays keeps each aggregate on one partition, in order.
        .set("partitioner", "murmur2_random")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "200000");
    if unset(LINGER) {
        // 1 ms, not librdkafka's 5: at 2,000 events/s of single-event transactions it halves
        // the p50 from commit to consumer (2.2-2.5 against 4.9-5.0 ms) without a worse p99, and
        // a backlog drain fills its batches either way (108.5k against 108.6k events/s, relay
        // CPU 5.4 against 5.7 s per million). The cost is relay CPU at low rates: 94-99 against
        // 69-70 s per million at 2,000/s (BENCHMARKS.md, round 2, part 17).
        client.set("linger.ms", "1");
    }
    if unset(DELIVERY_TIMEOUT) {
        // No local delivery timeout, as Kafka Connect sets for Debezium
        // (`delivery.timeout.ms=Integer.MAX_VALUE`). librdkafka expires queued messages by age,
        // so after an outage longer than a finite timeout an older event of a key fails while a
        // younger one still gets through, and the resend lands behind it: out of order. Without
        // the timeout the queue waits for the broker in order; the pipeline's drain bound and
        // producer rebuild still end a session that cannot finish.
        client.set("message.timeout.ms", "0");
    }
    if let Some(brokers) = &config.brokers {
        client.set("bootstrap.servers", brokers);
    }
    for (k, v) in &config.properties {
        client.set(k, v);
    }
    client.set("enable.idempotence", "true").set("acks", "all");
    client
}

/// A configured local delivery timeout, which can reorder the events of a key after a longer
/// outage (see `client_config`); `None` when there is none.
pub fn finite_delivery_timeout(config: &KafkaConfig) -> Option<(&'static str, &str)> {
    DELIVERY_TIMEOUT
        .into_iter()
        .find_map(|key| config.properties.get(key).map(|v| (key, v.as_str())))
        .filter(|(_, v)| v.trim() != "0")
}

/// librdkafka's default `batch.size`.
const DEFAULT_BATCH_SIZE: usize = 1_000_000;

/// How long [`KafkaSink::connect`] waits for the brokers' first answer before it goes on and
/// leaves an unreachable cluster to the run loop's retries.
pub const PREFLIGHT_BOUND: Duration = Duration::from_secs(15);

/// The exactly-once producer's settings: [`client_config`]'s, with a `transactional.id` and a
/// finite local delivery timeout within the transaction's own (an expired message only aborts
/// its transaction, which is then sent again whole, in order).
fn transactional_config(config: &KafkaConfig, transactional_id: &str) -> ClientConfig {
    let mut client = client_config(config);
    let configured = |key: &str| {
        config
            .properties
            .get(key)
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    // The broker caps a transaction's timeout (`transaction.max.timeout.ms`, 15 min by default).
    let message_timeout = DELIVERY_TIMEOUT
        .into_iter()
        .find_map(configured)
        .filter(|t| *t > 0);
    let transaction_timeout = configured("transaction.timeout.ms")
        .unwrap_or_else(|| message_timeout.unwrap_or(60_000).clamp(60_000, 900_000));
    client.set("transaction.timeout.ms", transaction_timeout.to_string());
    let message_timeout = message_timeout
        .filter(|t| *t <= transaction_timeout)
        .unwrap_or(transaction_timeout);
    // Under one name only: a configured alias beside it would be applied in no set order.
    for name in DELIVERY_TIMEOUT {
        client.remove(name);
    }
    client.set("message.timeout.ms", message_timeout.to_string());
    client.set("transactional.id", transactional_id);
    client
}

/// Whether `error` (or the producer's own fatal state) says another producer took the
/// transactional id: this one is fenced for good.
pub fn is_fenced(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::Fenced
                | RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
                | RDKafkaErrorCode::TransactionCoordinatorFenced
        )
    )
}

impl KafkaSink {
    /// The exactly-once producer for `transactional_id`; call
    /// [`KafkaSink::init_transactions`] before its first transaction.
    pub fn transactional(
        config: &KafkaConfig,
        transactional_id: &str,
    ) -> Result<KafkaSink, KafkaError> {
        KafkaSink::with_client(transactional_config(config, transactional_id))
    }

    /// Registers the transactional id with its coordinator: a producer that held it before
    /// (a zombie relay) is fenced, and its open transaction aborted.
    pub async fn init_transactions(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.blocking(timeout, |p, t| p.init_transactions(t)).await
    }

    /// Begins a transaction (local to the producer; it does not block).
    pub fn begin_transaction(&self) -> Result<(), KafkaError> {
        self.producer.begin_transaction()
    }

    /// Flushes and commits the open transaction.
    pub async fn commit_transaction(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.blocking(timeout, |p, t| p.commit_transaction(t)).await
    }

    /// Aborts the open transaction; its undelivered messages are purged.
    pub async fn abort_transaction(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.blocking(timeout, |p, t| p.abort_transaction(t)).await
    }

    /// The producer's fatal error, when it has one (a fenced producer has).
    pub fn fatal_error(&self) -> Option<(RDKafkaErrorCode, String)> {
        self.producer.client().fatal_error()
    }

    /// Runs one of librdkafka's blocking transaction calls off the async workers, bounded by
    /// `timeout` (passed to the call, and a little more around it).
    async fn blocking(
        &self,
        timeout: Duration,
        call: impl FnOnce(&BaseProducer<SinkContext>, Duration) -> Result<(), KafkaError>
        + Send
        + 'static,
    ) -> Result<(), KafkaError> {
        let producer = Arc::clone(&self.producer);
        let task = tokio::task::spawn_blocking(move || call(&producer, timeout));
        match tokio::time::timeout(timeout + Duration::from_secs(5), task).await {
            Ok(Ok(result)) => result,
            // The call outlived its own timeout (or its thread died): treated as a timeout.
            Ok(Err(_)) | Err(_) => Err(KafkaError::MessageProduction(
                RDKafkaErrorCode::OperationTimedOut,
            )),
        }
    }

    /// Builds the producer: every configured property passes through, then the guarantees are
    /// forced.
    pub fn new(config: &KafkaConfig) -> Result<KafkaSink, KafkaError> {
        KafkaSink::with_client(client_config(config))
    }

    fn with_client(client: ClientConfig) -> Result<KafkaSink, KafkaError> {
        let refusal = Arc::new(Mutex::new(None));
        let (reports, receiver) = mpsc::unbounded_channel();
        let context = SinkContext {
            refusal: Arc::clone(&refusal),
            reports,
            awaited: Mutex::new(HashMap::new()),
        };
        let compressed = ["compression.type", "compression.codec"].iter().any(|key| {
            client
                .get(key)
                .is_some_and(|codec| !codec.trim().eq_ignore_ascii_case("none"))
        });
        let producer: Arc<BaseProducer<SinkContext>> =
            Arc::new(client.create_with_context(context)?);
        Ok(KafkaSink {
            nudger: Nudger::start(Arc::clone(&producer), linger_of(&client))?,
            _events: ProducerEvents::start(&producer)?,
            producer,
            refusal,
            reports: Mutex::new(receiver),
            awaited: AtomicUsize::new(0),
            limits: SizeLimits::default(),
            compressed,
        })
    }

    /// [`KafkaSink::new`], then [`KafkaSink::preflight`] within [`PREFLIGHT_BOUND`]: a sink whose
    /// brokers refuse its credentials or certificates is an error here, at start, instead of an
    /// endless reconnect later. Then the size limits are read ([`SizeLimits`]): a configured
    /// `message.max.bytes` over the brokers' is an error here too, and the producer that is kept
    /// builds no batch over the smallest limit of the topics the relay may route to.
    pub async fn connect(config: &KafkaConfig) -> Result<KafkaSink, KafkaError> {
        KafkaSink::connect_with(config, client_config(config)).await
    }

    /// [`KafkaSink::transactional`], checked and capped as [`KafkaSink::connect`] does; call
    /// [`KafkaSink::init_transactions`] before its first transaction.
    pub async fn connect_transactional(
        config: &KafkaConfig,
        transactional_id: &str,
    ) -> Result<KafkaSink, KafkaError> {
        KafkaSink::connect_with(config, transactional_config(config, transactional_id)).await
    }

    async fn connect_with(
        config: &KafkaConfig,
        mut client: ClientConfig,
    ) -> Result<KafkaSink, KafkaError> {
        let sink = KafkaSink::with_client(client.clone())?;
        sink.preflight(PREFLIGHT_BOUND).await?;
        let limits = match SizeLimits::read(config, PREFLIGHT_BOUND).await {
            Ok(limits) => limits,
            Err(error) => {
                tracing::warn!(
                    %error,
                    "kafka: the brokers' size limits could not be read; a record batch over a \
                     topic's `max.message.bytes` fails every event in it"
                );
                return Ok(sink);
            }
        };
        limits
            .check(config)
            .map_err(|mismatch| KafkaError::ClientCreation(mismatch.to_string()))?;
        if let Some((cap, topic)) = limits.batch_cap(|topic| may_route_to(config, topic)) {
            let batch = client
                .get("batch.size")
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(DEFAULT_BATCH_SIZE);
            if cap < batch {
                tracing::info!(
                    batch_size = cap,
                    limit_of = topic.unwrap_or("the brokers (`message.max.bytes`)"),
                    "kafka: record batches kept within the smallest size limit of the topics \
                     the relay may route to"
                );
                client.set("batch.size", cap.to_string());
            }
        }
        // The checked producer is replaced by one with the same settings and the batch cap.
        drop(sink);
        let mut sink = KafkaSink::with_client(client)?;
        sink.limits = limits;
        Ok(sink)
    }

    /// Asks the brokers for metadata until one answers, a broker refuses the TLS handshake or
    /// the SASL authentication, or `bound` passes. Only a refusal is an error
    /// (`KafkaError::ClientCreation`, naming the cause and the settings to check): brokers that
    /// do not answer in time may be down for a while, which the run loop's retries cover.
    pub async fn preflight(&self, bound: Duration) -> Result<(), KafkaError> {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            let producer = Arc::clone(&self.producer);
            // A blocking librdkafka call; short, so that a refusal ends the wait early.
            let answer = tokio::task::spawn_blocking(move || {
                producer
                    .client()
                    .fetch_metadata(None, Duration::from_millis(500))
                    .map(|metadata| metadata.brokers().len())
            })
            .await;
            if let Some(refusal) = self.refusal.lock().ok().and_then(|r| r.clone()) {
                return Err(KafkaError::ClientCreation(format!(
                    "the Kafka brokers refused the relay ({}): {}. librdkafka: {}",
                    refusal.code,
                    refusal_hint(refusal.code),
                    refusal.reason
                )));
            }
            match answer {
                Ok(Ok(brokers)) if brokers > 0 => return Ok(()),
                Ok(Err(error)) => tracing::debug!(%error, "kafka preflight: no metadata yet"),
                _ => {}
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    bound = ?bound,
                    "kafka preflight: no broker answered yet; going on, the relay retries"
                );
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Hands `message` to the producer under `tag` (below [`AWAITED_TAG`]): its outcome comes
    /// back through [`KafkaSink::reports`] with that tag. A message whose batch alone would be
    /// over its topic's known `max.message.bytes` is refused here (`MessageSizeTooLarge`),
    /// before it is produced.
    pub fn produce(&self, message: &KafkaMessage, tag: usize) -> Result<(), KafkaError> {
        debug_assert!(
            tag & AWAITED_TAG == 0,
            "tag {tag:#x} is in the awaited range"
        );
        let record = self.record(message, tag)?;
        self.producer.send(record).map_err(|(error, _)| error)
    }

    /// Waits until at least one delivery report of [`KafkaSink::produce`]'s messages is in, then
    /// appends every report waiting (up to a batch) to `into`: one wake-up per batch of
    /// deliveries. Cancel-safe. `Err(Canceled)` only if the producer is gone.
    pub async fn reports(&self, into: &mut Vec<DeliveryReport>) -> Result<(), KafkaError> {
        let received = std::future::poll_fn(|cx| match self.reports.lock() {
            Ok(mut reports) => reports.poll_recv_many(cx, into, REPORT_BATCH),
            // Only a panic while holding the lock poisons it: no report comes any more.
            Err(_) => std::task::Poll::Ready(0),
        })
        .await;
        if received == 0 {
            return Err(KafkaError::Canceled);
        }
        Ok(())
    }

    /// Hands `message` to the producer; the returned [`Delivery`] resolves with its outcome
    /// (for callers that await one message at a time; the pipeline uses
    /// [`KafkaSink::produce`]). Refuses an oversize message as [`KafkaSink::produce`] does.
    pub fn send(&self, message: &KafkaMessage) -> Result<Delivery, KafkaError> {
        let tag = AWAITED_TAG | (self.awaited.fetch_add(1, Ordering::Relaxed) & !AWAITED_TAG);
        let record = self.record(message, tag)?;
        let (waiter, delivery) = oneshot::channel();
        // Registered before producing: the report may come before `send` returns.
        if let Ok(mut waiters) = self.producer.client().context().awaited.lock() {
            waiters.insert(tag, waiter);
        }
        if let Err((error, _)) = self.producer.send(record) {
            if let Ok(mut waiters) = self.producer.client().context().awaited.lock() {
                waiters.remove(&tag);
            }
            return Err(error);
        }
        Ok(delivery)
    }

    /// The record of `message` under `tag`, or the size refusal (see [`KafkaSink::produce`]).
    fn record<'m>(
        &self,
        message: &'m KafkaMessage,
        tag: usize,
    ) -> Result<BaseRecord<'m, [u8], [u8], usize>, KafkaError> {
        if !self.compressed
            && let Some(limit) = self.limits.of(&message.topic)
        {
            let size = single_batch_size(message);
            if size > limit {
                tracing::warn!(
                    topic = %message.topic,
                    bytes = size,
                    limit,
                    "kafka: the event is over its topic's `max.message.bytes`"
                );
                return Err(KafkaError::MessageProduction(
                    RDKafkaErrorCode::MessageSizeTooLarge,
                ));
            }
        }
        let mut headers = OwnedHeaders::new_with_capacity(message.headers.len());
        for (key, value) in &message.headers {
            headers = headers.insert(Header {
                key,
                value: value.as_deref(),
            });
        }
        let mut record = BaseRecord::with_opaque_to(&message.topic, tag).headers(headers);
        if let Some(key) = &message.key {
            record = record.key(key.as_slice());
        }
        if let Some(value) = &message.value {
            record = record.payload(value.as_slice());
        }
        if let Some(partition) = message.partition {
            record = record.partition(partition);
        }
        if let Some(timestamp) = message.timestamp {
            record = record.timestamp(timestamp);
        }
        Ok(record)
    }

    /// Sends what lingers in the producer's batches now, without waiting for the linger or
    /// blocking (see `Nudger`): for when nothing more is coming for a while.
    pub fn nudge(&self) {
        self.nudger.nudge();
    }

    /// Waits up to `timeout` for everything queued to be delivered.
    pub fn flush(&self, timeout: std::time::Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{ColumnValue, Origin};

    fn record(payload: Option<&str>, trace: Option<&str>) -> OutboxRecord {
        let col = |n: &str, v: Option<&str>| (n.into(), v.map(|v| ColumnValue::Text(v.to_owned())));
        OutboxRecord {
            origin: Origin {
                header: "dlq.source.lsn",
                value: "0/1".into(),
            },
            columns: vec![
                col("id", Some("0190-id")),
                col("aggregatetype", Some("Order")),
                col("aggregateid", Some("42")),
                col("type", Some("OrderPlaced")),
                col("payload", payload),
                col("tracingspancontext", trace),
            ],
        }
    }

    fn router(tombstone: bool) -> Router {
        let config = KafkaConfig {
            tombstone_on_empty_payload: tombstone,
            ..KafkaConfig::default()
        };
        let placements =
            vec![Placement::parse("type:header:eventType").unwrap_or_else(|e| panic!("{e}"))];
        Router::new(&config, placements)
    }

    #[test]
    fn debezium_event_router_defaults() {
        let m = router(false).route(&mut record(
            Some(r#"{"total": 3}"#),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01, congo=t61rcWkgMzE"),
        ));
        let m = m.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.topic, "outbox.event.Order");
        assert_eq!(m.key.as_deref(), Some(&b"42"[..]));
        assert_eq!(m.value.as_deref(), Some(&br#"{"total": 3}"#[..]));
        assert_eq!(m.header("id"), Some(&b"0190-id"[..]));
        assert_eq!(m.header("eventType"), Some(&b"OrderPlaced"[..]));
        assert_eq!(
            m.header("traceparent"),
            Some(&b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"[..])
        );
        assert_eq!(m.header("tracestate"), Some(&b"congo=t61rcWkgMzE"[..]));
    }

    #[test]
    fn trace_context_in_the_form_the_writer_stores() {
        let parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let stored = outbox_core::trace::span_context_column(parent, "congo=t61rcWkgMzE");
        let m = router(false)
            .route(&mut record(Some("{}"), Some(&stored)))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.header("traceparent"), Some(parent.as_bytes()));
        assert_eq!(m.header("tracestate"), Some(&b"congo=t61rcWkgMzE"[..]));
    }

    #[test]
    fn illegal_topics_are_unroutable_with_the_reason() {
        let mut r = record(Some("{}"), None);
        r.columns[1].1 = Some(ColumnValue::Text("Order Line".to_owned()));
        assert_eq!(
            router(false).route(&mut r.clone()).map(|m| m.topic),
            Err(Unroutable::IllegalTopic {
                topic: "outbox.event.Order Line".to_owned(),
                problem: "' ' at byte 18; only ASCII letters, digits, `.`, `_` and `-` are allowed"
                    .to_owned(),
            })
        );
        assert!(topic_problem(&"a".repeat(250)).is_some());
        assert!(topic_problem("..").is_some());
        assert_eq!(topic_problem("outbox.event.Order_v2-x"), None);
    }

    #[test]
    fn a_null_payload_is_a_null_value_as_under_debezium() {
        for tombstone in [false, true] {
            assert_eq!(
                router(tombstone)
                    .route(&mut record(None, None))
                    .map(|m| m.value),
                Ok(None)
            );
        }
        let empty = record(Some(""), None);
        assert_eq!(
            router(true).route(&mut empty.clone()).map(|m| m.value),
            Ok(None)
        );
        assert_eq!(
            router(false).route(&mut empty.clone()).map(|m| m.value),
            Ok(Some(Vec::new()))
        );
    }

    #[test]
    fn a_null_column_placed_as_a_header_is_a_null_header() {
        let mut r = record(Some("{}"), None);
        r.columns[3].1 = None;
        let m = router(false)
            .route(&mut r.clone())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            m.headers,
            vec![
                ("id".to_owned(), Some(b"0190-id".to_vec())),
                ("eventType".to_owned(), None),
            ]
        );
    }

    #[test]
    fn event_fields_are_configurable_as_debezium_table_field_event_options() {
        let config = KafkaConfig {
            event_id_field: "type".to_owned(),
            event_key_field: "aggregatetype".to_owned(),
            payload_field: "tracingspancontext".to_owned(),
            ..KafkaConfig::default()
        };
        let m = Router::new(&config, Vec::new())
            .route(&mut record(Some("{}"), Some("body")))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.key.as_deref(), Some(&b"Order"[..]));
        assert_eq!(m.value.as_deref(), Some(&b"body"[..]));
        assert_eq!(m.header("id"), Some(&b"OrderPlaced"[..]));
    }

    #[test]
    fn trace_headers_can_be_switched_off() {
        let config = KafkaConfig {
            trace_headers: false,
            ..KafkaConfig::default()
        };
        let traced = record(
            Some("{}"),
            Some("traceparent=00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        );
        let m = Router::new(&config, Vec::new())
            .route(&mut traced.clone())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            m.headers,
            vec![("id".to_owned(), Some(b"0190-id".to_vec()))]
        );
        let on = router(false)
            .route(&mut traced.clone())
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(on.header("traceparent").is_some());
    }

    fn router_of(config: KafkaConfig, placements: &[&str]) -> Router {
        let placements = placements
            .iter()
            .map(|p| Placement::parse(p).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        Router::new(&config, placements)
    }

    fn with(r: &mut OutboxRecord, column: &str, value: Option<&str>) {
        r.columns.push((
            column.into(),
            value.map(|v| ColumnValue::Text(v.to_owned())),
        ));
    }

    #[test]
    fn topic_regex_and_replacement_as_regex_router() {
        let config = KafkaConfig {
            topic_regex: "(?<agg>[A-Za-z]+)[.](v[0-9]+)".to_owned(),
            topic: "outbox.${agg}.$2".to_owned(),
            ..KafkaConfig::default()
        };
        let router = router_of(config, &[]);
        let mut r = record(Some("{}"), None);
        r.columns[1].1 = Some(ColumnValue::Text("Order.v2".to_owned()));
        assert_eq!(
            router.route(&mut r.clone()).map(|m| m.topic),
            Ok("outbox.Order.v2".to_owned())
        );
        // No whole match: the routing value is the topic.
        r.columns[1].1 = Some(ColumnValue::Text("Order".to_owned()));
        assert_eq!(
            router.route(&mut r.clone()).map(|m| m.topic),
            Ok("Order".to_owned())
        );
    }

    #[test]
    fn timestamp_and_partition_from_columns() {
        let config = KafkaConfig {
            event_timestamp_field: Some("created".to_owned()),
            ..KafkaConfig::default()
        };
        let router = router_of(config, &["part:partition"]);
        let mut r = record(Some("{}"), None);
        with(&mut r, "created", Some("1795897161773017"));
        with(&mut r, "part", Some("3"));
        let m = router
            .route(&mut r.clone())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (m.timestamp, m.partition),
            (Some(1_795_897_161_773), Some(3))
        );
        // NULLs leave both to the producer; the partition is no header.
        r.columns.truncate(6);
        with(&mut r, "created", None);
        with(&mut r, "part", None);
        let m = router
            .route(&mut r.clone())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((m.timestamp, m.partition, m.headers.len()), (None, None, 1));
        // Values that are no partition or timestamp are unroutable, naming the column.
        for (column, value) in [("part", "-1"), ("part", "x"), ("created", "soon")] {
            let mut bad = r.clone();
            bad.columns.truncate(6);
            with(
                &mut bad,
                "created",
                Some(if column == "created" { value } else { "0" }),
            );
            with(
                &mut bad,
                "part",
                Some(if column == "part" { value } else { "0" }),
            );
            let e = router.route(&mut bad.clone()).err().map(|e| e.to_string());
            assert!(e.is_some_and(|e| e.contains(column)), "{column}={value}");
        }
    }

    #[test]
    fn envelope_and_expanded_payload_as_json_converter() {
        let config = KafkaConfig {
            value_converter: ValueConverter::Json,
            expand_json_payload: true,
            tombstone_on_empty_payload: true,
            ..KafkaConfig::default()
        };
        let enveloped = router_of(
            config.clone(),
            &["type:envelope:eventType", "note:envelope"],
        );
        let mut r = record(Some(r#"{"total": 3, "x": null}"#), None);
        with(&mut r, "note", None);
        let m = enveloped
            .route(&mut r.clone())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            m.value.as_deref(),
            Some(&br#"{"payload":{"total":3},"eventType":"OrderPlaced","note":null}"#[..])
        );
        assert_eq!(
            enveloped.route(&mut record(None, None)).map(|m| m.value),
            Ok(None)
        );
        let kept = KafkaConfig {
            tombstone_on_empty_payload: false,
            ..config.clone()
        };
        // JsonConverter writes a JSON null for a NULL payload: the four bytes `null`.
        assert_eq!(
            router_of(kept, &[])
                .route(&mut record(None, None))
                .map(|m| m.value),
            Ok(Some(b"null".to_vec()))
        );
        let bare = router_of(config, &[]);
        assert_eq!(
            bare.route(&mut record(Some("[1]"), None)).map(|m| m.value),
            Ok(Some(br#""[1]""#.to_vec()))
        );
    }

    #[test]
    fn tombstone_on_a_payload_java_trims_to_nothing() {
        assert_eq!(
            router(true)
                .route(&mut record(Some(" \n\t"), None))
                .map(|m| m.value),
            Ok(None)
        );
        assert_eq!(
            router(false)
                .route(&mut record(Some(" "), None))
                .map(|m| m.value),
            Ok(Some(b" ".to_vec()))
        );
    }

    /// A column shipped twice (the key also placed as a header, the payload as a header too)
    /// arrives in both places; a column shipped once is moved out of the record.
    #[test]
    fn a_column_shipped_twice_is_shipped_whole_both_times() {
        let router = router_of(
            KafkaConfig::default(),
            &["aggregateid:header:agg", "payload:header:body", "id:header"],
        );
        let mut r = record(Some(r#"{"total": 3}"#), None);
        let m = router.route(&mut r).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.key.as_deref(), Some(&b"42"[..]));
        assert_eq!(m.header("agg"), Some(&b"42"[..]));
        assert_eq!(m.value.as_deref(), Some(&br#"{"total": 3}"#[..]));
        assert_eq!(m.header("body"), Some(&br#"{"total": 3}"#[..]));
        assert_eq!(
            m.headers
                .iter()
                .filter(|(_, v)| v.as_deref() == Some(&b"0190-id"[..]))
                .count(),
            2
        );
        // Moved, not copied: the shipped columns are gone from the record.
        assert_eq!(r.get("payload"), None);
        assert_eq!(r.get("aggregateid"), None);
        assert_eq!(r.get("aggregatetype"), Some("Order"));
    }

    /// A record the router refuses is left whole, for its dead letter; the topic of a routing
    /// value is remembered only once it is known to be legal.
    #[test]
    fn a_refused_record_is_left_whole_and_topics_are_remembered_per_routing_value() {
        let router = router_of(
            KafkaConfig {
                event_timestamp_field: Some("created".to_owned()),
                ..KafkaConfig::default()
            },
            &["type:header:eventType"],
        );
        let mut bad = record(Some("{}"), None);
        with(&mut bad, "created", Some("soon"));
        let whole = bad.clone();
        assert!(router.route(&mut bad).is_err());
        assert_eq!(bad, whole);
        assert_eq!(
            KafkaMessage::unroutable(&bad).value.as_deref(),
            Some(&b"{}"[..])
        );
        for (routed, topic) in [
            ("Order", "outbox.event.Order"),
            ("Line", "outbox.event.Line"),
            ("Order", "outbox.event.Order"),
        ] {
            let mut r = record(Some("{}"), None);
            r.columns[1].1 = Some(ColumnValue::Text(routed.to_owned()));
            assert_eq!(router.route(&mut r).map(|m| m.topic), Ok(topic.to_owned()));
        }
        let mut illegal = record(Some("{}"), None);
        illegal.columns[1].1 = Some(ColumnValue::Text("Or der".to_owned()));
        for _ in 0..2 {
            assert!(matches!(
                router.route(&mut illegal.clone()),
                Err(Unroutable::IllegalTopic { .. })
            ));
        }
    }

    #[test]
    fn error_lists() {
        let e = |c| KafkaError::MessageProduction(c);
        assert_eq!(
            classify(&e(RDKafkaErrorCode::QueueFull)),
            Failure::Backpressure
        );
        assert_eq!(
            classify(&e(RDKafkaErrorCode::MessageSizeTooLarge)),
            Failure::Permanent
        );
        assert_eq!(
            classify(&e(RDKafkaErrorCode::InvalidTopic)),
            Failure::Permanent
        );
        assert_eq!(
            classify(&e(RDKafkaErrorCode::MessageTimedOut)),
            Failure::Transient
        );
        assert_eq!(
            classify(&e(RDKafkaErrorCode::AllBrokersDown)),
            Failure::Transient
        );
        assert_eq!(
            classify(&e(RDKafkaErrorCode::InvalidTimestamp)),
            Failure::Permanent
        );
        assert!(is_fatal(&e(RDKafkaErrorCode::OutOfOrderSequenceNumber)));
    }

    #[test]
    fn batches_are_capped_by_the_smallest_limit_of_the_topics_the_relay_may_route_to() {
        let config = KafkaConfig {
            topic: "shop.${routedByValue}.events".to_owned(),
            dead_letter_topic: "shop-dlq".to_owned(),
            ..KafkaConfig::default()
        };
        let limits = SizeLimits {
            broker: Some(1_048_588),
            topics: [
                ("shop.Order.events", 500_000),
                ("shop-dlq", 900_000),
                ("metrics", 1_000),
                ("shop.events", 2_000),
            ]
            .into_iter()
            .map(|(t, l)| (t.to_owned(), l))
            .collect(),
        };
        let cap = limits.batch_cap(|t| may_route_to(&config, t));
        assert_eq!(cap, Some((500_000, Some("shop.Order.events"))));
        // Under a route the relay cannot invert, every topic may be routed to.
        let custom = KafkaConfig {
            topic_regex: "(.*)-v1".to_owned(),
            topic: "shop.$1".to_owned(),
            ..config.clone()
        };
        let cap = limits.batch_cap(|t| may_route_to(&custom, t));
        assert_eq!(cap, Some((1_000, Some("metrics"))));
        // Nothing known: no cap.
        assert_eq!(SizeLimits::default().batch_cap(|_| true), None);
    }

    #[test]
    fn a_producer_limit_over_the_brokers_is_a_mistake_naming_both() {
        let mut config = KafkaConfig::default();
        let limits = SizeLimits {
            broker: Some(1_048_588),
            topics: HashMap::new(),
        };
        assert_eq!(limits.check(&config), Ok(()));
        config
            .properties
            .insert("message.max.bytes".into(), "2000000".into());
        let error = limits.check(&config).err().map(|e| e.to_string());
        assert!(
            error.as_deref().is_some_and(
                |e| e.contains("`message.max.bytes`=2000000") && e.contains("=1048588")
            ),
            "{error:?}"
        );
        // Unknown broker limit: nothing to compare with.
        assert_eq!(SizeLimits::default().check(&config), Ok(()));
    }

    #[test]
    fn the_size_of_an_event_alone_counts_varint_lengths_and_null_headers() {
        let message = KafkaMessage {
            topic: "t".into(),
            partition: None,
            timestamp: None,
            key: None,
            value: Some(vec![b'x'; 10]),
            headers: vec![("id".into(), None)],
        };
        // 61 + length(1) + attributes, deltas (3) + null key (1) + value (1 + 10) + one header
        // (count 1, name 1 + 2, null value 1).
        assert_eq!(single_batch_size(&message), 61 + 1 + 3 + 1 + 11 + 1 + 3 + 1);
        let longer = KafkaMessage {
            value: Some(vec![b'x'; 64]),
            ..message
        };
        // A 64-byte value takes a 2-byte length (zigzag 128), and so does the 75-byte record.
        assert_eq!(single_batch_size(&longer), 61 + 2 + 3 + 1 + 66 + 1 + 3 + 1);
    }

    /// Every message produced under a tag is reported once under it, in batches, on the channel;
    /// a message sent with `send` resolves its own future and is not reported there. (librdkafka's
    /// mock cluster: this checks the bookkeeping, not Kafka.)
    #[tokio::test]
    async fn a_nudge_sends_what_lingers_without_waiting_out_the_linger() {
        let cluster = rdkafka::mocking::MockCluster::new(1).unwrap_or_else(|e| panic!("{e}"));
        let mut config = KafkaConfig {
            brokers: Some(cluster.bootstrap_servers()),
            ..KafkaConfig::default()
        };
        // Ten minutes: without a nudge the message stays in its batch past the test's bound.
        config
            .properties
            .insert("linger.ms".into(), "600000".into());
        let sink = KafkaSink::new(&config).unwrap_or_else(|e| panic!("{e}"));
        let message = KafkaMessage {
            topic: "outbox.event.Order".into(),
            partition: None,
            timestamp: None,
            key: Some(b"order-1".to_vec()),
            value: Some(b"{}".to_vec()),
            headers: Vec::new(),
        };
        sink.produce(&message, 1).unwrap_or_else(|e| panic!("{e}"));
        let mut reports = Vec::new();
        let lingering =
            tokio::time::timeout(Duration::from_millis(500), sink.reports(&mut reports)).await;
        assert!(
            lingering.is_err(),
            "delivered before any nudge: {reports:?}"
        );
        // One nudge: it holds librdkafka's flushing flag until the message is delivered.
        sink.nudge();
        let delivered =
            tokio::time::timeout(Duration::from_secs(30), sink.reports(&mut reports)).await;
        assert!(matches!(delivered, Ok(Ok(()))), "{delivered:?}");
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].tag, 1);
        assert!(reports[0].outcome.is_ok(), "{:?}", reports[0].outcome);
    }

    #[tokio::test]
    async fn each_tag_is_reported_once_and_awaited_sends_resolve_their_own_future() {
        let cluster = rdkafka::mocking::MockCluster::new(1).unwrap_or_else(|e| panic!("{e}"));
        let config = KafkaConfig {
            brokers: Some(cluster.bootstrap_servers()),
            ..KafkaConfig::default()
        };
        let sink = KafkaSink::new(&config).unwrap_or_else(|e| panic!("{e}"));
        let message = |n: usize| KafkaMessage {
            topic: "outbox.event.Order".into(),
            partition: None,
            timestamp: None,
            key: Some(n.to_string().into_bytes()),
            value: Some(b"{}".to_vec()),
            headers: vec![("id".into(), Some(n.to_string().into_bytes()))],
        };
        let tags: Vec<usize> = (0..500).map(|n| n * 3 + 7).collect();
        for (n, tag) in tags.iter().enumerate() {
            sink.produce(&message(n), *tag)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let awaited = sink.send(&message(500)).unwrap_or_else(|e| panic!("{e}"));
        let outcome = tokio::time::timeout(Duration::from_secs(30), awaited).await;
        assert!(matches!(outcome, Ok(Ok(Ok(())))), "{outcome:?}");
        let mut reports = Vec::new();
        let mut batches = 0;
        while reports.len() < tags.len() {
            let received =
                tokio::time::timeout(Duration::from_secs(30), sink.reports(&mut reports)).await;
            assert!(matches!(received, Ok(Ok(()))), "{received:?}");
            batches += 1;
        }
        assert!(batches < tags.len(), "one report per wake-up");
        let mut reported: Vec<usize> = reports.iter().map(|r| r.tag).collect();
        reported.sort_unstable();
        assert_eq!(reported, tags);
        assert!(reports.iter().all(|r| r.outcome.is_ok()));
        // Nothing more: the awaited message was not reported on the channel.
        let more = tokio::time::timeout(Duration::from_millis(200), sink.reports(&mut reports));
        assert!(more.await.is_err());
    }

    /// `linger.ms` is 1 unless configured (README, "Configuration"; BENCHMARKS.md, round 2,
    /// part 17), and the nudge holds a flush for the linger the producer really has.
    #[test]
    fn the_producer_lingers_one_millisecond_unless_configured() {
        let mut config = KafkaConfig::default();
        let client = super::client_config(&config);
        assert_eq!(client.get("linger.ms"), Some("1"));
        assert_eq!(super::linger_of(&client), Duration::from_millis(1));

        config.properties.insert("linger.ms".into(), "5".into());
        let client = super::client_config(&config);
        assert_eq!(client.get("linger.ms"), Some("5"));
        assert_eq!(super::linger_of(&client), Duration::from_millis(5));

        // Configured under its other name, the linger is that one alone: librdkafka takes both
        // names as one property, applied in no set order.
        let mut config = KafkaConfig::default();
        config
            .properties
            .insert("queue.buffering.max.ms".into(), "7".into());
        let client = super::client_config(&config);
        assert_eq!(client.get("linger.ms"), None);
        assert_eq!(super::linger_of(&client), Duration::from_millis(7));
    }

    /// A delivery timeout configured as `delivery.timeout.ms` is the only one set, for the
    /// at-least-once producer and the transactional one alike.
    #[test]
    fn a_delivery_timeout_under_its_other_name_is_the_only_one() {
        let mut config = KafkaConfig::default();
        config
            .properties
            .insert("delivery.timeout.ms".into(), "120000".into());
        let client = super::client_config(&config);
        assert_eq!(client.get("message.timeout.ms"), None);
        assert_eq!(client.get("delivery.timeout.ms"), Some("120000"));
        assert_eq!(
            super::finite_delivery_timeout(&config),
            Some(("delivery.timeout.ms", "120000"))
        );

        let client = super::transactional_config(&config, "t");
        assert_eq!(client.get("delivery.timeout.ms"), None);
        assert_eq!(client.get("message.timeout.ms"), Some("120000"));
        assert_eq!(client.get("transaction.timeout.ms"), Some("120000"));
    }

    #[test]
    fn no_local_delivery_timeout_unless_configured_and_the_guarantees_always() {
        let mut config = KafkaConfig::default();
        let client = super::client_config(&config);
        assert_eq!(client.get("message.timeout.ms"), Some("0"));
        assert_eq!(super::finite_delivery_timeout(&config), None);

        config
            .properties
            .insert("message.timeout.ms".into(), "3000".into());
        config.properties.insert("acks".into(), "1".into());
        let client = super::client_config(&config);
        assert_eq!(client.get("message.timeout.ms"), Some("3000"));
        assert_eq!(client.get("acks"), Some("all"));
        assert_eq!(client.get("enable.idempotence"), Some("true"));
        assert_eq!(
            super::finite_delivery_timeout(&config),
            Some(("message.timeout.ms", "3000"))
        );
    }
}
