//! Dead letters an operator can list and re-drive (issue 13, part 1), on the real broker: an
//! event over its topic's `max.message.bytes` is dead-lettered with its value; `dlq list` shows
//! it (and its filters leave it out when they should); after the limit is raised, `dlq redrive`
//! publishes it to its topic with its key, value and headers; the consumer sees it once; a second
//! redrive sends nothing; `--force` sends it again.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::*;
use outbox_core::WriteMode;
use sea_orm::ConnectionTrait;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(120);

/// `outbox-relay dlq <args>` for the fixture's dead-letter topic, with no database configured:
/// the dead letters are in Kafka alone.
fn dlq(fx: &Fixture, args: &[&str]) -> Output {
    let out = Command::new(BIN)
        .arg("dlq")
        .args(args)
        .args(["--dead-letter-topic", &fx.dlq_topic()])
        .env_remove("DATABASE_URL")
        .env("KAFKA_BROKERS", kafka_brokers())
        .env("RUST_LOG", "warn")
        .output()
        .expect("running outbox-relay dlq");
    assert!(
        out.status.success(),
        "dlq {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn listed(fx: &Fixture, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["list", "--json"];
    all.extend_from_slice(args);
    let out = dlq(fx, &all);
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "dlq list --json printed no JSON array ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn copies(reader: &Reader, id: &str) -> usize {
    reader.messages.iter().filter(|m| m.id() == id).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_event_is_redriven_once_after_the_limit_is_raised() {
    let fx = Fixture::new("dlq_redrive", WriteMode::Insert).await;
    set_max_message_bytes(&fx.topic(), 4000).await;
    let relay = fx.start_relay(&[]);
    // One at a time: this test is about the one oversize event and its redrive.
    let mut topic = Reader::new(&[&fx.topic()]);
    let before = fx.write(&[event("k1", json!({"n": 1}))]).await;
    topic
        .read_until(WAIT, has_all(&[before[0].id.to_string()].into()), || {
            relay.log_text()
        })
        .await;
    let blob = "x".repeat(20_000);
    let big = fx.write(&[event("k2", json!({"blob": blob}))]).await;
    let big_id = big[0].id.to_string();
    let mut dead = Reader::new(&[&fx.dlq_topic()]);
    dead.read_until(WAIT, has_all(&[big_id.clone()].into()), || relay.log_text())
        .await;
    let after = fx.write(&[event("k3", json!({"n": 3}))]).await;
    topic
        .read_until(WAIT, has_all(&[after[0].id.to_string()].into()), || {
            relay.log_text()
        })
        .await;
    let letter = dead
        .messages
        .iter()
        .find(|m| m.id() == big_id)
        .expect("dead letter");
    assert_eq!(letter.json()["blob"].as_str().map(str::len), Some(20_000));

    // Listed with what an operator needs; the filters select by reason and age.
    let entries = listed(&fx, &[]);
    assert_eq!(entries.len(), 1, "{entries:#?}");
    let entry = &entries[0];
    assert_eq!(entry["event_id"], json!(big_id));
    assert_eq!(entry["original_topic"], json!(fx.topic()));
    assert_eq!(entry["redriven"], json!(false));
    assert!(
        entry["reason"]
            .as_str()
            .is_some_and(|r| r.to_lowercase().contains("too large")),
        "{entry}"
    );
    assert!(
        entry["source_position"]
            .as_str()
            .is_some_and(|p| p.contains('/')),
        "{entry}"
    );
    assert!(
        entry["age_seconds"]
            .as_i64()
            .is_some_and(|a| (0..600).contains(&a)),
        "{entry}"
    );
    assert_eq!(listed(&fx, &["--reason", "TOO LARGE"]).len(), 1);
    assert_eq!(listed(&fx, &["--reason", "invalid topic"]).len(), 0);
    assert_eq!(listed(&fx, &["--newer-than", "1h"]).len(), 1);
    assert_eq!(listed(&fx, &["--older-than", "1h"]).len(), 0);

    // A dry run sends nothing; neither does an id that names no dead letter (it is an error).
    let dry = dlq(&fx, &["redrive", "--id", &big_id, "--dry-run"]);
    assert!(String::from_utf8_lossy(&dry.stdout).contains("would be re-driven"));
    let unknown = Command::new(BIN)
        .args([
            "dlq",
            "redrive",
            "--id",
            "no-such-event",
            "--dead-letter-topic",
            &fx.dlq_topic(),
        ])
        .env_remove("DATABASE_URL")
        .env("KAFKA_BROKERS", kafka_brokers())
        .output()
        .expect("running outbox-relay dlq redrive");
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no-such-event"));

    set_max_message_bytes(&fx.topic(), 1_048_588).await;
    let first = dlq(&fx, &["redrive", "--id", &big_id]);
    assert!(
        String::from_utf8_lossy(&first.stdout).contains("1 re-driven"),
        "{}",
        String::from_utf8_lossy(&first.stdout)
    );
    topic
        .read_until(
            WAIT,
            |m| m.iter().any(|m| m.id() == big_id),
            || relay.log_text(),
        )
        .await;
    let second = dlq(&fx, &["redrive", "--all"]);
    let second_text = String::from_utf8_lossy(&second.stdout).into_owned();
    assert!(second_text.contains("0 re-driven"), "{second_text}");
    assert!(second_text.contains("already re-driven"), "{second_text}");
    topic.settle(Duration::from_secs(3)).await;
    assert_eq!(
        copies(&topic, &big_id),
        1,
        "the consumer sees the event once"
    );
    let redriven = topic
        .messages
        .iter()
        .find(|m| m.id() == big_id)
        .expect("re-driven");
    assert_eq!(redriven.key.as_deref(), Some("k2"));
    assert_eq!(redriven.value, letter.value, "the original value");
    assert_eq!(
        redriven.headers.get("eventType").map(String::as_str),
        Some("OrderChanged")
    );
    assert!(
        redriven.headers.keys().all(|h| !h.starts_with("dlq.")),
        "{:?}",
        redriven.headers
    );
    assert_eq!(listed(&fx, &[])[0]["redriven"], json!(true));

    // `--force` sends it again, on purpose.
    let forced = dlq(&fx, &["redrive", "--id", &big_id, "--force"]);
    assert!(String::from_utf8_lossy(&forced.stdout).contains("1 re-driven"));
    topic
        .read_until(
            WAIT,
            |m| m.iter().filter(|m| m.id() == big_id).count() == 2,
            || relay.log_text(),
        )
        .await;
    drop(relay);
    fx.teardown().await;
}

/// An event placed on a partition of its own (`part:partition`) with a record timestamp from its
/// row (`--event-timestamp-field`) is dead-lettered with both kept, and re-driven to that
/// partition, as of that time, not where the key's partitioner and the clock would put it. Both
/// ways to the dead letters: refused before it is produced (over the topic's limit the relay
/// read at start), and refused by the broker (the limit lowered after the relay read it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redriven_event_keeps_its_placed_partition_and_its_timestamp() {
    let fx = Fixture::new("dlq_placed", WriteMode::Insert).await;
    fx.db
        .execute_unprepared(&format!(
            "ALTER TABLE \"{}\" ADD COLUMN part integer NULL",
            fx.name
        ))
        .await
        .expect("adding the partition column");
    set_max_message_bytes(&fx.topic(), 4000).await;
    let relay = fx.start_relay(&[
        "--placement",
        "part:partition",
        "--event-timestamp-field",
        "timestamp",
    ]);
    // Where the partitioner puts key `k2` (the row places it nowhere: `part` is NULL).
    let mut topic = Reader::new(&[&fx.topic()]);
    let small = fx.write(&[event("k2", json!({"n": 1}))]).await;
    let small_id = small[0].id.to_string();
    topic
        .read_until(WAIT, has_all(&[small_id.clone()].into()), || {
            relay.log_text()
        })
        .await;
    let by_key = topic.messages[0].partition;
    // Two events of the same key, each placed on another partition and stamped in 2020: one
    // over the limit the relay knows, one under it but over the broker's lowered limit.
    let insert = |id: &str, blob: usize, stamp: &str, part: i32| {
        format!(
            "INSERT INTO \"{}\" (id, aggregatetype, aggregateid, type, payload, \"timestamp\", \
             part) VALUES ('{id}', '{AGGREGATE_TYPE}', 'k2', 'OrderChanged', \
             jsonb_build_object('blob', repeat('x', {blob})), '{stamp}', {part})",
            fx.name
        )
    };
    let refused_here = (
        "00000000-0000-4000-8000-00000000d1a7",
        (by_key + 1) % 4,
        1_577_934_245_678_i64,
    );
    fx.db
        .execute_unprepared(&insert(
            refused_here.0,
            20_000,
            "2020-01-02T03:04:05.678Z",
            refused_here.1,
        ))
        .await
        .expect("writing the oversize event");
    let mut dead = Reader::new(&[&fx.dlq_topic()]);
    dead.read_until(WAIT, has_all(&[refused_here.0.to_owned()].into()), || {
        relay.log_text()
    })
    .await;
    set_max_message_bytes(&fx.topic(), 3000).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let refused_there = (
        "00000000-0000-4000-8000-00000000d1a8",
        (by_key + 2) % 4,
        1_578_020_645_678_i64,
    );
    fx.db
        .execute_unprepared(&insert(
            refused_there.0,
            3_300,
            "2020-01-03T03:04:05.678Z",
            refused_there.1,
        ))
        .await
        .expect("writing the event the broker refuses");
    dead.read_until(WAIT, has_all(&[refused_there.0.to_owned()].into()), || {
        relay.log_text()
    })
    .await;
    let entries = listed(&fx, &[]);
    for (id, partition, stamped_ms) in [refused_here, refused_there] {
        let letter = dead
            .messages
            .iter()
            .find(|m| m.id() == id)
            .expect("dead letter");
        assert_eq!(
            (
                letter.header("dlq.original.partition"),
                letter.header("dlq.original.timestamp")
            ),
            (
                Some(partition.to_string().as_str()),
                Some(stamped_ms.to_string().as_str())
            ),
            "{id}: {:?}",
            letter.headers
        );
        let entry = entries
            .iter()
            .find(|e| e["event_id"] == json!(id))
            .expect("listed");
        assert_eq!(
            (
                &entry["original_partition"],
                &entry["original_timestamp_ms"]
            ),
            (&json!(partition), &json!(stamped_ms)),
            "{entry}"
        );
    }

    set_max_message_bytes(&fx.topic(), 1_048_588).await;
    let out = dlq(&fx, &["redrive", "--all"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2 re-driven"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let ids: std::collections::HashSet<String> =
        [refused_here.0.to_owned(), refused_there.0.to_owned()].into();
    topic
        .read_until(WAIT, has_all(&ids), || relay.log_text())
        .await;
    for (id, partition, stamped_ms) in [refused_here, refused_there] {
        let redriven = topic
            .messages
            .iter()
            .find(|m| m.id() == id)
            .expect("re-driven");
        assert_eq!(
            (redriven.partition, redriven.timestamp),
            (partition, Some(stamped_ms)),
            "{id}: the placed partition and the row's timestamp, not the key's partition \
             ({by_key}) and the redrive's time"
        );
        assert!(
            redriven.headers.keys().all(|h| !h.starts_with("dlq.")),
            "{:?}",
            redriven.headers
        );
    }
    drop(relay);
    fx.teardown().await;
}
