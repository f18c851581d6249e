//! An order service writing its events through the outbox.
//!
//! `cargo run --example orders` uses a SQLite file in a temporary folder; with `DATABASE_URL`
//! set (PostgreSQL or MySQL/MariaDB URL) it uses that database. It places an order, ships it,
//! saves a customer (whose entity listener writes snapshots), then prints the outbox rows that a
//! relay would ship to Kafka.

mod shop;

use outbox::OutboxTable;
use sea_orm::entity::prelude::*;
use sea_orm::{ActiveValue::Set, Database, Statement, TransactionTrait};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        let path =
            std::env::temp_dir().join(format!("outbox-orders-{}.sqlite", std::process::id()));
        format!("sqlite://{}?mode=rwc", path.display())
    });
    let db = Database::connect(&url).await?;
    shop::create_schema(&db, &OutboxTable::default()).await?;

    // One transaction: the order, its lines and `OrderCreated` commit together.
    let txn = db.begin().await?;
    let order = shop::place_order(
        &txn,
        shop::PlaceOrder {
            customer_id: 42,
            lines: shop::three_lines(),
        },
    )
    .await?;
    txn.commit().await?;

    let txn = db.begin().await?;
    shop::ship_order(&txn, order.id, "DHL").await?;
    txn.commit().await?;

    // The entity listener: saving the customer writes a `CustomerCreated` snapshot.
    let txn = db.begin().await?;
    shop::customer::ActiveModel {
        id: Set(order.id.as_u64_pair().1 as i64 & 0x7fff_ffff),
        name: Set("Ada".into()),
        email: Set("ada@example.com".into()),
    }
    .insert(&txn)
    .await?;
    txn.commit().await?;

    let backend = db.get_database_backend();
    // In the order the database numbered the rows at INSERT, as the poll relay ships them; never
    // by `timestamp`, a client clock.
    let insertion_order = match backend {
        sea_orm::DbBackend::Sqlite => "rowid".to_owned(),
        _ => outbox::migration::quote(backend, outbox::migration::SEQUENCE_COLUMN),
    };
    let rows = db
        .query_all_raw(Statement::from_string(
            backend,
            format!(
                "SELECT {t}, {a}, {k} FROM {o} ORDER BY {insertion_order}",
                t = outbox::migration::quote(backend, "type"),
                a = outbox::migration::quote(backend, "aggregatetype"),
                k = outbox::migration::quote(backend, "aggregateid"),
                o = outbox::migration::quote(backend, "outbox"),
            ),
        ))
        .await?;
    println!("outbox rows in {url}:");
    for row in rows {
        let event_type: String = row.try_get("", "type")?;
        let aggregate: String = row.try_get("", "aggregatetype")?;
        let key: String = row.try_get("", "aggregateid")?;
        println!("  {event_type:<16} topic outbox.event.{aggregate:<10} key {key}");
    }
    Ok(())
}
