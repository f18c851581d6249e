//! TLS and password exchanges to the databases, on every connection the relay makes: the
//! replication session and the SQL pool to PostgreSQL with `sslmode=verify-full` against the
//! test CA of `scripts/services`, MD5 on the replication connection, and MariaDB with
//! `ssl-mode=VERIFY_IDENTITY`. A CA that did not issue the server's certificate is refused at
//! start, with the cause named.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use outbox_core::WriteMode;
use outbox_relay::connection::connect_options;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(120);

fn tls_url() -> String {
    service_env("DATABASE_TLS_URL", "PostgreSQL (TLS)")
}

/// `DATABASE_TLS_URL` with the untrusted CA as `sslrootcert`.
fn wrong_ca(url: &str, key: &str) -> String {
    let ca = service_env("TLS_CA", "the test CA");
    let untrusted = service_env("TLS_UNTRUSTED_CA", "the untrusted test CA");
    assert!(url.contains(&format!("{key}={ca}")), "{url}");
    url.replace(&format!("{key}={ca}"), &format!("{key}={untrusted}"))
}

async fn connect(url: &str) -> Result<DatabaseConnection, String> {
    let mut options = connect_options(url).map_err(|e| e.to_string())?;
    options.max_connections(1).sqlx_logging(false);
    Database::connect(options).await.map_err(|e| e.to_string())
}

async fn one_text(db: &DatabaseConnection, backend: DbBackend, sql: &str) -> Option<String> {
    let row = db
        .query_one_raw(Statement::from_string(backend, sql))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))?;
    row.try_get_by_index::<Option<String>>(0).ok().flatten()
}

async fn ships_three_events(fx: &Fixture, relay: &RelayProcess) {
    let written = fx
        .write(&[
            event("a", json!({"n": 1})),
            event("a", json!({"n": 2})),
            event("b", json!({"n": 3})),
        ])
        .await;
    let ids: HashSet<String> = written.iter().map(|e| e.id.to_string()).collect();
    let mut reader = Reader::new(&[&fx.topic()]);
    reader
        .read_until(WAIT, has_all(&ids), || relay.log_text())
        .await;
    assert_eq!(reader.ids(), ids);
}

/// The SQL pool made from the relay's parser verifies the server against the CA and its
/// address, and its session is encrypted.
#[tokio::test]
async fn sql_pool_connects_with_verify_full() {
    let db = connect(&tls_url())
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL with verify-full: {e}"));
    let ssl = one_text(
        &db,
        DbBackend::Postgres,
        "SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    .await;
    assert_eq!(ssl.as_deref(), Some("true"));
}

/// The whole relay over `verify-full`: `setup`, `status` and the replication session, which
/// PostgreSQL reports as encrypted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_relay_replicates_over_verify_full() {
    let fx = Fixture::new("db_tls", WriteMode::Insert).await;
    let url = tls_url();
    let status = fx
        .command("status")
        .args(["--database-url", &url])
        .output()
        .expect("outbox-relay status");
    assert!(
        status.status.success(),
        "status over TLS: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    let relay = fx.start_relay(&["--database-url", &url]);
    ships_three_events(&fx, &relay).await;
    let ssl = one_text(
        &fx.db,
        DbBackend::Postgres,
        &format!(
            "SELECT s.ssl::text FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid) \
             WHERE r.application_name = 'outbox-relay {}'",
            fx.name
        ),
    )
    .await;
    assert_eq!(ssl.as_deref(), Some("true"), "{}", relay.log_text());
    drop(relay);
    fx.teardown().await;
}

/// A role whose password is stored as MD5 makes the server ask for MD5, which the replication
/// connection answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replication_connection_answers_md5() {
    let fx = Fixture::new("db_md5", WriteMode::Insert).await;
    let url = service_env("PG_MD5_URL", "PostgreSQL (MD5 role)");
    let method = one_text(
        &fx.db,
        DbBackend::Postgres,
        "SELECT left(rolpassword, 3) FROM pg_authid WHERE rolname = 'outbox_md5'",
    )
    .await;
    assert_eq!(
        method.as_deref(),
        Some("md5"),
        "the role's password is not MD5"
    );
    let relay = fx.start_relay(&["--database-url", &url]);
    ships_three_events(&fx, &relay).await;
    drop(relay);
    fx.teardown().await;
}

/// A CA that did not issue the server's certificate: the relay stops at start (no retry),
/// naming the certificate; the SQL pool is refused too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_is_refused_with_a_clear_error() {
    let fx = Fixture::new("db_badca", WriteMode::Insert).await;
    let url = wrong_ca(&tls_url(), "sslrootcert");
    let mut relay = fx.start_relay(&["--database-url", &url]);
    let start = Instant::now();
    while relay.is_running() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the relay still runs with an untrusted certificate:\n{}",
            relay.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = relay.log_text();
    let error = log
        .lines()
        .skip_while(|l| !l.starts_with("error:"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        error.contains("certificate") && error.contains("UnknownIssuer"),
        "{log}"
    );
    let refused = connect(&url).await.err().unwrap_or_default();
    assert!(refused.contains("certificate"), "{refused}");
    drop(relay);
    fx.teardown().await;
}

/// MariaDB with `ssl-mode=VERIFY_IDENTITY` (libpq's verify-full): an encrypted session; a
/// wrong CA is refused.
#[tokio::test]
async fn mariadb_with_verify_identity() {
    let url = service_env("MYSQL_TLS_URL", "MariaDB (TLS)");
    let db = connect(&url)
        .await
        .unwrap_or_else(|e| panic!("MariaDB with VERIFY_IDENTITY: {e}"));
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::MySql,
            "SHOW SESSION STATUS LIKE 'Ssl_version'",
        ))
        .await
        .expect("SHOW STATUS")
        .expect("an Ssl_version row");
    let version: String = row.try_get_by_index(1).expect("Ssl_version");
    assert!(version.starts_with("TLS"), "Ssl_version = {version:?}");
    let refused = connect(&wrong_ca(&url, "ssl-ca")).await.err();
    assert!(
        refused
            .as_deref()
            .is_some_and(|e| e.contains("certificate")),
        "{refused:?}"
    );
}
