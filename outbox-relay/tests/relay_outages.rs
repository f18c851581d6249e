//! Outage tests: they stop and start the shared Kafka and PostgreSQL services, so they run one
//! at a time (a lock in this binary), and this binary must not run beside other tests that use
//! those services: run it on its own, e.g.
//! `cargo test -p outbox-relay --test relay_outages -- --test-threads=1`.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use outbox_core::WriteMode;

const WAIT: Duration = Duration::from_secs(240);

/// Reads until every event arrived, checks that the same relay process still runs, prints the
/// duplicate count, then stops the relay gracefully and drops the outbox.
async fn finish(
    fx: Fixture,
    mut relay: RelayProcess,
    mut reader: Reader,
    ids: &HashSet<String>,
    label: &str,
) {
    reader
        .read_until(WAIT, has_all(ids), || relay.log_text())
        .await;
    reader.settle(Duration::from_secs(2)).await;
    assert_eq!(&reader.ids(), ids);
    assert!(
        relay.is_running(),
        "the relay recovers without a restart:\n{}",
        relay.log_text()
    );
    println!(
        "{label}: {} events, {} duplicates",
        ids.len(),
        reader.messages.len() - ids.len()
    );
    relay.stop_gracefully(Duration::from_secs(60));
    fx.teardown().await;
}

/// (c) Kafka stops and starts while the relay runs, for longer than `message.timeout.ms`:
/// nothing is lost, and the same relay process recovers on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_outage_loses_nothing_and_recovers_without_restart() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new("relay_kafka_outage", WriteMode::Insert).await;
    // Deliveries time out during the outage, so the relay goes through its failure path:
    // drain, back off, resume from the acknowledged position.
    let relay = fx.start_relay(&["-X", "message.timeout.ms=3000"]);
    let mut ids = HashSet::new();
    let mut reader = Reader::new(&[&fx.topic()]);
    fx.write_batches(&mut ids, 0..5, 100, ("o", 11)).await;
    reader
        .read_until(WAIT, has_all(&ids), || relay.log_text())
        .await;

    let restart = Restart("kafka");
    services("stop", "kafka");
    fx.write_batches(&mut ids, 5..10, 100, ("o", 11)).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    services("start", "kafka");
    drop(restart);
    fx.write_batches(&mut ids, 10..15, 100, ("o", 11)).await;

    finish(fx, relay, reader, &ids, "(c) kafka outage").await;
}

/// (d) PostgreSQL restarts while the relay runs: it reconnects and resumes from the
/// acknowledged position, losing nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_reconnects_and_resumes() {
    let _serial = SERIAL.lock().await;
    let mut fx = Fixture::new("relay_pg_restart", WriteMode::Insert).await;
    let relay = fx.start_relay(&["-X", "linger.ms=1"]);
    let mut ids = HashSet::new();
    let mut reader = Reader::new(&[&fx.topic()]);
    fx.write_batches(&mut ids, 0..5, 100, ("o", 11)).await;
    reader
        .read_until(WAIT, has_all(&ids), || relay.log_text())
        .await;

    let restart = Restart("postgres");
    services("stop", "postgres");
    tokio::time::sleep(Duration::from_secs(2)).await;
    services("start", "postgres");
    drop(restart);
    // The pool finds its connections dead; a fresh one writes after the restart.
    fx.db = postgres(4).await;
    fx.write_batches(&mut ids, 5..10, 100, ("o", 11)).await;

    assert!(
        relay.log_text().contains("relay session failed; retrying"),
        "{}",
        relay.log_text()
    );
    finish(fx, relay, reader, &ids, "(d) postgres restart").await;
}
