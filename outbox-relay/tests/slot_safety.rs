//! The replication slot never bloats and is never lost silently (issue 13, part 3), on the real
//! PostgreSQL and Kafka:
//! - heartbeats advance the slot while the outbox is idle and another database of the cluster
//!   writes ~200 MB of WAL, and without them the same slot retains that WAL;
//! - a slot dropped under a running relay, or invalidated by the server, stops the relay with an
//!   error that names the slot and the remedy, and is never recreated.
//!
//! These tests change the server's `max_slot_wal_keep_size` and write WAL for the whole cluster,
//! so they run one at a time (a lock in this binary), and this binary must run on its own:
//! `cargo test -p outbox-relay --test slot_safety -- --test-threads=1`.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use outbox_core::WriteMode;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};

const WAIT: Duration = Duration::from_secs(120);
/// WAL written elsewhere while the outbox is idle.
const FILLER_BYTES: i64 = 200 << 20;
/// What a heartbeat-advanced slot may still retain after the filler: two WAL segments.
const RETAINED_BOUND: i64 = 32 << 20;

async fn scalar<T: sea_orm::TryGetable>(db: &DatabaseConnection, sql: &str, slot: &str) -> T {
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            [slot.into()],
        ))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .unwrap_or_else(|| panic!("{sql}: no row"));
    row.try_get_by_index(0)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The WAL the slot retains (bytes), or None when it does not exist.
async fn retained(db: &DatabaseConnection, slot: &str) -> Option<i64> {
    scalar::<Option<i64>>(
        db,
        "SELECT (SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::int8 \
         FROM pg_replication_slots WHERE slot_name = $1)",
        slot,
    )
    .await
}

async fn slot_active(db: &DatabaseConnection, slot: &str) -> bool {
    scalar::<Option<bool>>(
        db,
        "SELECT (SELECT active FROM pg_replication_slots WHERE slot_name = $1)",
        slot,
    )
    .await
        == Some(true)
}

