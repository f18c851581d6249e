//! A small order service, written the way a SeaORM user writes one, with its events going
//! through the outbox. Shared by the examples and the end-to-end tests.
//!
//! Two styles are shown:
//! - `Order` emits explicit domain events from service functions with `#[emits]`;
//! - `Customer` is an aggregate root whose entity listener writes a snapshot of the customer
//!   and its addresses on every save and delete, like a Hibernate entity listener.
#![allow(dead_code)] // each user of this module uses a part of it

use outbox::{Declares, DomainEvent, Events, emits};
use sea_orm::entity::prelude::*;
use sea_orm::{ActiveValue::Set, ConnectionTrait, DatabaseConnection, DatabaseTransaction, Schema};
use serde::Serialize;

pub mod order {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize)]
    #[sea_orm(table_name = "orders")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub customer_id: i64,
        pub total_cents: i64,
        pub status: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        #[sea_orm(has_many = "super::order_line::Entity")]
        Lines,
    }

    impl Related<super::order_line::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Lines.def()
        }
    }

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod order_line {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize)]
    #[sea_orm(table_name = "order_lines")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub order_id: Uuid,
        pub sku: String,
        pub quantity: i32,
        pub price_cents: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        #[sea_orm(
            belongs_to = "super::order::Entity",
            from = "Column::OrderId",
            to = "super::order::Column::Id"
        )]
        Order,
    }

    impl Related<super::order::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Order.def()
        }
    }

    impl ActiveModelBehavior for ActiveModel {}
}

/// The aggregate root with an entity listener: every save and delete of a customer writes a
/// `CustomerCreated` / `CustomerUpdated` / `CustomerDeleted` snapshot event, with its addresses,
/// in the transaction the save ran in. A save or delete on a plain `DatabaseConnection` is
/// refused before anything is written: it could not be atomic with its snapshot.
pub mod customer {
    use outbox::{AggregateRoot, Change};
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize, AggregateRoot)]
    #[sea_orm(table_name = "customers")]
    #[aggregate_root(aggregate = "Customer", children(addresses = super::address::Entity))]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        #[aggregate_root(id)]
        pub id: i64,
        pub name: String,
        pub email: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        #[sea_orm(has_many = "super::address::Entity")]
        Addresses,
    }

    impl Related<super::address::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Addresses.def()
        }
    }

    #[async_trait::async_trait]
    impl ActiveModelBehavior for ActiveModel {
        async fn before_save<C>(self, db: &C, _insert: bool) -> Result<Self, DbErr>
        where
            C: ConnectionTrait,
        {
            // Refuse a plain connection before the customer row is written: it would autocommit
            // on its own, and the snapshot could not join it.
            outbox::require_transaction(db).await?;
            Ok(self)
        }

        async fn after_save<C>(model: Model, db: &C, insert: bool) -> Result<Model, DbErr>
        where
            C: ConnectionTrait,
        {
            outbox::write_snapshot(db, &model, Change::saved(insert)).await?;
            Ok(model)
        }

        async fn before_delete<C>(self, db: &C) -> Result<Self, DbErr>
        where
            C: ConnectionTrait,
        {
            // Before, not after: the addresses are still there to put in the last snapshot.
            let Some(&id) = self.id.try_as_ref() else {
                return Ok(self);
            };
            if let Some(model) = Entity::find_by_id(id).one(db).await? {
                outbox::write_snapshot(db, &model, Change::Deleted).await?;
            }
            Ok(self)
        }
    }
}

pub mod address {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize)]
    #[sea_orm(table_name = "addresses")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub customer_id: i64,
        pub city: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        #[sea_orm(
            belongs_to = "super::customer::Entity",
            from = "Column::CustomerId",
            to = "super::customer::Column::Id"
        )]
        Customer,
    }

    impl Related<super::customer::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Customer.def()
        }
    }

    impl ActiveModelBehavior for ActiveModel {}
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Line {
    pub sku: String,
    pub quantity: i32,
    pub price_cents: i64,
}

/// An order was placed. Schema version 1.
#[derive(Clone, Debug, Serialize, DomainEvent)]
#[domain_event(aggregate = "Order", version = 1)]
pub struct OrderCreated {
    #[domain_event(aggregate_id)]
    pub order_id: Uuid,
    pub customer_id: i64,
    pub lines: Vec<Line>,
}

