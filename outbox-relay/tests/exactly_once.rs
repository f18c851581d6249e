//! The exactly-once delivery mode on the real broker, the real binary and real PostgreSQL: a
//! `read_committed` consumer sees every event once across SIGKILLs, a broker restart, a fenced
//! twin and a source transaction larger than a Kafka transaction. These tests kill relays and
//! restart the shared Kafka, so they run one at a time (a lock in this binary), and this binary
//! must not run beside other tests that use those services:
//! `cargo test -p outbox-relay --test exactly_once -- --test-threads=1`.

// Both support modules include the workspace's `tests/support` (the services' addresses).
#![allow(clippy::duplicate_mod)]

mod binlog_support;
mod common;
mod poll_support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::*;
use outbox_core::{DomainEvent, WriteMode};

const WAIT: Duration = Duration::from_secs(300);

fn offsets_topic(fx: &Fixture) -> String {
    format!("{}.offsets", fx.name)
}

/// `outbox-relay setup --delivery exactly-once`: the compacted offsets topic.
fn setup_exactly_once(fx: &Fixture) {
    let out = fx
        .command("setup")
        .args(["--delivery", "exactly-once"])
        .args(["--offsets-topic", &offsets_topic(fx)])
        .output()
        .expect("running outbox-relay setup");
    assert!(
        out.status.success(),
        "setup --delivery exactly-once failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn exactly_once_args(fx: &Fixture) -> Vec<String> {
    vec![
        "--delivery".into(),
        "exactly-once".into(),
        "--offsets-topic".into(),
        offsets_topic(fx),
    ]
}

fn start(fx: &Fixture, exactly_once: bool) -> RelayProcess {
    let args = if exactly_once {
        exactly_once_args(fx)
    } else {
        Vec::new()
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    fx.start_relay(&args)
}

/// Writes `batches` transactions of `size` events over `aggregates` aggregates, in a task of its
/// own; returns the ids written.
fn write_in_background(
    fx: &Fixture,
    batches: std::ops::Range<u32>,
    size: u32,
    aggregates: u32,
    pause: Duration,
) -> tokio::task::JoinHandle<HashSet<String>> {
    write_in_background_as(fx, "a", batches, size, aggregates, pause)
}

/// [`write_in_background`], with aggregates named `<prefix><n>`.
fn write_in_background_as(
    fx: &Fixture,
    prefix: &'static str,
    batches: std::ops::Range<u32>,
    size: u32,
    aggregates: u32,
    pause: Duration,
) -> tokio::task::JoinHandle<HashSet<String>> {
    use sea_orm::TransactionTrait;
    let db = fx.db.clone();
    let outbox = fx.outbox();
    tokio::spawn(async move {
        let mut ids = HashSet::new();
        for batch in batches {
            let events: Vec<_> = (0..size)
                .map(|i| {
                    event(
                        format!("{prefix}{}", (batch * size + i) % aggregates),
                        serde_json::json!({"b": batch, "i": i}),
                    )
                })
                .collect();
            let txn = db.begin().await.expect("begin");
            let written = outbox_core::write_events(
                &txn,
                &outbox,
                events.iter().map(|e| e as &dyn DomainEvent),
            )
            .await
            .expect("write_events");
            txn.commit().await.expect("commit");
            ids.extend(written.into_iter().map(|r| r.id.to_string()));
            tokio::time::sleep(pause).await;
        }
        ids
    })
}

/// Every event's copies, and the per-aggregate order: each aggregate's events in the order
/// written (batch, then index). Returns (messages, distinct ids).
fn check(messages: &[Received], expected: &HashSet<String>) -> (usize, usize) {
    let ids: HashSet<String> = messages.iter().map(Received::id).collect();
    let missing = expected.difference(&ids).count();
    assert_eq!(missing, 0, "{missing} events never arrived");
    let mut last: HashMap<String, (u64, u64)> = HashMap::new();
    let mut seen = HashSet::new();
    for m in messages {
        // Order is judged on first copies: a duplicate (at-least-once) repeats an older one.
        if !seen.insert(m.id()) {
            continue;
        }
        let json = m.json();
        let at = (
            json["b"].as_u64().expect("b"),
            json["i"].as_u64().expect("i"),
        );
        let key = m.key.clone().expect("a key");
        if let Some(previous) = last.insert(key.clone(), at) {
            assert!(
                previous < at,
                "aggregate {key}: {at:?} arrived after {previous:?}"
            );
        }
    }
    (messages.len(), ids.len())
}

/// The kill harness: `batches` x `size` events written while the relay is SIGKILLed `kills`
/// times (and Kafka restarted once, halfway, when `broker_restart`). Returns (messages read
/// `read_committed`, distinct events).
async fn killed_repeatedly(
    fx: &Fixture,
    exactly_once: bool,
    (batches, size): (u32, u32),
    kills: u32,
    broker_restart: bool,
) -> (usize, usize) {
    let mut relay = start(fx, exactly_once);
    let writer = write_in_background(fx, 0..batches, size, 97, Duration::from_millis(20));
    for k in 0..kills {
        tokio::time::sleep(Duration::from_secs(3)).await;
        relay.kill();
        if broker_restart && k == kills / 2 {
            let restart = Restart("kafka");
            services("stop", "kafka");
            tokio::time::sleep(Duration::from_secs(3)).await;
            services("start", "kafka");
            drop(restart);
        }
        relay = start(fx, exactly_once);
    }
    let ids = writer.await.expect("the writer");
    assert_eq!(ids.len() as u32, batches * size);
    // The reader starts after the kills and the broker's restart, from the earliest offsets:
    // what is checked is what Kafka holds, not a consumer's ride through the restart. A reader
    // made at the start, idle (never polled) while the broker restarted, once read nothing for
    // the whole wait in a suite run while the relay's sessions went on committing; librdkafka
    // consumers that do not resume after a broker restart are a known kind of report
    // (rust-rdkafka #597, librdkafka #5153).
    let mut reader = Reader::new(&[&fx.topic()]);
    reader
        .read_until(WAIT, has_all(&ids), || relay.log_text())
        .await;
    reader.settle(Duration::from_secs(5)).await;
    let counts = check(&reader.messages, &ids);
    relay.stop_gracefully(Duration::from_secs(60));
    counts
}

/// 1. 100,000 events while the relay is SIGKILLed 5 times and Kafka restarts once: a
/// `read_committed` consumer sees each exactly once, in order per aggregate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_every_event_exactly_once_across_kills_and_a_broker_restart() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new("eos_wal_kills", WriteMode::Insert).await;
    setup_exactly_once(&fx);
    let (messages, distinct) = killed_repeatedly(&fx, true, (200, 500), 5, true).await;
    println!(
        "exactly-once, wal: {distinct} events, {messages} messages, {} duplicates",
        messages - distinct
    );
    assert_eq!((messages, distinct), (100_000, 100_000));
    fx.teardown().await;
}

/// The same harness in at-least-once mode, for the duplicate count beside exactly-once's
/// (nothing lost, order kept; duplicates are the mode's contract).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_at_least_once_duplicates_across_kills_measured() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new("alo_wal_kills", WriteMode::Insert).await;
    let (messages, distinct) = killed_repeatedly(&fx, false, (200, 500), 5, false).await;
    println!(
        "at-least-once, wal: {distinct} events, {messages} messages, {} duplicates",
        messages - distinct
    );
    assert_eq!(distinct, 100_000);
    fx.teardown().await;
}

