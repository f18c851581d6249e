//! What `outbox-relay status` reads from the source's own server, and the running relay re-reads
//! for its metrics: one function per source kind, each returning serializable facts: the slot
//! (`wal`, `message`), the polled table (`poll`), the binlog and the stored position (`binlog`).
//! [`status`] joins them with what a running relay says of itself at `GET /status`.
//!
//! Contract: nothing here changes anything. Ages are measured by the database's clock, never
//! this host's. An unreachable or refusing server is an error naming it; a fact the server does
//! not have (no slot, no stored position, no `timestamp` column) is reported absent, with why.

use std::time::Duration;

use outbox_core::migration::quote;
use sea_orm::sqlx::{self, Connection, PgConnection};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, Statement};
use serde::Serialize;

use crate::config::{AfterAck, Config, SourceKind};
use crate::connection::{MySqlTarget, PgTarget, UrlError};
use crate::metrics::Metrics;
use crate::source::binlog::{self, BinlogError, BinlogFiles};
use crate::source::poll::RELAYED_AT;
use crate::status::{State, StatusReport};

/// How long a server or a running relay may take to answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// How often a running relay re-reads the facts its metrics show (`poll`, `binlog`).
pub const WATCH_INTERVAL: Duration = Duration::from_secs(15);

/// Why `status` could not read what it shows; each names the server or relay at fault.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("`database_url`: {0}")]
    Url(#[from] UrlError),
    #[error("{server}: {step}: {source}")]
    Postgres {
        server: String,
        step: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("{server}: {step}: {source}")]
    Database {
        server: String,
        step: &'static str,
        #[source]
        source: DbErr,
    },
    #[error("{server}: {source}")]
    Binlog {
        server: String,
        #[source]
        source: BinlogError,
    },
    #[error("{server}: no answer within {ANSWER_WITHIN:?}")]
    NoAnswer { server: String },
    /// Something answers at `metrics.listen` but does not give a relay's status.
    #[error("{0}")]
    Relay(String),
}

/// `outbox-relay status`: the relay's state and counts, and the source's facts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceStatus {
    /// `wal`, `message`, `poll` or `binlog`.
    pub source: String,
    /// The running relay's state; `stopped` when none answers.
    pub state: State,
    pub relay: RelayContact,
    /// Failed attempts since the last progress (running relay only).
    pub attempts: Option<u32>,
    /// The running relay's last error, kept after recovery.
    pub last_error: Option<String>,
    /// Events Kafka acknowledged since the running relay started.
    pub published: Option<u64>,
    /// Events it sent to the dead-letter topic since it started.
    pub dead_lettered: Option<u64>,
    /// The last position it acknowledged to the source.
    pub confirmed: Option<String>,
    /// Age of the oldest event committed but not yet acknowledged by Kafka, 0 when none: for
    /// `poll` the table's oldest pending row by the database's clock; for the log sources the
    /// running relay's figure (unknown without one).
    pub oldest_pending_age_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot: Option<SlotFacts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<TableFacts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binlog: Option<BinlogFacts>,
}

/// Where a running relay was looked for, and whether one answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RelayContact {
    /// `metrics.listen`, if set.
    pub address: Option<String>,
    pub running: bool,
    /// Why no relay's figures are shown.
    pub note: Option<String>,
}

/// The replication slot as `pg_replication_slots` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlotFacts {
    pub name: String,
    /// False: no such slot (`outbox-relay setup` creates it; a slot lost after the relay used
    /// it stops `run`).
    pub exists: bool,
    /// A session holds it.
    pub active: Option<bool>,
    /// `X/Y`; None before the slot confirmed anything.
    pub confirmed_lsn: Option<String>,
    /// The server's WAL position minus the slot's `restart_lsn`: the WAL kept on disk for it.
    pub retained_wal_bytes: Option<i64>,
    /// `reserved`, `extended`, `unreserved` or `lost`.
    pub wal_status: Option<String>,
    /// The server's WAL position minus the confirmed one.
    pub lag_bytes: Option<i64>,
}

