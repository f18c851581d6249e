use outbox::DomainEvent;
use serde::Serialize;

#[derive(Serialize, DomainEvent)]
#[domain_event(aggregate = "Order", event_type = "OrderChanged")]
enum OrderEvent {
    Placed {
        #[domain_event(aggregate_id)]
        order_id: u64,
    },
}

fn main() {}
