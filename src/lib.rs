//! # outbox: the transactional outbox for Rust services, from SeaORM to Kafka
//!
//! A service writes its business rows and its events **in one database transaction**; a relay
//! ships the committed events to Kafka, at least once and in order per aggregate, in the message
//! format of Debezium's Outbox Event Router.
//!
//! This facade is the one dependency to add. It re-exports the runtime ([`outbox_core`]), the
//! macros (`#[derive(DomainEvent)]`, `#[derive(AggregateRoot)]`, `#[emits]`), and, with the
//! `relay` feature, the relay library.

pub use outbox_core::*;
pub use outbox_derive::{AggregateRoot, DomainEvent, emits};

#[cfg(feature = "relay")]
pub use outbox_relay as relay;

#[doc(hidden)]
pub mod __private {
    pub use outbox_core::__private::*;
}
