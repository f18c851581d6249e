//! # outbox: the transactional outbox for Rust services, from SeaORM to Kafka
//!
//! A service writes its business rows and its events **in one database transaction**; a relay
//! ships the committed events to Kafka, at least once and in order per aggregate, in the message
//! format of Debezium's Outbox Event Router.
//!
//! This facade is the one dependency to add. It re-exports the runtime ([`outbox_core`]), the
//! macros, and, with the `relay` feature, the relay library as [`relay`](crate::relay).
//! With the `inbox` feature, `outbox::inbox` makes Kafka consumers idempotent: each message is
//! handled in one database transaction that first records its event id (see its module docs).
//!
//! ```no_run
//! use outbox::{DomainEvent, Events, emits};
//! use sea_orm::{DatabaseConnection, DatabaseTransaction, TransactionTrait};
//! use serde::Serialize;
//! use uuid::Uuid;
//!
//! /// `type` = `OrderCreated`, topic `outbox.event.Order`, key = `order_id`.
//! #[derive(Serialize, DomainEvent)]
//! #[domain_event(aggregate = "Order", version = 1)]
//! struct OrderCreated {
//!     #[domain_event(aggregate_id)]
//!     order_id: Uuid,
//!     customer_id: i64,
//! }
//!
//! /// One event type per variant: `Shipped`, `Cancelled`.
//! #[derive(Serialize, DomainEvent)]
//! #[domain_event(aggregate = "Order")]
//! enum OrderEvent {
//!     Shipped { #[domain_event(aggregate_id)] id: Uuid, carrier: String },
//!     Cancelled { #[domain_event(aggregate_id)] id: Uuid },
//! }
//!
//! #[derive(Debug)]
//! enum AppError { Db(sea_orm::DbErr), Outbox(outbox::Error) }
//! impl From<sea_orm::DbErr> for AppError { fn from(e: sea_orm::DbErr) -> Self { AppError::Db(e) } }
//! impl From<outbox::Error> for AppError { fn from(e: outbox::Error) -> Self { AppError::Outbox(e) } }
//!
//! /// The events recorded here are inserted into `txn`, as one statement, when the body
//! /// returns `Ok`; callers don't pass `events`.
//! #[emits(OrderCreated, OrderEvent)]
//! async fn place_order(
//!     txn: &DatabaseTransaction,
//!     events: &mut Events,
//!     customer_id: i64,
//! ) -> Result<Uuid, AppError> {
//!     let order_id = Uuid::now_v7();
//!     // ... insert the order's rows on `txn` ...
//!     events.record(OrderCreated { order_id, customer_id });
//!     Ok(order_id)
//! }
//!
//! async fn handler(db: &DatabaseConnection) -> Result<(), AppError> {
//!     let txn = db.begin().await?;
//!     place_order(&txn, 42).await?;
//!     txn.commit().await?; // the order and its event commit together
//!     Ok(())
//! }
//! ```
//!
//! The macros:
//! - [`derive@DomainEvent`]: `#[domain_event(aggregate = "...", event_type = "...", version = N)]`
//!   on the type (or `event_type`/`version` on enum variants), and
//!   `#[domain_event(aggregate_id)]` on the field that becomes the Kafka key.
//! - [`emits`]: `#[emits(A, B, ..., autocommit, outbox = <&Outbox>, txn = <param>)]` on an
//!   `async fn` that takes the transaction and an `events: &mut Events` collector.
//! - [`derive@AggregateRoot`]: on a SeaORM `Model`, with
//!   `#[aggregate_root(aggregate = "...", children(name = child::Entity, ...))]` and
//!   `#[aggregate_root(id)]`; its `ActiveModelBehavior` hooks call [`require_transaction`] (in
//!   `before_save`) and [`write_snapshot`] (in `after_save` and `before_delete`).
//!
//! Every write is atomic with the business rows or refused before anything is written:
//! - The entity listener needs the save to run in a transaction (`model.insert(&txn)`). On a plain
//!   `DatabaseConnection`, SeaORM would autocommit the row and the snapshot separately, so the
//!   save is refused with [`Error::NotInTransaction`]. SeaORM's hooks accept any connection, so
//!   this is checked at run time, by asking the database; `#[emits]` checks it at compile time.
//! - [`WriteMode::RemoveAfterInsert`] and [`WriteMode::LogicalMessage`] need PostgreSQL, whose
//!   log the relay tails; elsewhere the write is refused with [`Error::UnsupportedMode`].
//! - A call with more events than one statement can carry (past 65,535 bind parameters, or
//!   PostgreSQL's 1,664 target-list entries) is split into statements in recording order, in the
//!   same transaction.

pub use outbox_core::*;
pub use outbox_derive::{AggregateRoot, DomainEvent, emits};

#[cfg(feature = "relay")]
pub use outbox_relay as relay;

#[doc(hidden)]
pub mod __private {
    pub use outbox_core::__private::*;
}
