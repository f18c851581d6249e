//! `outbox-relay status [--json]` for the `wal`, `poll` and `binlog` sources, on the real
//! PostgreSQL, MariaDB and Kafka: a running relay's state and exact counts (read from its
//! `GET /status`), the facts read from the source's server (the slot's retained WAL and
//! `wal_status`, the polled table's pending rows and oldest age by the database's clock, the
//! binlog's stored position and whether the server still has it), the same with the relay
//! stopped, the text form's keys, and an unreachable server named in the error.

mod binlog_support;
mod common;
mod poll_support;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use binlog_support::{BinlogFixture, config_file, relay as binlog_command};
use common::{
    Fixture, Reader, RelayProcess, create_topics, event, free_local_addr, has_all, http_get,
    set_max_message_bytes,
};
use outbox_core::WriteMode;
use poll_support::{Backend, PollFixture, RelayChild};
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(90);

/// Runs `command` (an `outbox-relay status ...`), which must succeed.
fn run_ok(mut command: Command) -> String {
    let out = command.output().expect("running outbox-relay status");
    assert!(
        out.status.success(),
        "status failed ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json_of(command: Command) -> Value {
    let text = run_ok(command);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("status --json printed {text:?}: {e}"))
}

/// Asks `status --json` (built by `command`) until `done` holds, failing with `log()` after
/// 60 s; returns the last answer.
async fn status_until(
    command: impl Fn() -> Command,
    done: impl Fn(&Value) -> bool,
    log: impl Fn() -> String,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = json_of(command());
        if done(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "status never got there; last:\n{status:#}\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until `/readyz` on `addr` answers 200.
async fn until_ready(addr: &str, log: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(std::net::TcpStream::connect(addr).is_ok() && http_get(addr, "/readyz").0 == 200) {
        assert!(Instant::now() < deadline, "never ready:\n{}", log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn number(value: &Value) -> f64 {
    value
        .as_f64()
        .unwrap_or_else(|| panic!("{value} is not a number"))
}

/// `key: value` lines as a map, checking each line has that form.
fn text_lines(text: &str) -> std::collections::HashMap<String, String> {
    text.lines()
        .map(|line| {
            let (key, value) = line
                .split_once(": ")
                .unwrap_or_else(|| panic!("{line:?} is not `key: value` in\n{text}"));
            (key.to_owned(), value.to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_status_shows_the_running_relay_and_the_slot() {
    let fx = Fixture::new("status_wal", WriteMode::Insert).await;
    set_max_message_bytes(&fx.topic(), 4000).await;
    let addr = free_local_addr();
    let relay = fx.start_relay(&["--metrics-listen", &addr]);
    until_ready(&addr, || relay.log_text()).await;
    let status = || {
        let mut c = fx.command("status");
        c.args(["--json", "--metrics-listen", &addr]);
        c
    };

    // Three shipped events, one at a time, then one dead letter.
    let mut topic = Reader::new(&[&fx.topic()]);
    for n in 0..3 {
        let written = fx.write(&[event(format!("k{n}"), json!({"n": n}))]).await;
        let id = written[0].id.to_string();
        topic
            .read_until(WAIT, has_all(&[id].into()), || relay.log_text())
            .await;
    }
    let big = fx
        .write(&[event("big", json!({"blob": "x".repeat(20_000)}))])
        .await;
    let mut dead = Reader::new(&[&fx.dlq_topic()]);
    dead.read_until(WAIT, has_all(&[big[0].id.to_string()].into()), || {
        relay.log_text()
    })
    .await;

    let s = status_until(
        status,
        |s| s["published"] == json!(3) && s["dead_lettered"] == json!(1),
        || relay.log_text(),
    )
    .await;
    assert_eq!(s["source"], json!("wal"), "{s:#}");
    assert_eq!(s["state"], json!("leading"), "{s:#}");
    assert_eq!(s["relay"]["running"], json!(true), "{s:#}");
    assert_eq!(s["relay"]["address"], json!(addr), "{s:#}");
    assert_eq!(s["last_error"], Value::Null, "{s:#}");
    assert!(s["confirmed"].is_string(), "{s:#}");
    let age = number(&s["oldest_pending_age_seconds"]);
    assert!((0.0..60.0).contains(&age), "{s:#}");
    let slot = &s["slot"];
    assert_eq!(slot["name"], json!(fx.name), "{s:#}");
    assert_eq!(slot["exists"], json!(true), "{s:#}");
    assert_eq!(slot["active"], json!(true), "{s:#}");
    assert_eq!(slot["wal_status"], json!("reserved"), "{s:#}");
    assert!(number(&slot["retained_wal_bytes"]) >= 0.0, "{s:#}");
    assert!(number(&slot["lag_bytes"]) >= 0.0, "{s:#}");
    assert!(slot["confirmed_lsn"].is_string(), "{s:#}");
    assert!(
        s.get("table").is_none() && s.get("binlog").is_none(),
        "{s:#}"
    );

    // The same in the text form, one `key: value` line per figure.
    let mut c = fx.command("status");
    c.args(["--metrics-listen", &addr]);
    let text = run_ok(c);
    let lines = text_lines(&text);
    for (key, value) in [
        ("source", "wal"),
        ("state", "leading"),
        ("published", "3"),
        ("dead_lettered", "1"),
        ("last_error", "-"),
        ("relay.running", "true"),
        ("slot.exists", "true"),
        ("slot.wal_status", "reserved"),
    ] {
        assert_eq!(
            lines.get(key).map(String::as_str),
            Some(value),
            "{key} in\n{text}"
        );
    }
    for key in [
        "slot.retained_wal_bytes",
        "slot.confirmed_lsn",
        "oldest_pending_age_seconds",
    ] {
        assert!(lines.contains_key(key), "{key} missing in\n{text}");
    }

    // The metrics say the same, with the new gauge.
    let (_, metrics) = http_get(&addr, "/metrics");
    assert!(
        metrics.contains(r#"outbox_relay_events_published_total{source="wal"} 3"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"outbox_relay_oldest_pending_age_seconds{source="wal"}"#),
        "{metrics}"
    );

    // Stopped: no relay answers; the slot is still read from the server.
    let mut relay = relay;
    assert!(relay.terminate(Duration::from_secs(30)).success());
    let s = json_of(status());
    assert_eq!(s["state"], json!("stopped"), "{s:#}");
    assert_eq!(s["relay"]["running"], json!(false), "{s:#}");
    assert!(
        s["relay"]["note"]
            .as_str()
            .is_some_and(|n| n.contains(&addr)),
        "{s:#}"
    );
    assert_eq!(s["published"], Value::Null, "{s:#}");
    assert_eq!(s["oldest_pending_age_seconds"], Value::Null, "{s:#}");
    assert_eq!(s["slot"]["exists"], json!(true), "{s:#}");
    assert_eq!(s["slot"]["active"], json!(false), "{s:#}");
    assert_eq!(s["slot"]["wal_status"], json!("reserved"), "{s:#}");
    assert!(number(&s["slot"]["retained_wal_bytes"]) >= 0.0, "{s:#}");
    fx.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_status_without_a_slot_and_with_an_unreachable_database() {
    let fx = Fixture::new("status_noslot", WriteMode::Insert).await;
    fx.teardown().await;
    // No `metrics.listen`: no relay to ask; the slot is reported missing, not an error.
    let s = json_of({
        let mut c = fx.command("status");
        c.arg("--json");
        c
    });
    assert_eq!(s["state"], json!("stopped"), "{s:#}");
    assert!(
        s["relay"]["note"]
            .as_str()
            .is_some_and(|n| n.contains("metrics.listen")),
        "{s:#}"
    );
    assert_eq!(s["slot"]["exists"], json!(false), "{s:#}");

    // Nothing listens at the database's address: exit 1, the server named, no panic.
    let closed = free_local_addr();
    let port = closed.rsplit(':').next().unwrap_or_default();
    let out: Output = fx
        .command("status")
        .env(
            "DATABASE_URL",
            format!("postgres://outbox:outbox@127.0.0.1:{port}/outbox"),
        )
        .output()
        .expect("running outbox-relay status");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("PostgreSQL at 127.0.0.1:{port}")),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_status_counts_pending_rows_by_the_database_clock() {
    let fx = PollFixture::new(Backend::Postgres, "status_poll").await;
    fx.setup_with_binary();
    let addr = free_local_addr();
    let mut relay = RelayChild::spawn_with(&fx, "status", &["--metrics-listen", &addr]);
    until_ready(&addr, || relay.log_text()).await;
    let status = || {
        let mut c = fx.command("status");
        c.args(["--json", "--metrics-listen", &addr]);
        c
    };

    let written = fx.write(&poll_support::events("a", 3, 7)).await;
    let ids = written.iter().map(|e| e.id.to_string()).collect();
    let mut reader = Reader::new(&[&fx.topic()]);
    reader
        .read_until(WAIT, has_all(&ids), || relay.log_text())
        .await;
    fx.wait_empty(WAIT).await;
    let s = status_until(status, |s| s["published"] == json!(7), || relay.log_text()).await;
    assert_eq!(s["source"], json!("poll"), "{s:#}");
    assert_eq!(s["state"], json!("leading"), "{s:#}");
    assert_eq!(s["dead_lettered"], json!(0), "{s:#}");
    assert_eq!(s["table"]["pending_rows"], json!(0), "{s:#}");
    assert_eq!(
        s["table"]["oldest_pending_age_seconds"],
        json!(0.0),
        "{s:#}"
    );
    assert_eq!(s["oldest_pending_age_seconds"], json!(0.0), "{s:#}");
    let (_, metrics) = http_get(&addr, "/metrics");
    for name in [
        r#"outbox_relay_events_published_total{source="poll"} 7"#,
        r#"outbox_relay_pending_rows{source="poll"} 0"#,
        r#"outbox_relay_oldest_pending_age_seconds{source="poll"}"#,
    ] {
        assert!(metrics.contains(name), "{name} missing in\n{metrics}");
    }
    // Asked with another source's settings, `status` refuses the relay's figures.
    let out = Command::new(common::BIN)
        .args(["status", "--source", "wal", "--metrics-listen", &addr])
        .env("DATABASE_URL", &fx.url)
        .output()
        .expect("running outbox-relay status");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("runs the `poll` source, not `wal`"),
        "{stderr}"
    );
    relay.stop_gracefully(Duration::from_secs(30));

    // Stopped: rows written meanwhile are pending; the oldest one's age is the database's
    // `now()` minus its `timestamp`, here one written by a client whose clock is an hour behind.
    fx.write(&poll_support::events("b", 1, 2)).await;
    fx.exec(&format!(
        "INSERT INTO {} (id, aggregatetype, aggregateid, type, payload, \"timestamp\") \
         VALUES (gen_random_uuid(), 'Order', 'late', 'OrderChanged', '{{}}', \
         now() - interval '1 hour')",
        fx.q(&fx.name)
    ))
    .await;
    let s = json_of(status());
    assert_eq!(s["state"], json!("stopped"), "{s:#}");
    assert_eq!(s["published"], Value::Null, "{s:#}");
    assert_eq!(s["table"]["pending_rows"], json!(3), "{s:#}");
    let age = number(&s["oldest_pending_age_seconds"]);
    assert!((3590.0..3700.0).contains(&age), "{s:#}");
    assert_eq!(
        s["table"]["oldest_pending_age_seconds"],
        json!(age),
        "{s:#}"
    );

    let mut c = fx.command("status");
    c.args(["--metrics-listen", &addr]);
    let text = run_ok(c);
    let lines = text_lines(&text);
    assert_eq!(
        lines.get("state").map(String::as_str),
        Some("stopped"),
        "{text}"
    );
    assert_eq!(
        lines.get("table.pending_rows").map(String::as_str),
        Some("3"),
        "{text}"
    );
    assert!(lines.contains_key("table.name"), "{text}");
    fx.teardown().await;
}

/// The binlog relay's TOML for `fixture`, with its metrics listener at `addr`.
fn binlog_config(fixture: &BinlogFixture, addr: &str) -> std::path::PathBuf {
    config_file(fixture, &format!("[metrics]\nlisten = \"{addr}\"\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binlog_status_shows_the_stored_position_and_whether_the_server_has_it() {
    let fx = BinlogFixture::new("status_binlog").await;
    let topic = format!("{}.Order", fx.name);
    create_topics(&[&topic, &format!("{}.dlq", fx.name)]).await;
    let addr = free_local_addr();
    let config = binlog_config(&fx, &addr);
    run_ok(binlog_command(&config, "setup"));
    let relay = RelayProcess::spawn(binlog_command(&config, "run"), "status-binlog");
    until_ready(&addr, || relay.log_text()).await;
    let status = || {
        let mut c = binlog_command(&config, "status");
        c.arg("--json");
        c
    };

    for n in 0..5 {
        fx.insert(&format!("a{}", n % 2), &format!("{{\"n\": {n}}}"))
            .await;
    }
    let mut reader = Reader::new(&[&topic]);
    reader
        .read_until(WAIT, |m| m.len() >= 5, || relay.log_text())
        .await;
    let s = status_until(status, |s| s["published"] == json!(5), || relay.log_text()).await;
    assert_eq!(s["source"], json!("binlog"), "{s:#}");
    assert_eq!(s["state"], json!("leading"), "{s:#}");
    assert_eq!(s["dead_lettered"], json!(0), "{s:#}");
    assert!(number(&s["oldest_pending_age_seconds"]) >= 0.0, "{s:#}");
    let files: Vec<String> = fx
        .db
        .query_all_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::MySql,
            "SHOW BINARY LOGS",
        ))
        .await
        .expect("SHOW BINARY LOGS")
        .iter()
        .map(|row| row.try_get_by_index::<String>(0).expect("Log_name"))
        .collect();
    let b = &s["binlog"];
    let file = b["stored_position"]["file"].as_str().unwrap_or_default();
    assert!(
        files.iter().any(|f| f == file),
        "{file} not in {files:?}: {s:#}"
    );
    assert!(number(&b["stored_position"]["offset"]) > 0.0, "{s:#}");
    assert_eq!(b["on_server"], json!(true), "{s:#}");
    assert_eq!(b["oldest_file"], json!(files.first()), "{s:#}");
    assert_eq!(b["newest_file"], json!(files.last()), "{s:#}");
    assert_eq!(b["files"], json!(files.len()), "{s:#}");
    assert!(number(&b["expire_seconds"]) >= 0.0, "{s:#}");
    assert_eq!(b["position_key"], json!(fx.name), "{s:#}");
    assert_eq!(b["note"], Value::Null, "{s:#}");
    let (_, metrics) = http_get(&addr, "/metrics");
    for name in [
        r#"outbox_relay_events_published_total{source="binlog"} 5"#,
        r#"outbox_relay_binlog_position_on_server{source="binlog"} 1"#,
        r#"outbox_relay_binlog_expire_seconds{source="binlog"}"#,
        r#"outbox_relay_oldest_pending_age_seconds{source="binlog"}"#,
    ] {
        assert!(metrics.contains(name), "{name} missing in\n{metrics}");
    }
    let mut relay = relay;
    assert!(relay.terminate(Duration::from_secs(30)).success());

    // Stopped: the position is read from the server.
    let s = json_of(status());
    assert_eq!(s["state"], json!("stopped"), "{s:#}");
    assert_eq!(s["binlog"]["on_server"], json!(true), "{s:#}");
    assert!(s["binlog"]["stored_position"]["file"].is_string(), "{s:#}");
    let text = run_ok(binlog_command(&config, "status"));
    let lines = text_lines(&text);
    assert_eq!(
        lines.get("binlog.on_server").map(String::as_str),
        Some("true"),
        "{text}"
    );
    assert!(lines.contains_key("binlog.stored_position.file"), "{text}");
    assert!(lines.contains_key("binlog.expire_seconds"), "{text}");

    // A stored position whose file the server no longer has: said so, with the remedy.
    fx.exec(&format!(
        "UPDATE outbox_relay_binlog_position SET binlog_file = 'purged-bin.000001', gtid = NULL \
         WHERE name = '{}'",
        fx.name
    ))
    .await;
    let s = json_of(status());
    assert_eq!(s["binlog"]["on_server"], json!(false), "{s:#}");
    let note = s["binlog"]["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("purged-bin.000001") && note.contains("no longer on this server"),
        "{s:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binlog_status_names_an_unreachable_server() {
    let fx = BinlogFixture::bare("status_binlog_down").await;
    let config = binlog_config(&fx, &free_local_addr());
    let closed = free_local_addr();
    let port = closed.rsplit(':').next().unwrap_or_default();
    let out = binlog_command(&config, "status")
        .env(
            "DATABASE_URL",
            format!("mysql://relay:relay@127.0.0.1:{port}/outbox"),
        )
        .output()
        .expect("running outbox-relay status");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("MariaDB/MySQL at 127.0.0.1:{port}")),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// The polled table's figures on MariaDB (`datetime(6)` in UTC) and SQLite (RFC 3339 text), with
/// no relay running: the pending rows and the oldest one's age by the database's own clock,
/// here a row one hour older than the database's now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_status_on_mariadb_and_sqlite_reads_the_database_clock() {
    for (backend, an_hour_ago) in [
        (Backend::MariaDb, "UTC_TIMESTAMP(6) - INTERVAL 1 HOUR"),
        (
            Backend::Sqlite,
            "strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now', '-1 hour')",
        ),
    ] {
        let fx = PollFixture::new(backend, "status_poll_db").await;
        fx.setup_with_binary();
        let empty = json_of({
            let mut c = fx.command("status");
            c.arg("--json");
            c
        });
        assert_eq!(
            empty["table"]["pending_rows"],
            json!(0),
            "{backend:?}: {empty:#}"
        );
        assert_eq!(
            empty["oldest_pending_age_seconds"],
            json!(0.0),
            "{backend:?}: {empty:#}"
        );

        fx.write(&poll_support::events("a", 2, 2)).await;
        let id = match backend {
            Backend::MariaDb => "UUID()",
            _ => "'00000000-0000-7000-8000-000000000001'",
        };
        fx.exec(&format!(
            "INSERT INTO {} (id, aggregatetype, aggregateid, type, payload, {}) \
             VALUES ({id}, 'Order', 'late', 'OrderChanged', '{{}}', {an_hour_ago})",
            fx.q(&fx.name),
            fx.q("timestamp"),
        ))
        .await;
        let s = json_of({
            let mut c = fx.command("status");
            c.arg("--json");
            c
        });
        assert_eq!(s["source"], json!("poll"), "{backend:?}: {s:#}");
        assert_eq!(s["state"], json!("stopped"), "{backend:?}: {s:#}");
        assert_eq!(s["table"]["pending_rows"], json!(3), "{backend:?}: {s:#}");
        let age = number(&s["oldest_pending_age_seconds"]);
        assert!((3590.0..3700.0).contains(&age), "{backend:?}: {s:#}");
        fx.teardown().await;
    }
}

/// With `metrics.token` set, `/status` needs it as `/metrics` does: `status` without it fails
/// naming the token, with it shows the running relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_asks_the_relay_with_its_token() {
    let fx = PollFixture::new(Backend::Postgres, "status_token").await;
    fx.setup_with_binary();
    let addr = free_local_addr();
    let token = std::env::temp_dir().join(format!("{}.token", fx.name));
    std::fs::write(&token, "s3cret-token\n").expect("writing the token file");
    let token = token.to_string_lossy().into_owned();
    let relay = RelayChild::spawn_with(
        &fx,
        "token",
        &["--metrics-listen", &addr, "--metrics-token-file", &token],
    );
    until_ready(&addr, || relay.log_text()).await;
    let (code, _) = http_get(&addr, "/status");
    assert_eq!(code, 401, "/status without the token");

    let out = fx
        .command("status")
        .args(["--metrics-listen", &addr])
        .output()
        .expect("running outbox-relay status");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("metrics.token"), "{stderr}");

    let s = json_of({
        let mut c = fx.command("status");
        c.args([
            "--json",
            "--metrics-listen",
            &addr,
            "--metrics-token-file",
            &token,
        ]);
        c
    });
    assert_eq!(s["state"], json!("leading"), "{s:#}");
    assert_eq!(s["relay"]["running"], json!(true), "{s:#}");
    assert_eq!(s["published"], json!(0), "{s:#}");
    drop(relay);
    fx.teardown().await;
}
