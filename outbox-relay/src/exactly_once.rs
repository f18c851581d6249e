//! The exactly-once delivery mode (`delivery = "exactly-once"`): for `read_committed`
//! consumers, each committed outbox event appears once, across crashes and restarts.
//!
//! Contract:
//! - The producer is transactional, with one `transactional.id` per relay identity
//!   ([`Config::transactional_id`]); `init_transactions` at start fences a zombie relay with the
//!   same id and aborts its open transaction. A fenced relay stops ([`ExactlyOnceError::Fenced`]),
//!   never retrying.
//! - A Kafka transaction holds the events of whole source transactions only (and their dead
//!   letters), then one record on the compacted offsets topic: key = the transactional id, value
//!   = [`StoredRecord`], the source position the transaction ends at. It is cut only at a source
//!   `Commit`: once `kafka.transaction_max_events` or `kafka.transaction_interval` is reached,
//!   or when the source is idle. A larger source transaction stays whole.
//! - The source is acknowledged only after the Kafka commit, so its own position may lag the
//!   stored one, never lead it.
//! - Every session reads the stored position back (`read_committed`, to the end of the topic)
//!   and resumes after it; a source transaction at or below it is skipped. A source whose own
//!   durable position is past it is a gap, refused ([`ExactlyOnceError::Gap`]).
//! - A failure inside a transaction aborts it; the session ends and the next resumes from the
//!   stored position. An event Kafka refuses for good is remembered by its origin and goes to
//!   the dead letters in the next attempt, inside that attempt's transaction.

use std::collections::HashMap;
use std::pin::Pin;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::backoff::Backoff;
use crate::config::{Config, KafkaConfig};
use crate::dead_letter::DeadLetter;
use crate::pipeline::{Delivery, InFlight, Outgoing, Pipeline, RelayError, Stage, State, track};
use crate::record::Origin;
use crate::sink::{Failure, KafkaMessage, KafkaSink, classify, is_fenced, is_size_error};
use crate::source::{Connector, Fault, Source, SourceEvent, StoredPosition};

/// How long one of librdkafka's transaction calls may block.
const TRANSACTION_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long reading the offsets topic (or its metadata) may take.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Fault injection for the tests only: when set to N, the process aborts right after the N-th
/// Kafka commit that carries events, before the source is acknowledged — a crash in the window
/// that the stored position covers (see `tests/exactly_once.rs`). Not a setting: never set it
/// in production.
pub const CRASH_AFTER_COMMIT_ENV: &str = "OUTBOX_RELAY_TEST_CRASH_AFTER_KAFKA_COMMIT";

/// While the source is idle, how often a transaction of only the position moves the stored
/// (and so the acknowledged) position to the source's end: the slot then releases its WAL.
const IDLE_ADVANCE: Duration = Duration::from_secs(10);

/// Why the exactly-once mode stopped or ended a session.
#[derive(Debug, thiserror::Error)]
pub enum ExactlyOnceError {
    #[error(
        "the offsets topic `{topic}` does not exist; create it with `outbox-relay setup \
         --delivery exactly-once` (it holds the source position committed with the events)"
    )]
    NoOffsetsTopic { topic: String },
    #[error(
        "the offsets topic `{topic}` has `cleanup.policy={policy}`; it must be `compact` (a \
         deleted segment would lose the stored position): `outbox-relay setup --delivery \
         exactly-once` creates it so, or alter the topic"
    )]
    NotCompacted { topic: String, policy: String },
    #[error(
        "another relay took the transactional id `{id}` and fenced this one; this relay stops \
         (two relays with the same identity cannot both run in exactly-once mode)"
    )]
    Fenced { id: String },
    #[error(
        "gap: the source's own position {source_position} is past the position {stored} \
         committed to Kafka for `{id}` (topic `{topic}`): events in between were acknowledged \
         without an exactly-once commit (an at-least-once run?) and are not skipped silently; \
         reset the source to {stored}, or give the relay a new `kafka.transactional_id`"
    )]
    Gap {
        id: String,
        topic: String,
        stored: String,
        source_position: String,
    },
    #[error(
        "the position stored for `{id}` in `{topic}` ({stored}) and the source's own position \
         ({source_position}) are of different logs; refusing to guess which events are shipped"
    )]
    Incomparable {
        id: String,
        topic: String,
        stored: String,
        source_position: String,
    },
    #[error("the record for `{id}` in the offsets topic `{topic}` is unreadable: {problem}")]
    BadRecord {
        id: String,
        topic: String,
        problem: String,
    },
    #[error(
        "the offsets topic `{topic}` holds a position of the `{found}` source for `{id}`, and \
         this relay runs the `{expected}` source; give it its own `kafka.transactional_id`"
    )]
    OtherSource {
        id: String,
        topic: String,
        found: String,
        expected: String,
    },
    #[error("the Kafka brokers refuse the transactional id `{id}`: {source}")]
    Refused { id: String, source: KafkaError },
    #[error("kafka ({step}): {source}")]
    Kafka {
        step: &'static str,
        source: KafkaError,
    },
    #[error(
        "event {event} was refused by Kafka for good ({reason}); its transaction is aborted, and \
         the retry sends it to the dead letters"
    )]
    Condemned { event: String, reason: String },
}

