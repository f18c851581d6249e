use outbox::DomainEvent;
use serde::Serialize;

#[derive(Serialize, DomainEvent)]
#[domain_event(aggregate = "Order Line")]
struct LineAdded {
    #[domain_event(aggregate_id)]
    line_id: u64,
}

fn main() {}