/// The polled outbox table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TableFacts {
    /// As quoted in SQL.
    pub name: String,
    /// Rows not yet relayed (in `mark` mode, the unmarked ones).
    pub pending_rows: i64,
    /// The database's `now()` minus the oldest pending row's `timestamp`; 0 when none.
    pub oldest_pending_age_seconds: Option<f64>,
    /// Why that age is unknown.
    pub oldest_pending_unknown: Option<String>,
}

/// The binlog: the relay's stored position, and what the server still has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BinlogFacts {
    /// `schema`.`table` of the relay's position table.
    pub position_table: String,
    /// The relay's row in it.
    pub position_key: String,
    /// None before `setup` or the first `run` stored one.
    pub stored_position: Option<StoredPosition>,
    /// Whether the server still has the stored position's file; false is the binlog's lost
    /// slot (see `note`).
    pub on_server: Option<bool>,
    /// The oldest and the newest (current) binlog files on the server, from `SHOW BINARY LOGS`.
    pub oldest_file: Option<String>,
    pub newest_file: Option<String>,
    pub files: usize,
    /// What the binlog files take on the server.
    pub bytes_on_server: u64,
    /// The server's age limit for binlog files, from `binlog_expire_logs_seconds` or else
    /// `expire_logs_days`; 0: not purged by age.
    pub expire_seconds: Option<u64>,
    pub binlog_expire_logs_seconds: Option<u64>,
    pub expire_logs_days: Option<String>,
    /// MariaDB's size limit (`max_binlog_total_size`, `binlog_space_limit`); 0: none.
    pub max_binlog_total_size: Option<u64>,
    /// What the operator should know: a purged position and its remedy.
    pub note: Option<String>,
}

/// A stored binlog position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredPosition {
    pub file: String,
    pub offset: u64,
    pub gtid: Option<String>,
}

/// The status of the source `config` names: the running relay's report, if one answers at
/// `metrics.listen`, and the facts read from the source's server.
pub async fn status(config: &Config) -> Result<SourceStatus, InspectError> {
    let (report, relay) = running_relay(config).await?;
    let mut status = SourceStatus {
        source: source_name(config.source.kind).to_owned(),
        state: report.as_ref().map_or(State::Stopped, |r| r.state),
        relay,
        attempts: report.as_ref().map(|r| r.attempts),
        last_error: report.as_ref().and_then(|r| r.last_error.clone()),
        published: report.as_ref().map(|r| r.published),
        dead_lettered: report.as_ref().map(|r| r.dead_lettered),
        confirmed: report.as_ref().and_then(|r| r.confirmed.clone()),
        oldest_pending_age_seconds: report.as_ref().and_then(|r| r.oldest_pending_age_seconds),
        slot: None,
        table: None,
        binlog: None,
    };
    match config.source.kind {
        SourceKind::Wal | SourceKind::Message => status.slot = Some(slot(config).await?),
        SourceKind::Poll => {
            let table = table(config).await?;
            // The table holds every pending row, claimed or not: its figure is the whole one.
            status.oldest_pending_age_seconds = table.oldest_pending_age_seconds;
            status.table = Some(table);
        }
        SourceKind::Binlog => status.binlog = Some(binlog(config).await?),
    }
    Ok(status)
}

fn source_name(kind: SourceKind) -> &'static str {
    match kind {
        SourceKind::Wal => "wal",
        SourceKind::Message => "message",
        SourceKind::Poll => "poll",
        SourceKind::Binlog => "binlog",
    }
}

impl SourceStatus {
    /// The text form: one `key: value` line per field, nested fields as `slot.wal_status`,
    /// `-` where a figure is unknown or absent (JSON's null); `source` and `state` first, then
    /// the others by name.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Ok(value) = serde_json::to_value(self) {
            flatten("", &value, &mut lines);
        }
        let first = |line: &String| !(line.starts_with("source: ") || line.starts_with("state: "));
        // Stable: the two stay in that order, the rest in the map's (by name).
        lines.sort_by_key(first);
        lines
    }
}

