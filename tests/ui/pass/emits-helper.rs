#![deny(warnings)]

//! A helper records into its caller's collector, in two forms: `#[emits(E)]` on a function that
//! takes `events: &mut Events` and no connection, or the bounds written out.

use outbox::{Declares, DomainEvent, Events, emits};
use sea_orm::DatabaseTransaction;
use serde::Serialize;

#[derive(Serialize, DomainEvent)]
#[domain_event(aggregate = "Order")]
struct OrderPlaced {
    #[domain_event(aggregate_id)]
    order_id: u64,
}

#[derive(Serialize, DomainEvent)]
#[domain_event(aggregate = "Order")]
struct LineAdded {
    #[domain_event(aggregate_id)]
    order_id: u64,
    sku: String,
}

#[emits(LineAdded)]
fn add_line(events: &mut Events, order_id: u64, sku: &str) {
    events.record(LineAdded { order_id, sku: sku.to_owned() });
}

/// An async helper with the bounds written out.
async fn add_lines<D, I>(events: &mut Events<D>, order_id: u64, skus: &[&str])
where
    D: Declares<LineAdded, I>,
{
    for sku in skus {
        events.record(LineAdded { order_id, sku: (*sku).to_owned() });
    }
}

#[emits(OrderPlaced, LineAdded)]
async fn place_order(txn: &DatabaseTransaction, events: &mut Events, order_id: u64) -> Result<(), outbox::Error> {
    let _ = txn;
    events.record(OrderPlaced { order_id });
    add_line(events, order_id, "apple");
    add_lines(events, order_id, &["pear", "plum"]).await;
    Ok(())
}

fn main() {
    let _ = place_order;
}
