//! `outbox-relay dlq list` and `outbox-relay dlq redrive`: the dead letters an operator can see
//! and publish again once the cause is fixed (for example a raised `max.message.bytes`).
//!
//! A dead letter is identified by its place in the dead-letter topic (`partition/offset`); its
//! event by the `id` header. Re-driving publishes the original key, value and headers (the
//! `dlq.*` headers removed) to the original topic with the relay's own idempotent producer and
//! partitioner, so the event lands on the partition of its aggregate; an event that was placed
//! on a partition of its own (a `partition` placement) goes to that partition, and one with a
//! record timestamp keeps it (`dlq.original.partition`, `dlq.original.timestamp`). Each
//! re-driven dead letter is then recorded in the compacted topic `<dead-letter topic>.redriven`
//! (key: `partition/offset`), and is not sent again unless `--force`. The record is written after
//! the original topic acknowledged the event: a redrive interrupted between the two sends that
//! event again on the next redrive (at least once, as everywhere; consumers dedupe by `id`).

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::config::KafkaConfig;
use crate::dead_letter::{ORIGINAL_PARTITION, ORIGINAL_TIMESTAMP};
use crate::sink::{KafkaMessage, KafkaSink};

/// How long a broker may take to answer a metadata or watermark request, or to deliver.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Why a `dlq` command failed.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("kafka ({step}): {source}")]
    Kafka {
        step: &'static str,
        source: KafkaError,
    },
    #[error("{0}")]
    Topic(String),
}

fn kafka_step(step: &'static str) -> impl FnOnce(KafkaError) -> DlqError {
    move |source| DlqError::Kafka { step, source }
}

/// One dead letter, as `dlq list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterEntry {
    /// `partition/offset` in the dead-letter topic: what the redrive record is keyed by.
    pub dead_letter: String,
    /// The event id (the `id` header), if the dead letter has one.
    pub event_id: Option<String>,
    pub reason: String,
    /// Where the event was bound; empty for what never had a topic (not an outbox event).
    pub original_topic: String,
    /// Where the event was read: the WAL position (`dlq.source.lsn`), the binlog position
    /// (`dlq.source.binlog`) or the polled table (`dlq.source.table`).
    pub source_position: Option<String>,
    /// The partition the event was placed on (a `partition` placement), where it goes again.
    pub original_partition: Option<i32>,
    /// The event's record timestamp (milliseconds since the Unix epoch), which it keeps.
    pub original_timestamp_ms: Option<i64>,
    /// When it was dead-lettered (milliseconds since the Unix epoch, the broker's timestamp).
    pub dead_lettered_at_ms: Option<i64>,
    pub age_seconds: Option<i64>,
    /// Whether it was re-driven already.
    pub redriven: bool,
    /// Why it cannot be re-driven, if it cannot.
    pub not_redrivable: Option<String>,
    /// The original message, as it is re-driven.
    #[serde(skip)]
    pub original: KafkaMessage,
}

/// Which dead letters `dlq list` shows.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// A text the reason contains (case-insensitive).
    pub reason: Option<String>,
    /// Only dead letters at most this old.
    pub newer_than: Option<Duration>,
    /// Only dead letters at least this old.
    pub older_than: Option<Duration>,
}

impl ListFilter {
    fn keeps(&self, entry: &DeadLetterEntry) -> bool {
        let reason_ok = self
            .reason
            .as_deref()
            .is_none_or(|wanted| entry.reason.to_lowercase().contains(&wanted.to_lowercase()));
        let age = entry.age_seconds.unwrap_or(0).max(0).unsigned_abs();
        let newer_ok = self.newer_than.is_none_or(|d| age <= d.as_secs());
        let older_ok = self.older_than.is_none_or(|d| age >= d.as_secs());
        reason_ok && newer_ok && older_ok
    }
}

