use outbox::DomainEvent;
use serde::Serialize;

#[derive(Serialize, DomainEvent)]
struct OrderPlaced {
    #[domain_event(aggregate_id)]
    order_id: u64,
}

fn main() {}
