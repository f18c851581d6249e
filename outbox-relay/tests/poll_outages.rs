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
    assert!(log.contains("relay session failed; retrying"), "{log}");
    assert!(
        relay.is_running(),
        "the relay recovers without a restart:\n{log}"
    );
    relay.stop_gracefully(Duration::from_secs(60));
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

/// Kafka stops for longer than the claim bound while the producer would wait far longer
/// (`message.timeout.ms` = 120 s): the claiming transaction is rolled back at the bound and
/// retried, so no transaction of the relay in `pg_stat_activity` is older than the bound (plus
/// the time to roll back) at any sample; and once Kafka is back every event arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_outage_bounds_the_claim_transaction_postgres() {
    const BOUND: Duration = Duration::from_secs(4);
    let _serial = SERIAL.lock().await;
    let fx = PollFixture::new(Backend::Postgres, "poll_claim_bound").await;
    fx.setup_with_binary();
    let settings = std::env::temp_dir().join(format!("{}.toml", fx.name));
    std::fs::write(
        &settings,
        format!("[source.poll]\nclaim_timeout = \"{}s\"\n", BOUND.as_secs()),
    )
    .expect("writing the relay settings");
    // The relay's sessions carry an application_name of their own, to be told apart.
    let application = fx.name.clone();
    let separator = if fx.url.contains('?') { '&' } else { '?' };
    let url = format!("{}{separator}application_name={application}", fx.url);
    let settings_path = settings.display().to_string();
    let relay = RelayChild::spawn_env(
        &fx,
        "run",
        &[
            "--config",
            &settings_path,
            "-X",
            "message.timeout.ms=120000",
        ],
        &[("DATABASE_URL", &url)],
    );
    let mut ids = HashSet::new();
    let mut reader = Reader::new(&[&fx.topic()]);
    write_some(&fx, &mut ids, "before", 100).await;
    reader
        .read_until(WAIT, has_all(&ids), || relay.log_text())
        .await;

    let restart = Restart("kafka");
    services("stop", "kafka");
    write_some(&fx, &mut ids, "during", 100).await;
    // Sample the relay's open transactions through the outage.
    let sample = sea_orm::Statement::from_sql_and_values(
        sea_orm::DbBackend::Postgres,
        "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp() - xact_start) AS float8) \
         FROM pg_stat_activity WHERE application_name = $1 AND xact_start IS NOT NULL",
        [application.clone().into()],
    );
    let mut ages: Vec<f64> = Vec::new();
    let until = std::time::Instant::now() + 3 * BOUND + Duration::from_secs(3);
    while std::time::Instant::now() < until {
        use sea_orm::ConnectionTrait;
        for row in fx
            .db
            .query_all_raw(sample.clone())
            .await
            .expect("pg_stat_activity")
        {
            ages.push(row.try_get_by_index::<f64>(0).expect("an age"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    services("start", "kafka");
    drop(restart);
    write_some(&fx, &mut ids, "after", 100).await;

    std::fs::remove_file(&settings).ok();
    assert!(
        ages.len() >= 5,
        "too few samples of the relay's transactions ({}) to judge:\n{}",
        ages.len(),
        relay.log_text()
    );
    let oldest = ages.iter().copied().fold(0.0_f64, f64::max);
    assert!(
        oldest <= BOUND.as_secs_f64() + 1.5,
        "a relay transaction was {oldest:.1} s old; the bound is {BOUND:?}"
    );
    let log = recovered(&fx, relay, reader, &ids).await;
    assert!(log.contains("claim_timeout"), "{log}");
    eprintln!(
        "{} samples, oldest relay transaction {oldest:.1} s",
        ages.len()
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
