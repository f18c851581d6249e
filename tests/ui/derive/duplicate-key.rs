use outbox::DomainEvent;
use serde::Serialize;

#[derive(Serialize, DomainEvent)]
#[domain_event(aggregate = "Order")]
#[domain_event(aggregate = "Invoice")]
struct OrderPlaced {
    #[domain_event(aggregate_id)]
    order_id: u64,
}

fn main() {}