impl ExactlyOnceError {
    pub fn fault(&self) -> Fault {
        match self {
            ExactlyOnceError::Kafka { .. } | ExactlyOnceError::Condemned { .. } => Fault::Transient,
            _ => Fault::Fatal,
        }
    }
}

fn kafka(step: &'static str) -> impl FnOnce(KafkaError) -> ExactlyOnceError {
    move |source| ExactlyOnceError::Kafka { step, source }
}

/// The value of a record on the offsets topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRecord {
    /// The source's name (`wal`, `message`, `binlog`, `poll`).
    pub source: String,
    /// [`StoredPosition::encode`]'s form.
    pub position: String,
}

/// [`crate::sink::other_client_config`], with librdkafka's own log quiet below errors.
fn client_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut client = crate::sink::other_client_config(kafka);
    client.set("log_level", "3");
    client
}

/// Creates the compacted offsets topic unless it exists (`setup --delivery exactly-once`), then
/// checks it. Returns whether it was created.
pub async fn create_offsets_topic(kafka_config: &KafkaConfig) -> Result<bool, ExactlyOnceError> {
    let admin: AdminClient<DefaultClientContext> = client_config(kafka_config)
        .create()
        .map_err(kafka("creating an admin client"))?;
    let topic = &kafka_config.offsets_topic;
    let new = NewTopic::new(topic, 1, TopicReplication::Fixed(-1))
        .set("cleanup.policy", "compact")
        .set("min.compaction.lag.ms", "0");
    let results = admin
        .create_topics(
            [&new],
            &AdminOptions::new().operation_timeout(Some(READ_TIMEOUT)),
        )
        .await
        .map_err(kafka("creating the offsets topic"))?;
    let mut created = true;
    for result in results {
        match result {
            Ok(_) => {}
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => created = false,
            Err((_, code)) => {
                return Err(ExactlyOnceError::Kafka {
                    step: "creating the offsets topic",
                    source: KafkaError::AdminOp(code),
                });
            }
        }
    }
    check_offsets_topic(kafka_config).await?;
    Ok(created)
}

/// The offsets topic exists and is compacted.
pub async fn check_offsets_topic(kafka_config: &KafkaConfig) -> Result<(), ExactlyOnceError> {
    let admin: AdminClient<DefaultClientContext> = client_config(kafka_config)
        .create()
        .map_err(kafka("creating an admin client"))?;
    let topic = kafka_config.offsets_topic.clone();
    let options = AdminOptions::new().request_timeout(Some(READ_TIMEOUT));
    let described = admin
        .describe_configs([&ResourceSpecifier::Topic(&topic)], &options)
        .await
        .map_err(kafka("describing the offsets topic"))?;
    let Some(result) = described.into_iter().next() else {
        return Err(ExactlyOnceError::NoOffsetsTopic { topic });
    };
    let resource = match result {
        Ok(resource) => resource,
        Err(rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition) => {
            return Err(ExactlyOnceError::NoOffsetsTopic { topic });
        }
        Err(code) => {
            return Err(ExactlyOnceError::Kafka {
                step: "describing the offsets topic",
                source: KafkaError::AdminOp(code),
            });
        }
    };
    // A topic the broker does not know comes back with no configuration at all.
    let Some(policy) = resource
        .get("cleanup.policy")
        .and_then(|entry| entry.value.clone())
    else {
        return Err(ExactlyOnceError::NoOffsetsTopic { topic });
    };
    if !policy.split(',').any(|p| p.trim() == "compact") {
        return Err(ExactlyOnceError::NotCompacted { topic, policy });
    }
    Ok(())
}

