//! The outbox table's DDL, for PostgreSQL, MariaDB/MySQL and SQLite, as a SeaORM migration and
//! as a plain function.
//!
//! The columns are the defaults of Debezium's Outbox Event Router, so Debezium can read a table
//! made here and the relay can read a table that Debezium reads today. `schemaversion` is an
//! extra nullable column (Debezium's `table.field.event.schema.version` can point at it; Debezium
//! ignores it otherwise).

use sea_orm::{ConnectionTrait, DbBackend, DbErr};
use sea_orm_migration::{MigrationName, MigrationTrait, SchemaManager, async_trait};

use crate::OutboxTable;

/// The outbox table's columns, in Debezium's Outbox Event Router names plus `schemaversion`, in
/// the order the writer inserts them.
pub const COLUMNS: [&str; 8] = [
    "id",
    "aggregatetype",
    "aggregateid",
    "type",
    "schemaversion",
    "payload",
    "timestamp",
    "tracingspancontext",
];

/// The migration that creates the outbox table. Add it to your `Migrator`:
///
/// ```
/// use sea_orm_migration::MigrationTrait;
/// fn migrations() -> Vec<Box<dyn MigrationTrait>> {
///     vec![Box::new(outbox_core::migration::CreateOutboxTable::default())]
/// }
/// ```
#[derive(Clone, Debug, Default)]
pub struct CreateOutboxTable {
    pub table: OutboxTable,
}

impl MigrationName for CreateOutboxTable {
    fn name(&self) -> &str {
        "m20260101_000001_create_outbox_table"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateOutboxTable {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        create_table(manager.get_connection(), &self.table).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        drop_table(manager.get_connection(), &self.table).await
    }
}

/// Creates the outbox table if it does not exist.
pub async fn create_table<C: ConnectionTrait + ?Sized>(
    conn: &C,
    table: &OutboxTable,
) -> Result<(), DbErr> {
    table.validate()?;
    conn.execute_unprepared(&create_table_sql(conn.get_database_backend(), table))
        .await
        .map(drop)
}

/// Drops the outbox table if it exists.
pub async fn drop_table<C: ConnectionTrait + ?Sized>(
    conn: &C,
    table: &OutboxTable,
) -> Result<(), DbErr> {
    let name = qualified(conn.get_database_backend(), table);
    conn.execute_unprepared(&format!("DROP TABLE IF EXISTS {name}"))
        .await
        .map(drop)
}

/// The `CREATE TABLE` statement for `backend`, every identifier quoted.
pub fn create_table_sql(backend: DbBackend, table: &OutboxTable) -> String {
    let name = qualified(backend, table);
    let q = |c: &str| quote(backend, c);
    // (id, payload, timestamp) types per backend; the string columns are the same everywhere.
    let (id, payload, timestamp) = match backend {
        DbBackend::Postgres => ("uuid", "jsonb", "timestamptz"),
        DbBackend::MySql => ("char(36)", "json", "datetime(6)"),
        _ => ("text", "text", "text"),
    };
    format!(
        "CREATE TABLE IF NOT EXISTS {name} (\n  \
         {} {id} NOT NULL PRIMARY KEY,\n  \
         {} varchar(255) NOT NULL,\n  \
         {} varchar(255) NOT NULL,\n  \
         {} varchar(255) NOT NULL,\n  \
         {} integer NULL,\n  \
         {} {payload} NULL,\n  \
         {} {timestamp} NOT NULL,\n  \
         {} varchar(256) NULL\n)",
        q("id"),
        q("aggregatetype"),
        q("aggregateid"),
        q("type"),
        q("schemaversion"),
        q("payload"),
        q("timestamp"),
        q("tracingspancontext"),
    )
}

fn qualified(backend: DbBackend, table: &OutboxTable) -> String {
    match &table.schema {
        Some(schema) => format!("{}.{}", quote(backend, schema), quote(backend, &table.name)),
        None => quote(backend, &table.name),
    }
}

/// Quotes an identifier for `backend`, doubling the quote character inside it.
pub fn quote(backend: DbBackend, ident: &str) -> String {
    match backend {
        DbBackend::MySql => format!("`{}`", ident.replace('`', "``")),
        _ => format!("\"{}\"", ident.replace('"', "\"\"")),
    }
}
