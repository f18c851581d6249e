//! `binlog`: the outbox table's INSERTs, read from the MariaDB/MySQL row-based binlog as a
//! replica reads it, in commit order.
//!
//! Contract:
//! - One binlog transaction with outbox INSERTs is `Begin`, its events in binlog order, `Commit`.
//!   The binlog is written in commit order, so transactions arrive in commit order whatever the
//!   order their writers began in. DELETEs and UPDATEs are ignored (a service may insert and
//!   delete its event in one transaction: the INSERT is shipped), and so are other tables.
//! - Transactions without outbox rows, rotations and the server's heartbeats (every
//!   `heartbeat_interval` on an idle binlog) yield `KeepAlive`, so the stored position follows an
//!   idle outbox. The relay's own position writes are not a reason to move it (they would
//!   otherwise feed themselves).
//! - The position ([`BinlogPosition`]) is the file+offset after a transaction and, when the
//!   server has GTIDs, the GTID state (MariaDB `domain-server-seq`, MySQL `uuid:interval`). It is
//!   stored only from `acknowledge` (Kafka acknowledged everything up to it), in the relay's own
//!   table in the outbox's database (`[source.binlog] position_table`, made by `setup`).
//!   `open(None)` resumes from the stored position, or else from the server's current one.
//!   A resume reads from the file+offset while the server still has that file, and from the
//!   GTID state otherwise (another server of the topology). When the server cannot send the
//!   binlog from there (the file purged and no GTID, or the server refuses the GTID state as
//!   purged: `ER_MASTER_FATAL_ERROR_READING_BINLOG`), the session fails `Fatal` with
//!   [`BinlogError::PositionGone`], naming the position, the oldest file left, the retention
//!   setting and the remedy: it never skips ahead. A limit: a server whose binlog *and* GTID
//!   history were reset (`RESET MASTER`) and that has since written past the stored sequence
//!   numbers looks like a failover target, by GTID; it is found only while its sequence numbers
//!   are behind the stored ones.
//! - The lag ([`Source::lag_bytes`]): the server's binlog end, sampled each second from
//!   `SHOW BINARY LOGS`, minus the acknowledged position, counting whole files between them.
//! - Where MariaDB and MySQL differ (the binlog status statement, the GTID forms, the retention
//!   and heartbeat variables), [`Dialect`] chooses by the server's `@@version`.
//! - A value that cannot be read is `Unreadable`, an event that cannot be parsed `Undecodable`;
//!   nothing is dropped silently. Settings, grants and table shape are `Fatal`, named with their
//!   fix; a lost connection, a restarting server: `Transient`.
//!
//! The crate: `mysql_async` (blackbeam; with `mysql_common`'s `binlog` feature), default
//! features off. It is the maintained async MySQL client with a binlog stream
//! (`Conn::get_binlog_stream`, `COM_BINLOG_DUMP` and `COM_BINLOG_DUMP_GTID`) and a row-event
//! decoder that covers every MySQL column type (JSON's binary form, `DATETIME2`, decimals) and
//! MariaDB's event layout; Materialize runs it in production for its MySQL source, and it has
//! TLS by rustls. It does not parse MariaDB's own events (GTID, GTID list, checkpoint); it
//! hands them over raw with their type, and this module reads MariaDB's 13-byte GTID event
//! itself. The alternatives: `mysql_cdc` (a sync port of a .NET library, last released in
//! 2022, no TLS) and `mysql-binlog-connector-rust` (ApeCloud's, for their migration tool;
//! its own hand-written client, no TLS or GTID resume for MariaDB) are smaller and less used.

mod catalog;
mod charset;
mod dialect;
mod log_end;
mod position;
mod store;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use mysql_async::binlog::events::{Event, EventData, RowsEventData};
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn, Opts, OptsBuilder, SslOpts};
use sea_orm::sqlx::mysql::MySqlSslMode;

pub use self::dialect::Dialect;
pub use self::log_end::BinlogFiles;
pub use self::position::{BinlogPosition, GtidParseError, GtidState, MariaDbGtidPos, MySqlGtidSet};
pub use crate::source::{
    Classified, ColumnValue, Connector, Fault, Origin, OutboxRecord, Source, SourceError,
    SourceEvent,
};

use self::catalog::{Decoded, Server, Table};
use self::log_end::LogEndSampler;
use self::store::PositionWriter;
use crate::config::{BinlogConfig, Config};
use crate::connection::{MySqlTarget, UrlError};

/// The dead-letter header naming where an event was read: `<file>:<offset>` of its row event.
pub const ORIGIN_HEADER: &str = "dlq.source.binlog";

