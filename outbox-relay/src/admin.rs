//! Administration over a plain SQL connection: set up and tear down the publication and the
//! slot (both idempotent), report the slot's status, and confirm a position on a released slot.
//!
//! Every identifier from configuration is quoted; values are bound parameters.

use std::time::Duration;

use outbox_core::migration::quote;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, Statement, Value};

use crate::config::{Config, SourceKind};
use crate::dead_letter::format_lsn;

/// A failed administrative step, naming it.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{step}: {source}")]
    Database { step: &'static str, source: DbErr },
    #[error("{0}")]
    State(String),
}

fn db(step: &'static str) -> impl FnOnce(DbErr) -> AdminError {
    move |source| AdminError::Database { step, source }
}

/// The slot as PostgreSQL sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotStatus {
    pub slot: String,
    pub active: bool,
    /// `X/Y`, or None before the slot confirmed anything.
    pub confirmed_flush_lsn: Option<String>,
    /// WAL the slot holds: the current WAL LSN minus the confirmed one, in bytes.
    pub lag_bytes: Option<i64>,
}

async fn connect(config: &Config) -> Result<DatabaseConnection, AdminError> {
    let mut options =
        crate::connection::connect_options(config.database_url.as_deref().unwrap_or_default())
            .map_err(|e| AdminError::State(e.to_string()))?;
    options.sqlx_logging(false).max_connections(1);
    Database::connect(options)
        .await
        .map_err(db("connecting to database_url"))
}

