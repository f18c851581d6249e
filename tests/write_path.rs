//! The write path against real PostgreSQL, MariaDB and SQLite: events recorded by `#[emits]`
//! service functions land in the outbox in the caller's transaction, with Debezium's columns, in
//! recording order (also past a statement's bind-parameter limit), and disappear with it on
//! rollback or on an `Err`, also when they ride on a business INSERT (`Events::insert_with`). What
//! cannot be atomic or relayed is refused with a clear error.

#[path = "../examples/shop/mod.rs"]
mod shop;
use outbox_testkit as support;

use outbox::{Outbox, OutboxEvent, OutboxTable, WriteMode};
use sea_orm::entity::prelude::*;
use sea_orm::{ActiveValue::Set, DatabaseConnection, DbBackend, Statement, TransactionTrait};
use serde_json::json;
use shop::{PlaceOrder, ShopError};

/// One `#[tokio::test]` per backend, each running `contract` on that backend's real database.
macro_rules! on_every_backend {
    ($contract:ident: $postgres:ident, $mariadb:ident, $sqlite:ident) => {
        #[tokio::test]
        async fn $postgres() {
            $contract(support::postgres().await).await;
        }

        #[tokio::test]
        async fn $mariadb() {
            $contract(support::mariadb().await).await;
        }

        #[tokio::test]
        async fn $sqlite() {
            $contract(support::sqlite().await).await;
        }
    };
}

/// The column that numbers rows in insertion order: `seq` (assigned by the database at INSERT) on
/// PostgreSQL and MariaDB, `rowid` on SQLite.
fn insertion_order(backend: DbBackend) -> String {
    match backend {
        DbBackend::Sqlite => "rowid".to_owned(),
        _ => outbox::migration::quote(backend, outbox::migration::SEQUENCE_COLUMN),
    }
}

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
        "SELECT {} AS id, {} AS aggregatetype, {} AS aggregateid, {} AS type, {} AS schemaversion, {} AS payload, {} AS ts FROM {} WHERE {} = {param} ORDER BY {order}",
        as_text("id"),
        q("aggregatetype"),
        q("aggregateid"),
        q("type"),
        q("schemaversion"),
        as_text("payload"),
        as_text("timestamp"),
        q(table),
        q("aggregateid"),
        order = insertion_order(backend),
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

