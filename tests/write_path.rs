//! The write path against real PostgreSQL, MariaDB and SQLite: events recorded by `#[emits]`
//! service functions land in the outbox in the caller's transaction, with Debezium's columns,
//! and disappear with it on rollback or on an `Err`.

#[path = "../examples/shop/mod.rs"]
mod shop;
mod support;

use outbox::{Outbox, OutboxEvent, OutboxTable, WriteMode};
use sea_orm::entity::prelude::*;
use sea_orm::{ActiveValue::Set, DatabaseConnection, DbBackend, Statement, TransactionTrait};
use serde_json::json;
use shop::{PlaceOrder, ShopError};

/// One outbox row as read back, every column as text.
#[derive(Debug)]
struct Row {
    id: String,
    aggregate_type: String,
    aggregate_id: String,
    event_type: String,
    schema_version: Option<i32>,
    payload: serde_json::Value,
    timestamp: String,
}

async fn outbox_rows(db: &DatabaseConnection, table: &str, aggregate_id: &str) -> Vec<Row> {
    let backend = db.get_database_backend();
    let q = |c: &str| outbox::migration::quote(backend, c);
    let as_text = |c: &str| match backend {
        DbBackend::Postgres => format!("{}::text", q(c)),
        DbBackend::MySql => format!("CAST({} AS CHAR)", q(c)),
        _ => q(c),
    };
    let param = if backend == DbBackend::Postgres {
        "$1"
    } else {
        "?"
    };
    let sql = format!(
        "SELECT {} AS id, {} AS aggregatetype, {} AS aggregateid, {} AS type, {} AS schemaversion, {} AS payload, {} AS ts FROM {} WHERE {} = {param} ORDER BY {}",
        as_text("id"),
        q("aggregatetype"),
        q("aggregateid"),
        q("type"),
        q("schemaversion"),
        as_text("payload"),
        as_text("timestamp"),
        q(table),
        q("aggregateid"),
        q("id"),
    );
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [aggregate_id.into()],
        ))
        .await
        .expect("read the outbox");
    rows.iter()
        .map(|r| Row {
            id: r.try_get("", "id").unwrap(),
            aggregate_type: r.try_get("", "aggregatetype").unwrap(),
            aggregate_id: r.try_get("", "aggregateid").unwrap(),
            event_type: r.try_get("", "type").unwrap(),
            schema_version: r.try_get("", "schemaversion").unwrap(),
            payload: serde_json::from_str(&r.try_get::<String>("", "payload").unwrap()).unwrap(),
            timestamp: r.try_get("", "ts").unwrap(),
        })
        .collect()
}

/// Creates the shop schema once per database; concurrent `IF NOT EXISTS` can race, so retry.
async fn schema(db: &DatabaseConnection) {
    let table = OutboxTable::default();
    if shop::create_schema(db, &table).await.is_err() {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        shop::create_schema(db, &table)
            .await
            .expect("create the shop schema");
    }
}

fn order(customer_id: i64) -> PlaceOrder {
    PlaceOrder {
        customer_id,
        lines: shop::three_lines(),
    }
}

