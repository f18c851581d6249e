use outbox::{DomainEvent, emits};
use serde::Serialize;

#[derive(Serialize, DomainEvent)]
#[domain_event(aggregate = "Order")]
struct OrderPlaced {
    #[domain_event(aggregate_id)]
    order_id: u64,
}

#[emits(OrderPlaced)]
struct PlaceOrder {
    order_id: u64,
}

fn main() {
    let _ = PlaceOrder { order_id: 1 }.order_id;
    let _ = OrderPlaced { order_id: 1 }.order_id;
}