/// What happens to an order afterwards, one event type per variant.
#[derive(Clone, Debug, Serialize, DomainEvent)]
#[domain_event(aggregate = "Order")]
pub enum OrderEvent {
    Shipped {
        #[domain_event(aggregate_id)]
        id: Uuid,
        carrier: String,
    },
    Cancelled {
        #[domain_event(aggregate_id)]
        id: Uuid,
    },
}

#[derive(Clone, Debug)]
pub struct PlaceOrder {
    pub customer_id: i64,
    pub lines: Vec<Line>,
}

#[derive(Debug, thiserror::Error)]
pub enum ShopError {
    #[error(transparent)]
    Db(#[from] DbErr),
    #[error(transparent)]
    Outbox(#[from] outbox::Error),
    #[error("order {0} not found")]
    NotFound(Uuid),
    #[error("an order needs at least one line")]
    EmptyOrder,
}

/// Places an order: the order row, its lines, and an `OrderCreated` event, in `txn`.
#[emits(OrderCreated)]
pub async fn place_order(
    txn: &DatabaseTransaction,
    events: &mut Events,
    cmd: PlaceOrder,
) -> Result<order::Model, ShopError> {
    place(txn, events, cmd).await
}

/// The same business transaction without the outbox: the baseline of the write-overhead figure.
pub async fn place_order_without_outbox(
    txn: &DatabaseTransaction,
    cmd: PlaceOrder,
) -> Result<order::Model, ShopError> {
    insert_order(txn, &cmd).await
}

/// Places an order and records `extra` more `Shipped` events: the 10-event case.
#[emits(OrderCreated, OrderEvent)]
pub async fn place_and_ship(
    txn: &DatabaseTransaction,
    events: &mut Events,
    cmd: PlaceOrder,
    extra: usize,
) -> Result<order::Model, ShopError> {
    let order = place(txn, events, cmd).await?;
    record_shipments(events, order.id, extra);
    Ok(order)
}

/// `place_order` on the pool, the shape of SeaORM's example services: `#[emits]` begins the
/// transaction, writes the events on it (the same INSERT as in a caller's transaction) and
/// commits it, so the events commit with the order or not at all.
#[emits(OrderCreated)]
pub async fn place_order_on_pool(
    db: &DatabaseConnection,
    events: &mut Events,
    cmd: PlaceOrder,
) -> Result<order::Model, ShopError> {
    place(db, events, cmd).await
}

/// `place_and_ship` on the pool: the 10-event case on a transaction that `#[emits]` owns.
#[emits(OrderCreated, OrderEvent)]
pub async fn place_and_ship_on_pool(
    db: &DatabaseConnection,
    events: &mut Events,
    cmd: PlaceOrder,
    extra: usize,
) -> Result<order::Model, ShopError> {
    let order = place(db, events, cmd).await?;
    record_shipments(events, order.id, extra);
    Ok(order)
}

/// What every way of placing an order does, on the transaction its `#[emits]` function runs in:
/// the order row, its lines, and `OrderCreated`. The callers differ only in where that
/// transaction comes from (the caller's, or one that `#[emits]` begins on the pool and commits
/// with the events), so each keeps its signature and they share this body.
///
/// A helper written by hand, recording into its caller's `events`: any caller whose
/// `#[emits(...)]` declares `OrderCreated` may pass them (`I`, its place in the list, is inferred).
async fn place<D, I>(
    txn: &DatabaseTransaction,
    events: &mut Events<D>,
    cmd: PlaceOrder,
) -> Result<order::Model, ShopError>
where
    D: Declares<OrderCreated, I>,
{
    let order = insert_order(txn, &cmd).await?;
    events.record(OrderCreated {
        order_id: order.id,
        customer_id: cmd.customer_id,
        lines: cmd.lines,
    });
    Ok(order)
}

/// Records `count` `Shipped` events of `order`. An `#[emits]` helper: it takes no connection, so
/// it writes nothing itself; its caller, which must declare `OrderEvent` too, writes them.
#[emits(OrderEvent)]
fn record_shipments(events: &mut Events, order_id: Uuid, count: usize) {
    for i in 0..count {
        events.record(OrderEvent::Shipped {
            id: order_id,
            carrier: format!("carrier-{i}"),
        });
    }
}

/// Ships an order; fails with `NotFound`, recording nothing, for an unknown order.
#[emits(OrderEvent)]
pub async fn ship_order(
    txn: &DatabaseTransaction,
    events: &mut Events,
    id: Uuid,
    carrier: &str,
) -> Result<(), ShopError> {
    let Some(found) = order::Entity::find_by_id(id).one(txn).await? else {
        return Err(ShopError::NotFound(id));
    };
    let mut active: order::ActiveModel = found.into();
    active.status = Set("shipped".to_owned());
    active.update(txn).await?;
    events.record(OrderEvent::Shipped {
        id,
        carrier: carrier.to_owned(),
    });
    Ok(())
}

/// `place_order` with its event sent by the order's own INSERT ([`Events::insert_with`]): on
/// PostgreSQL one statement, `WITH .. AS (INSERT INTO outbox ..) INSERT INTO orders ..
/// RETURNING ..`, so the event costs no round trip of its own; on MySQL/MariaDB and SQLite the
/// same code sends the event's INSERT, then the order's. The event is recorded first (the order's
/// id is made here, not by the database), and nothing is left for the end of the function.
#[emits(OrderCreated)]
pub async fn place_order_with_the_order_insert(
    txn: &DatabaseTransaction,
    events: &mut Events,
    cmd: PlaceOrder,
) -> Result<order::Model, ShopError> {
    let new = new_order(&cmd)?;
    events.record(OrderCreated {
        order_id: new.id,
        customer_id: cmd.customer_id,
        lines: cmd.lines.clone(),
    });
    let order = events.insert_with(txn, new.row).await?;
    insert_lines(txn, order.id, &cmd.lines).await?;
    Ok(order)
}

/// `place_and_ship` with its ten events sent by the order's INSERT: still one statement.
#[emits(OrderCreated, OrderEvent)]
pub async fn place_and_ship_with_the_order_insert(
    txn: &DatabaseTransaction,
    events: &mut Events,
    cmd: PlaceOrder,
    extra: usize,
) -> Result<order::Model, ShopError> {
    let new = new_order(&cmd)?;
    events.record(OrderCreated {
        order_id: new.id,
        customer_id: cmd.customer_id,
        lines: cmd.lines.clone(),
    });
    record_shipments(events, new.id, extra);
    let order = events.insert_with(txn, new.row).await?;
    insert_lines(txn, order.id, &cmd.lines).await?;
    Ok(order)
}

/// An order row about to be inserted, with the id it will have.
struct NewOrder {
    id: Uuid,
    row: order::ActiveModel,
}

fn new_order(cmd: &PlaceOrder) -> Result<NewOrder, ShopError> {
    if cmd.lines.is_empty() {
        return Err(ShopError::EmptyOrder);
    }
    let id = Uuid::now_v7();
    let total = cmd
        .lines
        .iter()
        .map(|l| l.price_cents * i64::from(l.quantity))
        .sum();
    let row = order::ActiveModel {
        id: Set(id),
        customer_id: Set(cmd.customer_id),
        total_cents: Set(total),
        status: Set("placed".to_owned()),
    };
    Ok(NewOrder { id, row })
}

async fn insert_lines(
    txn: &DatabaseTransaction,
    order_id: Uuid,
    lines: &[Line],
) -> Result<(), ShopError> {
    let lines = lines.iter().map(|l| order_line::ActiveModel {
        id: Set(Uuid::now_v7()),
        order_id: Set(order_id),
        sku: Set(l.sku.clone()),
        quantity: Set(l.quantity),
        price_cents: Set(l.price_cents),
    });
    order_line::Entity::insert_many(lines).exec(txn).await?;
    Ok(())
}

async fn insert_order(
    txn: &DatabaseTransaction,
    cmd: &PlaceOrder,
) -> Result<order::Model, ShopError> {
    let new = new_order(cmd)?;
    let order = new.row.insert(txn).await?;
    insert_lines(txn, order.id, &cmd.lines).await?;
    Ok(order)
}

/// Creates the shop's tables and the outbox table on `db` (any backend), if missing.
pub async fn create_schema<C: ConnectionTrait>(
    db: &C,
    outbox: &outbox::OutboxTable,
) -> Result<(), DbErr> {
    let schema = Schema::new(db.get_database_backend());
    let backend = db.get_database_backend();
    for mut stmt in [
        schema.create_table_from_entity(order::Entity),
        schema.create_table_from_entity(order_line::Entity),
        schema.create_table_from_entity(customer::Entity),
        schema.create_table_from_entity(address::Entity),
    ] {
        db.execute_raw(backend.build(stmt.if_not_exists())).await?;
    }
    outbox::migration::create_table(db, outbox).await
}

/// Three lines, as in the write-overhead figure.
pub fn three_lines() -> Vec<Line> {
    ["apple", "pear", "plum"]
        .into_iter()
        .enumerate()
        .map(|(i, sku)| Line {
            sku: sku.to_owned(),
            quantity: i as i32 + 1,
            price_cents: 250,
        })
        .collect()
}
