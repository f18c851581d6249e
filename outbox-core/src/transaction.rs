//! Whether a connection is inside a transaction, asked of the database itself.
//!
//! SeaORM's `ConnectionTrait` does not tell a transaction from a pool, and its
//! `ActiveModelBehavior` hooks receive any `C: ConnectionTrait` (`model.insert(&db)` on a plain
//! `DatabaseConnection` is legal), so no type bound can refuse the autocommit case at compile time
//! on that path. Each backend is asked instead, by a probe that is harmless inside a transaction
//! and tells the two cases apart by a documented error code, never by timing:
//!
//! - PostgreSQL: `SAVEPOINT` is refused outside a transaction block (SQLSTATE 25P01);
//! - MySQL/MariaDB: a savepoint ends with the autocommitted statement that made it, so
//!   `RELEASE SAVEPOINT` of it fails with error 1305 (`SAVEPOINT ... does not exist`);
//! - SQLite: `BEGIN` fails inside a transaction ("cannot start a transaction within a
//!   transaction"); outside one it succeeds and is rolled back at once, in the same call, so on
//!   the same pooled connection.

use sea_orm::{ConnectionTrait, DbBackend, DbErr};

use crate::Error;
use crate::error::backend_name;

const SAVEPOINT: &str = "outbox_in_transaction";

/// Refuses, with [`Error::NotInTransaction`], a connection that is not inside a transaction.
///
/// Call it from an aggregate root's `ActiveModelBehavior::before_save`, so that a save on a plain
/// `DatabaseConnection` is refused **before** its business row is written (by `after_save` that
/// row would already have autocommitted). [`write_snapshot`](crate::write_snapshot) makes the
/// same check before it writes anything.
///
/// Costs one round trip (two on MySQL/MariaDB).
pub async fn require_transaction<C>(conn: &C) -> Result<(), Error>
where
    C: ConnectionTrait + ?Sized,
{
    ensure_in_transaction(
        conn,
        "the entity listener's save".to_owned(),
        "the business row would commit on its own, and a failure before its snapshot is written \
         would lose the event",
    )
    .await
}

/// Refuses a connection outside a transaction, naming the `operation` and its `consequence`.
pub(crate) async fn ensure_in_transaction<C>(
    conn: &C,
    operation: String,
    consequence: &'static str,
) -> Result<(), Error>
where
    C: ConnectionTrait + ?Sized,
{
    let backend = conn.get_database_backend();
    let in_transaction = in_transaction(conn)
        .await
        .map_err(|source| Error::Database {
            target: "the outbox (while checking for a transaction)".into(),
            source,
        })?;
    if in_transaction {
        Ok(())
    } else {
        Err(Error::NotInTransaction {
            operation,
            backend: backend_name(backend),
            consequence,
        })
    }
}

/// Whether `conn` is inside a transaction. Errors other than the probe's own answer are returned.
async fn in_transaction<C>(conn: &C) -> Result<bool, DbErr>
where
    C: ConnectionTrait + ?Sized,
{
    match conn.get_database_backend() {
        DbBackend::Postgres => {
            let probe = format!("SAVEPOINT {SAVEPOINT}; RELEASE SAVEPOINT {SAVEPOINT}");
            match conn.execute_unprepared(&probe).await {
                Ok(_) => Ok(true),
                Err(e) if sqlstate(&e).as_deref() == Some("25P01") => Ok(false),
                Err(e) => Err(e),
            }
        }
        DbBackend::MySql => {
            conn.execute_unprepared(&format!("SAVEPOINT {SAVEPOINT}"))
                .await?;
            match conn
                .execute_unprepared(&format!("RELEASE SAVEPOINT {SAVEPOINT}"))
                .await
            {
                Ok(_) => Ok(true),
                Err(e) if mysql_error_number(&e) == Some(ER_SP_DOES_NOT_EXIST) => Ok(false),
                Err(e) => Err(e),
            }
        }
        _ => match conn.execute_unprepared("BEGIN; ROLLBACK").await {
            Ok(_) => Ok(false),
            Err(e) if e.to_string().contains(SQLITE_NESTED_BEGIN) => Ok(true),
            Err(e) => Err(e),
        },
    }
}

/// MySQL's and MariaDB's `ER_SP_DOES_NOT_EXIST`: `SAVEPOINT ... does not exist`.
const ER_SP_DOES_NOT_EXIST: u16 = 1305;

/// SQLite's message for `BEGIN` inside a transaction. SQLite's messages are not translated, and
/// its error code for it is the generic `SQLITE_ERROR`, so the message is what identifies it.
const SQLITE_NESTED_BEGIN: &str = "cannot start a transaction within a transaction";

// Without a driver feature there is no sqlx, and no connection that could produce its errors.
#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
fn database_error(e: &DbErr) -> Option<&(dyn sea_orm::sqlx::error::DatabaseError + 'static)> {
    match e {
        DbErr::Exec(sea_orm::RuntimeErr::SqlxError(e))
        | DbErr::Query(sea_orm::RuntimeErr::SqlxError(e)) => e.as_database_error(),
        _ => None,
    }
}

#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
fn sqlstate(e: &DbErr) -> Option<String> {
    database_error(e).and_then(|d| d.code().map(|c| c.into_owned()))
}

#[cfg(not(any(feature = "postgres", feature = "mysql", feature = "sqlite")))]
fn sqlstate(_: &DbErr) -> Option<String> {
    None
}

#[cfg(feature = "mysql")]
fn mysql_error_number(e: &DbErr) -> Option<u16> {
    database_error(e)
        .and_then(|d| d.try_downcast_ref::<sea_orm::sqlx::mysql::MySqlDatabaseError>())
        .map(|d| d.number())
}

#[cfg(not(feature = "mysql"))]
fn mysql_error_number(_: &DbErr) -> Option<u16> {
    None
}
