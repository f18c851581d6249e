//! The `binlog` source under outages, through the `outbox-relay` binary on the real MariaDB and
//! Kafka: writers keep committing while Kafka is stopped or MariaDB restarts, and every committed
//! event arrives, per aggregate in commit order, the same relay process recovering on its own;
//! the lag metric counts the binlog behind and drops to about 0 once caught up; a purged binlog
//! stops the relay at start, naming the position, the oldest file left and the remedy.
//!
//! These tests stop and start the services and purge MariaDB's binlog, so they run one at a time
//! (a lock in this binary), and this binary must not run beside other tests that use those
//! services: run it on its own, e.g.
//! `cargo test -p outbox-relay --test binlog_outages -- --test-threads=1`.

// Both support modules include the workspace's `tests/support` (the services' addresses).
#![allow(clippy::duplicate_mod)]

mod binlog_support;
mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use binlog_support::{
    BinlogFixture, aggregates_out_of_commit_order, assert_first_arrivals_in_commit_order,
    config_file, relay, setup,
};
use common::{
    Reader, RelayProcess, Restart, SERIAL, create_topics, free_local_addr, has_all, http_get,
    services,
};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, TransactionTrait};

const WAIT: Duration = Duration::from_secs(240);
/// Writers, each with two aggregates of its own (so each aggregate's commit order is its
/// writer's order of successful commits).
const WRITERS: usize = 4;

fn start(config: &std::path::Path, label: &str) -> RelayProcess {
    RelayProcess::spawn(relay(config, "run"), label)
}

/// One transaction inserting `rows` (id, aggregate) as one statement.
async fn write_txn(
    db: &DatabaseConnection,
    table: &str,
    rows: &[(String, String)],
) -> Result<(), DbErr> {
    let values: Vec<String> = rows
        .iter()
        .map(|(id, aggregate)| {
            format!("('{id}', 'Order', '{aggregate}', 'T', '{{\"id\": \"{id}\"}}', NOW(6))")
        })
        .collect();
    let txn = db.begin().await?;
    txn.execute_unprepared(&format!(
        "INSERT INTO `{table}` (id, aggregatetype, aggregateid, type, payload, `timestamp`) \
         VALUES {}",
        values.join(", ")
    ))
    .await?;
    txn.commit().await
}

/// What the writers committed.
#[derive(Default)]
struct Written {
    /// Per aggregate, its ids in commit order.
    by_aggregate: HashMap<String, Vec<String>>,
    /// Transactions that failed (the database was down); their ids are never expected, but one
    /// whose COMMIT failed in flight may have committed, so they are not forbidden either.
    failed: usize,
}

impl Written {
    fn ids(&self) -> HashSet<String> {
        self.by_aggregate.values().flatten().cloned().collect()
    }
}

/// Writers committing until stopped; each retries on its own when the database is down and
/// counts only what committed.
struct Writers {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Written>>,
}

impl Writers {
    fn start(fixture: &BinlogFixture) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..WRITERS)
            .map(|w| {
                let (db, table, stop) = (fixture.db.clone(), fixture.name.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut written = Written::default();
                    let mut attempt = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        attempt += 1;
                        // A fresh id per attempt: a failed attempt's rows may have committed.
                        let rows: Vec<(String, String)> = ["a", "b"]
                            .iter()
                            .map(|a| (format!("{w}-{attempt}-{a}"), format!("agg-{w}-{a}")))
                            .collect();
                        let result = tokio::time::timeout(
                            Duration::from_secs(10),
                            write_txn(&db, &table, &rows),
                        )
                        .await;
                        if let Ok(Ok(())) = result {
                            for (id, aggregate) in rows {
                                written.by_aggregate.entry(aggregate).or_default().push(id);
                            }
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        } else {
                            written.failed += 1;
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                    written
                })
            })
            .collect();
        Writers { stop, tasks }
    }

    async fn stop(self) -> Written {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Written::default();
        for task in self.tasks {
            let written = task.await.expect("writer");
            all.failed += written.failed;
            all.by_aggregate.extend(written.by_aggregate);
        }
        all
    }
}

/// `outbox_relay_lag_bytes{source="binlog"}` as the relay's `/metrics` shows it now.
fn lag_bytes(metrics: &str) -> Option<u64> {
    let (code, body) = http_get(metrics, "/metrics");
    assert_eq!(code, 200, "/metrics: {body}");
    body.lines()
        .find_map(|l| l.strip_prefix("outbox_relay_lag_bytes{source=\"binlog\"} "))
        .and_then(|v| v.trim().parse().ok())
}

