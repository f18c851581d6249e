#![deny(warnings)]

use outbox::{DomainEvent, Events, emits};
use sea_orm::{DatabaseTransaction, DbErr};
use serde::Serialize;

#[derive(Serialize, DomainEvent)]
#[domain_event(aggregate = "Order")]
pub struct OrderPlaced {
    #[domain_event(aggregate_id)]
    pub order_id: u64,
}

#[derive(Serialize, DomainEvent)]
#[domain_event(aggregate = "Order")]
pub enum OrderEvent {
    LineAdded {
        #[domain_event(aggregate_id)]
        order_id: u64,
        sku: String,
    },
}

#[derive(Debug)]
pub enum AppError {
    Outbox(outbox::Error),
    Db(DbErr),
}

impl From<outbox::Error> for AppError {
    fn from(e: outbox::Error) -> Self {
        AppError::Outbox(e)
    }
}

impl From<DbErr> for AppError {
    fn from(e: DbErr) -> Self {
        AppError::Db(e)
    }
}

pub struct PlaceOrder {
    pub order_id: u64,
    pub skus: Vec<String>,
}

/// Places an order. Attributes and docs stay on the function.
#[emits(OrderPlaced, OrderEvent)]
#[must_use = "the order is only placed when awaited"]
pub async fn place_order(
    txn: &DatabaseTransaction,
    events: &mut Events,
    cmd: PlaceOrder,
) -> Result<u64, AppError> {
    let _ = txn;
    events.record(OrderPlaced { order_id: cmd.order_id });
    for sku in cmd.skus {
        events.record(OrderEvent::LineAdded { order_id: cmd.order_id, sku });
    }
    Ok(cmd.order_id)
}

/// The collector may come first, the command may be an `impl Trait`, and the function generic.
#[emits(OrderPlaced)]
async fn place_generic<T: Into<u64>>(
    events: &mut outbox::Events,
    id: impl Into<u64>,
    txn: &sea_orm::DatabaseTransaction,
    extra: T,
) -> Result<(), AppError> {
    let _ = txn;
    events.record(OrderPlaced { order_id: id.into() + extra.into() });
    Ok(())
}

/// Callers don't pass the collector, and the future is `Send` (for axum handlers and spawn).
async fn handler(txn: &DatabaseTransaction) -> Result<u64, AppError> {
    place_generic(1u32, txn, 2u8).await?;
    place_order(txn, PlaceOrder { order_id: 1, skus: vec!["a".into()] }).await
}

fn assert_send<T: Send>(_: &T) {}

fn _send(txn: &DatabaseTransaction) {
    assert_send(&handler(txn));
}

fn main() {
    let _ = _send;
}
