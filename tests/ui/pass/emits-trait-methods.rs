#![deny(warnings)]

//! Trait methods: a native `async fn` in a trait, and an `#[async_trait]` impl (rewritten before
//! #[emits] sees it). The trait declares the method without the collector.

use outbox::{DomainEvent, Events, emits};
use sea_orm::DatabaseTransaction;
use sea_orm::entity::prelude::async_trait::async_trait;
use serde::Serialize;

#[derive(Serialize, DomainEvent)]
#[domain_event(aggregate = "Post")]
struct PostCreated {
    #[domain_event(aggregate_id)]
    id: u64,
}

trait Native {
    async fn create(&self, txn: &DatabaseTransaction, id: u64) -> Result<u64, outbox::Error>;
}

#[async_trait]
trait Boxed {
    async fn create_boxed(&self, txn: &DatabaseTransaction, title: &str, id: u64) -> Result<u64, outbox::Error>;
}

struct Service;

impl Native for Service {
    #[emits(PostCreated)]
    async fn create(&self, txn: &DatabaseTransaction, events: &mut Events, id: u64) -> Result<u64, outbox::Error> {
        let _ = txn;
        events.record(PostCreated { id });
        Ok(id)
    }
}

#[async_trait]
impl Boxed for Service {
    #[emits(PostCreated)]
    async fn create_boxed(&self, txn: &DatabaseTransaction, events: &mut Events, title: &str, id: u64) -> Result<u64, outbox::Error> {
        let _ = (txn, title);
        events.record(PostCreated { id });
        Ok(id)
    }
}

/// The boxed future is `Send`, as `#[async_trait]` promises.
fn assert_send<T: Send>(_: T) {}

async fn both(txn: &DatabaseTransaction) -> Result<u64, outbox::Error> {
    let service = Service;
    service.create(txn, 1).await?;
    service.create_boxed(txn, "t", 2).await
}

fn main() {
    let _ = both;
    let _ = assert_send::<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>;
}