/// A fixture with its topics, a relay config (with `kafka_properties` and a metrics address)
/// and its position row set up.
async fn prepared(
    prefix: &str,
    kafka_properties: &str,
) -> (BinlogFixture, std::path::PathBuf, String, String) {
    let fixture = BinlogFixture::new(prefix).await;
    let topic = format!("{}.Order", fixture.name);
    create_topics(&[&topic, &format!("{}.dlq", fixture.name)]).await;
    let metrics = free_local_addr();
    let config = config_file(
        &fixture,
        &format!("[kafka.properties]\n{kafka_properties}[metrics]\nlisten = \"{metrics}\"\n"),
    );
    setup(&config);
    (fixture, config, topic, metrics)
}

/// Whether per-aggregate order is asserted after an outage.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Order {
    Asserted,
    /// Measured and printed only: see `kafka_outage_past_the_message_timeout_loses_nothing`.
    Reported,
}

/// After the outage: every committed event arrives (per aggregate in commit order, as `order`
/// says), the same process ran through it, the lag drops to about 0, and SIGTERM stops it
/// cleanly. Returns the relay's log.
async fn recovered(
    label: &str,
    mut relay: RelayProcess,
    mut reader: Reader,
    written: &Written,
    metrics: &str,
    order: Order,
) -> String {
    let ids = written.ids();
    assert!(
        ids.len() > 200,
        "{label}: too few events written to judge: {}",
        ids.len()
    );
    reader
        .read_until(WAIT, has_all(&ids), || relay.log_text())
        .await;
    reader.settle(Duration::from_secs(2)).await;
    assert!(reader.ids().is_superset(&ids));
    let arrivals = || {
        reader
            .messages
            .iter()
            .map(|m| (m.key.clone().unwrap_or_default(), m.id()))
    };
    match order {
        Order::Asserted => assert_first_arrivals_in_commit_order(arrivals(), &written.by_aggregate),
        Order::Reported => println!(
            "{label}: {} of {} aggregates' first arrivals out of commit order",
            aggregates_out_of_commit_order(arrivals(), &written.by_aggregate).len(),
            written.by_aggregate.len()
        ),
    }
    assert!(
        relay.is_running(),
        "{label}: the relay recovers without a restart:\n{}",
        relay.log_text()
    );
    // Caught up and idle: the lag falls to about 0 (the sample is taken each second).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut lag = lag_bytes(metrics);
    while lag.is_none_or(|l| l > 1_024) {
        assert!(
            Instant::now() < deadline,
            "{label}: the lag did not drop once caught up: {lag:?}\n{}",
            relay.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        lag = lag_bytes(metrics);
    }
    let log = relay.log_text();
    let extra = reader.messages.len() - reader.ids().len();
    println!(
        "{label}: {} events committed, {} duplicates, {} writes failed during the outage, lag \
         once caught up {lag:?} bytes",
        ids.len(),
        extra,
        written.failed
    );
    relay.stop_gracefully(Duration::from_secs(60));
    log
}

/// A relay shipping (100 events arrived) while the writers commit; the fixture is kept for its
/// table's lifetime.
async fn shipping_while_writing(
    prefix: &str,
    kafka_properties: &str,
) -> (BinlogFixture, RelayProcess, Reader, Writers, String) {
    let (fixture, config, topic, metrics) = prepared(prefix, kafka_properties).await;
    let relay = start(&config, &fixture.name);
    let mut reader = Reader::new(&[&topic]);
    let writers = Writers::start(&fixture);
    reader
        .read_until(WAIT, |m| m.len() >= 100, || relay.log_text())
        .await;
    (fixture, relay, reader, writers, metrics)
}

/// Kafka stops for ~10 s while writers keep committing; returns the relay's log, the most lag
/// seen during the outage and the relay's lag once caught up.
async fn kafka_outage(
    prefix: &str,
    label: &str,
    kafka_properties: &str,
    order: Order,
) -> (String, u64) {
    let (_fixture, relay, reader, writers, metrics) =
        shipping_while_writing(prefix, kafka_properties).await;

    let restart = Restart("kafka");
    services("stop", "kafka");
    // Nothing is acknowledged while Kafka is down, and the writers go on: the lag grows.
    let mut outage_lag = 0;
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        outage_lag = outage_lag.max(lag_bytes(&metrics).unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    services("start", "kafka");
    drop(restart);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let written = writers.stop().await;

    let log = recovered(label, relay, reader, &written, &metrics, order).await;
    println!("{label}: the lag reached {outage_lag} bytes during the outage");
    assert!(
        outage_lag > 16_384,
        "{label}: the lag during the outage counts the binlog written meanwhile: {outage_lag} bytes"
    );
    (log, outage_lag)
}

/// (a) Kafka stops for ~10 s while writers keep committing, within the producer's
/// `message.timeout.ms` (the default): the lag metric counts the binlog written meanwhile; once
/// Kafka is back every committed event arrives, per aggregate in commit order, and the lag drops
/// to about 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_outage_loses_nothing_and_keeps_order() {
    let _serial = SERIAL.lock().await;
    kafka_outage(
        "binlog_kafka_outage",
        "(a) kafka outage",
        "",
        Order::Asserted,
    )
    .await;
}

/// (a') The same outage past a 3 s `message.timeout.ms`: deliveries fail, the session ends and
/// is retried from the acknowledged position, and every committed event arrives. Per-aggregate
/// order of first arrivals is measured, not asserted: librdkafka fails the queued messages that
/// time out while later ones of the same partition may still be delivered (its gapless
/// guarantee excludes timeouts), and the pipeline re-sends the failed ones after them. That is
/// the pipeline's (and `wal`'s alike), reported to be fixed there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_outage_past_the_message_timeout_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let (log, _) = kafka_outage(
        "binlog_kafka_timeout",
        "(a') kafka outage past message.timeout.ms",
        "\"message.timeout.ms\" = \"3000\"\n",
        Order::Reported,
    )
    .await;
    assert!(log.contains("relay session failed; retrying"), "{log}");
}

