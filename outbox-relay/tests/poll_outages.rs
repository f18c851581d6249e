//! Outage tests of the `poll` source: they stop and start the shared Kafka and MariaDB
//! services, so they run one at a time (a lock in this binary), and this binary must not run
//! beside other tests that use those services: run it on its own, e.g.
//! `cargo test -p outbox-relay --test poll_outages -- --test-threads=1`.

mod common;
mod poll_support;

use std::collections::HashSet;
use std::time::Duration;

use common::{Reader, Restart, SERIAL, has_all, services};
use poll_support::*;

const WAIT: Duration = Duration::from_secs(240);

async fn write_some(fx: &PollFixture, ids: &mut HashSet<String>, prefix: &str, n: usize) {
    for chunk in events(prefix, 7, n).chunks(50) {
        ids.extend(fx.write(chunk).await.iter().map(|e| e.id.to_string()));
    }
}

/// After the outage: every event arrives and its row is deleted, the same process ran through
/// it (logging its retries), and SIGTERM stops it cleanly. Returns the relay's log.
async fn recovered(
    fx: &PollFixture,
    mut relay: RelayChild,
    mut reader: Reader,
    ids: &HashSet<String>,
) -> String {
    reader
        .read_until(WAIT, has_all(ids), || relay.log_text())
        .await;
    fx.wait_empty(WAIT).await;
    let log = relay.log_text();
    assert!(log.contains("poll cycle failed; retrying"), "{log}");
    assert!(
        relay.is_running(),
        "the relay recovers without a restart:\n{log}"
    );
    assert_eq!(
        relay.terminate(Duration::from_secs(60)),
        Some(0),
        "{}",
        relay.log_text()
    );
    log
}

/// Kafka stops for longer than `message.timeout.ms` while the poll relay (a process) runs:
/// the claimed batch fails, is rolled back and retried with backoff — the log shows the
/// attempts and the error — and once Kafka is back every event arrives, the same process
/// recovering on its own, and SIGTERM still stops it cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_outage_loses_nothing_postgres() {
    let _serial = SERIAL.lock().await;
    let fx = PollFixture::new(Backend::Postgres, "poll_kafka_outage").await;
    fx.setup_with_binary();
    let relay = RelayChild::spawn_with(&fx, "run", &["-X", "message.timeout.ms=3000"]);
    let mut ids = HashSet::new();
    let mut reader = Reader::new(&[&fx.topic()]);
    write_some(&fx, &mut ids, "before", 300).await;
    reader
        .read_until(WAIT, has_all(&ids), || relay.log_text())
        .await;

    let restart = Restart("kafka");
    services("stop", "kafka");
    write_some(&fx, &mut ids, "during", 300).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    services("start", "kafka");
    drop(restart);
    write_some(&fx, &mut ids, "after", 300).await;

    let log = recovered(&fx, relay, reader, &ids).await;
    // The attempts count is logged with each retry (`attempts=2`, colored).
    assert!(
        log.contains("attempts") && log.contains("MessageTimedOut"),
        "{log}"
    );
    fx.teardown().await;
}

/// MariaDB restarts while the poll relay runs: the lock connection and the pool die, the relay
/// retries with backoff, takes the leadership again, and ships everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_restart_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let fx = PollFixture::new(Backend::MariaDb, "poll_maria_restart").await;
    fx.setup_with_binary();
    let relay = RelayChild::spawn_with(&fx, "run", &[]);
    let mut ids = HashSet::new();
    let mut reader = Reader::new(&[&fx.topic()]);
    write_some(&fx, &mut ids, "before", 300).await;
    reader
        .read_until(WAIT, has_all(&ids), || relay.log_text())
        .await;

    let restart = Restart("mariadb");
    services("stop", "mariadb");
    tokio::time::sleep(Duration::from_secs(3)).await;
    services("start", "mariadb");
    drop(restart);
    write_some(&fx, &mut ids, "after", 300).await;

    let log = recovered(&fx, relay, reader, &ids).await;
    assert!(
        log.matches("leading: this relay ships the outbox").count() >= 2,
        "{log}"
    );
    fx.teardown().await;
}
