use outbox::{DomainEvent, Events, emits};
use sea_orm::DatabaseConnection;
use serde::Serialize;

#[derive(Serialize, DomainEvent)]
#[domain_event(aggregate = "Order")]
struct OrderPlaced {
    #[domain_event(aggregate_id)]
    order_id: u64,
}

#[emits(OrderPlaced)]
async fn place_order(db: &DatabaseConnection, events: &mut Events) -> Result<(), outbox::Error> {
    let _ = db;
    events.record(OrderPlaced { order_id: 1 });
    Ok(())
}

fn main() {}