/// The last record stored for `id` on the offsets topic, read `read_committed` to the topic's
/// end (the last stable offset: committed transactions only).
pub async fn read_stored(
    kafka_config: &KafkaConfig,
    id: &str,
) -> Result<Option<StoredRecord>, ExactlyOnceError> {
    let kafka_config = kafka_config.clone();
    let id = id.to_owned();
    tokio::task::spawn_blocking(move || read_stored_blocking(&kafka_config, &id))
        .await
        .map_err(|_| ExactlyOnceError::Kafka {
            step: "reading the offsets topic",
            source: KafkaError::Canceled,
        })?
}

fn read_stored_blocking(
    kafka_config: &KafkaConfig,
    id: &str,
) -> Result<Option<StoredRecord>, ExactlyOnceError> {
    let topic = kafka_config.offsets_topic.as_str();
    let consumer: BaseConsumer = client_config(kafka_config)
        .set("group.id", format!("outbox-relay-offsets.{id}"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create()
        .map_err(kafka("creating the offsets consumer"))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), READ_TIMEOUT)
        .map_err(kafka("reading the offsets topic's metadata"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .filter(|t| t.error().is_none())
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    if partitions.is_empty() {
        return Err(ExactlyOnceError::NoOffsetsTopic {
            topic: topic.to_owned(),
        });
    }
    let mut assignment = TopicPartitionList::new();
    for partition in &partitions {
        assignment
            .add_partition_offset(topic, *partition, Offset::Beginning)
            .map_err(kafka("assigning the offsets topic"))?;
    }
    consumer
        .assign(&assignment)
        .map_err(kafka("assigning the offsets topic"))?;
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut at_end: Vec<i32> = Vec::new();
    let mut last: Option<Vec<u8>> = None;
    while at_end.len() < partitions.len() {
        if Instant::now() > deadline {
            return Err(ExactlyOnceError::Kafka {
                step: "reading the offsets topic to its end",
                source: KafkaError::MessageConsumption(
                    rdkafka::types::RDKafkaErrorCode::OperationTimedOut,
                ),
            });
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) if message.key() == Some(id.as_bytes()) => {
                last = message.payload().map(<[u8]>::to_vec);
            }
            Some(Err(KafkaError::PartitionEOF(partition))) if !at_end.contains(&partition) => {
                at_end.push(partition);
            }
            None | Some(Ok(_)) | Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Err(error)) => {
                return Err(ExactlyOnceError::Kafka {
                    step: "reading the offsets topic",
                    source: error,
                });
            }
        }
    }
    last.map(|value| {
        serde_json::from_slice(&value).map_err(|e| ExactlyOnceError::BadRecord {
            id: id.to_owned(),
            topic: topic.to_owned(),
            problem: e.to_string(),
        })
    })
    .transpose()
}