/// Why the binlog source cannot go on; [`BinlogError::fault`] says whether a retry may help.
#[derive(Debug, thiserror::Error)]
pub enum BinlogError {
    #[error(transparent)]
    Url(#[from] UrlError),
    #[error("{step}: {source}")]
    Query {
        step: &'static str,
        #[source]
        source: mysql_async::Error,
    },
    #[error("the server's `{setting}` is `{found}`: {fix}")]
    Setting {
        setting: &'static str,
        found: String,
        fix: &'static str,
    },
    #[error("{user} lacks a privilege the relay needs as it {what}: `{grant}`")]
    MissingPrivilege {
        user: String,
        what: String,
        grant: String,
    },
    #[error(
        "the outbox table `{schema}`.`{table}` does not exist (or the relay's user cannot see \
         it): create it, or set `source.schema`/`source.table`"
    )]
    NoTable { schema: String, table: String },
    #[error(
        "the outbox table `{schema}`.`{table}` has its column `{column}` in the character set \
         `{charset}`, which the relay cannot decode: convert the column (`ALTER TABLE ... MODIFY \
         {column} ... CHARACTER SET utf8mb4`), or use the `poll` source, which reads through the \
         server's conversion"
    )]
    UnknownCharset {
        schema: String,
        table: String,
        column: String,
        charset: String,
    },
    #[error("the outbox table `{schema}`.`{table}` has no column `{missing}`")]
    MissingColumns {
        schema: String,
        table: String,
        missing: String,
    },
    #[error(
        "the binlog position table `{table}` does not exist: run `outbox-relay setup --source \
         binlog` (it creates the table), or set `source.binlog.position_table`"
    )]
    NoPositionTable { table: String },
    #[error("the binlog position table `{table}` is not the relay's: {problem}")]
    PositionTableShape { table: String, problem: String },
    #[error("the stored binlog position: {0}")]
    Gtid(#[from] GtidParseError),
    #[error(transparent)]
    PositionGone(Box<PositionGone>),
    #[error("the binlog stream: {0}")]
    Stream(#[source] mysql_async::Error),
    #[error("the server ended the binlog stream")]
    StreamEnded,
    #[error(
        "a row event of `{schema}`.`{table}` does not fit the table's columns as read ({misfit}): \
         its shape changed; reading the catalog again"
    )]
    Reshaped {
        schema: String,
        table: String,
        misfit: String,
    },
    #[error(
        "the row events of `{schema}`.`{table}` from {at} on do not fit the table's columns as \
         the catalog shows them now ({misfit}): the table changed after they were written, and \
         the binlog does not say which value is which column, so the relay stops rather than \
         ship values under the wrong names; nothing from {at} on is shipped or confirmed. To \
         ship them: give the table the columns it had when they were written and start the \
         relay (it ships them, and stops again at the first event of the new shape), then give \
         the table its new columns and start it once more. To avoid this, change the outbox \
         table's columns while the relay keeps up (it reads the catalog again then), or set \
         `binlog_row_metadata = FULL` on the server (MariaDB 10.5+, MySQL 8.0+): events \
         written from then on name their columns, and the relay maps them by name"
    )]
    Unmappable {
        schema: String,
        table: String,
        at: String,
        misfit: String,
    },
}

/// The server cannot send its binlog from the relay's position (purged, reset, not a position).
#[derive(Debug, thiserror::Error)]
#[error(
    "the server cannot send its binlog from the relay's position {position}: {detail}. \
     The oldest binlog file the server has is `{oldest}` ({retention}). If the binlog was \
     purged or reset before the relay read it, events committed after {position} may never \
     have been shipped, and the relay does not skip ahead: ship them again from the \
     service's records if needed, then delete the row `{key}` from the position table \
     {table} to start from the server's current position, and keep binlogs longer than \
     the relay may be stopped"
)]
pub struct PositionGone {
    pub position: String,
    pub detail: String,
    pub oldest: String,
    pub retention: String,
    pub key: String,
    pub table: String,
}

impl BinlogError {
    fn query(step: &'static str) -> impl FnOnce(mysql_async::Error) -> BinlogError {
        move |source| BinlogError::Query { step, source }
    }
}

impl Classified for BinlogError {
    /// Whether ending the session and opening another may pass.
    fn fault(&self) -> Fault {
        let transient = match self {
            BinlogError::Query { source, .. } | BinlogError::Stream(source) => {
                mysql_error_is_transient(source)
            }
            BinlogError::StreamEnded | BinlogError::Reshaped { .. } => true,
            _ => false,
        };
        Fault::retry_if(transient)
    }
}

/// The server error code of `error`, if the server sent one.
pub(crate) fn server_code(error: &mysql_async::Error) -> Option<u16> {
    match error {
        mysql_async::Error::Server(e) => Some(e.code),
        _ => None,
    }
}

/// Whether a MariaDB/MySQL error may pass on a retry. Permanent: refused credentials (1044,
/// 1045, 1698), a missing database, table or column (1049, 1146, 1054), a missing privilege
/// (1142, 1143, 1227), an unreadable binlog position (1236: purged, or not a position), an
/// unknown variable (1193); TLS refusals and an unusable URL. Everything else (a lost
/// connection, a server shutting down, 1053, too many connections) may pass.
pub fn mysql_error_is_transient(error: &mysql_async::Error) -> bool {
    use mysql_async::{DriverError, Error, IoError};
    match error {
        Error::Server(e) => !matches!(
            e.code,
            1044 | 1045 | 1049 | 1054 | 1142 | 1143 | 1146 | 1193 | 1227 | 1236 | 1698
        ),
        Error::Io(IoError::Io(_)) => true,
        Error::Io(IoError::Tls(_)) => false,
        Error::Driver(
            DriverError::NoClientSslFlagFromServer
            | DriverError::UnknownAuthPlugin { .. }
            | DriverError::CleartextPluginDisabled
            | DriverError::MysqlOldPasswordDisabled,
        ) => false,
        Error::Driver(_) | Error::Other(_) => true,
        Error::Url(_) => false,
    }
}

