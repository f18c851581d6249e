#![deny(warnings)]

//! Declared event types may name the function's generics, the impl's generics, and `Self`.

use std::marker::PhantomData;

use outbox::{DomainEvent, Events, emits};
use sea_orm::DatabaseTransaction;
use serde::Serialize;

#[derive(Serialize, DomainEvent)]
#[domain_event(aggregate = "Doc")]
struct Imported<S> {
    #[domain_event(aggregate_id)]
    id: u64,
    source: S,
}

#[emits(Imported<S>)]
async fn import<S: Serialize + Send>(txn: &DatabaseTransaction, events: &mut Events, source: S) -> Result<(), outbox::Error> {
    let _ = txn;
    events.record(Imported { id: 1, source });
    Ok(())
}

#[derive(Clone, Serialize)]
struct Draft {
    title: String,
}

impl Draft {
    #[emits(Imported<Self>)]
    async fn save(&self, txn: &DatabaseTransaction, events: &mut Events) -> Result<(), outbox::Error> {
        let _ = txn;
        events.record(Imported { id: 2, source: self.clone() });
        Ok(())
    }
}

struct Importer<T>(PhantomData<T>);

impl<T: Serialize + Send + Sync + Default> Importer<T> {
    #[emits(Imported<T>, Imported<Vec<T>>)]
    async fn run(&self, txn: &DatabaseTransaction, events: &mut Events) -> Result<(), outbox::Error> {
        let _ = txn;
        events.record(Imported { id: 3, source: T::default() });
        events.record(Imported { id: 3, source: vec![T::default()] });
        Ok(())
    }
}

async fn all(txn: &DatabaseTransaction) -> Result<(), outbox::Error> {
    import(txn, 5u8).await?;
    Draft { title: String::new() }.save(txn).await?;
    Importer::<u32>(PhantomData).run(txn).await
}

fn main() {
    let _ = all;
    let _ = Draft { title: String::new() }.title;
}