/// (b) MariaDB restarts while writers keep committing (their commits fail while it is down,
/// and they retry): the relay's session fails, it reconnects and resumes from the position it
/// acknowledged (in the binlog file before the restart's rotation), and every committed event
/// arrives, per aggregate in commit order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_restart_reconnects_and_resumes() {
    let _serial = SERIAL.lock().await;
    let (_fixture, relay, reader, writers, metrics) =
        shipping_while_writing("binlog_maria_restart", "").await;

    let restart = Restart("mariadb");
    services("stop", "mariadb");
    tokio::time::sleep(Duration::from_secs(3)).await;
    services("start", "mariadb");
    drop(restart);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let written = writers.stop().await;

    let log = recovered(
        "(b) mariadb restart",
        relay,
        reader,
        &written,
        &metrics,
        Order::Asserted,
    )
    .await;
    assert!(log.contains("relay session failed; retrying"), "{log}");
    assert!(
        log.matches("reading the binlog").count() >= 2,
        "a second session read the binlog after the restart: {log}"
    );
}

/// The server's binlog files, oldest first.
async fn binlog_files(db: &DatabaseConnection) -> Vec<String> {
    db.query_all_raw(sea_orm::Statement::from_string(
        sea_orm::DbBackend::MySql,
        "SHOW BINARY LOGS",
    ))
    .await
    .expect("SHOW BINARY LOGS")
    .iter()
    .map(|row| row.try_get_by_index(0).expect("Log_name"))
    .collect()
}

