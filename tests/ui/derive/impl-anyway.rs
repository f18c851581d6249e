// One mistake, one error: the misspelled key is reported, and `OrderPlaced` still implements
// `DomainEvent`, so the uses below add no errors of their own.
use outbox::{DomainEvent, Events, emits};
use sea_orm::DatabaseTransaction;
use serde::Serialize;

#[derive(Serialize, DomainEvent)]
#[domain_event(aggregate = "Order", verison = 2)]
struct OrderPlaced {
    #[domain_event(aggregate_id)]
    order_id: u64,
}

fn aggregate_of<E: DomainEvent>(event: &E) -> &'static str {
    event.aggregate_type()
}

#[emits(OrderPlaced)]
async fn place_order(txn: &DatabaseTransaction, events: &mut Events) -> Result<(), outbox::Error> {
    let _ = txn;
    events.record(OrderPlaced { order_id: 1 });
    Ok(())
}

fn main() {
    let _ = aggregate_of(&OrderPlaced { order_id: 1 });
    let _ = place_order;
}
