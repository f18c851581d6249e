//! The runtime of the transactional outbox: domain events, the Debezium-compatible outbox table,
//! and the write that puts events into the caller's database transaction.
//!
//! Contract: every event recorded by a service is written **in the caller's transaction**, as one
//! multi-row statement, so it commits or rolls back with the business rows. Nothing here talks to
//! Kafka; the relay ships committed rows.
//!
//! Users depend on the `outbox` facade; macro output reaches this crate only through
//! `outbox::__private`.

mod error;
mod event;
mod events;
pub mod migration;
mod outbox;
mod snapshot;
pub mod trace;
mod write;

pub use error::Error;
pub use event::{DomainEvent, OutboxEvent};
pub use events::Events;
pub use outbox::{Outbox, OutboxTable, WriteMode};
pub use snapshot::{AggregateRoot, Change, write_snapshot};
pub use write::write_events;

#[doc(hidden)]
pub mod __private;
