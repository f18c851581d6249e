//! The Kafka sink: outbox records become Kafka messages in Debezium's Outbox Event Router
//! format, sent by an idempotent (`acks=all`) rdkafka producer, pipelined.
//!
//! Format: topic from the template with `${routedByValue}` = the routing column; key =
//! `aggregateid`; value = `payload` as stored; header `id`; configured columns as headers;
//! `traceparent` (and `tracestate`) from `tracingspancontext`.
//!
//! Errors are sorted by explicit lists (see [`classify`]): `QueueFull` is backpressure, a few
//! codes condemn one message (dead-letter), everything else is transient: the session restarts
//! from the acknowledged position and nothing is skipped.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

use crate::config::{KafkaConfig, Placement};
use crate::source::OutboxRecord;

/// One message for Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaMessage {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    /// None = tombstone.
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl KafkaMessage {
    /// The message of a record the router refused: no topic yet (the dead-letter topic is set
    /// when it is sent there), the key, the payload as stored, and the `id` header.
    pub fn unroutable(record: &OutboxRecord) -> KafkaMessage {
        KafkaMessage {
            topic: String::new(),
            key: record.get("aggregateid").map(|k| k.as_bytes().to_vec()),
            value: record.get_bytes("payload").map(<[u8]>::to_vec),
            headers: record
                .get("id")
                .map(|id| vec![("id".to_owned(), id.as_bytes().to_vec())])
                .unwrap_or_default(),
        }
    }

    /// The message carried back by a failed delivery.
    pub fn from_owned(message: &OwnedMessage) -> KafkaMessage {
        let headers = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        KafkaMessage {
            topic: message.topic().to_owned(),
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
            headers,
        }
    }

    /// The value of header `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
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
    topic: String,
    route_by: String,
    placements: Vec<Placement>,
    tombstone_on_empty_payload: bool,
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
}

/// Why `topic` is not a legal Kafka topic name, if it is not: 1 to 249 characters of ASCII
/// letters, digits, `.`, `_` and `-`, and neither `.` nor `..`.
pub fn topic_problem(topic: &str) -> Option<String> {
    if topic.is_empty() {
        return Some("it is empty".to_owned());
    }
    if topic.len() > 249 {
        return Some(format!("it has {} characters, more than 249", topic.len()));
    }
    if topic == "." || topic == ".." {
        return Some("`.` and `..` are reserved".to_owned());
    }
    topic
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        .map(|(at, c)| {
            format!("{c:?} at byte {at}; only ASCII letters, digits, `.`, `_` and `-` are allowed")
        })
}

impl Router {
    pub fn new(config: &KafkaConfig, placements: Vec<Placement>) -> Router {
        Router {
            topic: config.topic.clone(),
            route_by: config.route_by_field.clone(),
            placements,
            tombstone_on_empty_payload: config.tombstone_on_empty_payload,
        }
    }

    /// The Kafka message for `record`.
    pub fn route(&self, record: &OutboxRecord) -> Result<KafkaMessage, Unroutable> {
        let routed_by = record
            .get(&self.route_by)
            .ok_or_else(|| Unroutable::NoRoutingValue(self.route_by.clone()))?;
        let topic = self.topic.replace("${routedByValue}", routed_by);
        if let Some(problem) = topic_problem(&topic) {
            return Err(Unroutable::IllegalTopic { topic, problem });
        }
        let mut headers = Vec::with_capacity(2 + self.placements.len());
        if let Some(id) = record.get("id") {
            headers.push(("id".to_owned(), id.as_bytes().to_vec()));
        }
        for placement in &self.placements {
            if let Some(value) = record.get_bytes(&placement.column) {
                headers.push((placement.header.clone(), value.to_vec()));
            }
        }
        if let Some(context) = record.get("tracingspancontext") {
            let (parent, state) = outbox_core::trace::parse_span_context(context);
            if let Some(parent) = parent {
                headers.push(("traceparent".to_owned(), parent.as_bytes().to_vec()));
            }
            if let Some(state) = state {
                headers.push(("tracestate".to_owned(), state.as_bytes().to_vec()));
            }
        }
        let value = match record.get_bytes("payload") {
            Some(payload) if !payload.is_empty() => Some(payload.to_vec()),
            _ if self.tombstone_on_empty_payload => None,
            _ => Some(b"null".to_vec()),
        };
        Ok(KafkaMessage {
            topic,
            key: record.get("aggregateid").map(|k| k.as_bytes().to_vec()),
            value,
            headers,
        })
    }
}

