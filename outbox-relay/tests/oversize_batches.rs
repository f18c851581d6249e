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
        let seq = m.json()["seq"].as_u64().expect("a seq in every small event");
        order
            .entry(m.key.clone().unwrap_or_default())
            .or_default()
            .push(seq);
    }
    order
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_oversize_event_is_dead_lettered_when_small_ones_batch_with_it() {
    let fx = Fixture::new("oversize_batch", WriteMode::Insert).await;
    set_max_message_bytes(&fx.topic(), TOPIC_LIMIT).await;
    let mut relay = fx.start_relay(&[]);

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
    let reason = letter.headers.get("dlq.reason").cloned().unwrap_or_default();
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
    assert_eq!(relay.terminate(Duration::from_secs(60)).code(), Some(0));
    fx.teardown().await;
}
