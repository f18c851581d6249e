//! The exactly-once delivery mode (`delivery = "exactly-once"`): for `read_committed`
//! consumers, each committed outbox event appears once, across crashes and restarts.
//!
//! It is a [`DeliveryPolicy`] of the pipeline's one session loop ([`ExactlyOnce`], chosen by
//! [`crate::relay`]): the loop routes, sends, dead-letters, waits out backpressure, retries and
//! acknowledges the source; this module says when a Kafka transaction is cut and what it
//! commits, and owns the offsets topic.
//!
//! Contract:
//! - The producer is transactional, with one `transactional.id` per relay identity
//!   ([`Config::transactional_id`]); `init_transactions`, once the connector took its turn
//!   (a `poll` standby waits for the leadership first), fences a zombie relay with the same id
//!   and aborts its open transaction. A fenced relay stops ([`ExactlyOnceError::Fenced`]),
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
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::config::{Config, KafkaConfig};
use crate::pipeline::{DeliveryError, DeliveryPolicy, Moment, RelayError, Resume, Stage};
use crate::record::Origin;
use crate::sink::{KafkaMessage, KafkaSink, is_fenced};
use crate::source::{Connector, Fault, Source, StoredPosition};

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

impl From<ExactlyOnceError> for RelayError {
    fn from(error: ExactlyOnceError) -> RelayError {
        RelayError::Delivery(DeliveryError::new("exactly-once", error.fault(), error))
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

/// The exactly-once mode, as the pipeline's session loop runs it (see the module's contract).
pub struct ExactlyOnce {
    /// The producer's `transactional.id`, and the key of the stored position.
    id: String,
    /// Events Kafka refused for good, by origin: they go to the dead letters.
    condemned: HashMap<String, String>,
    /// The open Kafka transaction.
    tx: Option<KafkaTx>,
    last_cut: Instant,
    /// How long the last commit took (the position's delivery and `commit_transaction`): an
    /// idle source's transaction is kept open at least this long (see [`Self::idle_cut_age`]).
    last_commit_took: Duration,
}

/// The open Kafka transaction.
struct KafkaTx {
    began: Instant,
    events: usize,
}

impl ExactlyOnce {
    pub fn new(config: &Config) -> ExactlyOnce {
        ExactlyOnce {
            id: config.transactional_id(),
            condemned: HashMap::new(),
            tx: None,
            last_cut: Instant::now(),
            last_commit_took: Duration::ZERO,
        }
    }

    /// The age at which the open transaction is committed when the source is idle. A source
    /// reports idle between nearly every pair of its transactions when they come one by one:
    /// PostgreSQL sends a keepalive each time its walsender waits for WAL while the client's
    /// acknowledged position lags, and in this mode it lags until the commit. Committing at each
    /// of those costs a commit (tens of milliseconds) per source transaction, and a service that
    /// commits faster than that is never caught up with. Keeping the transaction open for as
    /// long as the last commit took spends at most half of the time committing, at any rate,
    /// and keeps an idle source's latency near two commits.
    fn idle_cut_age(&self, config: &Config) -> Duration {
        self.last_commit_took.min(config.kafka.transaction_interval)
    }

    /// Begins a Kafka transaction unless one is open.
    fn open(&mut self, sink: &KafkaSink) -> Result<&mut KafkaTx, RelayError> {
        if self.tx.is_none() {
            sink.begin_transaction()
                .map_err(|source| transaction_error(&self.id, "begin_transaction", source))?;
        }
        Ok(self.tx.get_or_insert_with(|| KafkaTx {
            began: Instant::now(),
            events: 0,
        }))
    }
}

impl DeliveryPolicy for ExactlyOnce {
    fn name(&self) -> &'static str {
        "exactly-once"
    }

    /// A missing or deleting offsets topic stops the relay at start; an unreachable broker is
    /// waited for.
    async fn check(&mut self, config: &Config) -> Result<(), RelayError> {
        check_offsets_topic(&config.kafka).await?;
        tracing::info!(
            transactional_id = %self.id,
            offsets_topic = %config.kafka.offsets_topic,
            "exactly-once delivery: events and the source position are committed in one Kafka \
             transaction"
        );
        Ok(())
    }

    /// A transactional producer; its `init_transactions` fences a zombie with the same id and
    /// aborts its open transaction.
    async fn producer(&mut self, config: &Config) -> Result<KafkaSink, RelayError> {
        self.tx = None;
        let producer = KafkaSink::connect_transactional(&config.kafka, &self.id)
            .await
            .map_err(|source| RelayError::Kafka {
                stage: Stage::Producer,
                source,
            })?;
        producer
            .init_transactions(TRANSACTION_CALL_TIMEOUT)
            .await
            .map_err(|source| transaction_error(&self.id, "init_transactions", source))?;
        Ok(producer)
    }

    /// Every session resumes after the position stored in Kafka, read back `read_committed`
    /// (after `init_transactions`, so that no transaction of a zombie is pending), and skips
    /// what the source replays at or below it.
    async fn resume<C: Connector>(
        &mut self,
        config: &Config,
        connector: &mut C,
        _acknowledged: Option<<C::Source as Source>::Position>,
    ) -> Result<Resume<<C::Source as Source>::Position>, RelayError> {
        let stored = stored_position::<C>(config, &self.id, connector.name()).await?;
        check_gap(config, &self.id, connector, stored.as_ref()).await?;
        Ok(Resume {
            from: stored.clone(),
            skip_through: stored,
        })
    }

    fn transactional(&self) -> bool {
        true
    }

    fn sending(&mut self, sink: &KafkaSink) -> Result<(), RelayError> {
        self.open(sink)?.events += 1;
        Ok(())
    }

    fn condemned(&self, origin: &Origin) -> Option<String> {
        self.condemned.get(&origin_key(origin)).cloned()
    }

    fn condemn(&mut self, origin: &Origin, error: &KafkaError) -> RelayError {
        let reason = error.to_string();
        self.condemned.insert(origin_key(origin), reason.clone());
        ExactlyOnceError::Condemned {
            event: origin_key(origin),
            reason,
        }
        .into()
    }

    fn stopped(&self, sink: &KafkaSink, error: &KafkaError) -> Option<RelayError> {
        let fenced = is_fenced(error)
            || sink
                .fatal_error()
                .is_some_and(|(code, _)| is_fenced(&KafkaError::MessageProduction(code)));
        fenced.then(|| {
            ExactlyOnceError::Fenced {
                id: self.id.clone(),
            }
            .into()
        })
    }

    fn is_open(&self) -> bool {
        self.tx.is_some()
    }

    fn open_age(&self) -> Option<Duration> {
        self.tx.as_ref().map(|tx| tx.began.elapsed())
    }

    /// Cut only between source transactions: once `kafka.transaction_max_events` or
    /// `kafka.transaction_interval` is reached, and now and then while the source is idle, to
    /// move the stored (and so the acknowledged) position to its end. (When the source goes
    /// idle with events open: [`Self::idle_cut_in`].)
    fn cut_due(&self, config: &Config, at: Moment) -> bool {
        let kafka = &config.kafka;
        match (at, &self.tx) {
            (Moment::Commit, Some(tx)) => {
                tx.events >= kafka.transaction_max_events
                    || tx.began.elapsed() >= kafka.transaction_interval
            }
            (Moment::Tick { .. }, Some(tx)) => tx.began.elapsed() >= kafka.transaction_interval,
            (Moment::Tick { unstored }, None) => {
                unstored && self.last_cut.elapsed() >= IDLE_ADVANCE
            }
            (_, None) => false,
        }
    }

    /// Once the open transaction is as old as the last commit took (`Self::idle_cut_age`).
    fn idle_cut_in(&self, config: &Config) -> Option<Duration> {
        let tx = self.tx.as_ref()?;
        Some(self.idle_cut_age(config).saturating_sub(tx.began.elapsed()))
    }

    /// The position record, then the Kafka commit.
    async fn commit<P: StoredPosition + Sync>(
        &mut self,
        config: &Config,
        sink: &KafkaSink,
        source: &'static str,
        end: &P,
    ) -> Result<(), RelayError> {
        let started = Instant::now();
        self.open(sink)?;
        let record = StoredRecord {
            source: source.to_owned(),
            position: end.encode(),
        };
        let value = serde_json::to_vec(&record).unwrap_or_default();
        let message = KafkaMessage {
            topic: config.kafka.offsets_topic.clone(),
            partition: None,
            timestamp: None,
            key: Some(self.id.as_bytes().to_vec()),
            value: Some(value),
            headers: Vec::new(),
        };
        let delivery = sink
            .send(&message)
            .map_err(|source| transaction_error(&self.id, "sending the position", source))?;
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((source, _))) => {
                return Err(transaction_error(&self.id, "sending the position", source));
            }
            Err(_) => {
                return Err(RelayError::Kafka {
                    stage: Stage::Delivery,
                    source: KafkaError::Canceled,
                });
            }
        }
        sink.commit_transaction(TRANSACTION_CALL_TIMEOUT)
            .await
            .map_err(|source| transaction_error(&self.id, "commit_transaction", source))?;
        let tx = self.tx.take();
        if tx.is_some_and(|tx| tx.events > 0) {
            crash_if_injected();
        }
        self.last_cut = Instant::now();
        self.last_commit_took = started.elapsed();
        Ok(())
    }

    async fn abort(&mut self, sink: &KafkaSink) -> Result<(), RelayError> {
        if self.tx.take().is_none() {
            return Ok(());
        }
        sink.abort_transaction(TRANSACTION_CALL_TIMEOUT)
            .await
            .map_err(|source| transaction_error(&self.id, "abort_transaction", source))
    }
}

fn origin_key(origin: &Origin) -> String {
    format!("{}={}", origin.header, origin.value)
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