/// 2. A second relay with the same identity fences the first: the first exits non-zero naming
/// the transactional id, the second carries on, nothing is duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twin_fences_the_older_relay_and_nothing_is_duplicated() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new("eos_twin", WriteMode::Insert).await;
    setup_exactly_once(&fx);
    let mut reader = Reader::new(&[&fx.topic()]);
    let mut older = start(&fx, true);
    let writer = write_in_background(&fx, 0..100, 100, 13, Duration::from_millis(50));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let newer = start(&fx, true);
    let status = older
        .wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("the older relay was not fenced:\n{}", older.log_text()));
    assert!(!status.success(), "a fenced relay exits non-zero");
    // The default transactional id names the database and the slot.
    let url = outbox_testkit::database_url();
    let database = url.rsplit('/').next().unwrap_or_default();
    let database = database.split('?').next().unwrap_or_default();
    let id = format!("outbox-relay.slot.{database}.{}", fx.name);
    let log = older.log_text();
    assert!(
        log.contains("fenced") && log.contains(&id),
        "the fenced relay names its transactional id `{id}`:\n{log}"
    );
    let ids = writer.await.expect("the writer");
    reader
        .read_until(WAIT, has_all(&ids), || newer.log_text())
        .await;
    reader.settle(Duration::from_secs(5)).await;
    let (messages, distinct) = check(&reader.messages, &ids);
    assert_eq!((messages, distinct), (10_000, 10_000), "no duplicates");
    let mut newer = newer;
    newer.stop_gracefully(Duration::from_secs(60));
    fx.teardown().await;
}

