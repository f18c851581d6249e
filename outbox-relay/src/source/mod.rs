//! Sources: where committed outbox events are read, in commit order, behind one seam.
//!
//! A [`Connector`] opens sessions of one source; a session is a [`Source`]: it yields each
//! transaction as `Begin`, its events, `Commit` (with the source's own position type), and
//! keepalives between transactions; it is told which position Kafka acknowledged, and forgets
//! what lies before it (confirms the slot, stores the binlog position, deletes the rows). The
//! [`crate::pipeline`] does everything else, once, for every source.
//!
//! Adding a source: its module, and one line in [`crate::relay::Relay::run`]'s list.

pub mod binlog;
pub mod pgoutput;
pub mod poll;
pub mod wal;

use std::future::Future;

pub use crate::record::{ColumnValue, Origin, OutboxRecord};

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
    Unreadable {
        record: OutboxRecord,
        reason: String,
    },
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

impl Fault {
    /// `Transient` when a retry may pass, else `Fatal`.
    pub fn retry_if(transient: bool) -> Fault {
        if transient {
            Fault::Transient
        } else {
            Fault::Fatal
        }
    }
}

/// A source's error that is sorted by its type: each source's error enum says, per variant,
/// whether a retry may pass; `?` then turns it into a [`SourceError`] that carries the answer.
pub trait Classified: std::error::Error + Send + Sync + 'static {
    fn fault(&self) -> Fault;
}

impl<E: Classified> From<E> for SourceError {
    fn from(error: E) -> SourceError {
        SourceError {
            fault: error.fault(),
            error: Box::new(error),
        }
    }
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
    type Position: Clone
        + PartialEq
        + std::fmt::Debug
        + std::fmt::Display
        + StoredPosition
        + Send
        + Sync
        + 'static;

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

    /// Whether the source, after a transaction, may wait for Kafka to acknowledge its events
    /// before it yields more (`poll`'s batches). The pipeline then has the producer send them
    /// at once ([`crate::sink::KafkaSink::nudge`]) instead of after its linger, which such a
    /// source would otherwise wait out once per batch. A log-tailing source reads on
    /// regardless: its events keep the linger, which lets a batch fill.
    fn awaits_acknowledgements(&self) -> bool {
        false
    }
}

/// A source position as the exactly-once mode stores it in Kafka, beside the events it ends
/// (see [`crate::pipeline::DeliveryPolicy`]), and reads it back: a text form, and the source's commit order.
pub trait StoredPosition: Sized {
    /// The text stored; [`StoredPosition::decode`] reads it back to an equal position.
    fn encode(&self) -> String;

    /// The position stored as `text`; the error says what is wrong with it.
    fn decode(text: &str) -> Result<Self, String>;

    /// Where `self` lies against `other` in the source's commit order; None when the two cannot
    /// be compared (positions of different logs).
    fn order(&self, other: &Self) -> Option<std::cmp::Ordering>;
}

/// Opens the sessions of one source.
pub trait Connector: Send {
    type Source: Source;

    /// The `source` label of the metrics: `wal`, `message`, `poll`, `binlog`.
    fn name(&self) -> &'static str;

    /// Once, at start: what no retry fixes (settings, grants, the table) is `Fatal`, with the
    /// fix named; an unreachable server is `Transient`, and the pipeline waits for it.
    fn preflight(&mut self) -> impl Future<Output = Result<(), SourceError>> + Send;

    /// Before each session, and before the delivery mode touches Kafka for it: waits until
    /// this relay may run one (a standby waits here for the leadership). The exactly-once
    /// mode's `init_transactions` comes after it, so a standby fences no one.
    fn lead(&mut self) -> impl Future<Output = Result<(), SourceError>> + Send {
        async { Ok(()) }
    }

    /// A session that resumes after `resume`: the last position acknowledged in this process,
    /// or None at start (then the source's own durable position: the slot, the stored binlog
    /// position, the table). May wait (a standby waits for the leadership).
    fn open(
        &mut self,
        resume: Option<<Self::Source as Source>::Position>,
    ) -> impl Future<Output = Result<Self::Source, SourceError>> + Send;

    /// The source's own durable position (the slot's confirmed LSN, the stored binlog
    /// position), when it has one: the exactly-once mode refuses to start when it lies past the
    /// position stored in Kafka (events in between were acknowledged without being committed
    /// there: a gap). Called after `preflight`.
    fn durable_position(
        &mut self,
    ) -> impl Future<Output = Result<Option<<Self::Source as Source>::Position>, SourceError>> + Send
    {
        async { Ok(None) }
    }

    /// After the last session: releases what the connector holds across sessions (the
    /// leadership).
    fn finish(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }
}