/// mysql_async's options for `target`, TLS as its `ssl-mode` says. `PREFERRED` is TLS without
/// verification, falling back to plain text on a server without TLS ([`connect`]).
pub(crate) fn mysql_opts(target: &MySqlTarget, tls: bool) -> Opts {
    let mut builder = OptsBuilder::default()
        .ip_or_hostname(target.host.clone())
        .tcp_port(target.port)
        .user(Some(target.user.clone()))
        .pass(Some(target.password.clone()))
        .db_name((!target.database.is_empty()).then(|| target.database.clone()))
        // Not the server's socket, which mysql_async otherwise prefers on a local host: the
        // relay reaches the server the URL names.
        .prefer_socket(false)
        .tcp_keepalive(Some(Duration::from_secs(30)))
        .stmt_cache_size(Some(16));
    if let Some(socket) = &target.socket {
        builder = builder
            .socket(Some(socket.to_string_lossy().into_owned()))
            .prefer_socket(true);
    }
    let verify = match target.ssl_mode {
        MySqlSslMode::Disabled => None,
        MySqlSslMode::Preferred | MySqlSslMode::Required => Some((false, false)),
        MySqlSslMode::VerifyCa => Some((true, false)),
        MySqlSslMode::VerifyIdentity => Some((true, true)),
    };
    if let Some((verify_ca, verify_name)) = verify.filter(|_| tls) {
        let mut ssl = SslOpts::default()
            .with_danger_accept_invalid_certs(!verify_ca)
            .with_danger_skip_domain_validation(!verify_name);
        if let Some(ca) = &target.ssl_ca {
            ssl = ssl.with_root_certs(vec![ca.clone().into()]);
        }
        if let (Some(cert), Some(key)) = (&target.client_cert, &target.client_key) {
            ssl = ssl.with_client_identity(Some(mysql_async::ClientIdentity::new(
                cert.clone().into(),
                key.clone().into(),
            )));
        }
        builder = builder.ssl_opts(Some(ssl));
    }
    builder.into()
}

/// A connection to `target`, honouring `ssl-mode=PREFERRED`'s fallback, and the options that
/// made it (for the session's other connections).
pub(crate) async fn connect(
    target: &MySqlTarget,
    step: &'static str,
) -> Result<(Conn, Opts), BinlogError> {
    // mysql_async's TLS uses the process-wide provider; the relay links two (sqlx's ring,
    // pgwire-replication's aws-lc-rs), so none is chosen unless one is installed. Err: one
    // already is.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let opts = mysql_opts(target, true);
    match Conn::new(opts.clone()).await {
        Err(mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer))
            if matches!(target.ssl_mode, MySqlSslMode::Preferred) =>
        {
            let opts = mysql_opts(target, false);
            let conn = Conn::new(opts.clone())
                .await
                .map_err(BinlogError::query(step))?;
            Ok((conn, opts))
        }
        other => Ok((other.map_err(BinlogError::query(step))?, opts)),
    }
}

/// The outbox columns a record may carry, besides the required ones, in their configured
/// spelling.
const OPTIONAL_COLUMNS: [&str; 5] = [
    "type",
    "schemaversion",
    "timestamp",
    "tracingspancontext",
    "aggregatetype",
];

/// Creates the position table (`outbox-relay setup --source binlog`), then checks everything
/// `run` will check; returns what it did, for the operator.
pub async fn setup(config: &Config) -> Result<String, BinlogError> {
    let mut connector = BinlogConnector::new(config)?;
    let (mut conn, _) = connect(&connector.target, "connecting to MariaDB/MySQL").await?;
    let server = Server::read(&mut conn).await?;
    let schema = connector.schema(&server);
    let table = store::qualified(&server.database, &connector.config.position_table);
    conn.query_drop(store::create_table_sql(&table))
        .await
        .map_err(BinlogError::query("creating the binlog position table"))?;
    // The relay's start: events committed from now on are shipped, even before its first run.
    let key = connector.key(&schema);
    if store::read(&mut conn, &table, &key, server.dialect.mariadb)
        .await?
        .is_none()
    {
        let current = BinlogConnector::current(&mut conn, &server).await?;
        store::record_start(&mut conn, &table, &key, &current).await?;
    }
    let _ = conn.disconnect().await;
    connector.check().await?;
    Ok(format!(
        "binlog position table `{}`.`{}` is there; the server ({}) and the outbox table \
         `{schema}`.`{}` are ready for the binlog source",
        server.database, connector.config.position_table, server.version, connector.table
    ))
}

/// The relay's stored position, as `outbox-relay status` shows it: the position table
/// (quoted), the row's key, and the row (None before the first `setup` or `run`).
pub(crate) async fn stored_position(
    config: &Config,
    conn: &mut Conn,
) -> Result<(String, String, Option<BinlogPosition>), BinlogError> {
    let connector = BinlogConnector::new(config)?;
    let server = Server::read(conn).await?;
    let table = store::qualified(&server.database, &connector.config.position_table);
    let key = connector.key(&connector.schema(&server));
    let stored = store::read(conn, &table, &key, server.dialect.mariadb).await?;
    Ok((table, key, stored))
}

/// Opens binlog sessions on one server for one outbox table.
pub struct BinlogConnector {
    target: MySqlTarget,
    config: BinlogConfig,
    source_schema: Option<String>,
    table: String,
    required: Vec<String>,
    position_key: Option<String>,
    /// Shared with each session: where a row event last did not fit the catalog.
    misfit_at: Arc<std::sync::Mutex<Option<String>>>,
}

