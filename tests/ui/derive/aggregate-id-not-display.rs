use outbox::DomainEvent;
use serde::Serialize;

#[derive(Serialize)]
struct OrderId {
    value: u64,
}

#[derive(Serialize, DomainEvent)]
#[domain_event(aggregate = "Order")]
struct OrderPlaced {
    #[domain_event(aggregate_id)]
    order_id: OrderId,
}

fn main() {}
