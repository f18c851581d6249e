//! # outbox: the transactional outbox for Rust services, from SeaORM to Kafka
//!
//! A service writes its business rows and its events **in one database transaction**; a relay
//! ships the committed events to Kafka, at least once and in order per aggregate, in the message
//! format of Debezium's Outbox Event Router.
//!
//! This facade is the one dependency to add. It re-exports the runtime ([`outbox_core`]), the
//! macros, and, with the `relay` feature, the relay library as [`relay`].
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
//! ## Every service shape
//!
//! The connection parameter decides the transaction the events join: a `&DatabaseTransaction`
//! as it is; a `&DbConn` (SeaORM's example services) or a generic `C: TransactionTrait` through
//! a transaction that `#[emits]` begins (a SAVEPOINT when `C` is a transaction) and commits after
//! the events; a generic `C: ConnectionTrait` only inside the caller's transaction, checked before
//! the body runs. Helpers record into their caller's collector.
//!
//! ```no_run
//! use outbox::{Declares, DomainEvent, Events, emits};
//! use sea_orm::{ConnectionTrait, DbConn, DatabaseTransaction, TransactionTrait};
//! # #[derive(serde::Serialize, DomainEvent)]
//! # #[domain_event(aggregate = "Post")]
//! # struct PostCreated { #[domain_event(aggregate_id)] id: u64 }
//! # #[derive(serde::Serialize, DomainEvent)]
//! # #[domain_event(aggregate = "Post")]
//! # struct PostTagged { #[domain_event(aggregate_id)] id: u64, tag: String }
//! # type AppError = outbox::Error;
//!
//! pub struct Mutation;
//!
//! impl Mutation {
//!     /// `db` is, in the body, the transaction `#[emits]` began on it.
//!     #[emits(PostCreated, PostTagged)]
//!     pub async fn create_post(db: &DbConn, events: &mut Events, id: u64) -> Result<u64, AppError> {
//!         // ... insert the post on `db` ...
//!         events.record(PostCreated { id });
//!         tag(events, id, "new");
//!         Ok(id)
//!     }
//! }
//!
//! /// A pool (BEGIN ... COMMIT) or a transaction (SAVEPOINT ... RELEASE).
//! #[emits(PostCreated)]
//! async fn create_anywhere<C>(db: &C, events: &mut Events, id: u64) -> Result<(), AppError>
//! where
//!     C: ConnectionTrait + TransactionTrait,
//! {
//!     events.record(PostCreated { id });
//!     Ok(())
//! }
//!
//! /// A helper: no connection, records into the caller's `events`, whose
//! /// `#[emits(...)]` must list `PostTagged` too.
//! #[emits(PostTagged)]
//! fn tag(events: &mut Events, id: u64, tag: &str) {
//!     events.record(PostTagged { id, tag: tag.to_owned() });
//! }
//!
//! /// The same bound, written out.
//! fn tag_all<D, I>(events: &mut Events<D>, id: u64, tags: &[&str])
//! where
//!     D: Declares<PostTagged, I>,
//! {
//!     for t in tags {
//!         events.record(PostTagged { id, tag: (*t).to_owned() });
//!     }
//! }
//!
//! /// A `&self` method, called from `db.transaction_async(async |txn| blog.publish(txn, 1).await)`.
//! struct Blog;
//! impl Blog {
//!     #[emits(PostCreated, PostTagged)]
//!     async fn publish(&self, txn: &DatabaseTransaction, events: &mut Events, id: u64) -> Result<(), AppError> {
//!         events.record(PostCreated { id });
//!         tag_all(events, id, &["a", "b"]);
//!         Ok(())
//!     }
//! }
//! ```
//!
//! ## The whole path
//!
//! 1. Create the table with [`migration::CreateOutboxTable`] (or [`migration::create_table`]),
//!    and write events with `#[emits]` or the entity listener, as above.
//! 2. Run the relay: the `outbox-relay` binary (crate `outbox-relay`), or in-process with the
//!    `relay` feature. It tails PostgreSQL's log (or polls PostgreSQL, MariaDB or SQLite) and
//!    ships each committed event to topic `outbox.event.<aggregatetype>`, keyed by the aggregate
//!    id, with the payload as value and the event id in header `id`, as Debezium's Outbox Event
//!    Router does.
//! 3. Consume idempotently with the `inbox` feature (`outbox::inbox`): each message is handled
//!    in one database transaction that first records its event id.
//! 4. Guard the payloads' contract with the `schema` feature (`outbox::schema`): export each
//!    event's JSON Schema per version, and fail a test when a change breaks an exported version.
//!
//! The macros:
//! - [`derive@DomainEvent`]: `#[domain_event(aggregate = "...", event_type = "...", version = N)]`
//!   on the type (or `event_type`/`version` on enum variants), and
//!   `#[domain_event(aggregate_id)]` on the field that becomes the Kafka key.
//! - [`emits`]: `#[emits(A, B, ..., autocommit, outbox = <&Outbox>, txn = <param>)]` on an
//!   `async fn` that takes the connection and an `events: &mut Events` collector, or on a helper
//!   that takes only `events`.
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
//!   SeaORM runs no hooks for `insert_many`, `update_many` and `delete_many`: no snapshot is
//!   written for them: save each model through its `ActiveModel`, or call [`write_snapshot`].
//! - [`WriteMode::RemoveAfterInsert`] needs a database whose log the relay tails (PostgreSQL's
//!   WAL, MySQL/MariaDB's binlog), [`WriteMode::LogicalMessage`] needs PostgreSQL; elsewhere the
//!   write is refused with [`Error::UnsupportedMode`].
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