impl BinlogConnector {
    /// The connector for `config`: the outbox table of `source`, the columns the sink needs.
    pub fn new(config: &Config) -> Result<BinlogConnector, BinlogError> {
        let url = config.database_url.as_deref().unwrap_or_default();
        let target = MySqlTarget::parse(url)?;
        let mut required: Vec<String> =
            ["id", "aggregateid", "payload"].map(str::to_owned).to_vec();
        let placed = config
            .kafka
            .additional_placement
            .iter()
            .filter_map(|p| crate::config::Placement::parse(p).ok())
            .map(|p| p.column);
        for column in std::iter::once(config.kafka.route_by_field.clone()).chain(placed) {
            if !required.contains(&column) {
                required.push(column);
            }
        }
        Ok(BinlogConnector {
            target,
            config: config.source.binlog.clone(),
            source_schema: config.source.schema.clone(),
            table: config.source.table.clone(),
            required,
            position_key: config.source.binlog.position_key.clone(),
            misfit_at: Arc::default(),
        })
    }

    fn schema(&self, server: &Server) -> String {
        self.source_schema
            .clone()
            .unwrap_or_else(|| server.database.clone())
    }

    fn key(&self, schema: &str) -> String {
        self.position_key
            .clone()
            .unwrap_or_else(|| format!("{schema}.{}", self.table))
    }

    /// Every check of `preflight`; returns the server and the outbox table as found.
    async fn check(&mut self) -> Result<(Server, Table), BinlogError> {
        let (mut conn, _) = connect(&self.target, "connecting to MariaDB/MySQL").await?;
        let result = async {
            let server = Server::read(&mut conn).await?;
            catalog::check_settings(&mut conn).await?;
            catalog::check_grants(&mut conn).await?;
            let schema = self.schema(&server);
            let table = self.read_table(&mut conn, &schema).await?;
            let position_schema = server.database.clone();
            catalog::check_position_table(&mut conn, &position_schema, &self.config.position_table)
                .await?;
            Ok((server, table))
        }
        .await;
        let _ = conn.disconnect().await;
        result
    }

    /// The outbox table as the catalog shows it now, with the columns the relay reads.
    async fn read_table(&self, conn: &mut Conn, schema: &str) -> Result<Table, BinlogError> {
        Table::read(conn, schema, &self.table, &self.required, &OPTIONAL_COLUMNS).await
    }

    /// The server's current position: where a relay with no stored position starts.
    async fn current(conn: &mut Conn, server: &Server) -> Result<BinlogPosition, BinlogError> {
        let dialect = server.dialect;
        let status = dialect.binlog_status_sql();
        let row: Option<mysql_async::Row> = conn
            .query_first(status)
            .await
            .map_err(BinlogError::query(status))?;
        let Some(row) = row else {
            return Err(BinlogError::Setting {
                setting: "log_bin",
                found: "OFF".into(),
                fix: "the binlog status is empty: the server writes no binlog",
            });
        };
        let file: String = row.get(0).unwrap_or_default();
        let offset: u64 = row.get(1).unwrap_or_default();
        let gtid = match dialect.status_gtid_column() {
            None => {
                let pos: Option<String> = conn
                    .exec_first(Dialect::GTID_AT_SQL, (&file, offset))
                    .await
                    .map_err(BinlogError::query("reading BINLOG_GTID_POS"))?;
                Some(GtidState::MariaDb(MariaDbGtidPos::parse(
                    pos.as_deref().unwrap_or_default(),
                )?))
            }
            Some(column) if server.mysql_gtid => {
                let set: Option<String> = row.get(column);
                Some(GtidState::MySql(MySqlGtidSet::parse(
                    set.as_deref().unwrap_or_default(),
                )?))
            }
            Some(_) => None,
        };
        Ok(BinlogPosition { file, offset, gtid })
    }

    /// Whether the server's file named in the stored position `start` is the one it was read
    /// from. After `RESET MASTER` the file names start over, and another server of the topology
    /// may have a file of the same name: on MariaDB, the server's GTID state at that file and
    /// offset must be the stored one, or the GTID state (which the server checks) finds the
    /// place instead. Read once per start (the server reads the file up to the offset). MySQL
    /// has no such function: there the file is trusted.
    async fn file_is_the_stored_one(
        conn: &mut Conn,
        server: &Server,
        start: &BinlogPosition,
    ) -> Result<bool, BinlogError> {
        let Some(GtidState::MariaDb(stored)) = start.gtid.as_ref().filter(|g| !g.is_empty()) else {
            return Ok(true);
        };
        if !server.dialect.mariadb {
            return Ok(true);
        }
        let here: Option<String> = match conn
            .exec_first(Dialect::GTID_AT_SQL, (&start.file, start.offset))
            .await
        {
            Ok(here) => here,
            // Not a position in that file.
            Err(e) if server_code(&e).is_some() => None,
            Err(e) => return Err(BinlogError::query("reading BINLOG_GTID_POS")(e)),
        };
        let same = here
            .as_deref()
            .and_then(|h| MariaDbGtidPos::parse(h).ok())
            .is_some_and(|h| h == *stored);
        if !same {
            tracing::warn!(
                position = %start,
                server_gtid_there = here.as_deref().unwrap_or("(none: not a position)"),
                "the server's binlog file of the stored position is not the one it was read \
                 from (the binlog was reset, or this is another server): resuming by GTID"
            );
        }
        Ok(same)
    }