/// The topic that records re-driven dead letters.
pub fn redriven_topic(kafka: &KafkaConfig) -> String {
    format!("{}.redriven", kafka.dead_letter_topic)
}

/// Every message of `topic`, up to its end when read; Ok(None) when the topic does not exist.
fn read_topic(kafka: &KafkaConfig, topic: &str) -> Result<Option<Vec<OwnedMessage>>, DlqError> {
    let consumer: BaseConsumer = crate::sink::other_client_config(kafka)
        .set("group.id", "outbox-relay-dlq")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("log_level", "3")
        .create()
        .map_err(kafka_step("creating a consumer"))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), TIMEOUT)
        .map_err(kafka_step("reading the topic's metadata"))?;
    let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Ok(None);
    };
    if found.error().is_some() || found.partitions().is_empty() {
        return Ok(None);
    }
    let mut assignment = TopicPartitionList::new();
    let mut ends = Vec::new();
    for partition in found.partitions() {
        let id = partition.id();
        let (low, high) = consumer
            .fetch_watermarks(topic, id, TIMEOUT)
            .map_err(kafka_step("reading the topic's offsets"))?;
        if high > low {
            assignment
                .add_partition_offset(topic, id, Offset::Offset(low))
                .map_err(kafka_step("assigning partitions"))?;
            ends.push((id, high));
        }
    }
    let mut messages = Vec::new();
    if ends.is_empty() {
        return Ok(Some(messages));
    }
    consumer
        .assign(&assignment)
        .map_err(kafka_step("assigning partitions"))?;
    let deadline = std::time::Instant::now() + TIMEOUT * 4;
    let mut next: Vec<(i32, i64)> = ends.iter().map(|&(p, _)| (p, 0)).collect();
    let done = |next: &[(i32, i64)]| {
        ends.iter()
            .all(|(p, high)| next.iter().any(|(q, at)| q == p && at >= high))
    };
    while !done(&next) {
        if std::time::Instant::now() > deadline {
            return Err(DlqError::Topic(format!(
                "reading `{topic}` to its end took longer than {}s",
                (TIMEOUT * 4).as_secs()
            )));
        }
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(message)) => {
                if let Some(slot) = next.iter_mut().find(|(p, _)| *p == message.partition()) {
                    slot.1 = message.offset() + 1;
                }
                messages.push(message.detach());
            }
            Some(Err(error)) => return Err(kafka_step("reading the topic")(error)),
            None => {}
        }
    }
    Ok(Some(messages))
}