/// The contract every backend must meet.
async fn events_commit_and_roll_back_with_the_business_rows(db: DatabaseConnection) {
    schema(&db).await;

    // Committed: the row lands with Debezium's columns.
    let txn = db.begin().await.unwrap();
    let placed = shop::place_order(&txn, order(7))
        .await
        .expect("place order");
    txn.commit().await.unwrap();
    let rows = outbox_rows(&db, "outbox", &placed.id.to_string()).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    let id = Uuid::parse_str(&row.id).expect("the id is a UUID");
    assert_eq!(id.get_version_num(), 7, "ids are UUIDv7");
    assert_eq!(row.aggregate_type, "Order");
    assert_eq!(row.aggregate_id, placed.id.to_string());
    assert_eq!(row.event_type, "OrderCreated");
    assert_eq!(row.schema_version, Some(1));
    assert_eq!(
        row.payload,
        json!({
            "order_id": placed.id,
            "customer_id": 7,
            "lines": [
                {"sku": "apple", "quantity": 1, "price_cents": 250},
                {"sku": "pear", "quantity": 2, "price_cents": 250},
                {"sku": "plum", "quantity": 3, "price_cents": 250},
            ],
        })
    );
    assert!(
        row.timestamp.starts_with("20"),
        "a timestamp: {}",
        row.timestamp
    );

    // An enum variant: its own event type, the variant's fields as payload.
    let txn = db.begin().await.unwrap();
    shop::ship_order(&txn, placed.id, "DHL")
        .await
        .expect("ship");
    txn.commit().await.unwrap();
    let rows = outbox_rows(&db, "outbox", &placed.id.to_string()).await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].event_type, "Shipped");
    assert_eq!(rows[1].schema_version, None);
    assert_eq!(rows[1].payload, json!({"id": placed.id, "carrier": "DHL"}));

    // Rolled back: neither the order nor its event exists.
    let txn = db.begin().await.unwrap();
    let rolled_back = shop::place_order(&txn, order(8))
        .await
        .expect("place order");
    txn.rollback().await.unwrap();
    assert!(
        outbox_rows(&db, "outbox", &rolled_back.id.to_string())
            .await
            .is_empty()
    );
    assert!(
        shop::order::Entity::find_by_id(rolled_back.id)
            .one(&db)
            .await
            .unwrap()
            .is_none()
    );

    // `Err` from the body: nothing is inserted, even if the caller commits.
    let txn = db.begin().await.unwrap();
    let missing = Uuid::now_v7();
    let err = shop::ship_order(&txn, missing, "UPS").await.unwrap_err();
    assert!(
        matches!(err, ShopError::NotFound(id) if id == missing),
        "{err}"
    );
    txn.commit().await.unwrap();
    assert!(
        outbox_rows(&db, "outbox", &missing.to_string())
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn postgres_events_commit_and_roll_back_with_the_business_rows() {
    events_commit_and_roll_back_with_the_business_rows(support::postgres().await).await;
}

#[tokio::test]
async fn mariadb_events_commit_and_roll_back_with_the_business_rows() {
    events_commit_and_roll_back_with_the_business_rows(support::mariadb().await).await;
}

#[tokio::test]
async fn sqlite_events_commit_and_roll_back_with_the_business_rows() {
    events_commit_and_roll_back_with_the_business_rows(support::sqlite().await).await;
}

/// A database of this test's own, so that `pg_stat_statements` counts only its statements.
async fn private_postgres_database() -> DatabaseConnection {
    let admin = support::postgres().await;
    let name = support::unique("outbox_db");
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create a private database");
    let url = support::database_url();
    let base = url.rsplit_once('/').map(|(base, _)| base).unwrap_or(&url);
    let db = sea_orm::Database::connect(format!("{base}/{name}"))
        .await
        .expect("connect to the private database");
    db.execute_unprepared("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .await
        .expect("pg_stat_statements (from postgresql-contrib) can be created");
    db
}

#[tokio::test]
async fn ten_events_in_one_call_are_one_insert_statement() {
    let db = private_postgres_database().await;
    schema(&db).await;
    let txn = db.begin().await.unwrap();
    let placed = shop::place_and_ship(&txn, order(9), 9)
        .await
        .expect("place and ship");
    txn.commit().await.unwrap();
    assert_eq!(
        outbox_rows(&db, "outbox", &placed.id.to_string())
            .await
            .len(),
        10
    );

    let stats = db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT calls, rows FROM pg_stat_statements \
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND query LIKE 'INSERT INTO \"outbox\"%'",
        ))
        .await
        .expect("pg_stat_statements is loaded (shared_preload_libraries) and created");
    let calls: Vec<(i64, i64)> = stats
        .iter()
        .map(|r| {
            (
                r.try_get("", "calls").unwrap(),
                r.try_get("", "rows").unwrap(),
            )
        })
        .collect();
    assert_eq!(
        calls,
        [(1, 10)],
        "one INSERT statement, executed once, wrote the 10 rows"
    );
}

/// Reads and consumes a `test_decoding` slot's changes.
async fn slot_changes(db: &DatabaseConnection, slot: &str) -> Vec<String> {
    db.query_all_raw(Statement::from_string(
        DbBackend::Postgres,
        format!("SELECT data FROM pg_logical_slot_get_changes('{slot}', NULL, NULL)"),
    ))
    .await
    .expect("read the slot")
    .iter()
    .map(|r| r.try_get("", "data").unwrap())
    .collect()
}

async fn test_slot(db: &DatabaseConnection) -> String {
    let slot = support::unique("write_slot");
    db.execute_unprepared(&format!(
        "SELECT pg_create_logical_replication_slot('{slot}', 'test_decoding')"
    ))
    .await
    .expect("create a test_decoding slot");
    slot
}

async fn drop_slot(db: &DatabaseConnection, slot: &str) {
    db.execute_unprepared(&format!("SELECT pg_drop_replication_slot('{slot}')"))
        .await
        .expect("drop the slot");
}

#[tokio::test]
async fn remove_after_insert_leaves_the_table_empty_and_the_inserts_in_the_log() {
    let db = support::postgres().await;
    let table = OutboxTable::new(support::unique("outbox_rai"));
    outbox::migration::create_table(&db, &table).await.unwrap();
    let outbox = Outbox::new(table.clone()).with_mode(WriteMode::RemoveAfterInsert);
    let slot = test_slot(&db).await;

    let id = Uuid::now_v7();
    let created = shop::OrderCreated {
        order_id: id,
        customer_id: 1,
        lines: shop::three_lines(),
    };
    let shipped = shop::OrderEvent::Shipped {
        id,
        carrier: "DHL".into(),
    };
    let txn = db.begin().await.unwrap();
    let written = outbox::write_events(
        &txn,
        &outbox,
        [&created as &dyn outbox::DomainEvent, &shipped],
    )
    .await
    .expect("write");
    txn.commit().await.unwrap();

    let changes = slot_changes(&db, &slot).await;
    drop_slot(&db, &slot).await;
    assert!(
        outbox_rows(&db, &table.name, &id.to_string())
            .await
            .is_empty(),
        "the table stays empty"
    );
    let ours = |kind: &str| {
        changes
            .iter()
            .filter(|c| c.starts_with(&format!("table public.{}: {kind}", table.name)))
            .count()
    };
    assert_eq!(ours("INSERT"), 2, "the log holds both inserts: {changes:?}");
    assert_eq!(ours("DELETE"), 2, "and both deletes: {changes:?}");
    for row in &written {
        assert!(
            changes
                .iter()
                .any(|c| c.contains("INSERT") && c.contains(&row.id.to_string())),
            "insert of {} in the log",
            row.id
        );
    }
}