/// 3. One source transaction of 30,000 events, six times the Kafka transaction's batch (5,000):
/// it stays whole in one Kafka transaction, and arrives once, even with a kill while it ships.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_transaction_larger_than_the_batch_stays_whole() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new("eos_large", WriteMode::Insert).await;
    setup_exactly_once(&fx);
    let mut reader = Reader::new(&[&fx.topic()]);
    let mut relay = start(&fx, true);
    let writer = write_in_background(&fx, 0..1, 30_000, 31, Duration::ZERO);
    let mut ids = writer.await.expect("the writer");
    tokio::time::sleep(Duration::from_millis(700)).await;
    relay.kill();
    let mut relay = start(&fx, true);
    let small = write_in_background(&fx, 1..4, 10, 31, Duration::ZERO);
    let small_ids = small.await.expect("the writer");
    reader
        .read_until(WAIT, has_all(&ids), || relay.log_text())
        .await;
    ids.extend(small_ids);
    reader
        .read_until(WAIT, has_all(&ids), || relay.log_text())
        .await;
    reader.settle(Duration::from_secs(5)).await;
    let (messages, distinct) = check(&reader.messages, &ids);
    assert_eq!(
        (messages, distinct),
        (30_030, 30_030),
        "the large transaction (and three small ones) once"
    );
    relay.stop_gracefully(Duration::from_secs(60));
    fx.teardown().await;
}

/// 4a. `run` without the offsets topic stops at start, naming it and the command that creates it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_without_the_offsets_topic_stops_naming_it_and_setup() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new("eos_no_topic", WriteMode::Insert).await;
    let mut relay = start(&fx, true);
    let status = relay
        .wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("the relay kept running:\n{}", relay.log_text()));
    assert!(!status.success());
    let log = relay.log_text();
    assert!(
        log.contains(&format!("`{}` does not exist", offsets_topic(&fx)))
            && log.contains("setup --delivery exactly-once"),
        "{log}"
    );
    fx.teardown().await;
}

