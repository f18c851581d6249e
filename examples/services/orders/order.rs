//! The order: its table, its event, and the one way to place it.

use outbox::{DomainEvent, Events, OutboxTable, emits};
use sea_orm::entity::prelude::*;
use sea_orm::{ActiveValue::Set, ConnectionTrait, DatabaseTransaction, Schema};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize)]
#[sea_orm(table_name = "orders")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub customer_id: i64,
    pub total_cents: i64,
    /// The lines as ordered, kept with the order.
    pub lines: Json,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub sku: String,
    pub quantity: i32,
    pub price_cents: i64,
}

/// The body of `POST /orders`.
#[derive(Clone, Debug, Deserialize)]
pub struct PlaceOrder {
    pub customer_id: i64,
    pub lines: Vec<Line>,
}

/// An order was placed: topic `outbox.event.Order` (by the relay's default route), key the order
/// id. Shipping consumes it.
#[derive(Clone, Debug, Serialize, DomainEvent)]
#[domain_event(aggregate = "Order", version = 1)]
pub struct OrderCreated {
    #[domain_event(aggregate_id)]
    pub order_id: Uuid,
    pub customer_id: i64,
    pub total_cents: i64,
    pub lines: Vec<Line>,
}

#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("invalid order: {0}")]
    Invalid(String),
    #[error("order {0} not found")]
    NotFound(Uuid),
    #[error("database: {0}")]
    Db(#[from] DbErr),
    #[error("outbox: {0}")]
    Outbox(#[from] outbox::Error),
}

/// Writes the order and records `OrderCreated`, which `#[emits]` inserts into `txn` when this
/// returns `Ok`: the caller's commit makes both visible at once.
#[emits(OrderCreated)]
pub async fn place_order(
    txn: &DatabaseTransaction,
    events: &mut Events,
    cmd: PlaceOrder,
) -> Result<Model, OrderError> {
    if cmd.lines.is_empty() {
        return Err(OrderError::Invalid(
            "an order needs at least one line".into(),
        ));
    }
    if let Some(line) = cmd
        .lines
        .iter()
        .find(|l| l.quantity <= 0 || l.price_cents < 0)
    {
        return Err(OrderError::Invalid(format!(
            "line {:?}: the quantity must be positive and the price not negative",
            line.sku
        )));
    }
    let total_cents = cmd
        .lines
        .iter()
        .try_fold(0i64, |sum, l| {
            l.price_cents
                .checked_mul(i64::from(l.quantity))
                .and_then(|line| sum.checked_add(line))
        })
        .ok_or_else(|| OrderError::Invalid("the total overflows".into()))?;
    let lines =
        serde_json::to_value(&cmd.lines).map_err(|e| OrderError::Invalid(format!("lines: {e}")))?;
    let order = ActiveModel {
        id: Set(Uuid::now_v7()),
        customer_id: Set(cmd.customer_id),
        total_cents: Set(total_cents),
        lines: Set(lines),
    }
    .insert(txn)
    .await?;
    events.record(OrderCreated {
        order_id: order.id,
        customer_id: order.customer_id,
        total_cents,
        lines: cmd.lines,
    });
    Ok(order)
}

/// The orders table and the outbox table (named `outbox`), if missing.
pub async fn create_schema<C: ConnectionTrait>(db: &C) -> Result<(), DbErr> {
    let backend = db.get_database_backend();
    let mut orders = Schema::new(backend).create_table_from_entity(Entity);
    db.execute_raw(backend.build(orders.if_not_exists()))
        .await?;
    outbox::migration::create_table(db, &OutboxTable::default()).await
}
