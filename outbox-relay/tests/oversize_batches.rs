//! An oversize event among many small ones: Kafka checks its size limit against a whole record
//! batch, so a relay that lets small events batch past their topic's `max.message.bytes` sees
//! them refused with the oversize one. Only the event that Kafka refuses alone may go to the
//! dead letters; every other event arrives on its topic, in per-aggregate order.
//!
//! Real PostgreSQL (the `wal` source), real Kafka, the `outbox-relay` binary.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::*;
use outbox_core::WriteMode;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(180);
/// The topic's `max.message.bytes`: far below the producer's default batch (1 MB).
const TOPIC_LIMIT: usize = 64 * 1024;
const SMALL: usize = 2_000;
const AGGREGATES: usize = 10;

/// Each aggregate's sequence numbers as first received, in offset order (duplicates of a replay
/// are dropped; a key lives on one partition, so offset order is the order consumers see).
fn per_aggregate(messages: &[Received]) -> HashMap<String, Vec<u64>> {
    let mut sorted: Vec<&Received> = messages.iter().collect();
    sorted.sort_by_key(|m| (m.partition, m.offset));
    let mut seen = HashSet::new();
    let mut order: HashMap<String, Vec<u64>> = HashMap::new();
    for m in sorted {
        if !seen.insert(m.id()) {
            continue;
        }
        let seq = m.json()["seq"]
            .as_u64()
            .expect("a seq in every small event");
        order
            .entry(m.key.clone().unwrap_or_default())
            .or_default()
            .push(seq);
    }
    order
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_oversize_event_is_dead_lettered_when_small_ones_batch_with_it() {
    oversize_among_small_ones(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_oversize_event_is_dead_lettered_when_small_ones_batch_with_it_exactly_once() {
    oversize_among_small_ones(true).await;
}

async fn oversize_among_small_ones(exactly_once: bool) {
    let fx = Fixture::new("oversize_batch", WriteMode::Insert).await;
    set_max_message_bytes(&fx.topic(), TOPIC_LIMIT).await;
    let offsets_topic = format!("{}.offsets", fx.name);
    let mode: Vec<&str> = if exactly_once {
        let out = fx
            .command("setup")
            .args([
                "--delivery",
                "exactly-once",
                "--offsets-topic",
                &offsets_topic,
            ])
            .output()
            .expect("running outbox-relay setup");
        assert!(
            out.status.success(),
            "setup --delivery exactly-once failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        vec![
            "--delivery",
            "exactly-once",
            "--offsets-topic",
            &offsets_topic,
        ]
    } else {
        Vec::new()
    };
    let mut relay = fx.start_relay(&mode);

    // One burst, so that the producer batches: small events (about 300 bytes each, 600 kB in
    // all over 4 partitions) and, among them, one over the topic's limit but under the
    // producer's `message.max.bytes`, with the same aggregates as its neighbours.
    let pad = "p".repeat(200);
    let oversize_at = SMALL / 2;
    let mut events: Vec<TestEvent> = (0..SMALL)
        .map(|i| {
            event(
                format!("agg{}", i % AGGREGATES),
                json!({"seq": i, "pad": pad}),
            )
        })
        .collect();
    events.insert(
        oversize_at,
        event(
            format!("agg{}", oversize_at % AGGREGATES),
            json!({"seq": "oversize", "blob": "x".repeat(2 * TOPIC_LIMIT)}),
        ),
    );
    let written = fx.write(&events).await;
    let oversize_id = written[oversize_at].id.to_string();
    let small_ids: HashSet<String> = written
        .iter()
        .map(|w| w.id.to_string())
        .filter(|id| *id != oversize_id)
        .collect();
    assert_eq!(small_ids.len(), SMALL);

    let mut dead = Reader::new(&[&fx.dlq_topic()]);
    dead.read_until(WAIT, has_all(&[oversize_id.clone()].into()), || {
        relay.log_text()
    })
    .await;
    let mut topic = Reader::new(&[&fx.topic()]);
    topic
        .read_until(WAIT, has_all(&small_ids), || {
            let innocent = dead.ids().intersection(&small_ids).count();
            format!(
                "{innocent} small events are in the dead letters\n{}",
                relay.log_text()
            )
        })
        .await;
    // Anything more (a late dead letter, a duplicate out of order) arrives within this.
    dead.settle(Duration::from_secs(3)).await;
    topic.settle(Duration::from_secs(2)).await;

    let condemned = dead.ids();
    let innocent: Vec<&String> = condemned.intersection(&small_ids).collect();
    assert!(
        innocent.is_empty(),
        "{} small events were dead-lettered beside the oversize one (e.g. {:?})",
        innocent.len(),
        innocent.first()
    );
    assert_eq!(condemned, [oversize_id.clone()].into());
    let letter = dead
        .messages
        .iter()
        .find(|m| m.id() == oversize_id)
        .expect("the oversize event's dead letter");
    let reason = letter
        .headers
        .get("dlq.reason")
        .cloned()
        .unwrap_or_default();
    assert!(
        reason.to_lowercase().contains("too large"),
        "reason: {reason}"
    );
    assert_eq!(
        letter.headers.get("dlq.original.topic"),
        Some(&fx.topic()),
        "the dead letter names the topic whose limit it is over"
    );
    assert!(
        !topic.ids().contains(&oversize_id),
        "the oversize event is not on its topic"
    );

    let order = per_aggregate(&topic.messages);
    assert_eq!(order.len(), AGGREGATES);
    for (aggregate, seqs) in &order {
        assert_eq!(seqs.len(), SMALL / AGGREGATES, "{aggregate}");
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{aggregate} arrived out of order: {seqs:?}"
        );
    }
    assert!(relay.is_running());
    relay.stop_gracefully(Duration::from_secs(60));
    fx.teardown().await;
}

/// The size the relay computes for an event alone is the size the broker measures: an event of
/// exactly its topic's limit is delivered, one byte more is refused by the broker, and the
/// relay's sink refuses that one itself, before producing it, and delivers the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_is_refused_before_producing_exactly_when_the_broker_refuses_it_alone() {
    use outbox_relay::config::KafkaConfig;
    use outbox_relay::sink::{KafkaMessage, KafkaSink, single_batch_size};
    use rdkafka::error::RDKafkaErrorCode;

    const LIMIT: usize = 4_000;
    let topic = outbox_testkit::new_topic("oversize_exact").await;
    set_max_message_bytes(&topic, LIMIT).await;
    // A route that reaches `topic` (the relay reads the limits of the topics it may route to).
    let config = KafkaConfig {
        brokers: Some(kafka_brokers()),
        topic: "${routedByValue}".into(),
        dead_letter_topic: format!("{topic}.dlq"),
        ..KafkaConfig::default()
    };
    // Headers as the relay sends them, a null one among them.
    let at = |size: usize| {
        let mut message = KafkaMessage {
            topic: topic.clone(),
            partition: None,
            timestamp: None,
            key: Some(b"agg-1".to_vec()),
            value: Some(Vec::new()),
            headers: vec![
                (
                    "id".to_owned(),
                    Some(b"0190a1b2-0000-7000-8000-000000000001".to_vec()),
                ),
                ("eventType".to_owned(), None),
            ],
        };
        // Varint lengths grow with the value: find the value length that gives `size`.
        while single_batch_size(&message) < size {
            message.value.get_or_insert_with(Vec::new).push(b'v');
        }
        assert_eq!(
            single_batch_size(&message),
            size,
            "no value length gives {size}"
        );
        message
    };
    let fits = at(LIMIT);
    let over = at(LIMIT + 1);

    // The broker's own judgement (a sink that knows no limits leaves it to the broker).
    for (message, accepted) in [(&fits, true), (&over, false)] {
        let unchecked = KafkaSink::new(&config).expect("producer");
        let delivery = unchecked.send(message).expect("produced");
        let result = tokio::time::timeout(WAIT, delivery)
            .await
            .expect("delivered in time")
            .expect("not canceled");
        let code = result
            .as_ref()
            .err()
            .and_then(|(e, _)| e.rdkafka_error_code());
        match accepted {
            true => assert!(result.is_ok(), "the broker refused {LIMIT} bytes: {code:?}"),
            false => assert_eq!(
                code,
                Some(RDKafkaErrorCode::MessageSizeTooLarge),
                "the broker took {} bytes over a limit of {LIMIT}",
                LIMIT + 1
            ),
        }
    }

    // The relay's sink refuses the one over before producing it, and delivers the other.
    let sink = KafkaSink::connect(&config).await.expect("sink");
    let refused = sink.send(&over).err();
    assert_eq!(
        refused.and_then(|e| e.rdkafka_error_code()),
        Some(RDKafkaErrorCode::MessageSizeTooLarge)
    );
    let delivery = sink.send(&fits).expect("produced");
    let result = tokio::time::timeout(WAIT, delivery)
        .await
        .expect("delivered in time")
        .expect("not canceled");
    assert!(result.is_ok(), "{:?}", result.err().map(|(e, _)| e));
}

/// A `message.max.bytes` over the brokers' is a configuration mistake: the relay stops at start,
/// naming both values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_limit_over_the_brokers_stops_the_relay_naming_both() {
    let fx = Fixture::new("oversize_config", WriteMode::Insert).await;
    let mut relay = fx.start_relay(&["-X", "message.max.bytes=5000000"]);
    let status = relay.wait_exit(Duration::from_secs(60));
    let log = relay.log_text();
    assert!(
        status.is_some_and(|s| !s.success()),
        "the relay did not stop: {status:?}\n{log}"
    );
    assert!(
        log.contains("`message.max.bytes`=5000000") && log.contains("`message.max.bytes`=1048588"),
        "the error names neither value:\n{log}"
    );
    fx.teardown().await;
}