    async fn open_session(
        &mut self,
        resume: Option<BinlogPosition>,
    ) -> Result<BinlogSource, BinlogError> {
        let (mut conn, opts) = connect(&self.target, "connecting to MariaDB/MySQL").await?;
        let server = Server::read(&mut conn).await?;
        let schema = self.schema(&server);
        // Read at every open: a session that met a reshaped table ends, and the next one
        // reads the catalog again.
        let table = self.read_table(&mut conn, &schema).await?;
        let key = self.key(&schema);
        let position_table = store::qualified(&server.database, &self.config.position_table);
        let stored = store::read(&mut conn, &position_table, &key, server.dialect.mariadb).await?;
        let start = match resume.clone().or(stored.clone()) {
            Some(position) => position,
            None => {
                let current = Self::current(&mut conn, &server).await?;
                store::record_start(&mut conn, &position_table, &key, &current).await?;
                tracing::info!(
                    position = %current,
                    "no stored binlog position: starting from the server's current position"
                );
                current
            }
        };
        let files = BinlogFiles::read(&mut conn)
            .await
            .map_err(BinlogError::query("SHOW BINARY LOGS"))?;
        let (retention_sql, retention_setting) = server.dialect.retention_sql();
        let retention: Option<u64> = conn
            .query_first(retention_sql)
            .await
            .map_err(BinlogError::query("reading the binlog retention"))?;
        let gone = Gone {
            oldest: files.oldest().unwrap_or("(none)").to_owned(),
            retention: dialect::describe_retention(retention_setting, retention.unwrap_or(0)),
            key: key.clone(),
            table: position_table.clone(),
        };
        let mut by_file = files.contains(&start.file);
        if by_file && resume.is_none() && stored.is_some() {
            by_file = Self::file_is_the_stored_one(&mut conn, &server, &start).await?;
        }
        let by_gtid = start.gtid.as_ref().filter(|g| !g.is_empty() && !by_file);
        if !by_file && by_gtid.is_none() {
            return Err(gone.error(
                &start,
                format!(
                    "its binlog file `{}` is gone, and the position has no GTID to find the \
                     place in a later file",
                    start.file
                ),
            ));
        }
        let checksum: Option<String> = conn
            .query_first("SELECT @@GLOBAL.binlog_checksum")
            .await
            .map_err(BinlogError::query("reading binlog_checksum"))?;
        let checksums = checksum.is_some_and(|c| !c.eq_ignore_ascii_case("NONE"));
        let heartbeat_ns = self.config.heartbeat_interval.as_nanos().max(1_000_000);
        for sql in server.dialect.heartbeat_sql(heartbeat_ns) {
            conn.query_drop(sql)
                .await
                .map_err(BinlogError::query("setting the heartbeat period"))?;
        }
        let mut wire_sids = Vec::new();
        if server.dialect.mariadb {
            // MariaDB sends its GTID events (which carry the position) to a replica that says
            // it reads them.
            conn.query_drop("SET @mariadb_slave_capability = 4")
                .await
                .map_err(BinlogError::query("announcing the replica's capabilities"))?;
            if let Some(gtid) = by_gtid {
                conn.exec_drop("SET @slave_connect_state = ?", (gtid.to_string(),))
                    .await
                    .map_err(BinlogError::query("setting the GTID to resume from"))?;
            }
        } else if let Some(GtidState::MySql(set)) = by_gtid {
            wire_sids = set.wire();
        }
        let sids = wire_sids.iter().map(|(uuid, intervals)| {
            mysql_async::Sid::new(*uuid).with_intervals(
                intervals
                    .iter()
                    .map(|&(s, e)| mysql_async::GnoInterval::new(s, e))
                    .collect(),
            )
        });
        let mut request = BinlogStreamRequest::new(self.config.server_id);
        if by_file {
            request = request
                .with_filename(start.file.as_bytes())
                .with_pos(start.offset);
        } else if !server.dialect.mariadb {
            request = request.with_gtid().with_gtid_set(sids);
        }
        tracing::info!(
            position = %start,
            by = if by_file { "file" } else { "gtid" },
            server = %server.version,
            "reading the binlog"
        );
        let stream = conn
            .get_binlog_stream(request)
            .await
            .map_err(BinlogError::query("requesting the binlog"))?;
        let log_end = LogEndSampler::start(opts.clone(), files);
        let writer = PositionWriter::start(
            opts,
            position_table,
            key,
            self.config.flush_interval,
            stored,
        );
        Ok(BinlogSource {
            stream,
            table,
            position_table: (server.database.clone(), self.config.position_table.clone()),
            read: start.clone(),
            acknowledgeable: start.clone(),
            start,
            log_end,
            gone,
            keepalive_every: self.config.heartbeat_interval,
            last_keepalive: None,
            txn: None,
            pending_gtid: None,
            queue: VecDeque::new(),
            writer,
            acknowledged: None,
            checksums,
            format_seen: false,
            misfit_at: Arc::clone(&self.misfit_at),
            mapped_for: None,
            named: None,
        })
    }
}

impl Connector for BinlogConnector {
    type Source = BinlogSource;

    fn name(&self) -> &'static str {
        "binlog"
    }

    async fn preflight(&mut self) -> Result<(), SourceError> {
        let (server, table) = self.check().await?;
        tracing::info!(
            server = %server.version,
            table = %format!("{}.{}", table.schema, table.name),
            "binlog source: the server and the outbox table are ready"
        );
        Ok(())
    }

    async fn open(&mut self, resume: Option<BinlogPosition>) -> Result<BinlogSource, SourceError> {
        Ok(self.open_session(resume).await?)
    }

    /// The row of the position table.
    async fn durable_position(&mut self) -> Result<Option<BinlogPosition>, SourceError> {
        let (mut conn, _) = connect(&self.target, "connecting to MariaDB/MySQL").await?;
        let result = async {
            let server = Server::read(&mut conn).await?;
            let table = store::qualified(&server.database, &self.config.position_table);
            let key = self.key(&self.schema(&server));
            store::read(&mut conn, &table, &key, server.dialect.mariadb).await
        }
        .await;
        let _ = conn.disconnect().await;
        Ok(result?)
    }
}

