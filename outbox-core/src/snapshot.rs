//! The entity-listener path, SeaORM's analogue of a Hibernate entity listener: an aggregate-root
//! entity whose saves and deletes write a snapshot of the whole aggregate to the outbox, on the
//! connection that SeaORM hands to its `ActiveModelBehavior` hooks (the caller's transaction).
//!
//! Atomic or refused: SeaORM runs the hooks and the business statement on whatever connection
//! the caller passed, and on a plain `DatabaseConnection` each of them autocommits on its own, so
//! the save and its snapshot cannot be made atomic there. The listener refuses that case with
//! [`NotInTransaction`] instead: [`require_transaction`] in `before_save` refuses before the
//! business row is written, and [`write_snapshot`] refuses before it writes anything (in
//! `before_delete`, before the row is deleted). The check is made at run time, by asking the
//! database (see [`require_transaction`]), because the hooks are generic over any
//! `ConnectionTrait` and no type bound can tell a pool from a transaction there.
//!
//! [`NotInTransaction`]: crate::Error::NotInTransaction
//! [`require_transaction`]: crate::require_transaction

use std::future::Future;

use sea_orm::{ConnectionTrait, DbErr};

use crate::{Outbox, OutboxEvent};

/// What happened to the aggregate. The event type is the aggregate type followed by it, such as
/// `OrderCreated`, `OrderUpdated`, `OrderDeleted`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Created,
    Updated,
    Deleted,
}

impl Change {
    /// `Created` on insert, `Updated` otherwise: the `insert` flag of `after_save`.
    pub fn saved(insert: bool) -> Self {
        if insert {
            Change::Created
        } else {
            Change::Updated
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Change::Created => "Created",
            Change::Updated => "Updated",
            Change::Deleted => "Deleted",
        }
    }
}

/// A SeaORM model that is the root of an aggregate. Derive it with `#[derive(AggregateRoot)]`.
pub trait AggregateRoot: Sync {
    /// The aggregate type, such as `Order`.
    fn aggregate_type(&self) -> &'static str;
    /// The aggregate id: the Kafka key.
    fn aggregate_id(&self) -> String;
    /// The snapshot: the root model's JSON, with each declared child collection loaded through
    /// `db` and placed under its name.
    fn snapshot<'a, C>(
        &'a self,
        db: &'a C,
    ) -> impl Future<Output = Result<serde_json::Value, DbErr>> + Send + 'a
    where
        C: ConnectionTrait;
}

/// Writes a snapshot event of `root` on `db`, into the process-wide [`Outbox`]. Call it from the
/// entity's `ActiveModelBehavior::after_save` (with [`Change::saved`]) and from `before_delete`
/// (children are still there to load) with [`Change::Deleted`]; and call
/// [`require_transaction`](crate::require_transaction) from `before_save`:
///
/// ```no_run
/// # use outbox_core::{AggregateRoot, Change};
/// # use sea_orm::{ConnectionTrait, DbErr};
/// # async fn hooks<M: AggregateRoot, C: ConnectionTrait>(db: &C, model: &M, insert: bool) -> Result<(), DbErr> {
/// // before_save: refuse a plain connection before the business row is written.
/// outbox_core::require_transaction(db).await?;
/// // after_save: the snapshot, in the same transaction as the row.
/// outbox_core::write_snapshot(db, model, Change::saved(insert)).await?;
/// # Ok(()) }
/// ```
///
/// Refused with [`Error::NotInTransaction`](crate::Error::NotInTransaction) (as a
/// `DbErr::Custom`) when `db` is not inside a transaction, before anything is written. In
/// `after_save` that refusal comes after SeaORM wrote the business row, which on a plain
/// connection has already committed: the check in `before_save` is what keeps it out.
pub async fn write_snapshot<A, C>(db: &C, root: &A, change: Change) -> Result<(), DbErr>
where
    A: AggregateRoot,
    C: ConnectionTrait,
{
    crate::transaction::ensure_in_transaction(
        db,
        format!(
            "the entity listener's {} snapshot of aggregate `{}` {}",
            change.as_str(),
            root.aggregate_type(),
            root.aggregate_id()
        ),
        "the snapshot would not commit or roll back with the business row",
    )
    .await?;
    let payload = root.snapshot(db).await?;
    let aggregate_type = root.aggregate_type();
    let event_type = format!("{aggregate_type}{}", change.as_str());
    let row = OutboxEvent::new(
        aggregate_type,
        root.aggregate_id(),
        event_type,
        None,
        payload,
    );
    crate::write::write_rows(db, Outbox::global(), &[row])
        .await
        .map_err(DbErr::from)
}
