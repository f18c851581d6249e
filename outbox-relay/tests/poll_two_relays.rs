//! Two `outbox-relay run --source poll` processes on one table, as a deployment with a standby
//! runs them: one leads (advisory lock on PostgreSQL, `GET_LOCK` on MariaDB), the other waits.
//! Writers keep committing while the leader is killed (SIGKILL) twice, so the leadership moves
//! A → B → A'. Every event arrives and, for each aggregate, the first arrivals are in commit
//! order (redeliveries after a kill are allowed: consumers dedupe on `id`).

mod common;
mod poll_support;

use std::time::{Duration, Instant};

use common::Reader;
use poll_support::*;

const WAIT: Duration = Duration::from_secs(120);

/// Waits until `relay`'s log says it leads.
async fn until_leading(relay: &RelayChild, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !relay.is_leading() {
        assert!(
            Instant::now() < deadline,
            "{what} never took the lead:\n{}",
            relay.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn two_relays_keep_per_aggregate_order(db: Backend) {
    const WRITERS: usize = 4;
    const AGGREGATES_PER_WRITER: usize = 5;
    const TRANSACTIONS: usize = 150;
    let fx = PollFixture::new(db, "poll_two").await;
    fx.setup_with_binary();

    // SQLite's lease lapses after its TTL (no connection dies with the leader): a short one.
    let settings = std::env::temp_dir().join(format!("{}.toml", fx.name));
    std::fs::write(
        &settings,
        "[source.poll]\nlease_ttl = \"2s\"\ninterval = \"100ms\"\n",
    )
    .expect("writing the relay settings");
    let settings = settings.display().to_string();
    let extra = ["--config", settings.as_str()];
    let mut a = RelayChild::spawn_with(&fx, "a", &extra);
    until_leading(&a, "relay A").await;
    let mut b = RelayChild::spawn_with(&fx, "b", &extra);
    let mut reader = Reader::new(&[&fx.topic()]);

    // Writers: each owns its aggregates and commits 1 to 3 events per transaction, so each
    // aggregate's commit order is its write order.
    let fx = std::sync::Arc::new(fx);
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let fx = fx.clone();
        writers.push(tokio::spawn(async move {
            let mut written = Vec::new();
            for t in 0..TRANSACTIONS {
                let batch: Vec<_> = (0..1 + t % 3)
                    .map(|i| {
                        common::event(
                            format!("agg-{w}-{}", (t + i) % AGGREGATES_PER_WRITER),
                            serde_json::json!({ "writer": w, "tx": t, "i": i }),
                        )
                    })
                    .collect();
                written.extend(fx.write(&batch).await);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            written
        }));
    }

    // Failover 1: kill the leader A; the standby B takes over.
    reader
        .read_until(WAIT, |m| m.len() >= 100, || a.log_text())
        .await;
    a.kill();
    until_leading(&b, "relay B").await;
    let mut a2 = RelayChild::spawn_with(&fx, "a2", &extra);
    // Failover 2: kill B while writers still write; A' takes over.
    reader
        .read_until(WAIT, |m| m.len() >= 400, || b.log_text())
        .await;
    b.kill();
    until_leading(&a2, "relay A'").await;

    let mut written = Vec::new();
    for writer in writers {
        written.extend(writer.await.expect("writer"));
    }
    let total = written.len();
    reader
        .read_until(
            WAIT,
            |m| {
                let ids: std::collections::HashSet<String> = m.iter().map(|m| m.id()).collect();
                ids.len() >= total
            },
            || a2.log_text(),
        )
        .await;
    fx.wait_empty(WAIT).await;
    let duplicates = check_delivery(&written, &reader.messages, &fx.topic());
    eprintln!("{db:?}: {total} events, {duplicates} redelivered after the kills");
    a2.kill();
    std::fs::remove_file(&settings).ok();
    if let Ok(fx) = std::sync::Arc::try_unwrap(fx) {
        fx.teardown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_relays_keep_per_aggregate_order_postgres() {
    two_relays_keep_per_aggregate_order(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_relays_keep_per_aggregate_order_mariadb() {
    two_relays_keep_per_aggregate_order(Backend::MariaDb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_relays_keep_per_aggregate_order_sqlite() {
    two_relays_keep_per_aggregate_order(Backend::Sqlite).await;
}

/// The standby does not ship while the leader lives: with both running and the leader healthy,
/// only the leader's log shows it leading, and every event arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn standby_waits_while_the_leader_lives_postgres() {
    let fx = PollFixture::new(Backend::Postgres, "poll_standby").await;
    fx.setup_with_binary();
    // `setup` is idempotent.
    fx.setup_with_binary();
    let a = RelayChild::spawn(&fx, "a");
    until_leading(&a, "relay A").await;
    let b = RelayChild::spawn(&fx, "b");
    let mut reader = Reader::new(&[&fx.topic()]);
    let mut written = Vec::new();
    for chunk in events("standby", 4, 200).chunks(10) {
        written.extend(fx.write(chunk).await);
    }
    reader
        .read_until(WAIT, |m| m.len() >= 200, || a.log_text())
        .await;
    fx.wait_empty(WAIT).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !b.is_leading(),
        "the standby led while the leader lived:\n{}",
        b.log_text()
    );
    assert_eq!(check_delivery(&written, &reader.messages, &fx.topic()), 0);
    fx.teardown().await;
}
