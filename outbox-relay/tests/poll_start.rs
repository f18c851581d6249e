//! How `outbox-relay run --source poll` starts (issue 9, item 8), through the real binary on the
//! real PostgreSQL, MariaDB, SQLite and Kafka: a mistake that no retry can fix (a missing table
//! or column, a table not set up for polling, a refused login) stops it at once with a non-zero
//! exit and a message naming the problem; a fault that passes (the database or the broker not
//! reachable yet) is waited out, and nothing is lost meanwhile.

mod common;
mod poll_support;

use std::time::Duration;

use poll_support::*;

/// How long a relay may take to give up on a permanent mistake.
const PROMPT: Duration = Duration::from_secs(20);

/// A local port with nothing listening on it: connections are refused.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    let port = listener.local_addr().expect("its address").port();
    drop(listener);
    port
}

/// Runs the relay, expects it to exit non-zero within `PROMPT`, and returns its log.
fn stops_at_start(fx: &PollFixture, label: &str, extra: &[&str], env: &[(&str, &str)]) -> String {
    let mut relay = RelayChild::spawn_env(fx, label, extra, env);
    let code = relay.exit_within(PROMPT);
    let log = relay.log_text();
    assert!(
        code.is_some_and(|c| c != 0),
        "{label}: expected a non-zero exit within {PROMPT:?}, got {code:?}:\n{log}"
    );
    log
}

/// A table of `columns` (SQL column definitions) under the fixture's name.
async fn table(fx: &PollFixture, columns: &str) {
    fx.exec(&format!("CREATE TABLE {} ({columns})", fx.q(&fx.name)))
        .await;
}

const DEBEZIUM_PG: &str = "id uuid NOT NULL PRIMARY KEY, aggregatetype varchar(255) NOT NULL, \
     aggregateid varchar(255) NOT NULL, type varchar(255) NOT NULL, payload jsonb";
const DEBEZIUM_MARIADB: &str = "id varchar(36) NOT NULL PRIMARY KEY, aggregatetype varchar(255) \
     NOT NULL, aggregateid varchar(255) NOT NULL, type varchar(255) NOT NULL, payload json";