fn flatten(prefix: &str, value: &serde_json::Value, lines: &mut Vec<String>) {
    use serde_json::Value;
    match value {
        Value::Object(fields) => {
            for (key, value) in fields {
                let key = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&key, value, lines);
            }
        }
        Value::Null => lines.push(format!("{prefix}: -")),
        Value::String(text) => lines.push(format!("{prefix}: {text}")),
        other => lines.push(format!("{prefix}: {other}")),
    }
}

/// The report of the relay answering at `metrics.listen`, or None and why.
async fn running_relay(
    config: &Config,
) -> Result<(Option<StatusReport>, RelayContact), InspectError> {
    let Some(addr) = config.metrics.listen else {
        let note = "no running relay known: `metrics.listen` is unset".to_owned();
        return Ok((
            None,
            RelayContact {
                address: None,
                running: false,
                note: Some(note),
            },
        ));
    };
    let contact = |running: bool, note: Option<String>| RelayContact {
        address: Some(addr.to_string()),
        running,
        note,
    };
    let response = match fetch_status(addr, config.metrics.token.as_deref()).await {
        Ok(response) => response,
        Err(why) => {
            let note = format!("no running relay: nothing answers at {addr} ({why})");
            return Ok((None, contact(false, Some(note))));
        }
    };
    let (code, body) = response;
    match code {
        200 => {
            let not_a_report = |e: serde_json::Error| {
                InspectError::Relay(format!(
                    "{addr} answered `GET /status` with something that is not a relay's \
                     status: {e}"
                ))
            };
            let value: serde_json::Value = serde_json::from_str(&body).map_err(not_a_report)?;
            let theirs = value["source"].as_str().unwrap_or_default().to_owned();
            let ours = source_name(config.source.kind);
            // Another source's relay (a forgotten `--source`) would lend its figures to this one.
            // (None yet: the relay is starting.)
            if !theirs.is_empty() && theirs != ours {
                return Err(InspectError::Relay(format!(
                    "the relay at {addr} runs the `{theirs}` source, not `{ours}`: give `status` \
                     the settings `run` has (`--source`, `-c`)"
                )));
            }
            let report: StatusReport = serde_json::from_value(value).map_err(not_a_report)?;
            Ok((Some(report), contact(true, None)))
        }
        401 => Err(InspectError::Relay(format!(
            "the relay at {addr} refuses `/status` without its bearer token: give `status` \
             the relay's `metrics.token` (or `token_file`)"
        ))),
        code => Err(InspectError::Relay(format!(
            "{addr} answered HTTP {code} to `GET /status`: is it an outbox-relay of this \
             version? (`metrics.listen` names the relay to ask)"
        ))),
    }
}

/// `GET /status` on a relay's metrics listener: (HTTP status code, body), or why nothing
/// answered.
async fn fetch_status(
    addr: std::net::SocketAddr,
    token: Option<&str>,
) -> Result<(u16, String), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let auth = token
            .map(|t| format!("authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let request =
            format!("GET /status HTTP/1.1\r\nhost: relay\r\n{auth}connection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .await
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&response).into_owned();
        let code = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| "not an HTTP response".to_owned())?;
        let body = text
            .split_once("\r\n\r\n")
            .map_or(String::new(), |(_, body)| body.to_owned());
        Ok((code, body))
    };
    tokio::time::timeout(ANSWER_WITHIN, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {ANSWER_WITHIN:?}")))
}

/// How messages name the server of `database_url` (never with its credentials).
fn server_name(url: &str) -> String {
    if let Ok(target) = PgTarget::parse(url) {
        return format!("PostgreSQL at {}:{}", target.host, target.port);
    }
    if let Ok(target) = MySqlTarget::parse(url) {
        return match &target.socket {
            Some(socket) => format!("MariaDB/MySQL at {}", socket.display()),
            None => format!("MariaDB/MySQL at {}:{}", target.host, target.port),
        };
    }
    match url.strip_prefix("sqlite://") {
        Some(path) => format!("SQLite at {}", path.split('?').next().unwrap_or(path)),
        None => "the database of `database_url`".to_owned(),
    }
}

// ---- wal, message: the slot.