/// The sessions of the exactly-once mode, after the connector's preflight.
pub(crate) async fn sessions<C: Connector>(
    pipeline: &Pipeline<'_>,
    connector: &mut C,
    shutdown: &mut Pin<&mut impl std::future::Future<Output = ()>>,
    mut backoff: Backoff,
) -> Result<(), RelayError> {
    let config = pipeline.config;
    let id = config.transactional_id();
    let topic = config.kafka.offsets_topic.clone();
    // A missing or deleting offsets topic stops the relay at start; an unreachable broker is
    // waited for.
    loop {
        let checked = tokio::select! {
            checked = check_offsets_topic(&config.kafka) => checked,
            _ = shutdown.as_mut() => return Ok(()),
        };
        match checked {
            Ok(()) => break,
            Err(error) => {
                if !pipeline
                    .wait_out(error.into(), &mut backoff, shutdown)
                    .await?
                {
                    return Ok(());
                }
            }
        }
    }
    tracing::info!(
        transactional_id = %id,
        offsets_topic = %topic,
        "exactly-once delivery: events and the source position are committed in one Kafka \
         transaction"
    );
    let mut sink: Option<KafkaSink> = None;
    let mut condemned: HashMap<String, String> = HashMap::new();
    loop {
        let attempt = async {
            let producer = match sink.take() {
                Some(producer) => producer,
                None => {
                    let producer = KafkaSink::connect_transactional(&config.kafka, &id)
                        .await
                        .map_err(|source| RelayError::Kafka {
                            stage: Stage::Producer,
                            source,
                        })?;
                    producer
                        .init_transactions(TRANSACTION_CALL_TIMEOUT)
                        .await
                        .map_err(|source| transaction_error(&id, "init_transactions", source))?;
                    producer
                }
            };
            let stored = stored_position::<C>(config, &id, connector.name()).await?;
            check_gap(config, &id, connector, stored.as_ref()).await?;
            Ok::<_, RelayError>((producer, stored))
        };
        let prepared = tokio::select! {
            prepared = attempt => prepared,
            _ = shutdown.as_mut() => return Ok(()),
        };
        let (producer, stored) = match prepared {
            Ok(prepared) => prepared,
            Err(error) => {
                if !pipeline.wait_out(error, &mut backoff, shutdown).await? {
                    return Ok(());
                }
                continue;
            }
        };
        let opened = tokio::select! {
            opened = connector.open(stored.clone()) => opened,
            _ = shutdown.as_mut() => return Ok(()),
        };
        let source = match opened {
            Ok(source) => source,
            Err(error) => {
                sink = Some(producer);
                if !pipeline
                    .wait_out(error.into(), &mut backoff, shutdown)
                    .await?
                {
                    return Ok(());
                }
                continue;
            }
        };
        tracing::info!(
            source = connector.name(),
            from = %stored.as_ref().map_or_else(|| "the source's stored position".to_owned(), ToString::to_string),
            "session started (exactly-once)"
        );
        pipeline.status.set_state(State::Leading);
        let mut session = TxSession {
            pipeline,
            name: connector.name(),
            sink: &producer,
            id: &id,
            source,
            stored: stored.clone(),
            pending_end: None,
            in_flight: FuturesUnordered::new(),
            kafka_tx: None,
            in_source_tx: false,
            replay_check: stored.is_some(),
            held: None,
            condemned: &mut condemned,
            last_cut: Instant::now(),
            source_tx_events: 0,
            skipped: 0,
        };
        let outcome = session.stream(shutdown).await;
        let finished = session.finish(outcome.is_ok()).await;
        let progressed = session.stored != stored;
        let TxSession { source, .. } = session;
        source.close().await;
        // A producer that failed or may hold a half-ended transaction is rebuilt; its successor's
        // `init_transactions` aborts whatever it left open.
        let healthy = finished.is_ok() && producer.fatal_error().is_none();
        let outcome = match (outcome, finished) {
            (Ok(()), Err(error)) if error.fault() == Fault::Fatal => Err(error),
            (Ok(()), _) => return Ok(()),
            (Err(error), Err(fatal)) if fatal.fault() == Fault::Fatal => {
                tracing::debug!(%error, "the session ended");
                Err(fatal)
            }
            (Err(error), _) => Err(error),
        };
        match outcome {
            Ok(()) => return Ok(()),
            Err(error) => {
                if healthy {
                    sink = Some(producer);
                }
                if progressed {
                    backoff.reset();
                }
                if !pipeline.wait_out(error, &mut backoff, shutdown).await? {
                    return Ok(());
                }
            }
        }
    }
}

/// The stored position of `id`, decoded, or None on a first start.
async fn stored_position<C: Connector>(
    config: &Config,
    id: &str,
    name: &str,
) -> Result<Option<<C::Source as Source>::Position>, RelayError> {
    let topic = &config.kafka.offsets_topic;
    let Some(record) = read_stored(&config.kafka, id).await? else {
        return Ok(None);
    };
    if record.source != name {
        return Err(ExactlyOnceError::OtherSource {
            id: id.to_owned(),
            topic: topic.clone(),
            found: record.source,
            expected: name.to_owned(),
        }
        .into());
    }
    let position = <<C::Source as Source>::Position as StoredPosition>::decode(&record.position)
        .map_err(|problem| ExactlyOnceError::BadRecord {
            id: id.to_owned(),
            topic: topic.clone(),
            problem,
        })?;
    Ok(Some(position))
}

