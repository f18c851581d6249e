//! Reading back what a relay delivered: a `read_committed` Kafka consumer of a group of its own,
//! from the earliest offsets, keeping every message in the order of each partition (duplicates
//! included: the tests count them).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::{kafka_brokers, text_headers, unique};

/// One message read back from Kafka.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The record timestamp, milliseconds since the Unix epoch.
    pub timestamp: Option<i64>,
    pub key: Option<String>,
    pub value: Option<Vec<u8>>,
    pub headers: HashMap<String, String>,
}

impl Received {
    /// The event id, from the `id` header (empty without one).
    pub fn id(&self) -> String {
        self.headers.get("id").cloned().unwrap_or_default()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The value as JSON (`null` for none); panics naming the event when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(self.value.as_deref().unwrap_or(b"null"))
            .unwrap_or_else(|e| panic!("event {}: the value is not JSON: {e}", self.id()))
    }
}

/// Reads `topics` from the beginning, as a `read_committed` consumer sees them.
pub struct Reader {
    consumer: StreamConsumer,
    topics: Vec<String>,
    pub messages: Vec<Received>,
}

/// How long a reader that is still waiting for messages goes without one before it starts a
/// fresh consumer at the offsets it reached (see [`Reader::read_until`]).
const STALL: Duration = Duration::from_secs(15);

/// A `read_committed` consumer of a group of its own, starting from the earliest offsets.
fn consumer() -> StreamConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("topic.metadata.refresh.interval.ms", "1000")
        // Outage tests stop the broker for a minute or more. With the default 45 s session
        // the broker drops this member from its group while it is down; it may not rejoin,
        // and a rejoin would start again from `earliest` (nothing is committed), counting
        // every message twice. The group is this reader's alone, so a long session costs
        // nothing: no other member waits on it.
        .set("session.timeout.ms", "600000")
        .set("max.poll.interval.ms", "600000")
        .create()
        .expect("Kafka consumer")
}

/// Every partition of `topics`, from its offset in `next` or else from its beginning, if
/// every one of them exists now.
fn partitions_of(
    consumer: &StreamConsumer,
    topics: &[&str],
    next: &HashMap<(String, i32), i64>,
) -> Option<TopicPartitionList> {
    let mut assignment = TopicPartitionList::new();
    for topic in topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .ok()?;
        let found = metadata.topics().first()?;
        if found.error().is_some() || found.partitions().is_empty() {
            return None;
        }
        for partition in found.partitions() {
            let offset = next
                .get(&((*topic).to_owned(), partition.id()))
                .map_or(Offset::Beginning, |&next| Offset::Offset(next));
            assignment
                .add_partition_offset(topic, partition.id(), offset)
                .ok()?;
        }
    }
    Some(assignment)
}

impl Reader {
    pub fn new(topics: &[&str]) -> Reader {
        let consumer = consumer();
        // Topics that exist now are read from their beginning without a consumer group: a
        // group's coordinator is the broker, and a member can come out of an outage test's
        // broker restart without partitions (seen once: a reader stuck at 500 of the 1,500
        // messages the topic held). Topics the relay will create later need the group.
        match partitions_of(&consumer, topics, &HashMap::new()) {
            Some(assignment) => consumer.assign(&assignment).expect("assign"),
            None => consumer.subscribe(topics).expect("subscribe"),
        }
        Reader {
            consumer,
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            messages: Vec::new(),
        }
    }

    /// A fresh consumer that goes on from the offsets read so far, when every topic exists;
    /// false (nothing changed) otherwise.
    ///
    /// Why: librdkafka's consumer sometimes stops fetching after the broker restarts, also
    /// with partitions assigned and no group (librdkafka #5153, rust-rdkafka #597): an
    /// outage test's reader then sat at the 500 messages read before the outage while the
    /// topic held all 1,500. A new consumer at the next offset of each partition reads what
    /// Kafka holds, neither skipping nor repeating a message, so what the tests count is
    /// unchanged.
    fn restart_consumer(&mut self) -> bool {
        let mut next = HashMap::new();
        for m in &self.messages {
            let offset = next.entry((m.topic.clone(), m.partition)).or_insert(0);
            *offset = (*offset).max(m.offset + 1);
        }
        let consumer = consumer();
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        let Some(assignment) = partitions_of(&consumer, &topics, &next) else {
            return false;
        };
        if consumer.assign(&assignment).is_err() {
            return false;
        }
        eprintln!(
            "reader: no message for {STALL:?} with {} read; reading on with a fresh consumer \
             from the offsets reached",
            self.messages.len()
        );
        self.consumer = consumer;
        true
    }

    /// Reads until `done(messages)` holds; panics after `timeout`, printing what `context` says.
    pub async fn read_until(
        &mut self,
        timeout: Duration,
        done: impl Fn(&[Received]) -> bool,
        context: impl Fn() -> String,
    ) {
        let deadline = Instant::now() + timeout;
        let mut progress = Instant::now();
        while !done(&self.messages) {
            if progress.elapsed() >= STALL {
                self.restart_consumer();
                progress = Instant::now();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out with {} messages\n{}",
                self.messages.len(),
                context()
            );
            let Ok(Ok(m)) =
                tokio::time::timeout(left.min(Duration::from_secs(1)), self.consumer.recv()).await
            else {
                continue;
            };
            progress = Instant::now();
            self.messages.push(Received {
                topic: m.topic().to_owned(),
                partition: m.partition(),
                offset: m.offset(),
                timestamp: m.timestamp().to_millis(),
                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                value: m.payload().map(<[u8]>::to_vec),
                headers: text_headers(&m),
            });
        }
    }

    /// Keeps reading for `quiet`, to catch anything extra (late duplicates).
    pub async fn settle(&mut self, quiet: Duration) {
        let deadline = Instant::now() + quiet;
        self.read_until(
            quiet + Duration::from_secs(5),
            |_| Instant::now() >= deadline,
            String::new,
        )
        .await;
    }

    /// Distinct event ids read.
    pub fn ids(&self) -> HashSet<String> {
        self.messages.iter().map(Received::id).collect()
    }

    /// The messages read from `topic`, in the order they arrived.
    pub fn on(&self, topic: &str) -> Vec<&Received> {
        self.messages.iter().filter(|m| m.topic == topic).collect()
    }
}

/// The messages of `topic` among `messages`.
pub fn on<'a>(messages: &'a [Received], topic: &'a str) -> impl Iterator<Item = &'a Received> {
    messages.iter().filter(move |m| m.topic == topic)
}