/// Neither the order `id` nor any event of it exists: its transaction rolled back.
async fn assert_order_and_events_gone(db: &DatabaseConnection, id: Uuid) {
    assert!(
        outbox_rows(db, "outbox", &id.to_string()).await.is_empty(),
        "no event of the rolled-back order {id}"
    );
    assert!(
        shop::order::Entity::find_by_id(id)
            .one(db)
            .await
            .unwrap()
            .is_none(),
        "no rolled-back order {id}"
    );
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
    assert_order_and_events_gone(&db, rolled_back.id).await;

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

on_every_backend!(
    events_commit_and_roll_back_with_the_business_rows:
    postgres_events_commit_and_roll_back_with_the_business_rows,
    mariadb_events_commit_and_roll_back_with_the_business_rows,
    sqlite_events_commit_and_roll_back_with_the_business_rows
);

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

/// Writes `events` in tableless mode in two calls on PostgreSQL, committing the first and
/// rolling back the second. Returns what the committed call wrote, and the messages a
/// `test_decoding` slot then holds under the test's prefix, in log order.
async fn committed_and_logged_messages(
    events: &[&dyn outbox::DomainEvent],
) -> (Vec<OutboxEvent>, Vec<OutboxEvent>) {
    let db = support::postgres().await;
    let prefix = support::unique("outbox_msg");
    let outbox = Outbox::default().with_mode(WriteMode::LogicalMessage {
        prefix: prefix.clone(),
    });
    let slot = test_slot(&db).await;

    let txn = db.begin().await.unwrap();
    let written = outbox::write_events(&txn, &outbox, events.iter().copied())
        .await
        .expect("emit");
    txn.commit().await.unwrap();
    // A rolled-back message must not reach the log's consumers.
    let txn = db.begin().await.unwrap();
    outbox::write_events(&txn, &outbox, events.iter().copied())
        .await
        .expect("emit");
    txn.rollback().await.unwrap();

    let changes = slot_changes(&db, &slot).await;
    drop_slot(&db, &slot).await;
    let messages = changes
        .iter()
        .filter(|c| c.contains(&format!("prefix: {prefix},")))
        .map(|c| {
            assert!(c.starts_with("message: transactional: 1"), "{c}");
            let content = &c[c.find("content:").expect("content") + "content:".len()..];
            serde_json::from_str(content).expect("the content is an OutboxEvent")
        })
        .collect();
    (written, messages)
}

#[tokio::test]
async fn tableless_mode_writes_transactional_logical_messages() {
    let id = Uuid::now_v7();
    let event = shop::OrderEvent::Cancelled { id };
    let (written, messages) = committed_and_logged_messages(&[&event]).await;
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
    assert!(
        matches!(err, outbox::Error::UnsupportedMode { .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "write mode logical-message cannot be used on SQLite: pg_logical_emit_message exists \
         only in PostgreSQL; use WriteMode::Insert with the poll source"
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

/// Item 2 of issue 9: rows deleted in their own transaction are seen only by a log-tailing relay,
/// and SQLite has no log to tail. The write is refused before anything is written. (MySQL/MariaDB
/// has one, the binlog: `outbox-relay/tests/binlog_relay.rs` ships such writes.)
async fn remove_after_insert_is_refused(db: DatabaseConnection, backend_name: &str, why: &str) {
    let table = OutboxTable::new(support::unique("outbox_rai_refused"));
    outbox::migration::create_table(&db, &table).await.unwrap();
    let outbox = Outbox::new(table.clone()).with_mode(WriteMode::RemoveAfterInsert);
    let id = Uuid::now_v7();
    let event = shop::OrderEvent::Cancelled { id };
    let txn = db.begin().await.unwrap();
    let err = outbox::write_events(&txn, &outbox, [&event as &dyn outbox::DomainEvent])
        .await
        .expect_err("remove-after-insert must be refused where no relay could see its rows");
    txn.commit().await.unwrap();
    assert!(
        matches!(err, outbox::Error::UnsupportedMode { .. }),
        "{err:?}"
    );
    let message = err.to_string();
    for part in [
        "write mode remove-after-insert cannot be used on",
        backend_name,
        why,
        "use WriteMode::Insert with the poll source",
    ] {
        assert!(message.contains(part), "`{part}` in: {message}");
    }
    // Nothing was inserted (and so nothing deleted): the write stopped before its first statement.
    assert!(
        outbox_rows(&db, &table.name, &id.to_string())
            .await
            .is_empty()
    );
    outbox::migration::drop_table(&db, &table).await.unwrap();
}

#[tokio::test]
async fn remove_after_insert_is_refused_on_sqlite_with_a_clear_error() {
    remove_after_insert_is_refused(
        support::sqlite().await,
        "SQLite",
        "SQLite has no log a relay can tail",
    )
    .await;
}

/// Item 3 of issue 9: 20,000 events from one `#[emits]` call are 160,000 bind parameters, past
/// the 65,535 of PostgreSQL and MySQL and the 32,766 of SQLite. They are all written, in
/// recording order, in the caller's transaction; a rollback still leaves none.
async fn twenty_thousand_events_in_one_call(db: DatabaseConnection) {
    const EVENTS: usize = 20_000;
    schema(&db).await;

    let txn = db.begin().await.unwrap();
    let placed = shop::place_and_ship(&txn, order(20), EVENTS - 1)
        .await
        .expect("20,000 events in one call are written");
    txn.commit().await.unwrap();
    assert!(
        shop::order::Entity::find_by_id(placed.id)
            .one(&db)
            .await
            .unwrap()
            .is_some(),
        "the business row committed with its events"
    );
    let rows = outbox_rows(&db, "outbox", &placed.id.to_string()).await;
    assert_eq!(rows.len(), EVENTS, "every event is in the outbox");
    assert_eq!(rows[0].event_type, "OrderCreated");
    for (i, row) in rows[1..].iter().enumerate() {
        assert_eq!(row.event_type, "Shipped");
        assert_eq!(
            row.payload["carrier"],
            format!("carrier-{i}"),
            "the rows are in recording order (row {})",
            i + 1
        );
    }
    let ids: std::collections::HashSet<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), EVENTS, "every event has its own id");

    // Rolled back: none of the 20,000 events remains, nor the order.
    let txn = db.begin().await.unwrap();
    let rolled_back = shop::place_and_ship(&txn, order(21), EVENTS - 1)
        .await
        .expect("20,000 events in one call are written");
    assert_eq!(
        outbox_rows_in(&txn, "outbox", &rolled_back.id.to_string()).await,
        EVENTS,
        "all written inside the transaction before it rolls back"
    );
    txn.rollback().await.unwrap();
    assert_order_and_events_gone(&db, rolled_back.id).await;
}

/// How many outbox rows of `aggregate_id` the connection `conn` sees.
async fn outbox_rows_in<C: sea_orm::ConnectionTrait>(
    conn: &C,
    table: &str,
    aggregate_id: &str,
) -> usize {
    let backend = conn.get_database_backend();
    let q = |c: &str| outbox::migration::quote(backend, c);
    let param = if backend == DbBackend::Postgres {
        "$1"
    } else {
        "?"
    };
    let row = conn
        .query_one_raw(Statement::from_sql_and_values(
            backend,
            format!(
                "SELECT COUNT(*) AS n FROM {} WHERE {} = {param}",
                q(table),
                q("aggregateid")
            ),
            [aggregate_id.into()],
        ))
        .await
        .expect("count the outbox rows")
        .expect("a count");
    row.try_get::<i64>("", "n").expect("the count") as usize
}

on_every_backend!(
    twenty_thousand_events_in_one_call:
    postgres_writes_twenty_thousand_events_in_one_call,
    mariadb_writes_twenty_thousand_events_in_one_call,
    sqlite_writes_twenty_thousand_events_in_one_call
);

/// Item 3 of issue 9: 5,000 logical messages from one call are past PostgreSQL's 1,664
/// target-list entries. All reach the log in recording order; a rolled-back call leaves none.
#[tokio::test]
async fn tableless_mode_writes_five_thousand_messages_in_one_call() {
    const EVENTS: usize = 5_000;
    let id = Uuid::now_v7();
    let events: Vec<shop::OrderEvent> = (0..EVENTS)
        .map(|i| shop::OrderEvent::Shipped {
            id,
            carrier: format!("carrier-{i}"),
        })
        .collect();
    let events: Vec<&dyn outbox::DomainEvent> = events
        .iter()
        .map(|e| e as &dyn outbox::DomainEvent)
        .collect();
    let (written, messages) = committed_and_logged_messages(&events).await;
    assert_eq!(
        messages.len(),
        EVENTS,
        "every committed message, none rolled back"
    );
    assert!(
        messages == written,
        "the messages are the written events, in recording order"
    );
    assert_eq!(messages[EVENTS - 1].payload["carrier"], "carrier-4999");
}

/// Several statements are atomic only in a transaction: a call that needs them on a plain
/// connection is refused before its first statement.
#[tokio::test]
async fn a_write_needing_several_statements_is_refused_outside_a_transaction() {
    let db = support::postgres().await;
    let table = OutboxTable::new(support::unique("outbox_plain"));
    outbox::migration::create_table(&db, &table).await.unwrap();
    let outbox = Outbox::new(table.clone());
    let id = Uuid::now_v7();
    let events: Vec<shop::OrderEvent> = (0..10_000)
        .map(|_| shop::OrderEvent::Cancelled { id })
        .collect();
    let err = outbox::write_events(
        &db,
        &outbox,
        events.iter().map(|e| e as &dyn outbox::DomainEvent),
    )
    .await
    .expect_err("refused on a plain connection");
    assert!(
        matches!(err, outbox::Error::NotInTransaction { .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.starts_with(
            "writing 10000 events (2 statements of at most 8191) must run in the caller's transaction"
        ),
        "{message}"
    );
    assert!(
        outbox_rows(&db, &table.name, &id.to_string())
            .await
            .is_empty()
    );
    outbox::migration::drop_table(&db, &table).await.unwrap();
}

/// A customer id no other run uses against the same database.
fn fresh_customer_id() -> i64 {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    // Addresses take the next ids; keep apart from concurrent tests of this binary.
    (micros / 16) * 16
}

fn customer(id: i64, name: &str) -> shop::customer::ActiveModel {
    shop::customer::ActiveModel {
        id: Set(id),
        name: Set(name.into()),
        email: Set("ada@example.com".into()),
    }
}

async fn customer_name(db: &DatabaseConnection, id: i64) -> Option<String> {
    shop::customer::Entity::find_by_id(id)
        .one(db)
        .await
        .expect("read the customer")
        .map(|c| c.name)
}

fn assert_refused_outside_a_transaction(err: &sea_orm::DbErr, operation: &str) {
    let message = err.to_string();
    for part in [
        operation,
        "must run in the caller's transaction",
        "is not in one (a plain `DatabaseConnection` autocommits each statement)",
        "Run it on a `DatabaseTransaction` from `db.begin()`",
    ] {
        assert!(message.contains(part), "`{part}` in: {message}");
    }
}

/// Item 4 of issue 9: the entity listener is atomic with its save in a transaction, and refused
/// with a clear error on a plain connection, before the business row is written or deleted.
async fn the_entity_listener_is_atomic_or_refused(db: DatabaseConnection) {
    schema(&db).await;
    let customer_id = fresh_customer_id();

    // A plain connection: the insert is refused, and neither the customer nor a snapshot exists.
    let err = customer(customer_id, "Ada")
        .insert(&db)
        .await
        .expect_err("a save on a plain connection is refused");
    assert_refused_outside_a_transaction(&err, "the entity listener's save");
    assert_eq!(
        customer_name(&db, customer_id).await,
        None,
        "no customer row"
    );
    assert!(
        outbox_rows(&db, "outbox", &customer_id.to_string())
            .await
            .is_empty()
    );

    // The transaction path: the customer and its snapshot commit together.
    let txn = db.begin().await.unwrap();
    let saved = customer(customer_id, "Ada")
        .insert(&txn)
        .await
        .expect("insert in a transaction");
    shop::address::ActiveModel {
        id: Set(customer_id + 1),
        customer_id: Set(customer_id),
        city: Set("Paris".into()),
    }
    .insert(&txn)
    .await
    .expect("insert address");
    txn.commit().await.unwrap();
    let rows = outbox_rows(&db, "outbox", &customer_id.to_string()).await;
    let types: Vec<&str> = rows.iter().map(|r| r.event_type.as_str()).collect();
    assert_eq!(types, ["CustomerCreated"]);

    // A plain-connection update is refused, and the row keeps its name.
    let mut renamed: shop::customer::ActiveModel = saved.clone().into();
    renamed.name = Set("Ada L.".into());
    let err = renamed
        .update(&db)
        .await
        .expect_err("an update on a plain connection is refused");
    assert_refused_outside_a_transaction(&err, "the entity listener's save");
    assert_eq!(
        customer_name(&db, customer_id).await.as_deref(),
        Some("Ada")
    );

    // A plain-connection delete is refused before the row is deleted.
    let err = shop::customer::ActiveModel::from(saved.clone())
        .delete(&db)
        .await
        .expect_err("a delete on a plain connection is refused");
    assert_refused_outside_a_transaction(
        &err,
        &format!("the entity listener's Deleted snapshot of aggregate `Customer` {customer_id}"),
    );
    assert_eq!(
        customer_name(&db, customer_id).await.as_deref(),
        Some("Ada")
    );
    let rows = outbox_rows(&db, "outbox", &customer_id.to_string()).await;
    assert_eq!(
        rows.len(),
        1,
        "no snapshot from the refused update or delete"
    );

    // In a transaction, the update and the delete write their snapshots.
    let txn = db.begin().await.unwrap();
    let mut renamed: shop::customer::ActiveModel = saved.clone().into();
    renamed.name = Set("Ada L.".into());
    renamed.update(&txn).await.expect("update in a transaction");
    shop::address::Entity::delete_by_id(customer_id + 1)
        .exec(&txn)
        .await
        .expect("delete the address");
    shop::customer::ActiveModel::from(saved)
        .delete(&txn)
        .await
        .expect("delete in a transaction");
    txn.commit().await.unwrap();
    let rows = outbox_rows(&db, "outbox", &customer_id.to_string()).await;
    let types: Vec<&str> = rows.iter().map(|r| r.event_type.as_str()).collect();
    assert_eq!(
        types,
        ["CustomerCreated", "CustomerUpdated", "CustomerDeleted"]
    );
    assert_eq!(rows[1].payload["name"], "Ada L.");
    assert_eq!(customer_name(&db, customer_id).await, None);
}

on_every_backend!(
    the_entity_listener_is_atomic_or_refused:
    postgres_entity_listener_is_atomic_or_refused,
    mariadb_entity_listener_is_atomic_or_refused,
    sqlite_entity_listener_is_atomic_or_refused
);

/// The table the writer creates carries the poll source's sequence: assigned by the database at
/// INSERT, in insertion order, never written by the writer.
async fn the_table_numbers_rows_at_insert(db: DatabaseConnection) {
    let table = OutboxTable::new(support::unique("outbox_seq"));
    outbox::migration::create_table(&db, &table).await.unwrap();
    let outbox = Outbox::new(table.clone());
    let id = Uuid::now_v7();
    let events: Vec<shop::OrderEvent> = (0..3)
        .map(|i| shop::OrderEvent::Shipped {
            id,
            carrier: format!("carrier-{i}"),
        })
        .collect();
    let mut written = Vec::new();
    for chunk in [&events[..2], &events[2..]] {
        let txn = db.begin().await.unwrap();
        written.extend(
            outbox::write_events(
                &txn,
                &outbox,
                chunk.iter().map(|e| e as &dyn outbox::DomainEvent),
            )
            .await
            .expect("write"),
        );
        txn.commit().await.unwrap();
    }
    let backend = db.get_database_backend();
    let q = |c: &str| outbox::migration::quote(backend, c);
    let order = insertion_order(backend);
    let rows = db
        .query_all_raw(Statement::from_string(
            backend,
            format!(
                "SELECT {order} AS n, {} AS id FROM {} ORDER BY {order}",
                match backend {
                    DbBackend::Postgres => format!("{}::text", q("id")),
                    _ => q("id"),
                },
                q(&table.name)
            ),
        ))
        .await
        .expect("the insertion-order column exists");
    let numbered: Vec<(i64, String)> = rows
        .iter()
        .map(|r| (r.try_get("", "n").unwrap(), r.try_get("", "id").unwrap()))
        .collect();
    let expected: Vec<(i64, String)> = written
        .iter()
        .zip(1..)
        .map(|(row, n)| (n, row.id.to_string()))
        .collect();
    assert_eq!(
        numbered, expected,
        "numbered 1, 2, 3 by the database at INSERT, in insertion order"
    );
    outbox::migration::drop_table(&db, &table).await.unwrap();
}

on_every_backend!(
    the_table_numbers_rows_at_insert:
    postgres_outbox_table_has_a_database_assigned_sequence,
    mariadb_outbox_table_has_a_database_assigned_sequence,
    sqlite_outbox_table_keeps_its_rowid
);

/// An event whose key and text are whatever the caller passes, hostile SQL included.
#[derive(Clone, Debug, serde::Serialize, outbox::DomainEvent)]
#[domain_event(aggregate = "Note", version = 3)]
struct NoteWritten {
    #[domain_event(aggregate_id)]
    key: String,
    text: String,
}

/// The shape of SeaORM's example services: `#[emits]` begins the transaction on the pool, writes
/// the events on it and commits.
#[outbox::emits(NoteWritten)]
async fn write_note(
    db: &DatabaseConnection,
    events: &mut outbox::Events,
    key: &str,
    text: &str,
) -> Result<Uuid, ShopError> {
    let order = shop::place_order_without_outbox(db, order(77)).await?;
    events.record(NoteWritten {
        key: key.to_owned(),
        text: text.to_owned(),
    });
    Ok(order.id)
}

static MISSING_OUTBOX: std::sync::LazyLock<Outbox> =
    std::sync::LazyLock::new(|| Outbox::new(OutboxTable::new("no_such_outbox_table")));

#[outbox::emits(NoteWritten, outbox = &*MISSING_OUTBOX)]
async fn write_note_to_a_missing_table(
    db: &DatabaseConnection,
    events: &mut outbox::Events,
    key: &str,
) -> Result<Uuid, ShopError> {
    let order = shop::place_order_without_outbox(db, order(78)).await?;
    events.record(NoteWritten {
        key: key.to_owned(),
        text: String::new(),
    });
    Ok(order.id)
}

/// A private database (for `pg_stat_statements`) through a pool of ONE connection, so that what
/// follows a call runs on the very connection the call committed on.
async fn one_connection_pool() -> (DatabaseConnection, DatabaseConnection) {
    let db = private_postgres_database().await;
    schema(&db).await;
    let name = db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT current_database() AS name",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<String>("", "name")
        .unwrap();
    let base = support::database_url();
    let base = base.rsplit_once('/').map(|(base, _)| base).unwrap_or(&base);
    let mut options = sea_orm::ConnectOptions::new(format!("{base}/{name}"));
    options.max_connections(1).min_connections(1);
    let pool = sea_orm::Database::connect(options).await.unwrap();
    (db, pool)
}

/// After a call, the pool's one connection is outside any transaction: an autocommit statement on
/// it is visible at once from another connection.
async fn assert_next_statement_autocommits(pool: &DatabaseConnection, other: &DatabaseConnection) {
    let id = Uuid::now_v7();
    shop::order::ActiveModel {
        id: Set(id),
        customer_id: Set(1),
        total_cents: Set(0),
        status: Set("probe".into()),
    }
    .insert(pool)
    .await
    .expect("an autocommit statement after the call");
    assert!(
        shop::order::Entity::find_by_id(id)
            .one(other)
            .await
            .unwrap()
            .is_some(),
        "the statement after the call committed on its own: the connection was not left in a \
         transaction"
    );
}

/// Item 3 of issue 15: on `&DatabaseConnection`, `#[emits]` begins the transaction, writes the
/// events with the same bound INSERT as in a caller's transaction, then commits. Every value
/// arrives byte-exact (hostile SQL included), the order commits with its event, the pooled
/// connection is clean afterwards, and the events' INSERT is the prepared statement with bound
/// parameters, never the values spelled into the SQL text.
#[tokio::test]
async fn events_on_an_owned_connection_are_the_bound_insert_and_commit_with_the_rows() {
    let (db, pool) = one_connection_pool().await;
    let hostile = [
        "'); DELETE FROM outbox; --",
        "\\'; SELECT pg_sleep(10); --",
        "E'\\x41' $1 $$ ? :name ::text",
        "ünï\ncode\t\r\u{1F980} \"quoted\"",
        "\\",
        "''",
        "",
    ];
    for (i, text) in hostile.iter().enumerate() {
        let key = format!("{}-{i}-{text}", support::unique("note"));
        let before = unix_micros();
        let order_id = write_note(&pool, &key, text).await.expect("write the note");
        let after = unix_micros();
        let rows = outbox_rows(&db, "outbox", &key).await;
        assert_eq!(rows.len(), 1, "one event for {text:?}");
        let row = &rows[0];
        assert_eq!(row.aggregate_id, key);
        assert_eq!(row.aggregate_type, "Note");
        assert_eq!(row.event_type, "NoteWritten");
        assert_eq!(row.schema_version, Some(3));
        assert_eq!(row.payload, json!({"key": key, "text": text}));
        Uuid::parse_str(&row.id).expect("a uuid id");
        let ts: DateTimeUtc = db
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT \"timestamp\" AS ts FROM outbox WHERE id = $1::uuid",
                [row.id.clone().into()],
            ))
            .await
            .unwrap()
            .unwrap()
            .try_get("", "ts")
            .unwrap();
        assert!(
            before <= ts.timestamp_micros() && ts.timestamp_micros() <= after,
            "timestamp {ts} between {before} and {after}: {}",
            row.timestamp
        );
        assert!(
            shop::order::Entity::find_by_id(order_id)
                .one(&db)
                .await
                .unwrap()
                .is_some(),
            "the order committed with its event"
        );
        assert_next_statement_autocommits(&pool, &db).await;
    }
    let outbox_intact: i64 = db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT count(*) AS n FROM outbox WHERE aggregatetype = 'Note'",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get("", "n")
        .unwrap();
    assert_eq!(outbox_intact, hostile.len() as i64, "nothing was deleted");

    // One INSERT statement, run once per call, with its values as parameters: the bound form
    // (a literal form would show each value as a cast constant, `$n::uuid`, once normalized).
    let inserts: Vec<(String, i64)> = db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT query, calls FROM pg_stat_statements \
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND query LIKE 'INSERT INTO \"outbox\"%'",
        ))
        .await
        .expect("pg_stat_statements")
        .iter()
        .map(|r| {
            (
                r.try_get("", "query").unwrap(),
                r.try_get("", "calls").unwrap(),
            )
        })
        .collect();
    assert_eq!(
        inserts.len(),
        1,
        "one events' INSERT statement: {inserts:?}"
    );
    let (insert, calls) = &inserts[0];
    assert_eq!(
        *calls,
        hostile.len() as i64,
        "one INSERT per call: {insert}"
    );
    assert!(
        !insert.contains("::"),
        "the events' INSERT binds its values, uncast: {insert}"
    );
    // And it is the statement the pool's connection prepared, as in a caller's transaction.
    let prepared: Vec<String> = pool
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT statement FROM pg_prepared_statements \
             WHERE statement LIKE 'INSERT INTO \"outbox\"%'",
        ))
        .await
        .expect("pg_prepared_statements")
        .iter()
        .map(|r| r.try_get("", "statement").unwrap())
        .collect();
    assert_eq!(
        prepared.len(),
        1,
        "the events' INSERT is a prepared statement of the connection: {prepared:?}"
    );
    assert!(
        prepared[0].contains("$8") && !prepared[0].contains("E'"),
        "prepared with its eight values bound: {prepared:?}"
    );
}