async fn missing_table(db: Backend) {
    // No table is created under this name.
    let fx = PollFixture::bare(db, "poll_no_table").await;
    let log = stops_at_start(&fx, "run", &[], &[]);
    assert!(
        log.contains(&format!("the outbox table `{}", fx.name)) && log.contains("does not exist"),
        "{log}"
    );
    fx.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_table_stops_at_start_postgres() {
    missing_table(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_table_stops_at_start_mariadb() {
    missing_table(Backend::MariaDb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_table_stops_at_start_sqlite() {
    missing_table(Backend::Sqlite).await;
}

/// `aggregateid` (the Kafka key) is missing; `setup` succeeds in adding the sequence, and both
/// `setup` and `run` name the column.
async fn missing_column(db: Backend) {
    let fx = PollFixture::bare(db, "poll_no_column").await;
    let columns = match db {
        Backend::Postgres => DEBEZIUM_PG,
        _ => DEBEZIUM_MARIADB,
    }
    .replace("aggregateid varchar(255) NOT NULL, ", "");
    table(&fx, &columns).await;
    let out = fx.command("setup").output().expect("running setup");
    let setup = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && setup.contains("`aggregateid`"),
        "{setup}"
    );
    let log = stops_at_start(&fx, "run", &[], &[]);
    assert!(log.contains("lacks the column(s) `aggregateid`"), "{log}");
    fx.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_column_stops_at_start_postgres() {
    missing_column(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_column_stops_at_start_mariadb() {
    missing_column(Backend::MariaDb).await;
}

/// Debezium's table before `setup`: `run` refuses it and names the command that fixes it; after
/// `setup --source poll`, it runs.
async fn needs_setup(db: Backend) {
    let fx = PollFixture::bare(db, "poll_needs_setup").await;
    table(
        &fx,
        match db {
            Backend::Postgres => DEBEZIUM_PG,
            _ => DEBEZIUM_MARIADB,
        },
    )
    .await;
    let log = stops_at_start(&fx, "run", &[], &[]);
    assert!(
        log.contains("has no `seq` column") && log.contains("outbox-relay setup --source poll"),
        "{log}"
    );
    fx.setup_with_binary();
    let mut relay = RelayChild::spawn(&fx, "after-setup");
    assert_eq!(
        relay.exit_within(Duration::from_secs(3)),
        None,
        "{}",
        relay.log_text()
    );
    relay.stop_gracefully(Duration::from_secs(30));
    fx.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_without_sequence_names_setup_postgres() {
    needs_setup(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_without_sequence_names_setup_mariadb() {
    needs_setup(Backend::MariaDb).await;
}

/// A binary event id (`bytea`, `BINARY(16)`): the relay could not settle such rows (it names a
/// batch's rows by their ids as text), so it would ship them again on every cycle. `setup` and
/// `run` both refuse the table and name the column, its type and the setting.
async fn binary_event_id(db: Backend) {
    let fx = PollFixture::bare(db, "poll_binary_id").await;
    let columns = match db {
        Backend::Postgres => {
            DEBEZIUM_PG.replace("id uuid", "id bytea")
                + ", seq bigint GENERATED BY DEFAULT AS IDENTITY"
        }
        _ => {
            DEBEZIUM_MARIADB.replace("id varchar(36)", "id binary(16)")
                + ", seq bigint NOT NULL AUTO_INCREMENT, UNIQUE KEY (seq)"
        }
    };
    table(&fx, &columns).await;
    let out = fx.command("setup").output().expect("running setup");
    let setup = String::from_utf8_lossy(&out.stderr);
    let named = |log: &str| {
        log.contains("its event id column `id` (")
            && log.contains(") is binary")
            && log.contains("`kafka.event_id_field`")
    };
    assert!(!out.status.success() && named(&setup), "setup: {setup}");
    let log = stops_at_start(&fx, "run", &[], &[]);
    assert!(named(&log), "{log}");
    fx.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_event_id_stops_at_start_postgres() {
    binary_event_id(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_event_id_stops_at_start_mariadb() {
    binary_event_id(Backend::MariaDb).await;
}

/// A wrong password: the server's refusal is reported at once, not retried.
async fn refused_login(db: Backend) {
    let fx = PollFixture::new(db, "poll_refused").await;
    fx.setup_with_binary();
    let url = fx
        .url
        .replacen("outbox:outbox@", "outbox:not-the-password@", 1);
    assert_ne!(url, fx.url, "the test URL carries the password");
    let log = stops_at_start(&fx, "run", &[], &[("DATABASE_URL", &url)]);
    let refusal = match db {
        Backend::Postgres => "password authentication failed",
        _ => "Access denied",
    };
    assert!(log.contains(refusal), "{log}");
    assert!(
        !log.contains("retrying"),
        "a refused login is not retried:\n{log}"
    );
    fx.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_login_stops_at_start_postgres() {
    refused_login(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_login_stops_at_start_mariadb() {
    refused_login(Backend::MariaDb).await;
}

/// Nothing listens at the database's address yet (connection refused): the relay keeps trying
/// and still runs; SIGTERM stops it cleanly.
async fn unreachable_database(db: Backend) {
    let fx = PollFixture::new(db, "poll_db_down").await;
    let port = closed_port().to_string();
    let url = match db {
        Backend::Postgres => format!("postgres://outbox:outbox@127.0.0.1:{port}/outbox_test"),
        _ => format!("mysql://outbox:outbox@127.0.0.1:{port}/outbox_test"),
    };
    let mut relay = RelayChild::spawn_env(&fx, "run", &[], &[("DATABASE_URL", &url)]);
    // The pool gives up on a connection after 5 s; then the relay backs off and tries again.
    assert_eq!(
        relay.exit_within(Duration::from_secs(15)),
        None,
        "the relay waits for the database:\n{}",
        relay.log_text()
    );
    let log = relay.log_text();
    assert!(log.contains("retrying"), "{log}");
    relay.stop_gracefully(Duration::from_secs(30));
    fx.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_database_is_waited_for_postgres() {
    unreachable_database(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_database_is_waited_for_mariadb() {
    unreachable_database(Backend::MariaDb).await;
}

/// No broker at the configured address: the claimed event is retried, not dropped; it stays in
/// the table, and the relay keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_broker_is_retried_postgres() {
    let fx = PollFixture::new(Backend::Postgres, "poll_broker_down").await;
    fx.setup_with_binary();
    fx.write(&[common::event("down-1", serde_json::json!({"n": 1}))])
        .await;
    let brokers = format!("127.0.0.1:{}", closed_port());
    let mut relay = RelayChild::spawn_env(
        &fx,
        "run",
        &["-X", "message.timeout.ms=2000"],
        &[("KAFKA_BROKERS", &brokers)],
    );
    // The producer's start-up check waits up to 15 s for a broker to answer, then the session's
    // delivery times out (2 s) and is retried: the relay keeps running all along.
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    while !relay.log_text().contains("relay session failed; retrying")
        && std::time::Instant::now() < deadline
    {
        assert_eq!(
            relay.exit_within(Duration::from_secs(1)),
            None,
            "{}",
            relay.log_text()
        );
    }
    let log = relay.log_text();
    assert!(log.contains("relay session failed; retrying"), "{log}");
    assert_eq!(
        fx.row_count().await,
        1,
        "the event stays until Kafka has it"
    );
    relay.stop_gracefully(Duration::from_secs(30));
    fx.teardown().await;
}

/// The relay's log once it holds `text`; panics with the log after `PROMPT`.
fn log_once_it_says(relay: &RelayChild, text: &str) -> String {
    let deadline = std::time::Instant::now() + PROMPT;
    loop {
        let log = relay.log_text();
        if log.contains(text) {
            return log;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the log never said `{text}`:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// PostgreSQL: a NOTIFY trigger that notifies on every insert (as an earlier build's `setup`
/// created it, which serializes the service's commits) or none at all is no reason to stop, but
/// `run` says so at start and names the fix; after `setup` it says nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_or_missing_notify_trigger_is_named_at_start_postgres() {
    let fx = PollFixture::new(Backend::Postgres, "poll_old_trigger").await;
    fx.setup_with_binary();
    let table = fx.q(&fx.name);
    let trigger = fx.q(&format!("{}_notify", fx.name));
    let old = fx.q(&format!("{}_old_notify", fx.name));
    fx.exec(&format!(
        "CREATE FUNCTION {old}() RETURNS trigger LANGUAGE plpgsql AS \
         $f$ BEGIN PERFORM pg_notify(TG_ARGV[0], ''); RETURN NULL; END $f$"
    ))
    .await;
    fx.exec(&format!("DROP TRIGGER {trigger} ON {table}")).await;
    fx.exec(&format!(
        "CREATE TRIGGER {trigger} AFTER INSERT ON {table} FOR EACH STATEMENT \
         EXECUTE FUNCTION {old}('{}')",
        fx.name
    ))
    .await;
    let fix = "outbox-relay setup --source poll";
    let mut relay = RelayChild::spawn(&fx, "old-trigger");
    let log = log_once_it_says(&relay, "notifies on every insert");
    assert!(log.contains(fix), "{log}");
    relay.terminate(PROMPT);

    fx.exec(&format!("DROP TRIGGER {trigger} ON {table}")).await;
    let mut relay = RelayChild::spawn(&fx, "no-trigger");
    let log = log_once_it_says(&relay, "has no NOTIFY trigger");
    assert!(log.contains(fix), "{log}");
    relay.terminate(PROMPT);

    fx.setup_with_binary();
    let mut relay = RelayChild::spawn(&fx, "new-trigger");
    // The check runs right after the table's check is logged.
    log_once_it_says(&relay, "outbox table checked");
    std::thread::sleep(Duration::from_secs(2));
    let log = relay.log_text();
    assert!(
        !log.contains("NOTIFY trigger"),
        "a warning after setup:\n{log}"
    );
    relay.terminate(PROMPT);
    fx.exec(&format!("DROP FUNCTION {old}() CASCADE")).await;
    fx.teardown().await;
}