fn header(message: &OwnedMessage, name: &str) -> Option<String> {
    message.headers().and_then(|h| {
        h.iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    })
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn entry(message: &OwnedMessage, redriven: &HashSet<String>) -> DeadLetterEntry {
    let dead_letter = format!("{}/{}", message.partition(), message.offset());
    let mut original = KafkaMessage::from_owned(message);
    original
        .headers
        .retain(|(name, _)| !name.starts_with("dlq."));
    original.topic = header(message, "dlq.original.topic").unwrap_or_default();
    let placed = original_placement(message);
    if let Ok((partition, timestamp)) = placed {
        original.partition = partition;
        original.timestamp = timestamp;
    }
    let dropped = header(message, "dlq.original.value.bytes");
    let not_redrivable = if original.topic.is_empty() {
        Some("it has no original topic (it is not an outbox event)".to_owned())
    } else if let Err(why) = placed {
        Some(why)
    } else {
        dropped.map(|bytes| {
            format!(
                "its value ({bytes} bytes) was too large for the dead-letter topic and was not kept"
            )
        })
    };
    let at = message.timestamp().to_millis();
    DeadLetterEntry {
        redriven: redriven.contains(&dead_letter),
        dead_letter,
        event_id: header(message, "id"),
        reason: header(message, "dlq.reason").unwrap_or_default(),
        original_topic: original.topic.clone(),
        source_position: header(message, "dlq.source.lsn")
            .or_else(|| header(message, "dlq.source.binlog"))
            .or_else(|| header(message, "dlq.source.table")),
        original_partition: original.partition,
        original_timestamp_ms: original.timestamp,
        dead_lettered_at_ms: at,
        age_seconds: at.map(|at| (now_ms() - at) / 1000),
        not_redrivable,
        original,
    }
}

/// The partition the event was placed on and its record timestamp, as the dead letter keeps
/// them ([`ORIGINAL_PARTITION`], [`ORIGINAL_TIMESTAMP`]); a value that is no number is an error
/// naming the header, so the event is not re-driven elsewhere or as of another time.
fn original_placement(message: &OwnedMessage) -> Result<(Option<i32>, Option<i64>), String> {
    fn number<T: std::str::FromStr>(
        message: &OwnedMessage,
        name: &str,
    ) -> Result<Option<T>, String> {
        header(message, name)
            .map(|text| {
                text.trim()
                    .parse()
                    .map_err(|_| format!("its header `{name}` holds `{text}`, not a number"))
            })
            .transpose()
    }
    Ok((
        number(message, ORIGINAL_PARTITION)?,
        number(message, ORIGINAL_TIMESTAMP)?,
    ))
}

/// The dead letters that `filter` keeps, oldest first per partition.
pub fn list(kafka: &KafkaConfig, filter: &ListFilter) -> Result<Vec<DeadLetterEntry>, DlqError> {
    let topic = &kafka.dead_letter_topic;
    let letters = read_topic(kafka, topic)?.ok_or_else(|| {
        DlqError::Topic(format!(
            "the dead-letter topic `{topic}` does not exist (`kafka.dead_letter_topic`)"
        ))
    })?;
    let redriven: HashSet<String> = read_topic(kafka, &redriven_topic(kafka))?
        .unwrap_or_default()
        .iter()
        .filter(|m| m.payload().is_some())
        .filter_map(|m| m.key().map(|k| String::from_utf8_lossy(k).into_owned()))
        .collect();
    Ok(letters
        .iter()
        .map(|m| entry(m, &redriven))
        .filter(|e| filter.keeps(e))
        .collect())
}

/// Which dead letters `dlq redrive` publishes again.
#[derive(Debug, Clone)]
pub enum Selection {
    /// Those whose event id is one of these.
    Ids(Vec<String>),
    All,
}

/// What `dlq redrive` did with one dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Redriven,
    /// `--dry-run`: it would be re-driven.
    WouldRedrive,
    /// Re-driven before; `--force` sends it again.
    AlreadyRedriven,
    NotRedrivable(String),
}

/// One line of the redrive report.
#[derive(Debug, Clone, Serialize)]
pub struct Redrive {
    pub dead_letter: String,
    pub event_id: Option<String>,
    pub original_topic: String,
    pub outcome: Outcome,
}