async fn wait_active(db: &DatabaseConnection, slot: &str, relay: &RelayProcess) {
    let deadline = Instant::now() + WAIT;
    while !slot_active(db, slot).await {
        assert!(
            Instant::now() < deadline,
            "the relay never streamed from slot {slot}:\n{}",
            relay.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A database of its own, on the same cluster, that writes WAL the outbox's slot must not keep.
struct OtherDatabase {
    name: String,
    admin: DatabaseConnection,
    db: DatabaseConnection,
}

impl OtherDatabase {
    async fn create() -> OtherDatabase {
        let name = unique("walfill");
        let admin = postgres(1).await;
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("CREATE DATABASE");
        let url = database_url();
        let base = url.rsplit_once('/').map_or(url.as_str(), |(base, _)| base);
        let db = sea_orm::Database::connect(format!("{base}/{name}"))
            .await
            .expect("connecting to the filler database");
        db.execute_unprepared("CREATE TABLE filler (x text)")
            .await
            .expect("CREATE TABLE filler");
        OtherDatabase { name, admin, db }
    }

    /// Writes at least `bytes` of WAL, in transactions of ~50 MB; returns what it wrote.
    async fn write_wal(&self, bytes: i64) -> i64 {
        let lsn = "SELECT pg_current_wal_lsn()::text";
        let read = |row: Option<sea_orm::QueryResult>| -> String {
            row.and_then(|r| r.try_get_by_index(0).ok())
                .expect("pg_current_wal_lsn")
        };
        let start = read(
            self.db
                .query_one_raw(Statement::from_string(DbBackend::Postgres, lsn))
                .await
                .expect("lsn"),
        );
        loop {
            self.db
                .execute_unprepared(
                    "INSERT INTO filler SELECT repeat(md5(g::text), 30) \
                     FROM generate_series(1, 45000) g",
                )
                .await
                .expect("filling");
            let written: i64 = self
                .db
                .query_one_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::int8",
                    [start.as_str().into()],
                ))
                .await
                .expect("wal diff")
                .and_then(|r| r.try_get_by_index(0).ok())
                .expect("wal diff");
            if written >= bytes {
                return written;
            }
        }
    }

    async fn drop(self) {
        let _ = self.db.close().await;
        let _ = self
            .admin
            .execute_unprepared(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .await;
    }
}

/// Three idle outboxes' slots while another database writes ~200 MB of WAL: one relayed with
/// heartbeats every second, one relayed without heartbeats, and one nobody reads (the control:
/// it must retain the filler, or the workload proves nothing). The relayed slots retain less than
/// two WAL segments; the heartbeats were written and confirmed, and none reached Kafka.
///
/// Measured on PostgreSQL 15: the slot relayed without heartbeats stays small as well, because
/// the relay confirms the server's WAL end from its keepalives whenever nothing is in flight.
/// The heartbeat is the guarantee for servers and proxies that do not report it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_an_idle_outbox_slot_from_retaining_other_databases_wal() {
    let _serial = SERIAL.lock().await;
    let with = Fixture::new("slot_heartbeat", WriteMode::Insert).await;
    let without = Fixture::new("slot_no_heartbeat", WriteMode::Insert).await;
    let unread = Fixture::new("slot_unread", WriteMode::Insert).await;
    let metrics = free_local_addr();
    let beating = with.start_relay(&["--heartbeat-interval", "1s", "--metrics-listen", &metrics]);
    let silent = without.start_relay(&["--heartbeat-interval", "0s"]);
    // Each relayed outbox relays one event first, so both sessions are known to work.
    let mut reader = Reader::new(&[&with.topic(), &without.topic()]);
    let mut ids = HashSet::new();
    for fx in [&with, &without] {
        ids.extend(
            fx.write(&[event("a", serde_json::json!({"n": 1}))])
                .await
                .into_iter()
                .map(|e| e.id.to_string()),
        );
    }
    reader
        .read_until(WAIT, has_all(&ids), || {
            format!("{}\n{}", beating.log_text(), silent.log_text())
        })
        .await;
    wait_active(&with.db, &with.name, &beating).await;
    wait_active(&with.db, &without.name, &silent).await;

    let other = OtherDatabase::create().await;
    let written = other.write_wal(FILLER_BYTES).await;
    // A relayed slot advances within a few seconds (its restart_lsn moves at the next
    // running-transactions record the server logs, every 15 s at most while WAL is written).
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut with_retained, mut without_retained);
    loop {
        with_retained = retained(&with.db, &with.name).await.unwrap_or(i64::MAX);
        without_retained = retained(&with.db, &without.name).await.unwrap_or(i64::MAX);
        let small = with_retained < RETAINED_BOUND && without_retained < RETAINED_BOUND;
        if small || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let unread_retained = retained(&with.db, &unread.name).await.unwrap_or(0);
    println!(
        "filler WAL {written} B; retained: relayed with heartbeats {with_retained} B, relayed \
         without {without_retained} B, unread {unread_retained} B (bound {RETAINED_BOUND} B)"
    );
    other.drop().await;
    assert!(
        unread_retained >= written,
        "the unread slot retains only {unread_retained} B of {written} B: the workload does not \
         show a slot that bloats"
    );
    assert!(
        with_retained < RETAINED_BOUND,
        "with heartbeats, the slot retains {with_retained} B after {written} B of WAL elsewhere:\n{}",
        beating.log_text()
    );
    assert!(
        without_retained < RETAINED_BOUND,
        "without heartbeats, the slot retains {without_retained} B after {written} B of WAL \
         elsewhere:\n{}",
        silent.log_text()
    );
    let (code, body) = http_get(&metrics, "/metrics");
    assert_eq!(code, 200);
    let beats: u64 = body
        .lines()
        .find_map(|l| l.strip_prefix(r#"outbox_relay_heartbeats_total{source="wal"} "#))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no heartbeat counter in\n{body}"));
    assert!(beats >= 2, "{beats} heartbeats in\n{body}");
    assert!(
        body.contains(r#"outbox_relay_slot_retained_wal_bytes{source="wal"} "#),
        "{body}"
    );
    let log = beating.log_text();
    assert!(!log.contains("writing a heartbeat failed"), "{log}");
    // Heartbeats are consumed, never shipped: each topic holds its one event.
    reader.settle(Duration::from_secs(2)).await;
    assert_eq!(reader.messages.len(), 2);
    drop(beating);
    drop(silent);
    with.teardown().await;
    without.teardown().await;
    unread.teardown().await;
}

/// Terminates the slot's session and drops the slot, racing the relay's reconnects.
async fn drop_slot_under(db: &DatabaseConnection, slot: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let _ = db
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
                 WHERE slot_name = $1 AND active_pid IS NOT NULL",
                [slot.into()],
            ))
            .await;
        let dropped = db
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_drop_replication_slot($1)",
                [slot.into()],
            ))
            .await;
        if dropped.is_ok() {
            return;
        }
        assert!(Instant::now() < deadline, "could not drop slot {slot}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The relay exits non-zero with an error naming the slot, what happened and both remedies; the
/// slot was not recreated.
async fn assert_stopped_for_lost_slot(
    fx: &Fixture,
    relay: &mut RelayProcess,
    what: &str,
    slot_exists_after: bool,
) {
    let status = relay.wait_exit(WAIT).unwrap_or_else(|| {
        panic!(
            "the relay still runs after its slot was {what}:\n{}",
            relay.log_text()
        )
    });
    let log = relay.log_text();
    assert_eq!(status.code(), Some(1), "{log}");
    let error = log
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line:\n{log}"));
    for part in [
        format!("replication slot `{}`", fx.name),
        what.to_owned(),
        "does not recreate the slot".to_owned(),
        "outbox-relay setup".to_owned(),
        "restore".to_owned(),
    ] {
        assert!(error.contains(&part), "`{part}` missing in: {error}");
    }
    let exists: bool = scalar(
        &fx.db,
        "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
        &fx.name,
    )
    .await;
    assert_eq!(
        exists, slot_exists_after,
        "the slot's existence changed: {log}"
    );
}

/// A slot dropped while the relay streams from it stops the relay, which does not recreate it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_dropped_under_a_running_relay_stops_it_with_the_remedy() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new("slot_dropped", WriteMode::Insert).await;
    let mut relay = fx.start_relay(&[]);
    let mut reader = Reader::new(&[&fx.topic()]);
    let mut ids = HashSet::new();
    fx.write_batches(&mut ids, 0..3, 10, ("o", 3)).await;
    reader
        .read_until(WAIT, has_all(&ids), || relay.log_text())
        .await;
    wait_active(&fx.db, &fx.name, &relay).await;

    drop_slot_under(&fx.db, &fx.name).await;
    assert_stopped_for_lost_slot(&fx, &mut relay, "no longer exists", false).await;
    fx.teardown().await;
}

/// Resets `max_slot_wal_keep_size` when dropped, so a failed test leaves the server as it was.
struct KeepSizeReset(DatabaseConnection);
impl Drop for KeepSizeReset {
    fn drop(&mut self) {
        best_effort_sql(
            Some(self.0.clone()),
            vec![
                "ALTER SYSTEM RESET max_slot_wal_keep_size".to_owned(),
                "SELECT pg_reload_conf()".to_owned(),
            ],
        );
    }
}

/// The server invalidates the slot (`max_slot_wal_keep_size` passed at a checkpoint) while the
/// relay runs: the relay stops with the remedy, and a new `run` refuses to start on that slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidated_slot_stops_the_relay_with_the_remedy() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new("slot_invalidated", WriteMode::Insert).await;
    let mut relay = fx.start_relay(&["--heartbeat-interval", "1s"]);
    let mut reader = Reader::new(&[&fx.topic()]);
    let mut ids = HashSet::new();
    fx.write_batches(&mut ids, 0..3, 10, ("o", 3)).await;
    reader
        .read_until(WAIT, has_all(&ids), || relay.log_text())
        .await;
    wait_active(&fx.db, &fx.name, &relay).await;

    let admin = postgres(1).await;
    let _reset = KeepSizeReset(admin.clone());
    admin
        .execute_unprepared("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
        .await
        .expect("ALTER SYSTEM");
    admin
        .execute_unprepared("SELECT pg_reload_conf()")
        .await
        .expect("reload");
    let other = OtherDatabase::create().await;
    // A burst of WAL, then a checkpoint before the slot can advance past it: the server removes
    // the segments and invalidates the slot.
    let deadline = Instant::now() + WAIT;
    loop {
        other.write_wal(48 << 20).await;
        admin
            .execute_unprepared("SELECT pg_switch_wal()")
            .await
            .expect("pg_switch_wal");
        admin
            .execute_unprepared("CHECKPOINT")
            .await
            .expect("CHECKPOINT");
        let status: Option<String> = scalar(
            &admin,
            "SELECT (SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1)",
            &fx.name,
        )
        .await;
        if status.as_deref() == Some("lost") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slot was never invalidated (wal_status {status:?})"
        );
    }
    other.drop().await;
    assert_stopped_for_lost_slot(&fx, &mut relay, "was invalidated", true).await;

    // Started again on the invalidated slot, the relay refuses at once with the same remedy.
    let mut again = fx.start_relay(&[]);
    assert_stopped_for_lost_slot(&fx, &mut again, "was invalidated", true).await;
    drop(_reset);
    fx.teardown().await;
}
