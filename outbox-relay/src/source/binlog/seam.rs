//! A private copy of the `Source`/`Connector` seam (issue 10 part 1) until it lands on main;
//! deleted by the merge, which brings `crate::source`'s own.
#![allow(dead_code)]

use std::future::Future;

pub use crate::source::ColumnValue;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub header: &'static str,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRecord {
    pub origin: Origin,
    pub columns: Vec<(String, Option<ColumnValue>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceEvent<P> {
    Begin { committed_at_micros: i64 },
    Event(OutboxRecord),
    Undecodable { origin: Origin, content: Vec<u8>, reason: String },
    Unreadable { record: OutboxRecord, reason: String },
    Commit { end: P },
    KeepAlive { end: P },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Transient,
    Fatal,
}

#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct SourceError {
    fault: Fault,
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl SourceError {
    pub fn transient(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        SourceError { fault: Fault::Transient, source: e.into() }
    }
    pub fn fatal(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        SourceError { fault: Fault::Fatal, source: e.into() }
    }
    pub fn fault(&self) -> Fault {
        self.fault
    }
}

pub trait Source: Send {
    type Position: Clone + std::fmt::Debug + std::fmt::Display + Send + Sync + 'static;
    fn next(
        &mut self,
    ) -> impl Future<Output = Result<SourceEvent<Self::Position>, SourceError>> + Send;
    fn acknowledge(&mut self, position: &Self::Position);
    fn close(self) -> impl Future<Output = ()> + Send;
    fn lag_bytes(&self) -> Option<u64> {
        None
    }
}

pub trait Connector: Send + Sync {
    type Source: Source;
    fn name(&self) -> &'static str;
    fn preflight(&mut self) -> impl Future<Output = Result<(), SourceError>> + Send;
    fn open(
        &mut self,
        resume: Option<<Self::Source as Source>::Position>,
    ) -> impl Future<Output = Result<Self::Source, SourceError>> + Send;
}