/// 4b. A slot ahead of the position stored in Kafka (an at-least-once run in between) is a gap:
/// refused at start, naming both positions, never skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_past_the_stored_position_is_refused_as_a_gap() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new("eos_gap", WriteMode::Insert).await;
    setup_exactly_once(&fx);
    let mut reader = Reader::new(&[&fx.topic()]);
    let mut ids = HashSet::new();
    let mut relay = start(&fx, true);
    fx.write_batches(&mut ids, 0..2, 10, ("g", 3)).await;
    reader
        .read_until(WAIT, has_all(&ids), || relay.log_text())
        .await;
    relay.stop_gracefully(Duration::from_secs(60));
    let mut relay = start(&fx, false);
    fx.write_batches(&mut ids, 2..4, 10, ("g", 3)).await;
    reader
        .read_until(WAIT, has_all(&ids), || relay.log_text())
        .await;
    relay.stop_gracefully(Duration::from_secs(60));
    fx.write_batches(&mut ids, 4..5, 10, ("g", 3)).await;
    let mut relay = start(&fx, true);
    let status = relay
        .wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("the gap was not refused:\n{}", relay.log_text()));
    assert!(!status.success());
    let log = relay.log_text();
    assert!(
        log.contains("gap") && log.contains("is past the position"),
        "{log}"
    );
    fx.teardown().await;
}

/// 5. The `message` source (tableless logical messages): a kill test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_source_exactly_once_across_kills() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new(
        "eos_message",
        WriteMode::LogicalMessage {
            prefix: "eos_message".into(),
        },
    )
    .await;
    setup_exactly_once(&fx);
    let (messages, distinct) = killed_repeatedly(&fx, true, (100, 100), 3, false).await;
    println!("exactly-once, message: {distinct} events, {messages} messages");
    assert_eq!((messages, distinct), (10_000, 10_000));
    fx.teardown().await;
}