/// Publishes the selected dead letters again (see the module's contract). An `--id` that no dead
/// letter carries is an error, so a typo is not taken for success.
pub async fn redrive(
    kafka: &KafkaConfig,
    selection: &Selection,
    dry_run: bool,
    force: bool,
) -> Result<Vec<Redrive>, DlqError> {
    let entries = list(kafka, &ListFilter::default())?;
    let chosen: Vec<&DeadLetterEntry> = match selection {
        Selection::All => entries.iter().collect(),
        Selection::Ids(ids) => {
            let missing: Vec<&str> = ids
                .iter()
                .filter(|id| !entries.iter().any(|e| e.event_id.as_ref() == Some(*id)))
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                return Err(DlqError::Topic(format!(
                    "no dead letter in `{}` has the event id(s) {}",
                    kafka.dead_letter_topic,
                    missing.join(", ")
                )));
            }
            entries
                .iter()
                .filter(|e| e.event_id.as_ref().is_some_and(|id| ids.contains(id)))
                .collect()
        }
    };
    let sink = if dry_run {
        None
    } else {
        ensure_redriven_topic(kafka).await?;
        Some(KafkaSink::new(kafka).map_err(kafka_step("creating the producer"))?)
    };
    let marker_topic = redriven_topic(kafka);
    let mut report = Vec::new();
    for entry in chosen {
        let outcome = if let Some(why) = &entry.not_redrivable {
            Outcome::NotRedrivable(why.clone())
        } else if entry.redriven && !force {
            Outcome::AlreadyRedriven
        } else if let Some(sink) = &sink {
            deliver(sink, &entry.original, "re-driving a dead letter").await?;
            let marker = KafkaMessage {
                topic: marker_topic.clone(),
                partition: None,
                timestamp: None,
                key: Some(entry.dead_letter.clone().into_bytes()),
                value: Some(
                    serde_json::json!({
                        "event_id": entry.event_id,
                        "original_topic": entry.original_topic,
                        "redriven_at_ms": now_ms(),
                    })
                    .to_string()
                    .into_bytes(),
                ),
                headers: Vec::new(),
            };
            deliver(sink, &marker, "recording a re-driven dead letter").await?;
            Outcome::Redriven
        } else {
            Outcome::WouldRedrive
        };
        report.push(Redrive {
            dead_letter: entry.dead_letter.clone(),
            event_id: entry.event_id.clone(),
            original_topic: entry.original_topic.clone(),
            outcome,
        });
    }
    Ok(report)
}

async fn deliver(
    sink: &KafkaSink,
    message: &KafkaMessage,
    step: &'static str,
) -> Result<(), DlqError> {
    let future = sink.send(message).map_err(kafka_step(step))?;
    match future.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((error, _))) => Err(kafka_step(step)(error)),
        Err(_) => Err(kafka_step(step)(KafkaError::Canceled)),
    }
}

/// Creates the compacted redrive record topic unless it exists.
async fn ensure_redriven_topic(kafka_config: &KafkaConfig) -> Result<(), DlqError> {
    let admin: AdminClient<DefaultClientContext> = crate::sink::other_client_config(kafka_config)
        .create()
        .map_err(kafka_step("creating an admin client"))?;
    let topic = redriven_topic(kafka_config);
    let new =
        NewTopic::new(&topic, 1, TopicReplication::Fixed(-1)).set("cleanup.policy", "compact");
    let results = admin
        .create_topics(
            [&new],
            &AdminOptions::new().operation_timeout(Some(TIMEOUT)),
        )
        .await
        .map_err(kafka_step("creating the redrive record topic"))?;
    for result in results {
        match result {
            Ok(_) => {}
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(DlqError::Topic(format!(
                    "creating the redrive record topic `{name}`: {code}"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_by_reason_and_age() {
        let e = DeadLetterEntry {
            dead_letter: "0/1".into(),
            event_id: Some("e".into()),
            reason: "Broker: Message size too large".into(),
            original_topic: "t".into(),
            source_position: None,
            original_partition: None,
            original_timestamp_ms: None,
            dead_lettered_at_ms: Some(0),
            age_seconds: Some(600),
            redriven: false,
            not_redrivable: None,
            original: KafkaMessage {
                topic: "t".into(),
                partition: None,
                timestamp: None,
                key: None,
                value: None,
                headers: Vec::new(),
            },
        };
        let f = |reason: Option<&str>, newer: Option<u64>, older: Option<u64>| ListFilter {
            reason: reason.map(str::to_owned),
            newer_than: newer.map(Duration::from_secs),
            older_than: older.map(Duration::from_secs),
        };
        assert!(f(Some("TOO LARGE"), None, None).keeps(&e));
        assert!(!f(Some("invalid topic"), None, None).keeps(&e));
        assert!(f(None, Some(3600), Some(60)).keeps(&e));
        assert!(!f(None, Some(60), None).keeps(&e));
        assert!(!f(None, None, Some(3600)).keeps(&e));
    }
}