/// The slot of `source.slot`, read over one plain connection to `database_url`.
pub async fn slot(config: &Config) -> Result<SlotFacts, InspectError> {
    let url = config.database_url.as_deref().unwrap_or_default();
    let target = PgTarget::parse(url)?;
    let server = server_name(url);
    let sql_error = |step| {
        let server = server.clone();
        move |source| InspectError::Postgres {
            server,
            step,
            source,
        }
    };
    let options: sqlx::postgres::PgConnectOptions =
        url.parse().map_err(sql_error("reading `database_url`"))?;
    let options = target
        .sqlx_options(options)
        .application_name("outbox-relay status");
    let mut conn = tokio::time::timeout(ANSWER_WITHIN, PgConnection::connect_with(&options))
        .await
        .map_err(|_| InspectError::NoAnswer {
            server: server.clone(),
        })?
        .map_err(sql_error("connecting"))?;
    let facts = read_slot(&mut conn, &config.source.slot)
        .await
        .map_err(sql_error("reading pg_replication_slots"))?;
    let _ = conn.close().await;
    Ok(facts)
}

/// The slot `slot` as `pg_replication_slots` shows it (`exists: false` when there is none).
pub(crate) async fn read_slot<'e>(
    db: impl sqlx::PgExecutor<'e>,
    slot: &str,
) -> Result<SlotFacts, sqlx::Error> {
    type Row = (
        bool,
        Option<String>,
        Option<i64>,
        Option<String>,
        Option<i64>,
    );
    let row: Option<Row> = sqlx::query_as(
        "SELECT active, confirmed_flush_lsn::text, \
         pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::int8, wal_status, \
         pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::int8 \
         FROM pg_replication_slots WHERE slot_name = $1",
    )
    .bind(slot)
    .fetch_optional(db)
    .await?;
    let name = slot.to_owned();
    Ok(match row {
        None => SlotFacts {
            name,
            exists: false,
            active: None,
            confirmed_lsn: None,
            retained_wal_bytes: None,
            wal_status: None,
            lag_bytes: None,
        },
        Some((active, confirmed_lsn, retained_wal_bytes, wal_status, lag_bytes)) => SlotFacts {
            name,
            exists: true,
            active: Some(active),
            confirmed_lsn,
            retained_wal_bytes,
            wal_status,
            lag_bytes,
        },
    })
}

// ---- poll: the table.

/// The polled table of `config`: its pending rows and the oldest one's age.
pub async fn table(config: &Config) -> Result<TableFacts, InspectError> {
    let (db, server) = connect_sql(config).await?;
    let facts = read_table(&db, config, &server).await;
    let _ = db.close().await;
    facts
}

/// A one-connection pool to `database_url` (any backend), and the server's name.
async fn connect_sql(config: &Config) -> Result<(DatabaseConnection, String), InspectError> {
    let url = config.database_url.as_deref().unwrap_or_default();
    let server = server_name(url);
    let mut options = crate::connection::connect_options(url)?;
    options
        .sqlx_logging(false)
        .max_connections(1)
        .connect_timeout(ANSWER_WITHIN)
        .acquire_timeout(ANSWER_WITHIN);
    let db = Database::connect(options)
        .await
        .map_err(|source| InspectError::Database {
            server: server.clone(),
            step: "connecting",
            source,
        })?;
    Ok((db, server))
}

async fn read_table(
    db: &DatabaseConnection,
    config: &Config,
    server: &str,
) -> Result<TableFacts, InspectError> {
    let backend = db.get_database_backend();
    let q = |ident: &str| quote(backend, ident);
    let name = match config.source.schema.as_deref() {
        Some(schema) if backend != DbBackend::Sqlite => {
            format!("{}.{}", q(schema), q(&config.source.table))
        }
        _ => q(&config.source.table),
    };
    let pending = if config.source.poll.after_ack == AfterAck::Mark {
        format!(" WHERE {} IS NULL", q(RELAYED_AT))
    } else {
        String::new()
    };
    let failed = |step| {
        move |source| InspectError::Database {
            server: server.to_owned(),
            step,
            source,
        }
    };
    let count = db
        .query_one_raw(Statement::from_string(
            backend,
            format!("SELECT COUNT(*) FROM {name}{pending}"),
        ))
        .await
        .map_err(failed("counting the pending rows"))?
        .map(|row| row.try_get_by_index::<i64>(0))
        .transpose()
        .map_err(failed("counting the pending rows"))?
        .unwrap_or(0);
    let (age, unknown) = match oldest_pending_age(db, backend, &name, &pending).await {
        // No pending row: nothing waits.
        Ok(age) => (Some(age.unwrap_or(0.0).max(0.0)), None),
        Err(error) => (
            None,
            Some(format!(
                "reading the oldest pending row's `timestamp` failed: {error}"
            )),
        ),
    };
    Ok(TableFacts {
        name,
        pending_rows: count,
        oldest_pending_age_seconds: age,
        oldest_pending_unknown: unknown,
    })
}

