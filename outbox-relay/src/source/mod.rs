//! Sources: where committed outbox events are read, in commit order, behind one seam.
//!
//! A [`Connector`] opens sessions of one source; a session is a [`Source`]: it yields each
//! transaction as `Begin`, its events, `Commit` (with the source's own position type), and
//! keepalives between transactions; it is told which position Kafka acknowledged, and forgets
//! what lies before it (confirms the slot, stores the binlog position, deletes the rows). The
//! [`crate::pipeline`] does everything else, once, for every source.
//!
//! Adding a source: its module, and one line in [`run`].

pub mod binlog;
pub mod pgoutput;
pub mod poll;
pub mod wal;

use std::future::Future;

pub use crate::record::{ColumnValue, Origin, OutboxRecord};
use crate::config::{Config, SourceKind};
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, RelayError, Status};

/// What a source yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceEvent<P> {
    /// A transaction starts; its events follow, then `Commit`. Its commit time (or, without
    /// one, the oldest event's), in microseconds since the Unix epoch: the lag is measured from it.
    Begin { committed_at_micros: i64 },
    /// One outbox event of the current transaction.
    Event(OutboxRecord),
    /// Something with the outbox's mark that is not an outbox event, or a row that cannot be
    /// attributed to a table: it goes to the dead-letter topic, as it is, so nothing is dropped
    /// silently.
    Undecodable {
        origin: Origin,
        content: Vec<u8>,
        reason: String,
    },
    /// An outbox row with a value that cannot be read: it goes to the dead-letter topic with the
    /// reason and that value as its raw bytes, and the stream goes on.
    Unreadable { record: OutboxRecord, reason: String },
    /// The transaction ends at `end`. Every event is inside `Begin`..`Commit`: a source wraps a
    /// non-transactional event in a transaction of its own.
    Commit { end: P },
    /// Between transactions: nothing of ours before `end` is pending, so acknowledging it lets
    /// the server drop its log (an idle keepalive, a heartbeat).
    KeepAlive { end: P },
}

/// How a failure is handled: decided by type, in each source's error enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The session ends; the pipeline drains, backs off, and opens a new one from the
    /// acknowledged position.
    Transient,
    /// No retry fixes it: the relay stops, with the error.
    Fatal,
}

/// Why a session (or the start) failed, with how to handle it.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct SourceError {
    fault: Fault,
    #[source]
    error: Box<dyn std::error::Error + Send + Sync>,
}

impl SourceError {
    pub fn transient(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> SourceError {
        SourceError {
            fault: Fault::Transient,
            error: error.into(),
        }
    }

    pub fn fatal(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> SourceError {
        SourceError {
            fault: Fault::Fatal,
            error: error.into(),
        }
    }

    pub fn fault(&self) -> Fault {
        self.fault
    }

    /// The source's own error, to inspect by type.
    pub fn inner(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self.error.as_ref()
    }
}

/// One session of a source.
pub trait Source: Send {
    /// An LSN (`wal`), a binlog position (`binlog`), a claimed batch (`poll`).
    type Position: Clone + PartialEq + std::fmt::Debug + std::fmt::Display + Send + Sync + 'static;

    /// The next event. Cancel-safe: the pipeline polls it in `select!`, and a dropped future
    /// loses nothing.
    fn next(
        &mut self,
    ) -> impl Future<Output = Result<SourceEvent<Self::Position>, SourceError>> + Send;

    /// Kafka acknowledged everything up to and including `position`, one this session yielded
    /// in `Commit` or `KeepAlive`, in increasing order. The source may forget it. Never blocks:
    /// the I/O runs in the background.
    fn acknowledge(&mut self, position: &Self::Position);

    /// Ends the session: makes the last acknowledged position durable (bounded in time) and
    /// releases the connection.
    fn close(self) -> impl Future<Output = ()> + Send;

    /// Bytes between the server's log end and the acknowledged position, for a source with a
    /// log.
    fn lag_bytes(&self) -> Option<u64> {
        None
    }
}

/// Opens the sessions of one source.
pub trait Connector: Send {
    type Source: Source;

    /// The `source` label of the metrics: `wal`, `message`, `poll`, `binlog`.
    fn name(&self) -> &'static str;

    /// Once, at start: what no retry fixes (settings, grants, the table) is `Fatal`, with the
    /// fix named; an unreachable server is `Transient`, and the pipeline waits for it.
    fn preflight(&mut self) -> impl Future<Output = Result<(), SourceError>> + Send;

    /// A session that resumes after `resume`: the last position acknowledged in this process,
    /// or None at start (then the source's own durable position: the slot, the stored binlog
    /// position, the table). May wait (a standby waits for the leadership).
    fn open(
        &mut self,
        resume: Option<<Self::Source as Source>::Position>,
    ) -> impl Future<Output = Result<Self::Source, SourceError>> + Send;

    /// After the last session: releases what the connector holds across sessions (the
    /// leadership).
    fn finish(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Runs the relay for `config`'s source until `shutdown`, through the one pipeline.
pub async fn run(
    config: &Config,
    metrics: Metrics,
    status: Status,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RelayError> {
    let pipeline = Pipeline::new(config, metrics.clone(), status.clone())?;
    let fatal = |error: SourceError| RelayError::Source(error);
    match config.source.kind {
        SourceKind::Wal | SourceKind::Message => {
            let connector = wal::WalConnector::new(config, &metrics).map_err(|e| fatal(e.into()))?;
            pipeline.run(connector, shutdown).await
        }
        SourceKind::Poll => {
            let connector = poll::PollConnector::connect(config, &status)
                .await
                .map_err(|e| fatal(e.into()))?;
            pipeline.run(connector, shutdown).await
        }
        SourceKind::Binlog => {
            let connector = binlog::BinlogConnector::new(config).map_err(|e| fatal(e.into()))?;
            pipeline.run(connector, shutdown).await
        }
    }
}

/// Whether a PostgreSQL error is a mistake that no retry can fix, by its SQLSTATE: refused
/// credentials (class 28), a missing database (3D000) or schema (3F000), a missing or forbidden
/// object such as a table, slot or publication (class 42), an unsupported feature (class 0A), or
/// a server not set up for it (55000: `wal_level` is not `logical`, an invalidated slot). Every
/// other code, a busy slot (55006) and a restarting server (class 57) among them, may pass.
pub fn sqlstate_is_permanent(code: &str) -> bool {
    matches!(code.get(..2), Some("28" | "42" | "0A")) || matches!(code, "3D000" | "3F000" | "55000")
}

/// Whether a failed catalog query may pass on a retry: a network fault, a busy pool or a server
/// error whose SQLSTATE is not [`sqlstate_is_permanent`].
pub fn sqlx_error_is_transient(error: &sea_orm::sqlx::Error) -> bool {
    use sea_orm::sqlx::Error;
    match error {
        Error::Database(e) => e.code().is_none_or(|code| !sqlstate_is_permanent(&code)),
        // A certificate the configured CA does not vouch for (rustls reports it as invalid
        // data) is refused for good; a connection cut or refused by the network is not.
        Error::Io(e) => {
            !(e.kind() == std::io::ErrorKind::InvalidData && e.to_string().contains("certificate"))
        }
        Error::PoolTimedOut | Error::PoolClosed | Error::WorkerCrashed | Error::Protocol(_) => true,
        _ => false,
    }
}

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
pub const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;
