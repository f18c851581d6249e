#![deny(warnings)]

use std::sync::LazyLock;

use outbox::{DomainEvent, Events, Outbox, OutboxTable, WriteMode, emits};
use sea_orm::DatabaseTransaction;
use serde::Serialize;

#[derive(Serialize, DomainEvent)]
#[domain_event(aggregate = "Order")]
struct OrderPlaced {
    #[domain_event(aggregate_id)]
    order_id: u64,
}

static MY_OUTBOX: LazyLock<Outbox> =
    LazyLock::new(|| Outbox::new(OutboxTable::new("order_events").in_schema("orders")).with_mode(WriteMode::RemoveAfterInsert));

struct Service {
    outbox: Outbox,
}

#[emits(OrderPlaced, outbox = &MY_OUTBOX)]
async fn place_order(txn: &DatabaseTransaction, events: &mut Events) -> Result<(), outbox::Error> {
    let _ = txn;
    events.record(OrderPlaced { order_id: 1 });
    Ok(())
}

impl Service {
    /// The outbox expression may use `self`.
    #[emits(OrderPlaced, outbox = &self.outbox)]
    async fn place(&self, txn: &DatabaseTransaction, events: &mut Events) -> Result<(), outbox::Error> {
        let _ = txn;
        events.record(OrderPlaced { order_id: 2 });
        Ok(())
    }
}

async fn caller(service: &Service, txn: &DatabaseTransaction) -> Result<(), outbox::Error> {
    place_order(txn).await?;
    service.place(txn).await
}

fn main() {
    let _ = caller;
    let _ = Service { outbox: Outbox::default() }.outbox;
}