/// The database's clock minus the oldest pending row's `timestamp`, in seconds; None when no
/// row is pending.
async fn oldest_pending_age(
    db: &DatabaseConnection,
    backend: DbBackend,
    table: &str,
    pending: &str,
) -> Result<Option<f64>, DbErr> {
    let column = quote(backend, "timestamp");
    let sql = match backend {
        DbBackend::Postgres => format!(
            "SELECT EXTRACT(EPOCH FROM (now() - min({column})))::float8 FROM {table}{pending}"
        ),
        // `datetime` columns hold UTC as written; `timestamp` ones are shown in the session's
        // zone, which is set to UTC for this (one connection: the pool's only one).
        DbBackend::MySql => {
            db.execute_unprepared("SET time_zone = '+00:00'").await?;
            format!(
                "SELECT CAST(TIMESTAMPDIFF(MICROSECOND, MIN({column}), UTC_TIMESTAMP(6)) AS DOUBLE) \
                 / 1000000 FROM {table}{pending}"
            )
        }
        _ => format!(
            "SELECT (julianday('now') - julianday(MIN({column}))) * 86400.0 FROM {table}{pending}"
        ),
    };
    let row = db
        .query_one_raw(Statement::from_string(backend, sql))
        .await?;
    Ok(row
        .map(|row| row.try_get_by_index::<Option<f64>>(0))
        .transpose()?
        .flatten())
}

// ---- binlog: the stored position and the server's binlog.

/// The relay's stored binlog position and the server's binlog files and retention.
pub async fn binlog(config: &Config) -> Result<BinlogFacts, InspectError> {
    let url = config.database_url.as_deref().unwrap_or_default();
    let server = server_name(url);
    let target = MySqlTarget::parse(url)?;
    let failed = |source| InspectError::Binlog {
        server: server.clone(),
        source,
    };
    let connecting = binlog::connect(&target, "connecting");
    let (mut conn, _) = tokio::time::timeout(ANSWER_WITHIN, connecting)
        .await
        .map_err(|_| InspectError::NoAnswer {
            server: server.clone(),
        })?
        .map_err(failed)?;
    let facts = read_binlog(&mut conn, config).await.map_err(failed);
    let _ = conn.disconnect().await;
    facts
}

