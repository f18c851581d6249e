#![deny(warnings)]

//! `db.transaction(|txn| Box::pin(async move { .. }))` and sea-orm 2's `transaction_async`,
//! calling `&self` #[emits] methods, one nested in another, in one transaction.

use outbox::{DomainEvent, Events, emits};
use sea_orm::{DatabaseConnection, DatabaseTransaction, TransactionTrait};
use serde::Serialize;

#[derive(Serialize, DomainEvent)]
#[domain_event(aggregate = "Post")]
struct PostCreated {
    #[domain_event(aggregate_id)]
    id: u64,
}

#[derive(Serialize, DomainEvent)]
#[domain_event(aggregate = "Post")]
struct PostTagged {
    #[domain_event(aggregate_id)]
    id: u64,
}

#[derive(Clone)]
struct Blog;

impl Blog {
    #[emits(PostCreated)]
    async fn publish(&self, txn: &DatabaseTransaction, events: &mut Events, id: u64) -> Result<u64, outbox::Error> {
        let _ = txn;
        events.record(PostCreated { id });
        Ok(id)
    }

    #[emits(PostTagged)]
    async fn publish_tagged(&self, txn: &DatabaseTransaction, events: &mut Events, id: u64) -> Result<u64, outbox::Error> {
        self.publish(txn, id).await?;
        events.record(PostTagged { id });
        Ok(id)
    }
}

async fn handlers(db: &DatabaseConnection, blog: &Blog) -> Result<(), sea_orm::TransactionError<outbox::Error>> {
    let owned = blog.clone();
    db.transaction(|txn| Box::pin(async move { owned.publish_tagged(txn, 1).await })).await?;
    db.transaction_async(async |txn| blog.publish_tagged(txn, 2).await).await?;
    Ok(())
}

fn main() {
    let _ = handlers;
}