/// Rotates the binlog and purges every file before the new one; the server keeps a file that a
/// dump thread still reads (a stopped relay's, until the server notices), so this retries.
async fn purge_all_but_a_new_file(fixture: &BinlogFixture) -> String {
    fixture.exec("FLUSH BINARY LOGS").await;
    let newest = binlog_files(&fixture.db)
        .await
        .pop()
        .expect("the server writes a binlog");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        fixture
            .exec(&format!("PURGE BINARY LOGS TO '{newest}'"))
            .await;
        let files = binlog_files(&fixture.db).await;
        if files == [newest.clone()] {
            return newest;
        }
        assert!(
            Instant::now() < deadline,
            "PURGE BINARY LOGS TO '{newest}' left {files:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A relay that shipped ten events (`shipped-*`) and stopped gracefully; the reader of its topic.
async fn shipped_then_stopped(prefix: &str) -> (BinlogFixture, std::path::PathBuf, Reader) {
    let (fixture, config, topic, _metrics) = prepared(prefix, "").await;
    let mut relay = start(&config, &fixture.name);
    let mut reader = Reader::new(&[&topic]);
    let shipped: Vec<(String, String)> = (0..10)
        .map(|i| (format!("shipped-{i}"), "agg".to_owned()))
        .collect();
    write_txn(&fixture.db, &fixture.name, &shipped)
        .await
        .expect("writing");
    let shipped_ids: HashSet<String> = shipped.iter().map(|(id, _)| id.clone()).collect();
    reader
        .read_until(WAIT, has_all(&shipped_ids), || relay.log_text())
        .await;
    relay.stop_gracefully(Duration::from_secs(30));
    (fixture, config, reader)
}

/// Starts the relay on `config` and expects it to stop with exit code 1 within a minute;
/// returns its log.
fn stops_with_exit_1(config: &std::path::Path, label: &str, why: &str) -> String {
    let mut relay = start(config, label);
    let status = relay.wait_exit(Duration::from_secs(60));
    let log = relay.log_text();
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{why}:\n{log}");
    log
}

/// Nothing but the `shipped-*` events reached the topic.
async fn nothing_past_the_gap(mut reader: Reader) {
    reader.settle(Duration::from_secs(2)).await;
    let past: Vec<String> = reader
        .ids()
        .into_iter()
        .filter(|id| !id.starts_with("shipped-"))
        .collect();
    assert!(past.is_empty(), "nothing past the gap is shipped: {past:?}");
}

/// (c) The binlog at the relay's stored position is purged while the relay is stopped, with
/// events committed after it: the relay stops at start with exit code 1, naming the stored
/// position, the oldest file the server has and the remedy, and ships nothing past the gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purged_binlog_stops_the_relay_at_start_naming_the_remedy() {
    let _serial = SERIAL.lock().await;
    let (fixture, config, reader) = shipped_then_stopped("binlog_purged").await;
    let (stored_file, stored_offset, _) = fixture.stored().await.expect("a stored position");

    // Committed while the relay is stopped, then purged with the binlog.
    let lost: Vec<(String, String)> = (0..5)
        .map(|i| (format!("lost-{i}"), "agg".to_owned()))
        .collect();
    write_txn(&fixture.db, &fixture.name, &lost)
        .await
        .expect("writing");
    let oldest = purge_all_but_a_new_file(&fixture).await;
    let after: Vec<(String, String)> = (0..5)
        .map(|i| (format!("after-{i}"), "agg".to_owned()))
        .collect();
    write_txn(&fixture.db, &fixture.name, &after)
        .await
        .expect("writing");

    let log = stops_with_exit_1(&config, &fixture.name, "the relay stops on a purged binlog");
    let position = format!("{stored_file}:{stored_offset}");
    for part in [
        position.as_str(),
        &format!("oldest binlog file the server has is `{oldest}`"),
        "expire_logs",
        "does not skip ahead",
        &format!("delete the row `{}`", fixture.name),
    ] {
        assert!(log.contains(part), "the error names `{part}`:\n{log}");
    }
    if let Some(line) = log.lines().find(|l| l.contains("cannot send its binlog")) {
        println!("(c) purged binlog: {line}");
    }
    nothing_past_the_gap(reader).await;
}

/// (d) The binlog is reset (`RESET MASTER`) while the relay is stopped, and the server's new
/// file has the stored position's name (a relay that first ran on a fresh server): the relay
/// does not read that other file from the stored offset, which would skip what was committed
/// since the reset. It finds that the server's GTID state there is not the stored one, resumes
/// by GTID, which the server refuses, and stops naming the position; nothing is shipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_binlog_with_a_file_of_the_same_name_is_not_read_from_the_stored_offset() {
    let _serial = SERIAL.lock().await;
    let (fixture, config, reader) = shipped_then_stopped("binlog_reset").await;
    let (_, _, stored_gtid) = fixture.stored().await.expect("a stored position");
    assert!(
        stored_gtid.is_some(),
        "MariaDB positions carry a GTID state"
    );

    fixture.exec("RESET MASTER").await;
    // Committed after the reset, before the stored offset of the new file of the same name.
    let skipped: Vec<(String, String)> = (0..20)
        .map(|i| (format!("after-reset-{i}"), "agg".to_owned()))
        .collect();
    write_txn(&fixture.db, &fixture.name, &skipped)
        .await
        .expect("writing");
    let files = binlog_files(&fixture.db).await;
    let file = files.last().expect("a binlog file").clone();
    let end: u64 = fixture
        .db
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::MySql,
            "SHOW MASTER STATUS",
        ))
        .await
        .expect("SHOW MASTER STATUS")
        .expect("the server writes a binlog")
        .try_get_by_index(1)
        .expect("Position");
    // The stored row, as a relay that ran on the fresh server would have left it: the same
    // file name, an offset (a real event boundary of the new file), its old GTID state.
    fixture
        .exec(&format!(
            "UPDATE outbox_relay_binlog_position SET binlog_file = '{file}', \
             binlog_offset = {end} WHERE name = '{}'",
            fixture.name
        ))
        .await;

    let log = stops_with_exit_1(&config, &fixture.name, "the relay stops on a reset binlog");
    for part in [
        format!("{file}:{end}"),
        "is not the one it was read from".to_owned(),
        "does not skip ahead".to_owned(),
    ] {
        assert!(log.contains(&part), "the log names `{part}`:\n{log}");
    }
    if let Some(line) = log.lines().find(|l| l.contains("cannot send its binlog")) {
        println!("(d) reset binlog: {line}");
    }
    nothing_past_the_gap(reader).await;
}