/// The key of the relay's row in the position table, as the connector derives it from
/// `config` (`source.binlog.position_key`, else `<schema>.<table>`, the schema defaulting to
/// the URL's database): the relay's identity.
pub fn position_key_of(config: &Config) -> String {
    config.binlog_position_key()
}

/// The GTID of the transaction being read, applied to the position at its end.
#[derive(Debug)]
enum PendingGtid {
    MariaDb { domain: u32, server: u32, seq: u64 },
    MySql { uuid: String, gno: u64 },
}

/// The binlog transaction being read.
#[derive(Debug)]
struct Txn {
    started_micros: i64,
    /// `Begin` was yielded (the transaction has outbox rows).
    begun: bool,
    /// It changed a table other than the relay's position table.
    foreign: bool,
}

/// What names an unreadable position: the server's oldest file and retention, the relay's row.
#[derive(Debug)]
struct Gone {
    oldest: String,
    retention: String,
    key: String,
    table: String,
}

impl Gone {
    fn error(&self, position: &BinlogPosition, detail: String) -> BinlogError {
        BinlogError::PositionGone(Box::new(PositionGone {
            position: position.to_string(),
            detail,
            oldest: self.oldest.clone(),
            retention: self.retention.clone(),
            key: self.key.clone(),
            table: self.table.clone(),
        }))
    }
}

/// One binlog session.
pub struct BinlogSource {
    stream: BinlogStream,
    /// Where the session started reading (the stored or acknowledged position).
    start: BinlogPosition,
    /// The server's binlog files, sampled: the lag.
    log_end: LogEndSampler,
    /// What an unreadable position's error names.
    gone: Gone,
    table: Table,
    /// (schema, table) of the relay's position table.
    position_table: (String, String),
    /// Just past the last event read.
    read: BinlogPosition,
    /// The last position worth acknowledging: after the last transaction that was not only the
    /// relay's own position write, or an event outside transactions.
    acknowledgeable: BinlogPosition,
    keepalive_every: Duration,
    last_keepalive: Option<(BinlogPosition, Instant)>,
    txn: Option<Txn>,
    pending_gtid: Option<PendingGtid>,
    /// Events of the binlog event last read, not yet yielded.
    queue: VecDeque<SourceEvent<BinlogPosition>>,
    writer: PositionWriter,
    acknowledged: Option<BinlogPosition>,
    /// The server checksums its binlog events (`binlog_checksum` is not `NONE`).
    checksums: bool,
    /// A format description event was read (the stream's checksum setting is known).
    format_seen: bool,
    /// Where a row event last did not fit the catalog (`file:offset`), across sessions.
    misfit_at: Arc<std::sync::Mutex<Option<String>>>,
    /// The table id whose table map was last checked against the catalog (or named).
    mapped_for: Option<u64>,
    /// The catalog's columns in the order that table map named them; None: by position.
    named: Option<Vec<catalog::Column>>,
}

/// MariaDB's own event types, which mysql_common hands over unparsed.
const MARIADB_ANNOTATE_ROWS: u8 = 160;
const MARIADB_GTID: u8 = 162;
/// A MariaDB GTID event group without BEGIN/COMMIT: one statement (DDL, non-transactional).
const MARIADB_FL_STANDALONE: u8 = 1;

impl BinlogSource {
    fn begin(&mut self, timestamp: u32) {
        if self.txn.is_none() {
            self.txn = Some(Txn {
                started_micros: i64::from(timestamp) * 1_000_000,
                begun: false,
                foreign: false,
            });
        }
    }

    /// Records the end of an event outside transactions.
    fn advance(&mut self, end: u64) {
        if end != 0 {
            self.read.offset = end;
        }
        if self.txn.is_none() {
            self.apply_gtid();
            self.acknowledgeable = self.read.clone();
        }
    }

    fn apply_gtid(&mut self) {
        match (self.pending_gtid.take(), &mut self.read.gtid) {
            (
                Some(PendingGtid::MariaDb {
                    domain,
                    server,
                    seq,
                }),
                Some(GtidState::MariaDb(pos)),
            ) => pos.apply(domain, server, seq),
            (Some(PendingGtid::MySql { uuid, gno }), Some(GtidState::MySql(set))) => {
                set.add(&uuid, gno)
            }
            (
                Some(PendingGtid::MariaDb {
                    domain,
                    server,
                    seq,
                }),
                gtid @ None,
            ) => {
                let mut pos = MariaDbGtidPos::default();
                pos.apply(domain, server, seq);
                *gtid = Some(GtidState::MariaDb(pos));
            }
            _ => {}
        }
    }

    fn commit(&mut self, end: u64) {
        if end != 0 {
            self.read.offset = end;
        }
        self.apply_gtid();
        let Some(txn) = self.txn.take() else {
            self.acknowledgeable = self.read.clone();
            return;
        };
        if txn.begun {
            self.acknowledgeable = self.read.clone();
            self.queue.push_back(SourceEvent::Commit {
                end: self.read.clone(),
            });
            self.last_keepalive = Some((self.read.clone(), Instant::now()));
        } else if txn.foreign {
            self.acknowledgeable = self.read.clone();
            self.keepalive(false);
        }
    }

