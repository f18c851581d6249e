#![deny(warnings)]

/// The facade under another path, as after `outbox = { package = "outbox", ... }` renames.
mod facade {
    pub use ::outbox::*;
}

use facade::{AggregateRoot, DomainEvent, Events, emits};
use sea_orm::DatabaseTransaction;
use serde::Serialize;

#[derive(Serialize, DomainEvent)]
#[domain_event(aggregate = "Order", crate = "crate::facade")]
struct OrderPlaced {
    #[domain_event(aggregate_id)]
    order_id: u64,
}

#[derive(Serialize, AggregateRoot)]
#[aggregate_root(aggregate = "Order", crate = "crate::facade")]
struct OrderSnapshot {
    #[aggregate_root(id)]
    id: u64,
}

#[emits(OrderPlaced, crate = "crate::facade")]
async fn place_order(txn: &DatabaseTransaction, events: &mut Events) -> Result<(), facade::Error> {
    let _ = txn;
    events.record(OrderPlaced { order_id: 1 });
    Ok(())
}

fn main() {
    let _ = place_order;
    assert_eq!(OrderPlaced { order_id: 1 }.aggregate_id(), "1");
    assert_eq!(OrderSnapshot { id: 4 }.aggregate_id(), "4");
}