#[tokio::test]
async fn tableless_mode_writes_transactional_logical_messages() {
    let db = support::postgres().await;
    let prefix = support::unique("outbox_msg");
    let outbox = Outbox::default().with_mode(WriteMode::LogicalMessage {
        prefix: prefix.clone(),
    });
    let slot = test_slot(&db).await;

    let id = Uuid::now_v7();
    let event = shop::OrderEvent::Cancelled { id };
    let txn = db.begin().await.unwrap();
    let written = outbox::write_events(&txn, &outbox, [&event as &dyn outbox::DomainEvent])
        .await
        .expect("emit");
    txn.commit().await.unwrap();
    // A rolled-back message must not reach the log's consumers.
    let txn = db.begin().await.unwrap();
    outbox::write_events(&txn, &outbox, [&event as &dyn outbox::DomainEvent])
        .await
        .expect("emit");
    txn.rollback().await.unwrap();

    let changes = slot_changes(&db, &slot).await;
    drop_slot(&db, &slot).await;
    let messages: Vec<OutboxEvent> = changes
        .iter()
        .filter(|c| c.contains(&format!("prefix: {prefix},")))
        .map(|c| {
            assert!(c.starts_with("message: transactional: 1"), "{c}");
            let content = &c[c.find("content:").expect("content") + "content:".len()..];
            serde_json::from_str(content).expect("the content is an OutboxEvent")
        })
        .collect();
    assert_eq!(
        messages, written,
        "exactly the committed message, with every column"
    );
    assert_eq!(messages[0].event_type, "Cancelled");
    assert_eq!(messages[0].payload, json!({"id": id}));
}

#[tokio::test]
async fn tableless_mode_is_refused_on_sqlite_with_a_clear_error() {
    let db = support::sqlite().await;
    let outbox = Outbox::default().with_mode(WriteMode::logical_message());
    let event = shop::OrderEvent::Cancelled { id: Uuid::now_v7() };
    let txn = db.begin().await.unwrap();
    let err = outbox::write_events(&txn, &outbox, [&event as &dyn outbox::DomainEvent])
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "write mode logical-message needs PostgreSQL, but the connection is Sqlite"
    );
}

#[tokio::test]
async fn an_aggregate_root_listener_writes_snapshots_with_its_children() {
    let db = support::postgres().await;
    schema(&db).await;
    // Unique across runs against the same database.
    let customer_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;

    let txn = db.begin().await.unwrap();
    let customer = shop::customer::ActiveModel {
        id: Set(customer_id),
        name: Set("Ada".into()),
        email: Set("ada@example.com".into()),
    }
    .insert(&txn)
    .await
    .expect("insert customer");
    for (i, city) in ["Paris", "Lyon"].into_iter().enumerate() {
        shop::address::ActiveModel {
            id: Set(customer_id + i as i64),
            customer_id: Set(customer_id),
            city: Set(city.into()),
        }
        .insert(&txn)
        .await
        .expect("insert address");
    }
    let mut renamed: shop::customer::ActiveModel = customer.into();
    renamed.name = Set("Ada L.".into());
    renamed.update(&txn).await.expect("update customer");
    txn.commit().await.unwrap();

    let rows = outbox_rows(&db, "outbox", &customer_id.to_string()).await;
    let types: Vec<&str> = rows.iter().map(|r| r.event_type.as_str()).collect();
    assert_eq!(types, ["CustomerCreated", "CustomerUpdated"]);
    assert_eq!(rows[0].aggregate_type, "Customer");
    assert_eq!(rows[0].payload["addresses"], json!([]));
    assert_eq!(rows[1].payload["name"], "Ada L.");
    let cities: Vec<&str> = rows[1].payload["addresses"]
        .as_array()
        .expect("addresses loaded through the same transaction")
        .iter()
        .map(|a| a["city"].as_str().unwrap())
        .collect();
    assert_eq!(cities, ["Paris", "Lyon"]);

    // A rolled-back save leaves no snapshot.
    let txn = db.begin().await.unwrap();
    let mut again: shop::customer::ActiveModel = shop::customer::Entity::find_by_id(customer_id)
        .one(&txn)
        .await
        .unwrap()
        .unwrap()
        .into();
    again.name = Set("rolled back".into());
    again.update(&txn).await.unwrap();
    txn.rollback().await.unwrap();
    assert_eq!(
        outbox_rows(&db, "outbox", &customer_id.to_string())
            .await
            .len(),
        2
    );
}