/// A failure on a connection that `#[emits]` owns rolls back the business rows with the events:
/// the events' INSERT failing on a missing table (the error names it) or on a value PostgreSQL
/// refuses (a NUL in `text`; the error names the outbox table). The pooled connection is clean
/// afterwards, and the next call on it commits normally.
#[tokio::test]
async fn a_failed_events_insert_on_an_owned_connection_rolls_back_the_business_rows() {
    let (db, pool) = one_connection_pool().await;
    let count = |sql: String| {
        let db = db.clone();
        async move {
            db.query_one_raw(Statement::from_string(DbBackend::Postgres, sql))
                .await
                .unwrap()
                .unwrap()
                .try_get::<i64>("", "n")
                .unwrap()
        }
    };
    let orders = |customer_id: i64| {
        count(format!(
            "SELECT count(*) AS n FROM orders WHERE customer_id = {customer_id}"
        ))
    };
    let notes = || count("SELECT count(*) AS n FROM outbox WHERE aggregatetype = 'Note'".into());
    let key = support::unique("note_missing");
    let err = write_note_to_a_missing_table(&pool, &key)
        .await
        .expect_err("the outbox table does not exist");
    let message = err.to_string();
    assert!(
        message.contains("no_such_outbox_table") && message.contains("does not exist"),
        "{message}"
    );
    assert_eq!(
        orders(78).await,
        0,
        "the order rolled back with its failed event"
    );
    assert_next_statement_autocommits(&pool, &db).await;

    let key = format!("{}-nul\0", support::unique("note_nul"));
    let (before, notes_before) = (orders(77).await, notes().await);
    let err = write_note(&pool, &key, "nul")
        .await
        .expect_err("PostgreSQL refuses a NUL in text");
    let message = err.to_string();
    assert!(
        message.contains("\"outbox\""),
        "the error names the table: {message}"
    );
    assert_eq!(
        orders(77).await,
        before,
        "the order rolled back with its failed event"
    );
    assert_eq!(
        notes().await,
        notes_before,
        "no event of the rolled-back order"
    );
    assert_next_statement_autocommits(&pool, &db).await;

    // And the next call on the same connection commits normally.
    let ok = support::unique("note_after");
    write_note(&pool, &ok, "after").await.expect("write after");
    assert_eq!(outbox_rows(&db, "outbox", &ok).await.len(), 1);
    assert_eq!(orders(77).await, before + 1);
}

