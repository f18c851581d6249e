//! The server's binlog files and their sizes (`SHOW BINARY LOGS`): how far a position is from
//! the end of the binlog, and which file is the oldest the server still has.
//!
//! Contract: the bytes after a position are the rest of its file plus every later file, whole;
//! a position in a file the server no longer lists has no distance (None), never a guess. A
//! session samples the list in the background ([`LogEndSampler`]), so the lag is read without
//! I/O and may be one sample old.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The server's binlog files, oldest first, with their sizes in bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BinlogFiles {
    files: Vec<(String, u64)>,
}

impl BinlogFiles {
    pub fn new(files: Vec<(String, u64)>) -> BinlogFiles {
        BinlogFiles { files }
    }

    /// `SHOW BINARY LOGS` (`REPLICATION CLIENT`, MariaDB's `BINLOG MONITOR`).
    pub async fn read(conn: &mut Conn) -> Result<BinlogFiles, mysql_async::Error> {
        let files = conn
            .query_map("SHOW BINARY LOGS", |row: mysql_async::Row| {
                (
                    row.get::<String, _>(0).unwrap_or_default(),
                    row.get::<u64, _>(1).unwrap_or_default(),
                )
            })
            .await?;
        Ok(BinlogFiles { files })
    }

    pub fn contains(&self, file: &str) -> bool {
        self.files.iter().any(|(name, _)| name == file)
    }

    /// The oldest file the server still has.
    pub fn oldest(&self) -> Option<&str> {
        self.files.first().map(|(name, _)| name.as_str())
    }

    /// The file the server writes now.
    pub fn newest(&self) -> Option<&str> {
        self.files.last().map(|(name, _)| name.as_str())
    }

    /// How many files the server has.
    pub fn count(&self) -> usize {
        self.files.len()
    }

    /// The bytes of every file the server has.
    pub fn total_bytes(&self) -> u64 {
        self.files
            .iter()
            .fold(0, |sum, (_, size)| sum.saturating_add(*size))
    }

    /// Bytes of binlog after `offset` in `file`, to the end of the newest file; None when the
    /// server does not list `file`. An offset past a file's sampled size counts as its end (the
    /// sample is older than the position).
    pub fn bytes_after(&self, file: &str, offset: u64) -> Option<u64> {
        let at = self.files.iter().position(|(name, _)| name == file)?;
        let rest = self.files[at].1.saturating_sub(offset);
        Some(
            self.files[at + 1..]
                .iter()
                .fold(rest, |sum, (_, size)| sum.saturating_add(*size)),
        )
    }
}

/// How often a session samples the server's binlog files.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// One session's background sampler of [`BinlogFiles`]; stops when dropped.
pub(crate) struct LogEndSampler {
    latest: watch::Receiver<Option<BinlogFiles>>,
    task: JoinHandle<()>,
}

impl LogEndSampler {
    /// Samples through its own connection made with `opts`, starting from `first` (read at the
    /// session's open).
    pub fn start(opts: Opts, first: BinlogFiles) -> LogEndSampler {
        let (tx, latest) = watch::channel(Some(first));
        let task = tokio::spawn(sample(opts, tx));
        LogEndSampler { latest, task }
    }

    /// The last sample.
    pub fn files(&self) -> watch::Ref<'_, Option<BinlogFiles>> {
        self.latest.borrow()
    }
}

impl Drop for LogEndSampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn sample(opts: Opts, tx: watch::Sender<Option<BinlogFiles>>) {
    let mut conn: Option<Conn> = None;
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let result = match conn.as_mut() {
            Some(c) => BinlogFiles::read(c).await,
            None => match Conn::new(opts.clone()).await {
                Ok(mut c) => {
                    let result = BinlogFiles::read(&mut c).await;
                    conn = Some(c);
                    result
                }
                Err(e) => Err(e),
            },
        };
        match result {
            Ok(files) => {
                tx.send_replace(Some(files));
            }
            Err(error) => {
                // The session itself meets the same outage and reconnects; the lag keeps its
                // last value meanwhile.
                tracing::debug!(%error, "sampling the binlog files failed; retrying");
                conn = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> BinlogFiles {
        BinlogFiles::new(vec![
            ("mariadb-bin.000001".into(), 1_000),
            ("mariadb-bin.000002".into(), 2_000),
            ("mariadb-bin.000003".into(), 500),
        ])
    }

    #[test]
    fn bytes_after_a_position_in_the_newest_file() {
        assert_eq!(files().bytes_after("mariadb-bin.000003", 400), Some(100));
        assert_eq!(files().bytes_after("mariadb-bin.000003", 500), Some(0));
    }

    #[test]
    fn bytes_after_a_position_sum_the_later_files_whole() {
        assert_eq!(
            files().bytes_after("mariadb-bin.000001", 250),
            Some(750 + 2_000 + 500)
        );
        assert_eq!(
            files().bytes_after("mariadb-bin.000002", 4),
            Some(1_996 + 500)
        );
    }

    #[test]
    fn a_position_past_an_older_sample_is_at_the_end() {
        assert_eq!(files().bytes_after("mariadb-bin.000003", 9_000), Some(0));
        assert_eq!(files().bytes_after("mariadb-bin.000002", 9_000), Some(500));
    }

    #[test]
    fn a_file_the_server_no_longer_has_has_no_distance() {
        assert_eq!(files().bytes_after("mariadb-bin.000000", 4), None);
        assert_eq!(BinlogFiles::default().bytes_after("x", 4), None);
        assert!(!files().contains("mariadb-bin.000000"));
        assert_eq!(files().oldest(), Some("mariadb-bin.000001"));
        assert_eq!(BinlogFiles::default().oldest(), None);
    }
}