/// `outbox-relay setup --source poll --delivery exactly-once`: the table's sequence and trigger,
/// and the offsets topic.
fn setup_poll(fx: &Fixture) {
    let out = fx
        .command("setup")
        .args(["--source", "poll"])
        .args(exactly_once_args(fx))
        .output()
        .expect("running outbox-relay setup");
    assert!(
        out.status.success(),
        "setup --source poll --delivery exactly-once failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `text` without its ANSI colour sequences (the relay's log is coloured).
/// After a crash between the Kafka commit and the settle, and a late writer's row: every event
/// (the `shipped` ones and the late one) is on the topic once, and the resumed relay says it
/// settled the `shipped` rows without shipping them again.
async fn assert_each_once_after_the_settle(
    reader: &mut Reader,
    ids: &HashSet<String>,
    shipped: usize,
    log_text: impl Fn() -> String,
) {
    reader.read_until(WAIT, has_all(ids), &log_text).await;
    reader.settle(Duration::from_secs(5)).await;
    let (messages, distinct) = check(&reader.messages, ids);
    assert_eq!(
        (messages, distinct),
        (shipped + 1, shipped + 1),
        "each once, the late row included"
    );
    let log = without_colours(&log_text());
    assert!(
        log.contains("settled rows already shipped, without shipping them again")
            && log.contains(&format!("rows={shipped}")),
        "the restart says it settled the {shipped} shipped rows without shipping them:\n{log}"
    );
}

fn without_colours(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ ... m
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

fn start_poll(fx: &Fixture, env: &[(&str, &str)]) -> RelayProcess {
    let mut args = vec!["--source".to_owned(), "poll".to_owned()];
    args.extend(exactly_once_args(fx));
    let mut command = fx.command("run");
    command.args(["-X", "message.timeout.ms=600000"]).args(args);
    for (key, value) in env {
        command.env(key, value);
    }
    RelayProcess::spawn(command, &fx.name)
}

/// 6. The `poll` source on PostgreSQL: 10,000 events from two concurrent writers (so sequence
/// values commit out of order across them) while the relay is SIGKILLed 3 times: a
/// `read_committed` consumer sees each once, in order per aggregate, and the table is emptied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_every_event_exactly_once_across_kills() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new("eos_poll", WriteMode::Insert).await;
    setup_poll(&fx);
    let mut reader = Reader::new(&[&fx.topic()]);
    let mut relay = start_poll(&fx, &[]);
    // Aggregates `a*` and `b*`: each writer has its own, so each aggregate's order is its
    // writer's.
    let first = write_in_background_as(&fx, "a", 0..50, 100, 41, Duration::from_millis(40));
    let second = write_in_background_as(&fx, "b", 50..100, 100, 43, Duration::from_millis(40));
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        relay.kill();
        relay = start_poll(&fx, &[]);
    }
    let mut ids = first.await.expect("the first writer");
    ids.extend(second.await.expect("the second writer"));
    assert_eq!(ids.len(), 10_000);
    reader
        .read_until(WAIT, has_all(&ids), || relay.log_text())
        .await;
    reader.settle(Duration::from_secs(5)).await;
    let (messages, distinct) = check(&reader.messages, &ids);
    println!("exactly-once, poll: {distinct} events, {messages} messages");
    assert_eq!((messages, distinct), (10_000, 10_000));
    relay.stop_gracefully(Duration::from_secs(60));
    assert_eq!(fx.row_count().await, 0, "every row settled");
    fx.teardown().await;
}

/// 7. The replay skip: the relay crashes right after a Kafka commit, before settling the rows
/// (fault injection). The next run settles those rows without shipping them again (it says
/// so), and still ships a row with a LOWER sequence value whose writer committed only after the
/// crash: the stored position names the shipped rows, it is not a high-water mark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_rows_committed_to_kafka_before_a_crash_are_settled_not_shipped_again() {
    use sea_orm::TransactionTrait;
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new("eos_poll_skip", WriteMode::Insert).await;
    setup_poll(&fx);
    let mut reader = Reader::new(&[&fx.topic()]);
    // The late writer takes its sequence value first and commits last.
    let late = fx.db.begin().await.expect("begin");
    let late_events = [event("late", serde_json::json!({"b": 0, "i": 0}))];
    let late_ids: HashSet<String> = outbox_core::write_events(
        &late,
        &fx.outbox(),
        late_events.iter().map(|e| e as &dyn DomainEvent),
    )
    .await
    .expect("write_events")
    .into_iter()
    .map(|r| r.id.to_string())
    .collect();
    let mut ids = HashSet::new();
    fx.write_batches(&mut ids, 0..5, 100, ("s", 7)).await;
    let mut crashing = start_poll(
        &fx,
        &[(outbox_relay::exactly_once::CRASH_AFTER_COMMIT_ENV, "1")],
    );
    let status = crashing
        .wait_exit(Duration::from_secs(120))
        .unwrap_or_else(|| panic!("the relay did not crash:\n{}", crashing.log_text()));
    assert!(!status.success());
    let crash_log = crashing.log_text();
    assert!(
        crash_log.contains("aborting after the Kafka commit"),
        "{crash_log}"
    );
    // The 500 rows are in Kafka (committed) and still in the table: the crash fell in between.
    reader
        .read_until(WAIT, has_all(&ids), || crashing.log_text())
        .await;
    // (The late row is not visible yet: its writer has not committed.)
    assert_eq!(
        fx.row_count().await,
        500,
        "the shipped rows were not settled"
    );
    late.commit().await.expect("commit the late writer");
    let mut relay = start_poll(&fx, &[]);
    ids.extend(late_ids);
    assert_each_once_after_the_settle(&mut reader, &ids, 500, || relay.log_text()).await;
    relay.stop_gracefully(Duration::from_secs(60));
    assert_eq!(fx.row_count().await, 0, "every row settled");
    fx.teardown().await;
}