    /// A `KeepAlive` at the acknowledgeable position, if it moved; at most one per
    /// `keepalive_every` unless `now` (a heartbeat: the binlog is idle).
    fn keepalive(&mut self, now: bool) {
        if self.txn.is_some() {
            return;
        }
        let due = match &self.last_keepalive {
            None => true,
            Some((at, when)) => {
                *at != self.acknowledgeable && (now || when.elapsed() >= self.keepalive_every)
            }
        };
        if due {
            self.last_keepalive = Some((self.acknowledgeable.clone(), Instant::now()));
            self.queue.push_back(SourceEvent::KeepAlive {
                end: self.acknowledgeable.clone(),
            });
        }
    }

    fn origin(&self, start: u64) -> Origin {
        Origin {
            header: ORIGIN_HEADER,
            value: format!("{}:{start}", self.read.file).into(),
        }
    }

    /// Turns one binlog event into what the session yields (into `queue`).
    fn absorb(&mut self, event: Event) -> Result<(), BinlogError> {
        let header = event.header();
        let end = u64::from(header.log_pos());
        let start = end.saturating_sub(u64::from(header.event_size()));
        let timestamp = header.timestamp();
        match header.event_type_raw() {
            MARIADB_GTID => {
                let data = event.data();
                let (Some(seq), Some(domain), flags) = (
                    data.get(..8)
                        .and_then(|b| b.try_into().ok())
                        .map(u64::from_le_bytes),
                    data.get(8..12)
                        .and_then(|b| b.try_into().ok())
                        .map(u32::from_le_bytes),
                    data.get(12).copied().unwrap_or(0),
                ) else {
                    return self.undecodable(start, &event, "a MariaDB GTID event too short");
                };
                self.pending_gtid = Some(PendingGtid::MariaDb {
                    domain,
                    server: header.server_id(),
                    seq,
                });
                if flags & MARIADB_FL_STANDALONE == 0 {
                    self.begin(timestamp);
                }
                return Ok(());
            }
            MARIADB_ANNOTATE_ROWS => return Ok(()),
            _ => {}
        }
        let data = match event.read_data() {
            Ok(Some(data)) => data,
            // Another MariaDB event of its own (GTID list, checkpoint): no rows.
            Ok(None) => {
                self.advance(end);
                return Ok(());
            }
            Err(e) => {
                return self.undecodable(start, &event, &format!("unparseable binlog event: {e}"));
            }
        };
        match data {
            EventData::QueryEvent(query) => {
                let sql = query.query();
                let sql = sql.trim();
                if sql.eq_ignore_ascii_case("BEGIN") {
                    self.begin(timestamp);
                } else if sql.eq_ignore_ascii_case("COMMIT") || sql.eq_ignore_ascii_case("ROLLBACK")
                {
                    self.commit(end);
                } else if self.txn.is_none() {
                    // DDL and other statements outside transactions.
                    self.advance(end);
                    self.keepalive(false);
                }
            }
            EventData::XidEvent(_) => self.commit(end),
            EventData::GtidEvent(gtid) => {
                self.pending_gtid = Some(PendingGtid::MySql {
                    uuid: position::uuid_text(gtid.sid()),
                    gno: gtid.gno(),
                });
            }
            EventData::RotateEvent(rotate) => {
                let mut name = rotate.name_raw();
                // The server's first (artificial) rotate comes before the format description
                // that announces the checksum, so the parser leaves its CRC32 on the name.
                if !self.format_seen && self.checksums {
                    name = name.get(..name.len().saturating_sub(4)).unwrap_or_default();
                }
                self.read.file = String::from_utf8_lossy(name).into_owned();
                self.read.offset = rotate.position();
                if self.txn.is_none() {
                    self.acknowledgeable.file = self.read.file.clone();
                    self.acknowledgeable.offset = self.read.offset;
                }
            }
            EventData::HeartbeatEvent => self.keepalive(true),
            EventData::FormatDescriptionEvent(_) => {
                self.format_seen = true;
                self.advance(end);
            }
            EventData::RowsEvent(rows) => self.rows(start, &rows)?,
            EventData::TableMapEvent(_) => {}
            _ => self.advance(end),
        }
        Ok(())
    }

    fn undecodable(&mut self, start: u64, event: &Event, reason: &str) -> Result<(), BinlogError> {
        self.begin(event.header().timestamp());
        self.start_outbox_txn();
        self.queue.push_back(SourceEvent::Undecodable {
            origin: self.origin(start),
            content: event.data().to_vec(),
            reason: reason.to_owned(),
        });
        Ok(())
    }

    /// The error for a row event at `start` that does not fit the catalog: the session ends and
    /// the next one reads the catalog again; if the same event misfits that one too, it was
    /// written before the table last changed, and no catalog read helps.
    fn misfit(&self, start: u64, misfit: String) -> BinlogError {
        let at = format!("{}:{start}", self.read.file);
        let (schema, table) = (self.table.schema.clone(), self.table.name.clone());
        let mut last = self.misfit_at.lock().unwrap_or_else(|e| e.into_inner());
        if last.as_deref() == Some(at.as_str()) {
            return BinlogError::Unmappable {
                schema,
                table,
                at,
                misfit,
            };
        }
        *last = Some(at);
        BinlogError::Reshaped {
            schema,
            table,
            misfit,
        }
    }

    fn start_outbox_txn(&mut self) {
        if let Some(txn) = self.txn.as_mut() {
            txn.foreign = true;
            if !txn.begun {
                txn.begun = true;
                let committed_at_micros = txn.started_micros;
                self.queue.push_back(SourceEvent::Begin {
                    committed_at_micros,
                });
            }
        }
    }