fn unix_micros() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is past 1970");
    i64::try_from(since.as_micros()).expect("microseconds fit in i64")
}

/// An order row with the given id, as a service builds it before its INSERT.
fn order_row(id: Uuid, customer_id: i64) -> shop::order::ActiveModel {
    shop::order::ActiveModel {
        id: Set(id),
        customer_id: Set(customer_id),
        total_cents: Set(750),
        status: Set("placed".to_owned()),
    }
}

/// `Events::insert_with`: the notes recorded `before` ride on the order's INSERT; those recorded
/// `after` are written at the end of the function, as without it.
#[outbox::emits(NoteWritten)]
async fn note_with_the_order(
    txn: &sea_orm::DatabaseTransaction,
    events: &mut outbox::Events,
    order_id: Uuid,
    key: &str,
    before: &[&str],
    after: &[&str],
) -> Result<shop::order::Model, ShopError> {
    for text in before {
        events.record(NoteWritten {
            key: key.to_owned(),
            text: (*text).to_owned(),
        });
    }
    let order = events.insert_with(txn, order_row(order_id, 79)).await?;
    for text in after {
        events.record(NoteWritten {
            key: key.to_owned(),
            text: (*text).to_owned(),
        });
    }
    Ok(order)
}

/// The same, into an outbox table that does not exist.
#[outbox::emits(NoteWritten, outbox = &*MISSING_OUTBOX)]
async fn note_with_the_order_to_a_missing_table(
    txn: &sea_orm::DatabaseTransaction,
    events: &mut outbox::Events,
    order_id: Uuid,
    key: &str,
) -> Result<shop::order::Model, ShopError> {
    events.record(NoteWritten {
        key: key.to_owned(),
        text: "lost with its order".to_owned(),
    });
    let order = events
        .insert_with_in(txn, &MISSING_OUTBOX, order_row(order_id, 80))
        .await?;
    Ok(order)
}

