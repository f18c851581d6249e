#![deny(warnings)]

use outbox::{DomainEvent, Events, emits};
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbErr, Statement};
use serde::Serialize;

#[derive(Serialize, DomainEvent)]
#[domain_event(aggregate = "Order")]
struct OrderPlaced {
    #[domain_event(aggregate_id)]
    order_id: u64,
}

#[derive(Debug)]
enum AppError {
    Outbox(outbox::Error),
    Db(DbErr),
    Invalid(&'static str),
}

impl From<outbox::Error> for AppError {
    fn from(e: outbox::Error) -> Self {
        AppError::Outbox(e)
    }
}

impl From<DbErr> for AppError {
    fn from(e: DbErr) -> Self {
        AppError::Db(e)
    }
}

fn parse(raw: &str) -> Result<u64, std::num::ParseIntError> {
    raw.parse()
}

#[emits(OrderPlaced)]
async fn place_order(txn: &DatabaseTransaction, events: &mut Events, raw: &str) -> Result<Option<u64>, AppError> {
    // `?` converts through the function's own error type.
    let backend = txn.get_database_backend();
    txn.execute_raw(Statement::from_string(backend, "SELECT 1")).await?;
    let Ok(order_id) = parse(raw) else {
        return Err(AppError::Invalid("not a number"));
    };
    if order_id == 0 {
        // An early `return` still goes through the outbox write.
        return Ok(None);
    }
    events.record(OrderPlaced { order_id });
    Ok(Some(order_id))
}

/// The error type can be `outbox::Error` itself.
#[emits(OrderPlaced)]
async fn plain(txn: &DatabaseTransaction, events: &mut Events) -> Result<(), outbox::Error> {
    let _ = txn;
    events.record(OrderPlaced { order_id: 1 });
    Ok(())
}

/// An opaque success type cannot be named; the macro lets it be inferred.
#[emits(OrderPlaced)]
async fn opaque(txn: &DatabaseTransaction, events: &mut Events) -> Result<impl std::fmt::Debug, AppError> {
    let _ = txn;
    events.record(OrderPlaced { order_id: 2 });
    Ok("placed")
}

async fn caller(txn: &DatabaseTransaction) -> Result<Option<u64>, AppError> {
    plain(txn).await?;
    let _ = opaque(txn).await?;
    place_order(txn, "7").await
}

fn main() {
    let _ = caller;
    match AppError::Invalid("") {
        AppError::Outbox(_) | AppError::Db(_) | AppError::Invalid(_) => {}
    }
}