    fn rows(&mut self, start: u64, rows: &RowsEventData<'_>) -> Result<(), BinlogError> {
        let Some(tme) = self.stream.get_tme(rows.table_id()).cloned() else {
            return Err(BinlogError::Stream(mysql_async::Error::Other(
                format!(
                    "a row event for table id {} without its table map",
                    rows.table_id()
                )
                .into(),
            )));
        };
        let (database, name) = (tme.database_name(), tme.table_name());
        if database == self.position_table.0 && name == self.position_table.1 {
            return Ok(());
        }
        let ours = database == self.table.schema && name == self.table.name;
        drop((database, name));
        if self.txn.is_none() {
            // Row events come inside BEGIN..COMMIT; a bare one is its own transaction.
            self.begin(0);
        }
        if let Some(txn) = self.txn.as_mut() {
            txn.foreign = true;
        }
        let insert = matches!(
            rows,
            RowsEventData::WriteRowsEvent(_) | RowsEventData::WriteRowsEventV1(_)
        );
        if !ours || !insert {
            return Ok(());
        }
        // Once per table id (a table's id changes when its definition does): with
        // `binlog_row_metadata = FULL` the table map names its columns and values take those
        // names, whatever the catalog's order now; without, the map must fit the catalog.
        if self.mapped_for != Some(rows.table_id()) {
            self.named = match catalog::column_names(&tme) {
                Some(names) => Some(self.table.by_names(&names)),
                None => {
                    if let Some(misfit) = self.table.misfit(&tme) {
                        return Err(self.misfit(start, misfit));
                    }
                    None
                }
            };
            self.mapped_for = Some(rows.table_id());
        }
        let count = tme.columns_count();
        self.start_outbox_txn();
        let origin = self.origin(start);
        let table_columns = self.named.as_ref().unwrap_or(&self.table.columns);
        let mut decoded = Vec::new();
        for row in rows.rows(&tme) {
            let after = match row {
                Ok((_, Some(after))) => after,
                Ok((_, None)) => continue,
                Err(e) => {
                    decoded.push(SourceEvent::Undecodable {
                        origin: origin.clone(),
                        content: rows.rows_data().to_vec(),
                        reason: format!("an outbox row event that cannot be parsed: {e}"),
                    });
                    break;
                }
            };
            let mut columns = Vec::with_capacity(count as usize);
            let mut unreadable = Vec::new();
            for (column, value) in table_columns.iter().zip(after.unwrap()) {
                match column.decode(value) {
                    Decoded::Value(v) => columns.push((Arc::clone(&column.name), v)),
                    Decoded::Unreadable { raw, reason } => {
                        columns.push((Arc::clone(&column.name), Some(ColumnValue::Bytes(raw))));
                        unreadable.push(reason);
                    }
                }
            }
            let record = OutboxRecord {
                origin: origin.clone(),
                columns,
            };
            decoded.push(if unreadable.is_empty() {
                SourceEvent::Event(record)
            } else {
                SourceEvent::Unreadable {
                    record,
                    reason: unreadable.join("; "),
                }
            });
        }
        self.queue.extend(decoded);
        Ok(())
    }
}

impl Source for BinlogSource {
    type Position = BinlogPosition;

    async fn next(&mut self) -> Result<SourceEvent<BinlogPosition>, SourceError> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Ok(event);
            }
            // Cancel-safe: the stream keeps a partly read packet; an event is absorbed whole
            // (no await) once read.
            let event = match self.stream.next().await {
                Some(Ok(event)) => event,
                // The server cannot read its binlog from where the session asked (purged,
                // reset, or a position that is not one): never transient.
                Some(Err(e)) if server_code(&e) == Some(ER_MASTER_FATAL_ERROR_READING_BINLOG) => {
                    let detail = match &e {
                        mysql_async::Error::Server(s) => format!("\"{}\"", s.message),
                        other => other.to_string(),
                    };
                    return Err(self.gone.error(&self.read, detail).into());
                }
                Some(Err(e)) => return Err(BinlogError::Stream(e).into()),
                None => return Err(BinlogError::StreamEnded.into()),
            };
            self.absorb(event)?;
        }
    }

    fn acknowledge(&mut self, position: &BinlogPosition) {
        if self.acknowledged.as_ref() != Some(position) {
            self.writer.store(position);
            self.acknowledged = Some(position.clone());
        }
    }

    async fn close(self) {
        let BinlogSource { stream, writer, .. } = self;
        writer.close().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), stream.close()).await;
    }

    /// The server's binlog end (sampled each second) minus the acknowledged position. Once
    /// everything read is acknowledged, what lies between it and the read position is only the
    /// relay's own position writes, which need no shipping: then the lag counts from the read
    /// position, so an idle, caught-up relay reports 0.
    fn lag_bytes(&self) -> Option<u64> {
        let acknowledged = self.acknowledged.as_ref().unwrap_or(&self.start);
        let from = if *acknowledged == self.acknowledgeable && self.txn.is_none() {
            &self.read
        } else {
            acknowledged
        };
        self.log_end
            .files()
            .as_ref()?
            .bytes_after(&from.file, from.offset)
    }
}

/// MariaDB/MySQL's `ER_MASTER_FATAL_ERROR_READING_BINLOG`: the binlog cannot be sent from the
/// requested position (purged, reset, past a file's end).
const ER_MASTER_FATAL_ERROR_READING_BINLOG: u16 = 1236;