fn texts(rows: &[Row]) -> Vec<String> {
    rows.iter()
        .map(|r| r.payload["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Item 3 of issue 15 on PostgreSQL: the events recorded before `insert_with` and the order are
/// ONE statement (a data-modifying CTE), run once per call, every value bound; no events' INSERT
/// of their own follows (the collector is empty), the order and its events commit together, the
/// returned model is the inserted row, and hostile text arrives byte-exact.
#[tokio::test]
async fn events_ride_on_the_business_insert_as_one_bound_statement() {
    let db = private_postgres_database().await;
    schema(&db).await;
    let hostile = [
        "'); DELETE FROM outbox; --",
        "E'\\x41' $1 $$ ? :name ::text",
        "ünï\ncode\t\r\u{1F980} \"quoted\"",
        "",
    ];
    for (i, text) in hostile.iter().enumerate() {
        let key = format!("{}-{i}-{text}", support::unique("carried"));
        let id = Uuid::now_v7();
        let txn = db.begin().await.unwrap();
        let order = note_with_the_order(&txn, id, &key, &[*text, "second"], &[])
            .await
            .expect("the order with its events");
        txn.commit().await.unwrap();
        assert_eq!(
            Some(order.clone()),
            shop::order::Entity::find_by_id(id).one(&db).await.unwrap(),
            "the returned model is the committed row"
        );
        assert_eq!(order.customer_id, 79);
        let rows = outbox_rows(&db, "outbox", &key).await;
        assert_eq!(texts(&rows), [*text, "second"], "in recording order");
        assert_eq!(rows[0].payload, json!({"key": key, "text": text}));
        assert_eq!(rows[0].event_type, "NoteWritten");
        assert_eq!(rows[0].schema_version, Some(3));
    }

    let statements: Vec<(String, i64, i64)> = db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT query, calls, rows FROM pg_stat_statements \
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND (query LIKE 'WITH%' OR query LIKE 'INSERT INTO%')",
        ))
        .await
        .expect("pg_stat_statements")
        .iter()
        .map(|r| {
            (
                r.try_get("", "query").unwrap(),
                r.try_get("", "calls").unwrap(),
                r.try_get("", "rows").unwrap(),
            )
        })
        .collect();
    let carrying: Vec<_> = statements
        .iter()
        .filter(|(q, ..)| q.starts_with("WITH"))
        .collect();
    assert_eq!(
        carrying.len(),
        1,
        "one statement carries the events: {statements:?}"
    );
    let (query, calls, _) = carrying[0];
    assert_eq!(*calls, hostile.len() as i64, "run once per call: {query}");
    assert!(
        query.contains("INSERT INTO \"outbox\"") && query.contains("INSERT INTO \"orders\""),
        "the events' INSERT as a CTE of the order's INSERT: {query}"
    );
    assert!(
        !query.contains("::") && !query.contains("E'"),
        "every value bound, none spelled into the SQL: {query}"
    );
    assert!(
        statements
            .iter()
            .all(|(q, ..)| !q.starts_with("INSERT INTO \"outbox\"")
                && !q.starts_with("INSERT INTO \"orders\"")),
        "no events' INSERT of their own, no order INSERT of its own: {statements:?}"
    );
}

/// Events recorded before `insert_with` (sent with the order) and after it (sent at the end of
/// the function) are in the outbox in the order of the `record` calls, and commit with the order
/// or roll back with it.
async fn events_before_and_after_insert_with_keep_their_order(db: DatabaseConnection) {
    schema(&db).await;
    let key = support::unique("carried_order");
    let id = Uuid::now_v7();
    let txn = db.begin().await.unwrap();
    note_with_the_order(&txn, id, &key, &["b0", "b1"], &["a0", "a1"])
        .await
        .expect("the order with its events");
    txn.commit().await.unwrap();
    assert_eq!(
        texts(&outbox_rows(&db, "outbox", &key).await),
        ["b0", "b1", "a0", "a1"]
    );
    assert!(
        shop::order::Entity::find_by_id(id)
            .one(&db)
            .await
            .unwrap()
            .is_some()
    );

    let key = support::unique("carried_rollback");
    let id = Uuid::now_v7();
    let txn = db.begin().await.unwrap();
    note_with_the_order(&txn, id, &key, &["b0"], &["a0"])
        .await
        .expect("the order with its events");
    txn.rollback().await.unwrap();
    assert!(outbox_rows(&db, "outbox", &key).await.is_empty());
    assert!(
        shop::order::Entity::find_by_id(id)
            .one(&db)
            .await
            .unwrap()
            .is_none()
    );
}

on_every_backend!(
    events_before_and_after_insert_with_keep_their_order:
    postgres_events_before_and_after_insert_with_keep_their_order,
    mariadb_events_before_and_after_insert_with_keep_their_order,
    sqlite_events_before_and_after_insert_with_keep_their_order
);

/// A failed `insert_with` fails the function and its transaction rolls back the order and the
/// events: a missing outbox table (the error names it), and an order INSERT the database refuses
/// (a duplicate key; the error names the outbox table and the order table).
async fn a_failed_insert_with_rolls_back_the_row_and_the_events(db: DatabaseConnection) {
    schema(&db).await;
    let key = support::unique("carried_missing");
    let id = Uuid::now_v7();
    let txn = db.begin().await.unwrap();
    let err = note_with_the_order_to_a_missing_table(&txn, id, &key)
        .await
        .expect_err("the outbox table does not exist");
    drop(txn);
    let message = err.to_string();
    assert!(message.contains("no_such_outbox_table"), "{message}");
    assert!(
        shop::order::Entity::find_by_id(id)
            .one(&db)
            .await
            .unwrap()
            .is_none(),
        "the order rolled back with its events"
    );

    let taken = Uuid::now_v7();
    order_row(taken, 81).insert(&db).await.unwrap();
    let key = support::unique("carried_duplicate");
    let txn = db.begin().await.unwrap();
    let err = note_with_the_order(&txn, taken, &key, &["b0"], &["a0"])
        .await
        .expect_err("the order id is taken");
    txn.rollback().await.unwrap();
    let message = err.to_string();
    assert!(
        message.contains("\"outbox\"") && message.contains("\"orders\""),
        "the error names the outbox and the order table: {message}"
    );
    assert!(
        outbox_rows(&db, "outbox", &key).await.is_empty(),
        "no event of the refused order"
    );
}

on_every_backend!(
    a_failed_insert_with_rolls_back_the_row_and_the_events:
    postgres_a_failed_insert_with_rolls_back_the_row_and_the_events,
    mariadb_a_failed_insert_with_rolls_back_the_row_and_the_events,
    sqlite_a_failed_insert_with_rolls_back_the_row_and_the_events
);
