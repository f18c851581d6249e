use outbox::{DomainEvent, Events, emits};
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
}

#[emits(LineAdded)]
fn add_line(events: &mut Events, order_id: u64) {
    events.record(LineAdded { order_id });
}

#[emits(OrderPlaced)]
async fn place_order(txn: &DatabaseTransaction, events: &mut Events) -> Result<(), outbox::Error> {
    let _ = txn;
    events.record(OrderPlaced { order_id: 1 });
    add_line(events, 1);
    Ok(())
}

fn main() {}
