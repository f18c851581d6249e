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

struct OrderService {
    next_id: u64,
}

impl OrderService {
    /// A `&self` method: the body uses both `self` and the transaction.
    #[emits(OrderPlaced)]
    pub async fn place(&self, txn: &DatabaseTransaction, events: &mut Events) -> Result<u64, AppError> {
        let backend = txn.get_database_backend();
        txn.execute_raw(Statement::from_string(backend, "SELECT 1")).await?;
        events.record(OrderPlaced { order_id: self.next_id });
        Ok(self.next_id)
    }

    /// A `&mut self` method with a `&mut` transaction.
    #[emits(OrderPlaced)]
    async fn place_next(&mut self, txn: &mut DatabaseTransaction, events: &mut Events) -> Result<(), AppError> {
        self.next_id += 1;
        let _ = txn.get_database_backend();
        events.record(OrderPlaced { order_id: self.next_id });
        Ok(())
    }
}

async fn caller(service: &mut OrderService, txn: &mut DatabaseTransaction) -> Result<u64, AppError> {
    service.place_next(txn).await?;
    service.place(txn).await
}

fn main() {
    let service = OrderService { next_id: 1 };
    let _ = service.next_id;
    let _ = caller;
    match AppError::Db(DbErr::Custom(String::new())) {
        AppError::Outbox(_) | AppError::Db(_) => {}
    }
}
