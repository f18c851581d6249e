//! The `poll` source against the real PostgreSQL, MariaDB and SQLite and the real Kafka: each
//! test has its own table and topics, so they run in parallel. The relay runs in-process here
//! (its own pool, lock connection and producer); `poll_two_relays.rs` runs processes.

mod common;
mod poll_support;

use std::time::Duration;

use common::{Reader, event, has_all};
use poll_support::*;
use sea_orm::TransactionTrait;

const WAIT: Duration = Duration::from_secs(120);
/// How long shipped rows may stay while a writer holds an uncommitted row among them.
const SETTLE_BESIDE_A_WRITER: Duration = Duration::from_secs(20);

/// Delivery: 600 events on 6 aggregates in 12 transactions arrive with the Event Router's
/// topic, key, `id` and `eventType` headers and value, each aggregate in write order, once; the
/// table is empty afterwards (rows deleted after the ack). A batch this size is fetched
/// (MariaDB) and settled in several statements (`Table::runs`).
async fn delivers(db: Backend) {
    let fx = PollFixture::new(db, "poll_deliver").await;
    fx.setup(fx.config()).await;
    let mut written = Vec::new();
    for chunk in events("order", 6, 600).chunks(50) {
        written.extend(fx.write(chunk).await);
    }
    let relay = InProcess::start(fx.config()).await;
    let mut reader = Reader::new(&[&fx.topic()]);
    reader
        .read_until(WAIT, |m| m.len() >= written.len(), || format!("{db:?}"))
        .await;
    fx.wait_empty(WAIT).await;
    let status = relay.stop().await;
    let duplicates = check_delivery(&written, &reader.messages, &fx.topic());
    assert_eq!(duplicates, 0, "a clean run ships each event once");
    assert_eq!(status.published, 600);
    assert_eq!(status.attempts, 0);
    fx.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delivers_postgres() {
    delivers(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delivers_mariadb() {
    delivers(Backend::MariaDb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delivers_sqlite() {
    delivers(Backend::Sqlite).await;
}

/// A shipped batch is all the source yields until Kafka acknowledges it, so it leaves at once
/// instead of waiting out the producer's `linger.ms`: with a linger of ten minutes, 150 events in
/// three claims still arrive within the test's bound.
async fn batches_leave_without_the_linger(db: Backend) {
    let fx = PollFixture::new(db, "poll_linger").await;
    fx.setup(fx.config()).await;
    let mut config = fx.config();
    config.source.poll.batch_size = 50;
    config
        .kafka
        .properties
        .insert("linger.ms".into(), "600000".into());
    let written = fx.write(&events("order", 3, 150)).await;
    let relay = InProcess::start(config).await;
    let mut reader = Reader::new(&[&fx.topic()]);
    reader
        .read_until(WAIT, |m| m.len() >= written.len(), || format!("{db:?}"))
        .await;
    fx.wait_empty(WAIT).await;
    relay.stop().await;
    assert_eq!(check_delivery(&written, &reader.messages, &fx.topic()), 0);
    fx.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_leave_without_the_linger_postgres() {
    batches_leave_without_the_linger(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_leave_without_the_linger_mariadb() {
    batches_leave_without_the_linger(Backend::MariaDb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_leave_without_the_linger_sqlite() {
    batches_leave_without_the_linger(Backend::Sqlite).await;
}

/// No polling gap: a transaction holding an early event stays open while later transactions
/// commit and ship; the early event is not skipped — it ships once its transaction commits.
/// (SQLite serializes writers, so a later transaction cannot commit past an open one there.)
///
/// With `before` > 0, that many events commit before the held one and the relay starts only
/// after the five later ones committed: its first claim takes rows on both sides of the held
/// row, and settling them must neither delete the held row nor wait for its writer.
async fn late_commit_is_not_skipped(db: Backend, before: usize) {
    let fx = PollFixture::new(db, "poll_gap").await;
    fx.setup(fx.config()).await;
    let running = match before {
        0 => Some(InProcess::start(fx.config()).await),
        _ => None,
    };
    let mut reader = Reader::new(&[&fx.topic()]);

    let mut earlier = Vec::new();
    for i in 0..before {
        earlier.extend(
            fx.write(&[event(format!("before-{i}"), serde_json::json!({"n": i}))])
                .await,
        );
    }
    let held = fx.db.begin().await.expect("begin");
    let early = fx
        .write_in(&held, &[event("early", serde_json::json!({"n": 0}))])
        .await;
    let mut later = Vec::new();
    for i in 1..=5 {
        later.extend(
            fx.write(&[event(format!("later-{i}"), serde_json::json!({"n": i}))])
                .await,
        );
    }
    let relay = match running {
        Some(relay) => relay,
        None => InProcess::start(fx.config()).await,
    };
    reader
        .read_until(
            WAIT,
            |m| m.len() >= before + 5,
            || "the earlier and later events".into(),
        )
        .await;
    // Later commits shipped and were deleted while the early one is still uncommitted.
    assert!(
        !reader
            .messages
            .iter()
            .any(|m| m.id() == early[0].id.to_string())
    );
    // Within a bound below InnoDB's lock wait timeout (50 s): a settle that waited for the
    // held writer would leave the rows until that timeout failed its session, and the next
    // session settled them (no loss, no duplicate, only the wait this test rules out).
    fx.wait_empty(SETTLE_BESIDE_A_WRITER).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    held.commit().await.expect("commit the held transaction");

    reader
        .read_until(WAIT, |m| m.len() >= before + 6, || "the early event".into())
        .await;
    let mut all = earlier;
    all.extend(early.clone());
    all.extend(later);
    assert_eq!(check_delivery(&all, &reader.messages, &fx.topic()), 0);
    assert!(
        early[0].timestamp < all[before + 1].timestamp,
        "the early event is older than the ones shipped first"
    );
    relay.stop().await;
    fx.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn late_commit_is_not_skipped_postgres() {
    late_commit_is_not_skipped(Backend::Postgres, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn late_commit_inside_the_claimed_span_postgres() {
    late_commit_is_not_skipped(Backend::Postgres, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn late_commit_is_not_skipped_mariadb() {
    late_commit_is_not_skipped(Backend::MariaDb, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn late_commit_inside_the_claimed_span_mariadb() {
    late_commit_is_not_skipped(Backend::MariaDb, 2).await;
}

/// A permanent per-event error: an event larger than the producer's `message.max.bytes` goes
/// to the dead-letter topic (value dropped, size and reason in headers) and the events around
/// it are delivered; nothing stays in the table.
async fn oversize_goes_to_dead_letters(db: Backend) {
    let fx = PollFixture::new(db, "poll_dlq").await;
    let mut config = fx.config();
    config
        .kafka
        .properties
        .insert("message.max.bytes".into(), "20000".into());
    fx.setup(config.clone()).await;
    let before = fx
        .write(&[event("dlq-1", serde_json::json!({"n": 1}))])
        .await;
    let big = fx
        .write(&[event(
            "dlq-1",
            serde_json::json!({"blob": "x".repeat(50_000)}),
        )])
        .await;
    let after = fx
        .write(&[event("dlq-1", serde_json::json!({"n": 3}))])
        .await;
    let relay = InProcess::start(config).await;
    let mut reader = Reader::new(&[&fx.topic(), &fx.dlq_topic()]);
    reader
        .read_until(
            WAIT,
            |m| m.len() >= 3,
            || "two events and a dead letter".into(),
        )
        .await;
    fx.wait_empty(WAIT).await;
    let status = relay.stop().await;

    let letter = reader
        .messages
        .iter()
        .find(|m| m.topic == fx.dlq_topic())
        .expect("a dead letter");
    assert_eq!(letter.id(), big[0].id.to_string());
    assert_eq!(letter.key.as_deref(), Some("dlq-1"));
    assert!(letter.value.is_none(), "the oversized value is left out");
    assert!(
        letter
            .headers
            .get("dlq.reason")
            .is_some_and(|r| r.contains("too large")),
        "{:?}",
        letter.headers
    );
    assert_eq!(letter.headers.get("dlq.original.topic"), Some(&fx.topic()));
    assert_eq!(letter.headers.get("dlq.source.table"), Some(&fx.name));
    let delivered: Vec<_> = before.iter().chain(&after).cloned().collect();
    assert_eq!(check_delivery(&delivered, &reader.messages, &fx.topic()), 0);
    assert_eq!((status.published, status.dead_lettered), (2, 1));
    fx.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversize_goes_to_dead_letters_postgres() {
    oversize_goes_to_dead_letters(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversize_goes_to_dead_letters_mariadb() {
    oversize_goes_to_dead_letters(Backend::MariaDb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversize_goes_to_dead_letters_sqlite() {
    oversize_goes_to_dead_letters(Backend::Sqlite).await;
}

/// Graceful stop and restart: a stop while events keep coming drains the batch in flight (one
/// that came inside a batch ships the rest of it first); the next relay ships the rest; nothing
/// is lost and nothing is shipped twice.
async fn stop_and_restart_without_duplicates(db: Backend) {
    let fx = PollFixture::new(db, "poll_restart").await;
    let mut config = fx.config();
    config.source.poll.batch_size = 50;
    fx.setup(config.clone()).await;
    let mut reader = Reader::new(&[&fx.topic()]);
    let mut written = Vec::new();
    for chunk in events("restart", 10, 500).chunks(25) {
        written.extend(fx.write(chunk).await);
    }
    let first = InProcess::start(config.clone()).await;
    reader
        .read_until(
            WAIT,
            |m| m.len() >= 100,
            || "the first relay's events".into(),
        )
        .await;
    let first = first.stop().await;
    for chunk in events("restart", 10, 200).chunks(25) {
        written.extend(fx.write(chunk).await);
    }
    let second = InProcess::start(config).await;
    let ids = written.iter().map(|e| e.id.to_string()).collect();
    reader
        .read_until(WAIT, has_all(&ids), || "all events".into())
        .await;
    fx.wait_empty(WAIT).await;
    // Anything shipped twice would arrive by now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let second = second.stop().await;
    assert_eq!(check_delivery(&written, &reader.messages, &fx.topic()), 0);
    assert_eq!(reader.messages.len(), 700);
    assert_eq!(first.published + second.published, 700);
    fx.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stop_and_restart_without_duplicates_postgres() {
    stop_and_restart_without_duplicates(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stop_and_restart_without_duplicates_mariadb() {
    stop_and_restart_without_duplicates(Backend::MariaDb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stop_and_restart_without_duplicates_sqlite() {
    stop_and_restart_without_duplicates(Backend::Sqlite).await;
}

/// The `mark` mode: rows are kept with `relayed_at` set (added by `setup`) and not shipped
/// again; the purge removes them once older than the retention.
async fn mark_mode_keeps_rows_until_retention(db: Backend) {
    let fx = PollFixture::new(db, "poll_mark").await;
    let mut config = fx.config();
    config.source.poll.after_ack = outbox_relay::source::poll::AfterAck::Mark;
    config.source.poll.retention = Duration::from_secs(3600);
    fx.setup(config.clone()).await;
    let written = fx.write(&events("mark", 2, 10)).await;
    let relay = InProcess::start(config.clone()).await;
    let mut reader = Reader::new(&[&fx.topic()]);
    reader
        .read_until(WAIT, |m| m.len() >= 10, || "marked events".into())
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    relay.stop().await;
    assert_eq!(fx.row_count().await, 10, "marked rows are kept");
    // A zero retention purges them on the next relay's first idle cycle.
    config.source.poll.retention = Duration::ZERO;
    let relay = InProcess::start(config).await;
    fx.wait_empty(WAIT).await;
    let status = relay.stop().await;
    assert_eq!(status.published, 0, "marked rows are not shipped again");
    assert_eq!(check_delivery(&written, &reader.messages, &fx.topic()), 0);
    fx.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mark_mode_keeps_rows_until_retention_postgres() {
    mark_mode_keeps_rows_until_retention(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mark_mode_keeps_rows_until_retention_mariadb() {
    mark_mode_keeps_rows_until_retention(Backend::MariaDb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mark_mode_keeps_rows_until_retention_sqlite() {
    mark_mode_keeps_rows_until_retention(Backend::Sqlite).await;
}

/// Whether a notification comes on `listener` within 2 s.
async fn notified(listener: &mut sea_orm::sqlx::postgres::PgListener) -> bool {
    tokio::time::timeout(Duration::from_secs(2), listener.recv())
        .await
        .is_ok()
}

/// The service's writers NOTIFY only while a relay waits for rows: a notifying commit is
/// serialized with every other (PostgreSQL's lock at commit), which cut 16 writers from 7,500
/// to 2,600 commits/s (`scripts/bench-notify-writes`). With no relay waiting an insert notifies
/// nobody; with the relay idle it does, and the relay ships it at once; events that come one at a
/// time, each after the relay went idle again, each arrive within seconds, though the fallback
/// poll is a minute away.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writers_notify_only_while_the_relay_waits_postgres() {
    use sea_orm::sqlx::postgres::PgListener;
    let fx = PollFixture::new(Backend::Postgres, "poll_notify_waits").await;
    let mut config = fx.config();
    config.source.poll.interval = Duration::from_secs(60);
    config.source.poll.lease_ttl = Duration::from_secs(120);
    fx.setup(config.clone()).await;
    let mut listener = PgListener::connect(&fx.url)
        .await
        .expect("a LISTEN connection");
    listener
        .listen(&config.source.table)
        .await
        .expect("LISTEN on the table's channel");

    let mut written = fx
        .write(&[event("before", serde_json::json!({"n": 0}))])
        .await;
    assert!(
        !notified(&mut listener).await,
        "an insert notified with no relay waiting"
    );

    let relay = InProcess::start(config).await;
    fx.wait_empty(Duration::from_secs(10)).await;
    // Let it find the table empty, take the wait mark and go idle.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut reader = Reader::new(&[&fx.topic()]);
    for n in 1..=5 {
        written.extend(
            fx.write(&[event("wake", serde_json::json!({"n": n}))])
                .await,
        );
        assert!(
            notified(&mut listener).await,
            "event {n}: the insert did not notify the waiting relay"
        );
        // Shipped and deleted within seconds, though the fallback poll is a minute away.
        fx.wait_empty(Duration::from_secs(5)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    reader
        .read_until(
            WAIT,
            |m| m.len() >= written.len(),
            || "the notified events".into(),
        )
        .await;
    relay.stop().await;
    assert_eq!(check_delivery(&written, &reader.messages, &fx.topic()), 0);
    fx.teardown().await;
}

/// PostgreSQL NOTIFY wakes the relay: with a fallback interval of a minute, an event committed
/// while the relay is idle still arrives within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn notify_wakes_the_relay_postgres() {
    let fx = PollFixture::new(Backend::Postgres, "poll_notify").await;
    let mut config = fx.config();
    config.source.poll.interval = Duration::from_secs(60);
    config.source.poll.lease_ttl = Duration::from_secs(120);
    fx.setup(config.clone()).await;
    let relay = InProcess::start(config).await;
    // Let it find the table empty and go idle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut reader = Reader::new(&[&fx.topic()]);
    let written = fx
        .write(&[event("wake", serde_json::json!({"n": 1}))])
        .await;
    // Shipped and deleted within seconds, though the fallback poll is a minute away.
    fx.wait_empty(Duration::from_secs(5)).await;
    reader
        .read_until(WAIT, |m| !m.is_empty(), || "the notified event".into())
        .await;
    relay.stop().await;
    assert_eq!(check_delivery(&written, &reader.messages, &fx.topic()), 0);
    fx.teardown().await;
}
