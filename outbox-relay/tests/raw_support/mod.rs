//! Kafka messages read back with every byte kept (key and value null vs empty, header order, a
//! null header value), for the tests that compare two producers' messages byte for byte
//! (`debezium_parity`, `poll_columns`).
#![allow(dead_code)] // each test binary uses a different part

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;

use crate::common::{kafka_brokers, unique};

/// One message as read (a null header value is None).
#[derive(Debug, Clone, PartialEq)]
pub struct Raw {
    pub topic: String,
    pub partition: i32,
    /// The record timestamp (ms); a comparison that does not hold it equal sets it to None.
    pub timestamp: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Raw {
    /// Header `name` as (lossy) text; None when absent or null.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// The event id (header `id`).
    pub fn id(&self) -> Option<String> {
        self.header("id")
    }

    /// The message with its bytes as (lossy) text, for a failure message.
    pub fn show(&self) -> String {
        let text = |b: &Option<Vec<u8>>| match b {
            Some(b) => format!("{:?}", String::from_utf8_lossy(b)),
            None => "null".to_owned(),
        };
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(k, v)| format!("{k}={}", text(v)))
            .collect();
        format!(
            "topic={} partition={} timestamp={:?} key={} value={} headers=[{}]",
            self.topic,
            self.partition,
            self.timestamp,
            text(&self.key),
            text(&self.value),
            headers.join(", ")
        )
    }
}

/// Every message of `topics` from the beginning, until `done` holds or `timeout` passes.
pub fn read_raw(topics: &[&str], timeout: Duration, done: impl Fn(&[Raw]) -> bool) -> Vec<Raw> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("group.id", unique("raw"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .create()
        .expect("Kafka consumer");
    consumer.subscribe(topics).expect("subscribe");
    let mut messages = Vec::new();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline && !done(&messages) {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let headers = outbox_relay::sink::headers_of(&m);
        messages.push(Raw {
            topic: m.topic().to_owned(),
            partition: m.partition(),
            timestamp: m.timestamp().to_millis(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers,
        });
    }
    messages
}