/// 6b. Two `poll` relays in exactly-once mode on one table, both running: the second stands by
/// (it takes the leadership before `init_transactions`, so it fences no one); every event
/// arrives once while the first leads. The leader is killed: the standby takes over, and the
/// rest arrive once too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_second_relay_stands_by_and_takes_over_without_duplicates() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new("eos_poll_standby", WriteMode::Insert).await;
    setup_poll(&fx);
    let mut reader = Reader::new(&[&fx.topic()]);
    let leading = |relay: &RelayProcess| {
        without_colours(&relay.log_text()).contains("leading: this relay ships the outbox")
    };
    let standing_by = |relay: &RelayProcess| {
        without_colours(&relay.log_text()).contains("standing by: another relay leads")
    };
    let mut first = start_poll(&fx, &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !leading(&first) {
        assert!(
            std::time::Instant::now() < deadline && first.is_running(),
            "the first relay never led:\n{}",
            first.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut second = start_poll(&fx, &[]);
    // The second has started when it stands by, or (the fencing war) when the first is gone.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !standing_by(&second) && first.is_running() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut ids = HashSet::new();
    fx.write_batches(&mut ids, 0..20, 50, ("s", 11)).await;
    reader
        .read_until(WAIT, has_all(&ids), || first.log_text())
        .await;
    assert!(
        first.is_running(),
        "the leader stopped while the second relay started (fenced?):\n{}",
        first.log_text()
    );
    assert!(
        standing_by(&second) && !leading(&second),
        "the second relay does not stand by:\n{}",
        second.log_text()
    );
    // The leader dies; the standby takes the leadership, then the transactional id.
    first.kill();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !leading(&second) {
        assert!(
            std::time::Instant::now() < deadline && second.is_running(),
            "the standby never took over:\n{}",
            second.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fx.write_batches(&mut ids, 20..40, 50, ("s", 11)).await;
    reader
        .read_until(WAIT, has_all(&ids), || second.log_text())
        .await;
    reader.settle(Duration::from_secs(5)).await;
    let (messages, distinct) = check(&reader.messages, &ids);
    assert_eq!((messages, distinct), (2_000, 2_000), "each event once");
    second.stop_gracefully(Duration::from_secs(60));
    assert_eq!(fx.row_count().await, 0, "every row settled");
    fx.teardown().await;
}

/// 7b. The replay skip on MariaDB (the settle there is one `DELETE` per row, in the claim's
/// transaction): the same crash between the Kafka commit and the settle, and a late writer; the
/// resumed relay settles the shipped rows while another writer holds a row above them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_on_mariadb_rows_committed_to_kafka_before_a_crash_are_settled_not_shipped_again() {
    use poll_support::{Backend, PollFixture, RelayChild};
    let _serial = SERIAL.lock().await;
    let fx = PollFixture::new(Backend::MariaDb, "eos_poll_maria").await;
    let offsets = format!("{}.offsets", fx.name);
    let eos = [
        "--delivery",
        "exactly-once",
        "--offsets-topic",
        offsets.as_str(),
    ];
    let out = fx
        .command("setup")
        .args(eos)
        .output()
        .expect("outbox-relay setup");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut reader = Reader::new(&[&fx.topic()]);
    let (late, late_ids) = uncommitted_event(&fx, "late", 0).await;
    let mut ids = HashSet::new();
    for batch in 0..3u32 {
        let events: Vec<_> = (0..100u32)
            .map(|i| {
                event(
                    format!("m{}", i % 7),
                    serde_json::json!({"b": batch, "i": i}),
                )
            })
            .collect();
        ids.extend(
            fx.write(&events)
                .await
                .into_iter()
                .map(|r| r.id.to_string()),
        );
    }
    let mut crashing = RelayChild::spawn_env(
        &fx,
        "crashing",
        &eos,
        &[(outbox_relay::exactly_once::CRASH_AFTER_COMMIT_ENV, "1")],
    );
    assert!(
        crashing.exit_within(Duration::from_secs(120)) != Some(0) && !crashing.is_running(),
        "the relay did not crash:\n{}",
        crashing.log_text()
    );
    reader
        .read_until(WAIT, has_all(&ids), || crashing.log_text())
        .await;
    assert_eq!(
        fx.row_count().await,
        300,
        "the shipped rows were not settled"
    );
    late.commit().await.expect("commit the late writer");
    // A writer holds a row numbered above every shipped one, uncommitted, while the relay
    // resumes: settling the shipped rows must not wait for it (InnoDB locks the index entry past
    // a locking range read before it compares it with the range's end).
    let (held, held_ids) = uncommitted_event(&fx, "held", 9).await;
    let mut relay = RelayChild::spawn_with(&fx, "resumed", &eos);
    ids.extend(late_ids);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while fx.row_count().await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the shipped rows and the late one were not settled within 30 s while a writer held \
             a row above them ({} left):\n{}",
            fx.row_count().await,
            relay.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_each_once_after_the_settle(&mut reader, &ids, 300, || relay.log_text()).await;
    held.commit().await.expect("commit the held writer");
    ids.extend(held_ids);
    reader
        .read_until(WAIT, has_all(&ids), || relay.log_text())
        .await;
    reader.settle(Duration::from_secs(2)).await;
    assert_eq!(check(&reader.messages, &ids), (302, 302), "each event once");
    relay.stop_gracefully(Duration::from_secs(60));
    assert_eq!(fx.row_count().await, 0, "every row settled");
    fx.teardown().await;
}

/// One event of aggregate `key` (batch `b`) written in a transaction left open, and its id.
async fn uncommitted_event(
    fx: &poll_support::PollFixture,
    key: &str,
    b: u32,
) -> (sea_orm::DatabaseTransaction, HashSet<String>) {
    use sea_orm::TransactionTrait;
    let txn = fx.db.begin().await.expect("begin");
    let ids = fx
        .write_in(&txn, &[event(key, serde_json::json!({"b": b, "i": 0}))])
        .await
        .into_iter()
        .map(|r| r.id.to_string())
        .collect();
    (txn, ids)
}

/// 5. The `binlog` source (MariaDB): a kill test; the position table follows the Kafka commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binlog_source_exactly_once_across_kills() {
    use sea_orm::ConnectionTrait;
    let _serial = SERIAL.lock().await;
    let fx = binlog_support::BinlogFixture::new("eos_binlog").await;
    let topic = format!("{}.Order", fx.name);
    create_topics(&[&topic, &format!("{}.dlq", fx.name)]).await;
    let config = binlog_support::config_file(&fx, "");
    let offsets = format!("{}.offsets", fx.name);
    let eos = [
        "--delivery",
        "exactly-once",
        "--offsets-topic",
        offsets.as_str(),
    ];
    let out = binlog_support::relay(&config, "setup")
        .args(eos)
        .output()
        .expect("outbox-relay setup");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let start = || {
        let mut command = binlog_support::relay(&config, "run");
        command.args(eos);
        RelayProcess::spawn(command, &fx.name)
    };
    let mut reader = Reader::new(&[&topic]);
    let mut relay = start();
    let db = fx.db.clone();
    let table = fx.name.clone();
    let writer = tokio::spawn(async move {
        let mut ids = HashSet::new();
        for batch in 0..100u32 {
            let rows: Vec<String> = (0..20u32)
                .map(|i| {
                    let id = format!("{batch}-{i}");
                    ids.insert(id.clone());
                    format!(
                        "('{id}', 'Order', 'a{}', 'T', '{{\"b\": {batch}, \"i\": {i}}}', NOW(6))",
                        (batch * 20 + i) % 7
                    )
                })
                .collect();
            db.execute_unprepared(&format!(
                "INSERT INTO `{table}` (id, aggregatetype, aggregateid, type, payload, `timestamp`) \
                 VALUES {}",
                rows.join(", ")
            ))
            .await
            .expect("insert");
            tokio::time::sleep(Duration::from_millis(80)).await;
        }
        ids
    });
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        relay.kill();
        relay = start();
    }
    let ids = writer.await.expect("the writer");
    reader
        .read_until(WAIT, has_all(&ids), || relay.log_text())
        .await;
    reader.settle(Duration::from_secs(5)).await;
    let (messages, distinct) = check(&reader.messages, &ids);
    println!("exactly-once, binlog: {distinct} events, {messages} messages");
    assert_eq!((messages, distinct), (2_000, 2_000));
    relay.stop_gracefully(Duration::from_secs(60));
}