/// The rdkafka producer, idempotent with `acks=all`.
pub struct KafkaSink {
    producer: FutureProducer<SinkContext>,
    refusal: Arc<Mutex<Option<Refusal>>>,
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
/// [`KafkaSink::preflight`], and passes every error on to the log.
struct SinkContext {
    refusal: Arc<Mutex<Option<Refusal>>>,
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

/// How long [`KafkaSink::connect`] waits for the brokers' first answer before it goes on and
/// leaves an unreachable cluster to the run loop's retries.
pub const PREFLIGHT_BOUND: Duration = Duration::from_secs(15);

impl KafkaSink {
    /// Builds the producer: every configured property passes through, then the guarantees are
    /// forced.
    pub fn new(config: &KafkaConfig) -> Result<KafkaSink, KafkaError> {
        let mut client = ClientConfig::new();
        // Throughput defaults, each overridable by `kafka.properties`.
        client
            // The Java producer's partitioner (Debezium's): a key lands on the same partition as
            // under Debezium, so switching relays keeps each aggregate on one partition, in order.
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "5")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "200000");
        if let Some(brokers) = &config.brokers {
            client.set("bootstrap.servers", brokers);
        }
        for (k, v) in &config.properties {
            client.set(k, v);
        }
        client.set("enable.idempotence", "true").set("acks", "all");
        let refusal = Arc::new(Mutex::new(None));
        let context = SinkContext {
            refusal: Arc::clone(&refusal),
        };
        Ok(KafkaSink {
            producer: client.create_with_context(context)?,
            refusal,
        })
    }

    /// [`KafkaSink::new`], then [`KafkaSink::preflight`] within [`PREFLIGHT_BOUND`]: a sink whose
    /// brokers refuse its credentials or certificates is an error here, at start, instead of an
    /// endless reconnect later.
    pub async fn connect(config: &KafkaConfig) -> Result<KafkaSink, KafkaError> {
        let sink = KafkaSink::new(config)?;
        sink.preflight(PREFLIGHT_BOUND).await?;
        Ok(sink)
    }

    /// Asks the brokers for metadata until one answers, a broker refuses the TLS handshake or
    /// the SASL authentication, or `bound` passes. Only a refusal is an error
    /// (`KafkaError::ClientCreation`, naming the cause and the settings to check): brokers that
    /// do not answer in time may be down for a while, which the run loop's retries cover.
    pub async fn preflight(&self, bound: Duration) -> Result<(), KafkaError> {
        use rdkafka::producer::Producer;
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            let producer = self.producer.clone();
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

    /// Hands `message` to the producer. The future resolves when Kafka acknowledged it (or
    /// gave up on it).
    pub fn send(&self, message: &KafkaMessage) -> Result<DeliveryFuture, KafkaError> {
        let mut headers = OwnedHeaders::new_with_capacity(message.headers.len());
        for (key, value) in &message.headers {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_slice()),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&message.topic).headers(headers);
        if let Some(key) = &message.key {
            record = record.key(key.as_slice());
        }
        if let Some(value) = &message.value {
            record = record.payload(value.as_slice());
        }
        self.producer
            .send_result(record)
            .map_err(|(error, _)| error)
    }

    /// Waits up to `timeout` for everything queued to be delivered.
    pub fn flush(&self, timeout: std::time::Duration) -> Result<(), KafkaError> {
        use rdkafka::producer::Producer;
        self.producer.flush(timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::ColumnValue;

    fn record(payload: Option<&str>, trace: Option<&str>) -> OutboxRecord {
        let col =
            |n: &str, v: Option<&str>| (n.to_owned(), v.map(|v| ColumnValue::Text(v.to_owned())));
        OutboxRecord {
            lsn: 1,
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
        let m = router(false).route(&record(
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
            .route(&record(Some("{}"), Some(&stored)))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.header("traceparent"), Some(parent.as_bytes()));
        assert_eq!(m.header("tracestate"), Some(&b"congo=t61rcWkgMzE"[..]));
    }

    #[test]
    fn illegal_topics_are_unroutable_with_the_reason() {
        let mut r = record(Some("{}"), None);
        r.columns[1].1 = Some(ColumnValue::Text("Order Line".to_owned()));
        assert_eq!(
            router(false).route(&r).map(|m| m.topic),
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
    fn empty_payload() {
        assert_eq!(
            router(true).route(&record(None, None)).map(|m| m.value),
            Ok(None)
        );
        assert_eq!(
            router(false).route(&record(None, None)).map(|m| m.value),
            Ok(Some(b"null".to_vec()))
        );
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
        assert!(is_fatal(&e(RDKafkaErrorCode::OutOfOrderSequenceNumber)));
    }
}