/// Refuses a source whose own durable position is past the stored one.
async fn check_gap<C: Connector>(
    config: &Config,
    id: &str,
    connector: &mut C,
    stored: Option<&<C::Source as Source>::Position>,
) -> Result<(), RelayError> {
    let own = connector.durable_position().await?;
    let topic = &config.kafka.offsets_topic;
    let Some(stored) = stored else {
        tracing::info!(
            transactional_id = id,
            offsets_topic = %topic,
            source_position = %own.as_ref().map_or_else(|| "-".to_owned(), ToString::to_string),
            "no position stored in Kafka yet: first start, resuming from the source's own position"
        );
        return Ok(());
    };
    let Some(own) = own else {
        return Ok(());
    };
    match own.order(stored) {
        Some(std::cmp::Ordering::Greater) => Err(ExactlyOnceError::Gap {
            id: id.to_owned(),
            topic: topic.clone(),
            stored: stored.to_string(),
            source_position: own.to_string(),
        }
        .into()),
        Some(_) => {
            tracing::info!(transactional_id = id, stored = %stored, source_position = %own, "resuming after the position stored in Kafka");
            Ok(())
        }
        None => Err(ExactlyOnceError::Incomparable {
            id: id.to_owned(),
            topic: topic.clone(),
            stored: stored.to_string(),
            source_position: own.to_string(),
        }
        .into()),
    }
}

/// A failed transaction call: fenced is fatal, a refusal of the id is fatal, anything else ends
/// the session.
fn transaction_error(id: &str, step: &'static str, source: KafkaError) -> RelayError {
    if is_fenced(&source) {
        return ExactlyOnceError::Fenced { id: id.to_owned() }.into();
    }
    if matches!(
        source.rdkafka_error_code(),
        Some(
            rdkafka::types::RDKafkaErrorCode::TransactionalIdAuthorizationFailed
                | rdkafka::types::RDKafkaErrorCode::ClusterAuthorizationFailed
        )
    ) {
        return ExactlyOnceError::Refused {
            id: id.to_owned(),
            source,
        }
        .into();
    }
    ExactlyOnceError::Kafka { step, source }.into()
}

/// [`CRASH_AFTER_COMMIT_ENV`]: counts the Kafka commits with events, and aborts the process at
/// the one it names.
fn crash_if_injected() {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static AT: OnceLock<Option<u64>> = OnceLock::new();
    static COMMITS: AtomicU64 = AtomicU64::new(0);
    let Some(at) = *AT.get_or_init(|| {
        std::env::var(CRASH_AFTER_COMMIT_ENV)
            .ok()
            .and_then(|n| n.parse().ok())
    }) else {
        return;
    };
    if COMMITS.fetch_add(1, Ordering::Relaxed) + 1 == at {
        tracing::error!(
            commits = at,
            "{CRASH_AFTER_COMMIT_ENV}: aborting after the Kafka commit, before acknowledging the \
             source (test fault injection)"
        );
        std::process::abort();
    }
}

/// The open Kafka transaction.
struct KafkaTx {
    began: Instant,
    events: usize,
    published: u64,
    dead_lettered: Vec<(String, String)>,
}

struct TxSession<'p, 'c, 's, S: Source> {
    pipeline: &'p Pipeline<'c>,
    /// The source's name, stored with its position.
    name: &'static str,
    sink: &'s KafkaSink,
    id: &'s str,
    source: S,
    /// The position committed to Kafka (and acknowledged to the source).
    stored: Option<S::Position>,
    /// The end of the last source transaction (or keepalive) read, not yet stored.
    pending_end: Option<S::Position>,
    in_flight: InFlight,
    kafka_tx: Option<KafkaTx>,
    in_source_tx: bool,
    /// Until the first source transaction past `stored`, each one is held whole and judged at its
    /// `Commit`: one at or below `stored` was shipped before, and is skipped.
    replay_check: bool,
    held: Option<Vec<SourceEvent<S::Position>>>,
    /// Events Kafka refused for good, by origin: they go to the dead letters.
    condemned: &'s mut HashMap<String, String>,
    last_cut: Instant,
    source_tx_events: usize,
    skipped: u64,
}

fn origin_key(origin: &Origin) -> String {
    format!("{}={}", origin.header, origin.value)
}

