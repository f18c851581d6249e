// One mistake, one error: the misspelled key is reported, and the function still has the
// signature it will have once fixed (no collector parameter), so its callers add no errors.
use outbox::{DomainEvent, Events, emits};
use sea_orm::DatabaseTransaction;
use serde::Serialize;

#[derive(Serialize, DomainEvent)]
#[domain_event(aggregate = "Order")]
struct OrderPlaced {
    #[domain_event(aggregate_id)]
    order_id: u64,
}

#[emits(OrderPlaced, autocomit)]
async fn place_order(txn: &DatabaseTransaction, events: &mut Events, order_id: u64) -> Result<u64, outbox::Error> {
    let _ = txn;
    events.record(OrderPlaced { order_id });
    Ok(order_id)
}

async fn caller(txn: &DatabaseTransaction) -> Result<u64, outbox::Error> {
    place_order(txn, 7).await
}

fn main() {
    let _ = caller;
}