async fn read_binlog(
    conn: &mut mysql_async::Conn,
    config: &Config,
) -> Result<BinlogFacts, BinlogError> {
    use mysql_async::prelude::Queryable;
    let query = |step| move |source| BinlogError::Query { step, source };
    let (position_table, position_key, stored) = binlog::stored_position(config, conn).await?;
    let files = BinlogFiles::read(conn)
        .await
        .map_err(query("SHOW BINARY LOGS"))?;
    let variables: Vec<(String, String)> = conn
        .query(
            "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('binlog_expire_logs_seconds', \
             'expire_logs_days', 'max_binlog_total_size', 'binlog_space_limit')",
        )
        .await
        .map_err(query("reading the binlog retention"))?;
    let variable = |name: &str| {
        variables
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let seconds = variable("binlog_expire_logs_seconds").and_then(|v| v.parse::<u64>().ok());
    let days = variable("expire_logs_days");
    let days_seconds = days
        .as_deref()
        .and_then(|d| d.parse::<f64>().ok())
        .map(|d| (d * 86_400.0) as u64);
    let expire_seconds = match (seconds, days_seconds) {
        (Some(s), _) if s > 0 => Some(s),
        (s, d) => d.or(s),
    };
    let max_size = variable("max_binlog_total_size")
        .or_else(|| variable("binlog_space_limit"))
        .and_then(|v| v.parse().ok());
    let on_server = stored.as_ref().map(|p| files.contains(&p.file));
    let note = match (&stored, on_server) {
        (None, _) => Some(
            "no stored position: `outbox-relay setup --source binlog` stores the start, or \
             `run` starts from the server's current position"
                .to_owned(),
        ),
        (Some(p), Some(false)) => Some(format!(
            "the stored position's binlog file `{}` is no longer on this server: it was purged \
             (see the retention here) or the relay follows another server. The relay resumes \
             from its GTID state only if this server still has those transactions{}; otherwise \
             `run` stops, and the events committed after {p} may not have been relayed (the \
             binlog's lost slot): check them, then delete the relay's row `{position_key}` in \
             {position_table} to start from the server's current position",
            p.file,
            if p.gtid.as_ref().is_some_and(|g| !g.is_empty()) {
                ""
            } else {
                " (this position has none)"
            }
        )),
        _ => None,
    };
    Ok(BinlogFacts {
        position_table,
        position_key,
        stored_position: stored.map(|p| StoredPosition {
            file: p.file,
            offset: p.offset,
            gtid: p.gtid.filter(|g| !g.is_empty()).map(|g| g.to_string()),
        }),
        on_server,
        oldest_file: files.oldest().map(str::to_owned),
        newest_file: files.newest().map(str::to_owned),
        files: files.count(),
        bytes_on_server: files.total_bytes(),
        expire_seconds,
        binlog_expire_logs_seconds: seconds,
        expire_logs_days: days,
        max_binlog_total_size: max_size,
        note,
    })
}

impl TableFacts {
    /// Sets the metrics' table gauges.
    pub fn publish(&self, metrics: &Metrics) {
        metrics.table(self.pending_rows, self.oldest_pending_age_seconds);
    }
}

impl BinlogFacts {
    /// Sets the metrics' binlog gauges.
    pub fn publish(&self, metrics: &Metrics) {
        metrics.binlog(crate::metrics::BinlogGauges {
            position_on_server: self.on_server,
            position_file_index: self
                .stored_position
                .as_ref()
                .and_then(|p| file_index(&p.file)),
            oldest_file_index: self.oldest_file.as_deref().and_then(file_index),
            expire_seconds: self.expire_seconds,
        });
    }
}

/// The number a binlog file name ends with (`mariadb-bin.000042`: 42).
pub fn file_index(file: &str) -> Option<u64> {
    file.rsplit_once('.')
        .and_then(|(_, index)| index.parse().ok())
}

// ---- the running relay's metrics.

/// Re-reads, every [`WATCH_INTERVAL`] while the relay runs, the facts of its source that its
/// metrics show and the pipeline does not know: the polled table's pending rows and oldest
/// pending age, the binlog position's place on the server and the server's retention. (The
/// slot's retained WAL is read by [`crate::slot`].) Aborted when dropped.
pub struct Watch {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Watch {
    /// The watch of `config`'s source, for the sources that need one.
    pub fn start(config: &Config, metrics: &Metrics) -> Option<Watch> {
        let kind = config.source.kind;
        if !matches!(kind, SourceKind::Poll | SourceKind::Binlog) {
            return None;
        }
        let config = config.clone();
        let metrics = metrics.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(WATCH_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let read = match kind {
                    SourceKind::Poll => table(&config).await.map(|t| t.publish(&metrics)),
                    _ => binlog(&config).await.map(|b| b.publish(&metrics)),
                };
                // The source's own errors decide about reconnecting; a missed reading only
                // leaves the gauges as they were.
                if let Err(error) = read {
                    tracing::debug!(%error, "reading the source's facts for the metrics failed");
                }
            }
        });
        Some(Watch { task })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_lines_flatten_nested_fields_and_show_unknowns_as_a_dash() {
        let status = SourceStatus {
            source: "wal".into(),
            state: State::Stopped,
            relay: RelayContact {
                address: None,
                running: false,
                note: Some("no running relay".into()),
            },
            attempts: None,
            last_error: None,
            published: None,
            dead_lettered: None,
            confirmed: None,
            oldest_pending_age_seconds: None,
            slot: Some(SlotFacts {
                name: "s".into(),
                exists: true,
                active: Some(false),
                confirmed_lsn: Some("0/16B3748".into()),
                retained_wal_bytes: Some(56),
                wal_status: Some("reserved".into()),
                lag_bytes: Some(0),
            }),
            table: None,
            binlog: None,
        };
        let lines = status.lines();
        for line in [
            "source: wal",
            "state: stopped",
            "relay.running: false",
            "relay.note: no running relay",
            "published: -",
            "slot.exists: true",
            "slot.confirmed_lsn: 0/16B3748",
            "slot.retained_wal_bytes: 56",
            "slot.wal_status: reserved",
        ] {
            assert!(
                lines.iter().any(|l| l == line),
                "{line} missing in {lines:#?}"
            );
        }
        assert!(!lines.iter().any(|l| l.starts_with("table")), "{lines:#?}");
    }

    #[test]
    fn servers_are_named_without_credentials() {
        assert_eq!(
            server_name("postgres://u:secret@db.example:6543/app"),
            "PostgreSQL at db.example:6543"
        );
        assert_eq!(
            server_name("mysql://u:secret@127.0.0.1:33421/app"),
            "MariaDB/MySQL at 127.0.0.1:33421"
        );
        assert_eq!(
            server_name("sqlite:///tmp/x.db?mode=rwc"),
            "SQLite at /tmp/x.db"
        );
    }

    #[test]
    fn binlog_file_index() {
        assert_eq!(file_index("mariadb-bin.000042"), Some(42));
        assert_eq!(file_index("binlog"), None);
    }

    #[test]
    fn poll_reads_its_oldest_pending_age_from_the_table_the_others_from_the_pipeline() {
        let wal = Metrics::new();
        wal.bind("wal");
        wal.lag(None, 2.5);
        assert_eq!(wal.oldest_pending_age(), 2.5);

        let poll = Metrics::new();
        poll.bind("poll");
        TableFacts {
            name: "\"outbox\"".into(),
            pending_rows: 7,
            oldest_pending_age_seconds: Some(3600.0),
            oldest_pending_unknown: None,
        }
        .publish(&poll);
        // The pipeline knows only the claimed batch: it does not overwrite the table's figure.
        poll.lag(None, 0.0);
        assert_eq!(poll.oldest_pending_age(), 3600.0);
        let text = poll.render();
        for name in [
            r#"outbox_relay_pending_rows{source="poll"} 7"#,
            r#"outbox_relay_oldest_pending_age_seconds{source="poll"} 3600.0"#,
        ] {
            assert!(text.contains(name), "{name} missing in\n{text}");
        }
    }

    #[test]
    fn binlog_gauges_show_a_purged_position() {
        let m = Metrics::new();
        m.bind("binlog");
        BinlogFacts {
            position_table: "`db`.`outbox_relay_binlog_position`".into(),
            position_key: "db.outbox".into(),
            stored_position: Some(StoredPosition {
                file: "mariadb-bin.000003".into(),
                offset: 4,
                gtid: None,
            }),
            on_server: Some(false),
            oldest_file: Some("mariadb-bin.000007".into()),
            newest_file: Some("mariadb-bin.000009".into()),
            files: 3,
            bytes_on_server: 1000,
            expire_seconds: Some(86_400),
            binlog_expire_logs_seconds: Some(86_400),
            expire_logs_days: None,
            max_binlog_total_size: None,
            note: None,
        }
        .publish(&m);
        let text = m.render();
        for name in [
            r#"outbox_relay_binlog_position_on_server{source="binlog"} 0"#,
            r#"outbox_relay_binlog_position_file_index{source="binlog"} 3"#,
            r#"outbox_relay_binlog_oldest_file_index{source="binlog"} 7"#,
            r#"outbox_relay_binlog_expire_seconds{source="binlog"} 86400"#,
        ] {
            assert!(text.contains(name), "{name} missing in\n{text}");
        }
    }
}
