use outbox::{DomainEvent, Events, emits};
use serde::Serialize;

#[derive(Serialize, DomainEvent)]
#[domain_event(aggregate = "Order")]
struct OrderPlaced {
    #[domain_event(aggregate_id)]
    order_id: u64,
}

#[emits(OrderPlaced, txn = name)]
async fn place_order(name: &str, events: &mut Events) -> Result<(), outbox::Error> {
    let _ = name;
    events.record(OrderPlaced { order_id: 1 });
    Ok(())
}

fn main() {}
