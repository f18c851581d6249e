#![deny(warnings)]

//! A generic connection: with `TransactionTrait`, #[emits] begins (a SAVEPOINT when the caller
//! passed a transaction); with only `ConnectionTrait`, a connection outside a transaction is
//! refused at run time, before the body.

use outbox::{DomainEvent, Events, emits};
use sea_orm::{ConnectionTrait, DatabaseConnection, TransactionTrait};
use serde::Serialize;

#[derive(Serialize, DomainEvent)]
#[domain_event(aggregate = "Post")]
struct PostCreated {
    #[domain_event(aggregate_id)]
    id: u64,
}

#[emits(PostCreated)]
async fn anywhere<C: ConnectionTrait + TransactionTrait>(db: &C, events: &mut Events) -> Result<(), outbox::Error> {
    let _ = db.get_database_backend();
    events.record(PostCreated { id: 1 });
    Ok(())
}

#[emits(PostCreated)]
async fn in_callers_transaction<C>(db: &C, events: &mut Events) -> Result<(), outbox::Error>
where
    C: ConnectionTrait,
{
    let _ = db.get_database_backend();
    events.record(PostCreated { id: 2 });
    Ok(())
}

#[emits(PostCreated)]
async fn impl_trait(db: &(impl ConnectionTrait + TransactionTrait), events: &mut Events) -> Result<(), outbox::Error> {
    let _ = db.get_database_backend();
    events.record(PostCreated { id: 3 });
    Ok(())
}

/// A bound the macro cannot see through is named with `txn = ...`.
trait Db: ConnectionTrait + TransactionTrait {}
impl Db for DatabaseConnection {}

#[emits(PostCreated, txn = db)]
async fn through_own_trait<C: Db>(db: &C, events: &mut Events) -> Result<(), outbox::Error> {
    let _ = db.get_database_backend();
    events.record(PostCreated { id: 4 });
    Ok(())
}

async fn callers(db: &DatabaseConnection) -> Result<(), outbox::Error> {
    anywhere(db).await?;
    let txn = db.begin().await.map_err(|source| outbox::Error::Database { target: "BEGIN".into(), source })?;
    anywhere(&txn).await?;
    in_callers_transaction(&txn).await?;
    impl_trait(&txn).await?;
    through_own_trait(db).await
}

fn main() {
    let _ = callers;
}
