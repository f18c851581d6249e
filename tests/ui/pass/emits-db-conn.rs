#![deny(warnings)]

//! SeaORM's example services: associated functions of a unit struct on `&DbConn`. #[emits]
//! begins the transaction the body and the events share; the body sees it as `db`.

use outbox::{DomainEvent, Events, emits};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbConn, DbErr, Statement};
use serde::Serialize;

#[derive(Serialize, DomainEvent)]
#[domain_event(aggregate = "Post")]
struct PostCreated {
    #[domain_event(aggregate_id)]
    id: u64,
}

#[derive(Debug)]
enum AppError {
    Db(DbErr),
    Outbox(outbox::Error),
}

impl From<DbErr> for AppError {
    fn from(e: DbErr) -> Self {
        AppError::Db(e)
    }
}

impl From<outbox::Error> for AppError {
    fn from(e: outbox::Error) -> Self {
        AppError::Outbox(e)
    }
}

pub struct Mutation;

impl Mutation {
    #[emits(PostCreated)]
    pub async fn create_post(db: &DbConn, events: &mut Events, id: u64) -> Result<u64, AppError> {
        let backend = db.get_database_backend();
        db.execute_raw(Statement::from_string(backend, "INSERT INTO posts DEFAULT VALUES")).await?;
        events.record(PostCreated { id });
        Ok(id)
    }

    /// `autocommit` is still accepted, and changes nothing on a connection.
    #[emits(PostCreated, autocommit)]
    pub async fn create_draft(db: &DatabaseConnection, events: &mut Events) -> Result<(), AppError> {
        let _ = db;
        events.record(PostCreated { id: 0 });
        Ok(())
    }
}

async fn handler(db: &DatabaseConnection) -> Result<u64, AppError> {
    Mutation::create_draft(db).await?;
    Mutation::create_post(db, 7).await
}

fn main() {
    let _ = handler;
    match AppError::Db(DbErr::Custom(String::new())) {
        AppError::Db(_) | AppError::Outbox(_) => {}
    }
}