impl<S: Source> TxSession<'_, '_, '_, S>
where
    S::Position: StoredPosition,
{
    async fn stream(
        &mut self,
        shutdown: &mut Pin<&mut impl std::future::Future<Output = ()>>,
    ) -> Result<(), RelayError> {
        let max_in_flight = self.pipeline.config.kafka.max_in_flight;
        let interval = self.pipeline.config.kafka.transaction_interval;
        let mut tick = tokio::time::interval(interval.min(Duration::from_secs(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut report = Instant::now();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.as_mut() => return Ok(()),
                Some(delivery) = self.in_flight.next(), if !self.in_flight.is_empty() => self.delivered(delivery)?,
                event = self.source.next(), if self.in_flight.len() < max_in_flight => self.read(event?).await?,
                _ = tick.tick() => {
                    self.on_tick().await?;
                    if report.elapsed() >= Duration::from_secs(1) {
                        report = Instant::now();
                        self.report();
                    }
                }
            }
        }
    }

    fn report(&self) {
        let age = self
            .kafka_tx
            .as_ref()
            .map_or(0.0, |tx| tx.began.elapsed().as_secs_f64());
        self.pipeline.metrics.lag(self.source.lag_bytes(), age);
    }

    /// Between source transactions: an open Kafka transaction past its interval is committed
    /// (the source is idle); an idle source's newer end is stored now and then.
    async fn on_tick(&mut self) -> Result<(), RelayError> {
        if self.in_source_tx {
            return Ok(());
        }
        let interval = self.pipeline.config.kafka.transaction_interval;
        match &self.kafka_tx {
            Some(tx) if tx.began.elapsed() >= interval => self.cut().await,
            None if self.last_cut.elapsed() >= IDLE_ADVANCE && self.pending_is_new() => {
                self.cut().await
            }
            _ => Ok(()),
        }
    }

    fn pending_is_new(&self) -> bool {
        match (&self.pending_end, &self.stored) {
            (Some(pending), Some(stored)) => {
                pending.order(stored) == Some(std::cmp::Ordering::Greater)
            }
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    async fn read(&mut self, event: SourceEvent<S::Position>) -> Result<(), RelayError> {
        match event {
            SourceEvent::Begin { .. } => {
                self.in_source_tx = true;
                self.source_tx_events = 0;
                if self.replay_check {
                    self.held = Some(Vec::new());
                }
            }
            SourceEvent::Commit { end } => {
                self.in_source_tx = false;
                if let Some(held) = self.held.take() {
                    let replayed = self.stored.as_ref().is_some_and(|stored| {
                        end.order(stored) != Some(std::cmp::Ordering::Greater)
                    });
                    if replayed {
                        self.skipped += held.len() as u64;
                        tracing::debug!(end = %end, events = held.len(), "skipped a source transaction already committed to Kafka");
                        return Ok(());
                    }
                    self.replay_check = false;
                    if self.skipped > 0 {
                        tracing::info!(
                            skipped = self.skipped,
                            "skipped the events of source transactions already committed to Kafka"
                        );
                    }
                    for event in held {
                        self.ship(event).await?;
                    }
                }
                if self.source_tx_events > 0 {
                    self.pipeline
                        .metrics
                        .transaction_read(self.source_tx_events);
                }
                self.pending_end = Some(end);
                let kafka = &self.pipeline.config.kafka;
                if let Some(tx) = &self.kafka_tx
                    && (tx.events >= kafka.transaction_max_events
                        || tx.began.elapsed() >= kafka.transaction_interval)
                {
                    self.cut().await?;
                }
            }
            SourceEvent::KeepAlive { end } => {
                if self.in_source_tx {
                    return Ok(());
                }
                let newer = |than: &Option<S::Position>| {
                    than.as_ref()
                        .is_none_or(|p| end.order(p) == Some(std::cmp::Ordering::Greater))
                };
                if newer(&self.stored) && newer(&self.pending_end) {
                    self.pending_end = Some(end);
                }
                // Idle: what is open is committed now.
                if self.kafka_tx.is_some() {
                    self.cut().await?;
                }
            }
            event => {
                if !self.in_source_tx {
                    // A source puts every event in a transaction; one that did not holds the
                    // cut until its next `Commit`.
                    self.in_source_tx = true;
                    self.source_tx_events = 0;
                }
                match &mut self.held {
                    Some(held) => held.push(event),
                    None => self.ship(event).await?,
                }
            }
        }
        Ok(())
    }

    /// Begins a Kafka transaction unless one is open.
    fn open_kafka_tx(&mut self) -> Result<(), RelayError> {
        if self.kafka_tx.is_none() {
            self.sink
                .begin_transaction()
                .map_err(|source| transaction_error(self.id, "begin_transaction", source))?;
            self.kafka_tx = Some(KafkaTx {
                began: Instant::now(),
                events: 0,
                published: 0,
                dead_lettered: Vec::new(),
            });
        }
        Ok(())
    }

    /// Sends one event (or its dead letter) inside the open Kafka transaction.
    async fn ship(&mut self, event: SourceEvent<S::Position>) -> Result<(), RelayError> {
        self.source_tx_events += 1;
        self.open_kafka_tx()?;
        if let Some(tx) = &mut self.kafka_tx {
            tx.events += 1;
        }
        match Outgoing::of(&self.pipeline.router, event) {
            // Refused for good in an earlier attempt: its dead letter replaces it.
            Some(Outgoing::Publish(origin, message)) => {
                match self.condemned.get(&origin_key(&origin)).cloned() {
                    Some(reason) => self.dead_letter(origin, message, reason).await,
                    None => self.send(origin, message, None).await,
                }
            }
            Some(Outgoing::DeadLetter(origin, message, reason)) => {
                self.dead_letter(origin, message, reason).await
            }
            None => Ok(()),
        }
    }

    async fn dead_letter(
        &mut self,
        origin: Origin,
        original: KafkaMessage,
        reason: String,
    ) -> Result<(), RelayError> {
        let letter = DeadLetter {
            reason: reason.clone(),
            origin: origin.clone(),
            drop_value: false,
        };
        let message = letter.message(&self.pipeline.config.kafka.dead_letter_topic, original);
        self.send(origin, message, Some(reason)).await
    }

    async fn send(
        &mut self,
        origin: Origin,
        mut message: KafkaMessage,
        dead_letter: Option<String>,
    ) -> Result<(), RelayError> {
        loop {
            match self.sink.send(&message) {
                Ok(future) => {
                    self.in_flight.push(track(future, 0, origin, dead_letter));
                    return Ok(());
                }
                Err(error) => match classify(&error) {
                    Failure::Backpressure => {
                        // Deliveries free room; they are handled here so that a failure among
                        // them is seen.
                        if let Ok(Some(delivery)) =
                            tokio::time::timeout(Duration::from_millis(2), self.in_flight.next())
                                .await
                        {
                            self.delivered(delivery)?;
                        }
                    }
                    Failure::Permanent if dead_letter.is_none() => {
                        return Box::pin(self.dead_letter(origin, message, error.to_string()))
                            .await;
                    }
                    Failure::Permanent if is_size_error(&error) && message.value.is_some() => {
                        message = DeadLetter::without_value(message);
                    }
                    _ => {
                        self.pipeline.metrics.event_failed(&error);
                        if is_fenced(&error)
                            || self.sink.fatal_error().is_some_and(|(code, _)| {
                                is_fenced(&KafkaError::MessageProduction(code))
                            })
                        {
                            return Err(ExactlyOnceError::Fenced {
                                id: self.id.to_owned(),
                            }
                            .into());
                        }
                        return Err(RelayError::Kafka {
                            stage: if dead_letter.is_some() {
                                Stage::DeadLetter
                            } else {
                                Stage::Send
                            },
                            source: error,
                        });
                    }
                },
            }
        }
    }

    /// A delivery inside the open transaction. Any failure makes the transaction abortable: a
    /// permanent refusal of an event is remembered, so that its retry dead-letters it.
    fn delivered(&mut self, delivery: Delivery) -> Result<(), RelayError> {
        let Delivery {
            origin,
            dead_letter,
            result,
            ..
        } = delivery;
        match result {
            Ok(Ok(_)) => {
                if let Some(tx) = &mut self.kafka_tx {
                    match dead_letter {
                        Some(reason) => tx.dead_lettered.push((reason, origin.value)),
                        None => tx.published += 1,
                    }
                }
                Ok(())
            }
            Ok(Err((error, _))) => {
                self.pipeline.metrics.event_failed(&error);
                let fenced = is_fenced(&error)
                    || self
                        .sink
                        .fatal_error()
                        .is_some_and(|(code, _)| is_fenced(&KafkaError::MessageProduction(code)));
                if fenced {
                    return Err(ExactlyOnceError::Fenced {
                        id: self.id.to_owned(),
                    }
                    .into());
                }
                if classify(&error) == Failure::Permanent && dead_letter.is_none() {
                    let reason = error.to_string();
                    self.condemned.insert(origin_key(&origin), reason.clone());
                    return Err(ExactlyOnceError::Condemned {
                        event: origin_key(&origin),
                        reason,
                    }
                    .into());
                }
                Err(RelayError::Kafka {
                    stage: if dead_letter.is_some() {
                        Stage::DeadLetter
                    } else {
                        Stage::Delivery
                    },
                    source: error,
                })
            }
            Err(_) => Err(RelayError::Kafka {
                stage: Stage::Delivery,
                source: KafkaError::Canceled,
            }),
        }
    }

    /// Commits the open Kafka transaction with the position it ends at (or, with none open, a
    /// transaction of the position alone), then acknowledges the source.
    async fn cut(&mut self) -> Result<(), RelayError> {
        let Some(end) = self.pending_end.clone() else {
            return Ok(());
        };
        self.open_kafka_tx()?;
        while let Some(delivery) = self.in_flight.next().await {
            self.delivered(delivery)?;
        }
        let record = StoredRecord {
            source: self.name.to_owned(),
            position: end.encode(),
        };
        let value = serde_json::to_vec(&record).unwrap_or_default();
        let message = KafkaMessage {
            topic: self.pipeline.config.kafka.offsets_topic.clone(),
            partition: None,
            timestamp: None,
            key: Some(self.id.as_bytes().to_vec()),
            value: Some(value),
            headers: Vec::new(),
        };
        let delivery = self
            .sink
            .send(&message)
            .map_err(|source| transaction_error(self.id, "sending the position", source))?;
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((source, _))) => {
                return Err(transaction_error(self.id, "sending the position", source));
            }
            Err(_) => {
                return Err(RelayError::Kafka {
                    stage: Stage::Delivery,
                    source: KafkaError::Canceled,
                });
            }
        }
        self.sink
            .commit_transaction(TRANSACTION_CALL_TIMEOUT)
            .await
            .map_err(|source| transaction_error(self.id, "commit_transaction", source))?;
        let tx = self.kafka_tx.take();
        if tx.as_ref().is_some_and(|tx| tx.events > 0) {
            crash_if_injected();
        }
        self.last_cut = Instant::now();
        let metrics = &self.pipeline.metrics;
        if let Some(tx) = tx {
            for _ in 0..tx.published {
                metrics.event_published();
            }
            for (reason, origin) in &tx.dead_lettered {
                metrics.event_dead_lettered(
                    &self.pipeline.config.kafka.dead_letter_topic,
                    reason,
                    origin,
                );
            }
        }
        self.source.acknowledge(&end);
        let shown = end.to_string();
        self.stored = Some(end);
        self.pending_end = None;
        self.pipeline.status.update(|s| {
            s.confirmed = Some(shown);
            s.attempts = 0;
        });
        Ok(())
    }

    /// Ends the session's Kafka side: on a clean stop between source transactions the open
    /// transaction is committed; otherwise it is aborted (and sent again by the next session).
    async fn finish(&mut self, clean: bool) -> Result<(), RelayError> {
        if self.kafka_tx.is_none() {
            return Ok(());
        }
        if clean && !self.in_source_tx {
            let bound = self.pipeline.config.drain_timeout();
            match tokio::time::timeout(bound, self.cut()).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(error)) => tracing::warn!(%error, "committing the last transaction at stop"),
                Err(_) => {
                    tracing::warn!(?bound, "committing the last transaction at stop timed out")
                }
            }
        }
        self.kafka_tx = None;
        self.in_flight = FuturesUnordered::new();
        match self.sink.abort_transaction(TRANSACTION_CALL_TIMEOUT).await {
            Ok(()) => Ok(()),
            Err(source) => {
                let error = transaction_error(self.id, "abort_transaction", source);
                if error.fault() == Fault::Fatal {
                    return Err(error);
                }
                tracing::warn!(%error, "aborting the Kafka transaction; the producer is rebuilt");
                Err(error)
            }
        }
    }
}
