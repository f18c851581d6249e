//! The shipment: its table, the events it reads and writes, and the one way to create it.

use outbox::{DomainEvent, Events, OutboxTable, emits};
use sea_orm::entity::prelude::*;
use sea_orm::{ActiveValue::NotSet, ActiveValue::Set, ConnectionTrait, DatabaseTransaction};
use serde::{Deserialize, Serialize};

/// One shipment per order. There is deliberately no unique key on `order_id`: the inbox alone
/// keeps it to one, and the end-to-end test counts them.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize)]
#[sea_orm(table_name = "shipments")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub order_id: Uuid,
    pub carrier: String,
    /// Numbered by the database at INSERT; shipments are created one message at a time, so this
    /// is their commit order.
    pub seq: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// The orders service's event, as this service reads it (its own copy of the contract: only
/// the fields it needs; others are ignored).
#[derive(Clone, Debug, Serialize, Deserialize, DomainEvent)]
#[domain_event(aggregate = "Order", version = 1)]
pub struct OrderCreated {
    #[domain_event(aggregate_id)]
    pub order_id: Uuid,
    pub customer_id: i64,
}

/// A shipment was created for an order: topic `outbox.event.Shipment`, key the order id, so
/// everything about one order stays in one partition, in order.
#[derive(Clone, Debug, Serialize, DomainEvent)]
#[domain_event(aggregate = "Shipment", version = 1)]
pub struct ShipmentCreated {
    #[domain_event(aggregate_id)]
    pub order_id: Uuid,
    pub shipment_id: Uuid,
    pub carrier: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ShipmentError {
    #[error("database: {0}")]
    Db(#[from] DbErr),
    #[error("outbox: {0}")]
    Outbox(#[from] outbox::Error),
}

/// Creates the order's shipment and records `ShipmentCreated`, inserted into `txn` (the inbox's
/// transaction) when this returns `Ok`.
#[emits(ShipmentCreated)]
pub async fn create_shipment(
    txn: &DatabaseTransaction,
    events: &mut Events,
    order: OrderCreated,
) -> Result<Model, ShipmentError> {
    let carrier = if order.customer_id % 2 == 0 {
        "DHL"
    } else {
        "UPS"
    };
    let shipment = ActiveModel {
        id: Set(Uuid::now_v7()),
        order_id: Set(order.order_id),
        carrier: Set(carrier.to_owned()),
        seq: NotSet,
    }
    .insert(txn)
    .await?;
    events.record(ShipmentCreated {
        order_id: shipment.order_id,
        shipment_id: shipment.id,
        carrier: shipment.carrier.clone(),
    });
    Ok(shipment)
}

/// The shipments table, the outbox table (`outbox`) and the inbox table (`inbox`), if missing.
pub async fn create_schema<C: ConnectionTrait>(db: &C) -> Result<(), DbErr> {
    db.execute_unprepared(
        "CREATE TABLE IF NOT EXISTS shipments (
             id uuid PRIMARY KEY,
             order_id uuid NOT NULL,
             carrier text NOT NULL,
             seq bigint GENERATED ALWAYS AS IDENTITY
         )",
    )
    .await?;
    outbox::migration::create_table(db, &OutboxTable::default()).await?;
    outbox::inbox::create_table(db, &outbox::inbox::InboxTable::default()).await
}
