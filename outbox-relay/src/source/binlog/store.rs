//! The relay's position table: one row per relay (`position_key`), holding the last binlog
//! position that Kafka acknowledged everything before.
//!
//! Contract: a position is written only from `acknowledge`, so the stored row never runs ahead
//! of Kafka; a crash replays from it (duplicates, never loss). Writes go through one background
//! task, latest wins, at most one per `flush_interval`; `close` hands it the last position and
//! waits a bounded time for the write. The writes land in the binlog themselves: the reader
//! recognises them as its own and does not acknowledge past them for their sake, so an idle
//! outbox does not make the relay write its position in a loop.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::BinlogError;
use super::position::{BinlogPosition, GtidState, MariaDbGtidPos, MySqlGtidSet};

/// A MariaDB/MySQL identifier, quoted.
pub(crate) fn quote(identifier: &str) -> String {
    format!("`{}`", identifier.replace('`', "``"))
}

/// `schema`.`table`, quoted.
pub(crate) fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", quote(schema), quote(table))
}

/// The position table's DDL (MariaDB and MySQL alike); `table` is [`qualified`].
pub(crate) fn create_table_sql(table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (\n  \
         `name` varchar(255) NOT NULL PRIMARY KEY,\n  \
         `binlog_file` varchar(512) NOT NULL,\n  \
         `binlog_offset` bigint unsigned NOT NULL,\n  \
         `gtid` text NULL,\n  \
         `updated_at` timestamp(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6)\n)"
    )
}

/// The columns the reader and writer use.
pub(crate) const COLUMNS: [&str; 4] = ["name", "binlog_file", "binlog_offset", "gtid"];

/// The stored position of `key` in `table` ([`qualified`]), if any; its GTID text is read in
/// the server's flavour.
pub(crate) async fn read(
    conn: &mut Conn,
    table: &str,
    key: &str,
    mariadb: bool,
) -> Result<Option<BinlogPosition>, BinlogError> {
    let sql =
        format!("SELECT `binlog_file`, `binlog_offset`, `gtid` FROM {table} WHERE `name` = ?");
    let row: Option<(String, u64, Option<String>)> = conn
        .exec_first(sql, (key,))
        .await
        .map_err(BinlogError::query("reading the stored binlog position"))?;
    let Some((file, offset, gtid)) = row else {
        return Ok(None);
    };
    let gtid = match gtid.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) if mariadb => Some(GtidState::MariaDb(MariaDbGtidPos::parse(text)?)),
        Some(text) => Some(GtidState::MySql(MySqlGtidSet::parse(text)?)),
    };
    Ok(Some(BinlogPosition { file, offset, gtid }))
}

/// Records `position` as `key`'s start unless a position is stored already: a relay that starts
/// from the server's current position makes it durable before it reads, so a crash before its
/// first acknowledgement does not move the start past events committed meanwhile.
pub(crate) async fn record_start(
    conn: &mut Conn,
    table: &str,
    key: &str,
    position: &BinlogPosition,
) -> Result<(), BinlogError> {
    let sql = format!(
        "INSERT IGNORE INTO {table} (`name`, `binlog_file`, `binlog_offset`, `gtid`) \
         VALUES (?, ?, ?, ?)"
    );
    let gtid = position.gtid.as_ref().map(ToString::to_string);
    conn.exec_drop(sql, (key, &position.file, position.offset, gtid))
        .await
        .map_err(BinlogError::query("storing the start position"))
}

async fn write(
    conn: &mut Conn,
    table: &str,
    key: &str,
    position: &BinlogPosition,
) -> Result<(), mysql_async::Error> {
    let sql = format!(
        "INSERT INTO {table} (`name`, `binlog_file`, `binlog_offset`, `gtid`) VALUES (?, ?, ?, ?) \
         ON DUPLICATE KEY UPDATE `binlog_file` = VALUES(`binlog_file`), \
         `binlog_offset` = VALUES(`binlog_offset`), `gtid` = VALUES(`gtid`)"
    );
    let gtid = position.gtid.as_ref().map(ToString::to_string);
    conn.exec_drop(sql, (key, &position.file, position.offset, gtid))
        .await
}

/// The background writer of one session's acknowledged positions.
pub(crate) struct PositionWriter {
    latest: watch::Sender<Option<BinlogPosition>>,
    task: JoinHandle<()>,
}

/// How long `close` waits for the last write.
const CLOSE_BOUND: Duration = Duration::from_secs(5);

impl PositionWriter {
    pub fn start(
        opts: Opts,
        table: String,
        key: String,
        flush_interval: Duration,
        stored: Option<BinlogPosition>,
    ) -> PositionWriter {
        let (latest, rx) = watch::channel(None);
        let task = tokio::spawn(run(opts, table, key, flush_interval, stored, rx));
        PositionWriter { latest, task }
    }

    /// Hands over a newly acknowledged position; never waits.
    pub fn store(&self, position: &BinlogPosition) {
        self.latest.send_replace(Some(position.clone()));
    }

    /// Writes the last position handed over, waiting at most [`CLOSE_BOUND`].
    pub async fn close(self) {
        let PositionWriter { latest, task } = self;
        drop(latest);
        let abort = task.abort_handle();
        if tokio::time::timeout(CLOSE_BOUND, task).await.is_err() {
            abort.abort();
            tracing::warn!(
                "the last acknowledged binlog position was not stored within {CLOSE_BOUND:?}; \
                 the next start replays from the one stored before it (duplicates, no loss)"
            );
        }
    }
}

async fn run(
    opts: Opts,
    table: String,
    key: String,
    flush_interval: Duration,
    mut written: Option<BinlogPosition>,
    mut rx: watch::Receiver<Option<BinlogPosition>>,
) {
    let mut conn: Option<Conn> = None;
    let mut closed = false;
    loop {
        let pending = rx.borrow_and_update().clone();
        if let Some(position) = pending.filter(|p| written.as_ref() != Some(p)) {
            let result = match conn.as_mut() {
                Some(c) => write(c, &table, &key, &position).await,
                None => match Conn::new(opts.clone()).await {
                    Ok(mut c) => {
                        let result = write(&mut c, &table, &key, &position).await;
                        conn = Some(c);
                        result
                    }
                    Err(e) => Err(e),
                },
            };
            match result {
                Ok(()) => {
                    tracing::debug!(%position, "binlog position stored");
                    written = Some(position);
                }
                Err(error) => {
                    tracing::warn!(%error, %position, "storing the binlog position failed; retrying");
                    conn = None;
                    // Retry the same (or a newer) position after a pause, closed or not:
                    // `close` bounds the wait.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
        }
        if closed {
            return;
        }
        // Coalesce: at most one write per interval, the latest position wins.
        tokio::time::sleep(flush_interval).await;
        if rx.changed().await.is_err() {
            // The session closed: write what it handed over last, then stop.
            closed = true;
        }
    }
}
