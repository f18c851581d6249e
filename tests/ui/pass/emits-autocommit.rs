#![deny(warnings, unused_qualifications)]

use outbox::{DomainEvent, Events, emits};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbConn, DbErr, Statement};
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

/// The macro begins the transaction; inside, `db` is that transaction.
#[emits(OrderPlaced, autocommit)]
async fn place_order(db: &DatabaseConnection, events: &mut Events, order_id: u64) -> Result<u64, AppError> {
    let backend = db.get_database_backend();
    db.execute_raw(Statement::from_string(backend, "INSERT INTO orders DEFAULT VALUES")).await?;
    events.record(OrderPlaced { order_id });
    Ok(order_id)
}

/// `DbConn` and a parameter named explicitly.
#[emits(OrderPlaced, autocommit, txn = conn)]
async fn place_other(events: &mut Events, conn: &DbConn) -> Result<(), AppError> {
    let _ = conn;
    events.record(OrderPlaced { order_id: 9 });
    Ok(())
}

async fn caller(db: &DatabaseConnection) -> Result<u64, AppError> {
    place_other(db).await?;
    place_order(db, 1).await
}

fn assert_send<T: Send>(_: &T) {}

fn _send(db: &DatabaseConnection) {
    assert_send(&caller(db));
}

fn main() {
    let _ = _send;
    match AppError::Db(DbErr::Custom(String::new())) {
        AppError::Outbox(_) | AppError::Db(_) => {}
    }
}