fn stmt(sql: &str, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

fn table_name(config: &Config) -> String {
    let q = |s: &str| quote(DbBackend::Postgres, s);
    match &config.source.schema {
        Some(schema) => format!("{}.{}", q(schema), q(&config.source.table)),
        None => q(&config.source.table),
    }
}

/// Creates the publication (for the outbox table, inserts only; or empty for the `message`
/// source) and the pgoutput slot, unless they exist. Running it twice changes nothing.
pub async fn setup(config: &Config) -> Result<(), AdminError> {
    let conn = connect(config).await?;
    let publication = &config.source.publication;
    let quoted_pub = quote(DbBackend::Postgres, publication);
    let exists = conn
        .query_one_raw(stmt(
            "SELECT 1 AS one FROM pg_publication WHERE pubname = $1",
            vec![publication.into()],
        ))
        .await
        .map_err(db("reading pg_publication"))?
        .is_some();
    match (config.source.kind, exists) {
        (SourceKind::Wal, false) => {
            let sql = format!(
                "CREATE PUBLICATION {quoted_pub} FOR TABLE {} WITH (publish = 'insert')",
                table_name(config)
            );
            conn.execute_unprepared(&sql)
                .await
                .map_err(db("creating the publication (source.publication)"))?;
        }
        (SourceKind::Message, false) => {
            let sql = format!("CREATE PUBLICATION {quoted_pub} WITH (publish = 'insert')");
            conn.execute_unprepared(&sql)
                .await
                .map_err(db("creating the publication (source.publication)"))?;
        }
        (SourceKind::Wal, true) => {
            let has_table = conn
                .query_one_raw(stmt(
                    "SELECT 1 AS one FROM pg_publication_tables WHERE pubname = $1 AND tablename = $2 \
                     AND ($3::text IS NULL OR schemaname = $3)",
                    vec![
                        publication.into(),
                        config.source.table.as_str().into(),
                        config.source.schema.clone().into(),
                    ],
                ))
                .await
                .map_err(db("reading pg_publication_tables"))?
                .is_some();
            if !has_table {
                let sql = format!(
                    "ALTER PUBLICATION {quoted_pub} ADD TABLE {}",
                    table_name(config)
                );
                conn.execute_unprepared(&sql)
                    .await
                    .map_err(db("adding the table to the publication"))?;
            }
        }
        // The poll source is set up by `source::poll` (main.rs dispatches it there).
        (SourceKind::Message, true) | (SourceKind::Poll, _) => {}
    }
    let plugin = conn
        .query_one_raw(stmt(
            "SELECT plugin FROM pg_replication_slots WHERE slot_name = $1",
            vec![config.source.slot.as_str().into()],
        ))
        .await
        .map_err(db("reading pg_replication_slots"))?
        .map(|row| row.try_get_by_index::<Option<String>>(0))
        .transpose()
        .map_err(db("reading pg_replication_slots"))?;
    match plugin {
        None => {
            conn.execute_raw(stmt(
                "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
                vec![config.source.slot.as_str().into()],
            ))
            .await
            .map_err(db("creating the replication slot (source.slot)"))?;
        }
        Some(Some(plugin)) if plugin == "pgoutput" => {}
        Some(other) => {
            return Err(AdminError::State(format!(
                "`source.slot`: slot `{}` exists with plugin {other:?}, not pgoutput",
                config.source.slot
            )));
        }
    }
    Ok(())
}

/// Drops the slot (refused while a relay holds it) and the publication, if they exist.
pub async fn teardown(config: &Config) -> Result<(), AdminError> {
    let conn = connect(config).await?;
    if let Some(status) = slot_status(&conn, &config.source.slot).await? {
        if status.active {
            return Err(AdminError::State(format!(
                "`source.slot`: slot `{}` is in use by a running relay; stop it first",
                config.source.slot
            )));
        }
        conn.execute_raw(stmt(
            "SELECT pg_drop_replication_slot($1)",
            vec![config.source.slot.as_str().into()],
        ))
        .await
        .map_err(db("dropping the replication slot"))?;
    }
    let sql = format!(
        "DROP PUBLICATION IF EXISTS {}",
        quote(DbBackend::Postgres, &config.source.publication)
    );
    conn.execute_unprepared(&sql)
        .await
        .map_err(db("dropping the publication"))?;
    Ok(())
}

async fn slot_status(
    conn: &DatabaseConnection,
    slot: &str,
) -> Result<Option<SlotStatus>, AdminError> {
    let row = conn
        .query_one_raw(stmt(
            "SELECT active, confirmed_flush_lsn::text, \
             (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint \
             FROM pg_replication_slots WHERE slot_name = $1",
            vec![slot.into()],
        ))
        .await
        .map_err(db("reading pg_replication_slots"))?;
    let Some(row) = row else { return Ok(None) };
    let read = db("reading pg_replication_slots");
    let active: bool = row.try_get_by_index(0).map_err(read)?;
    let confirmed_flush_lsn: Option<String> = row
        .try_get_by_index(1)
        .map_err(db("reading pg_replication_slots"))?;
    let lag_bytes: Option<i64> = row
        .try_get_by_index(2)
        .map_err(db("reading pg_replication_slots"))?;
    Ok(Some(SlotStatus {
        slot: slot.to_owned(),
        active,
        confirmed_flush_lsn,
        lag_bytes,
    }))
}

/// The slot's status, or None when it does not exist.
pub async fn status(config: &Config) -> Result<Option<SlotStatus>, AdminError> {
    let conn = connect(config).await?;
    slot_status(&conn, &config.source.slot).await
}

/// Makes sure the slot has confirmed at least `lsn`, once the relay released it: the last
/// standby status before a shutdown may not have reached the server.
pub async fn confirm_slot(config: &Config, lsn: u64) -> Result<(), AdminError> {
    let conn = connect(config).await?;
    let target = format_lsn(lsn);
    for _ in 0..50 {
        let row = conn
            .query_one_raw(stmt(
                "SELECT confirmed_flush_lsn >= $2::pg_lsn, active FROM pg_replication_slots WHERE slot_name = $1",
                vec![config.source.slot.as_str().into(), target.as_str().into()],
            ))
            .await
            .map_err(db("reading pg_replication_slots"))?;
        let Some(row) = row else { return Ok(()) };
        let done: Option<bool> = row
            .try_get_by_index(0)
            .map_err(db("reading pg_replication_slots"))?;
        let active: bool = row
            .try_get_by_index(1)
            .map_err(db("reading pg_replication_slots"))?;
        if done == Some(true) {
            return Ok(());
        }
        if !active {
            conn.execute_raw(stmt(
                "SELECT pg_replication_slot_advance($1, $2::pg_lsn)",
                vec![config.source.slot.as_str().into(), target.as_str().into()],
            ))
            .await
            .map_err(db("advancing the replication slot"))?;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(AdminError::State(format!(
        "slot `{}` stayed active; its confirmed position may lag {target}",
        config.source.slot
    )))
}

/// The published-events counter of a running relay, read from its `/metrics`.
pub async fn published_by_running_relay(addr: std::net::SocketAddr) -> Option<u64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: relay\r\nconnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await.ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix("outbox_relay_events_published_total "))
        .and_then(|v| v.trim().parse().ok())
}
