//! The runtime of the transactional outbox: domain events, the Debezium-compatible outbox table,
//! and the write that puts events into the caller's database transaction.
//!
//! Contract: every event recorded by a service is written **in the caller's transaction**, as one
//! multi-row statement (split, in order, only past a database's statement limits), so it commits
//! or rolls back with the business rows. A write that cannot keep that contract is refused with a
//! typed [`Error`] before anything is written: a write mode the database cannot relay, or an
//! entity-listener save on a connection outside any transaction. Nothing here talks to Kafka; the
//! relay ships committed rows.
//!
//! Users depend on the `outbox` facade; macro output reaches this crate only through
//! `outbox::__private`.

mod error;
mod event;
mod events;
#[cfg(feature = "inbox")]
pub mod inbox;
pub mod migration;
mod outbox;
#[cfg(feature = "schema")]
pub mod schema;
mod snapshot;
pub mod trace;
mod transaction;
mod write;

pub use error::Error;
pub use event::{DomainEvent, OutboxEvent};
pub use events::{Declares, Events};
pub use outbox::{Outbox, OutboxTable, WriteMode};
pub use snapshot::{AggregateRoot, Change, write_snapshot};
pub use transaction::require_transaction;
pub use write::write_events;

#[doc(hidden)]
pub mod __private;
