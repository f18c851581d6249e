use outbox::{DomainEvent, Events, emits};
use serde::Serialize;

#[derive(Serialize, DomainEvent)]
#[domain_event(aggregate = "Order")]
struct OrderPlaced {
    #[domain_event(aggregate_id)]
    order_id: u64,
}

#[emits(OrderPlaced)]
async fn place_order(events: &mut Events, order_id: u64) -> Result<(), outbox::Error> {
    events.record(OrderPlaced { order_id });
    Ok(())
}

fn main() {}
