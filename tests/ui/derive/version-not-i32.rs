use outbox::DomainEvent;
use serde::Serialize;

#[derive(Serialize, DomainEvent)]
#[domain_event(aggregate = "Order", version = 3000000000)]
struct OrderPlaced {
    #[domain_event(aggregate_id)]
    order_id: u64,
}

fn main() {}
