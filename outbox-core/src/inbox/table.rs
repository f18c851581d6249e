//! The inbox table: its DDL for PostgreSQL, MariaDB/MySQL and SQLite (as a SeaORM migration and as
//! a plain function), the duplicate check, and the retention purge.
//!
//! One row per `(consumer, event_id)` that a consumer has handled; the primary key is what turns a
//! replayed message away. `received_at` is set by the database's clock (never the client's), and
//! rows older than the retention window are purged, as MassTransit's duplicate-detection window
//! does. A duplicate that arrives after its row was purged is handled again, so the window must be
//! longer than any redelivery can take.

use std::time::Duration;

use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement, Value};
use sea_orm_migration::{MigrationName, MigrationTrait, SchemaManager, async_trait};

use crate::migration::quote;

/// The longest consumer name and event id the table holds (`varchar(255)`). Longer ones are
/// refused before the insert, so that no database truncates them into false duplicates.
pub const MAX_KEY_LEN: usize = 255;

/// The inbox table's schema-qualified name. Identifiers are always quoted in SQL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboxTable {
    /// The schema (PostgreSQL) or database (MySQL); `None` uses the connection's default.
    pub schema: Option<String>,
    /// The table name. Default `inbox`.
    pub name: String,
}

impl Default for InboxTable {
    fn default() -> Self {
        InboxTable {
            schema: None,
            name: "inbox".to_owned(),
        }
    }
}

impl InboxTable {
    /// A table in the connection's default schema.
    pub fn new(name: impl Into<String>) -> Self {
        InboxTable {
            schema: None,
            name: name.into(),
        }
    }

    /// The same table in `schema`.
    pub fn in_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// Checked at use rather than at construction, so that a struct literal cannot bypass it.
    pub(crate) fn validate(&self) -> Result<(), DbErr> {
        if self.name.is_empty() {
            return Err(DbErr::Custom("the inbox table name is empty".into()));
        }
        if self.schema.as_deref() == Some("") {
            return Err(DbErr::Custom("the inbox schema name is empty".into()));
        }
        Ok(())
    }

    pub(crate) fn qualified(&self, backend: DbBackend) -> String {
        match &self.schema {
            Some(schema) => format!("{}.{}", quote(backend, schema), quote(backend, &self.name)),
            None => quote(backend, &self.name),
        }
    }
}

impl std::fmt::Display for InboxTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.qualified(DbBackend::Postgres))
    }
}

/// The migration that creates the inbox table. Add it to your `Migrator` beside the outbox's:
///
/// ```
/// use sea_orm_migration::MigrationTrait;
/// fn migrations() -> Vec<Box<dyn MigrationTrait>> {
///     vec![Box::new(outbox_core::inbox::CreateInboxTable::default())]
/// }
/// ```
#[derive(Clone, Debug, Default)]
pub struct CreateInboxTable {
    pub table: InboxTable,
}

impl MigrationName for CreateInboxTable {
    fn name(&self) -> &str {
        "m20260101_000002_create_inbox_table"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateInboxTable {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        create_table(manager.get_connection(), &self.table).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        drop_table(manager.get_connection(), &self.table).await
    }
}

/// Creates the inbox table (and its `received_at` index, which the purge uses) if missing.
pub async fn create_table<C: ConnectionTrait + ?Sized>(
    conn: &C,
    table: &InboxTable,
) -> Result<(), DbErr> {
    table.validate()?;
    for statement in create_table_sql(conn.get_database_backend(), table) {
        conn.execute_unprepared(&statement).await?;
    }
    Ok(())
}

/// Drops the inbox table if it exists.
pub async fn drop_table<C: ConnectionTrait + ?Sized>(
    conn: &C,
    table: &InboxTable,
) -> Result<(), DbErr> {
    table.validate()?;
    let name = table.qualified(conn.get_database_backend());
    conn.execute_unprepared(&format!("DROP TABLE IF EXISTS {name}"))
        .await
        .map(drop)
}

/// The statements that create the table and its index for `backend`, every identifier quoted.
pub fn create_table_sql(backend: DbBackend, table: &InboxTable) -> Vec<String> {
    let name = table.qualified(backend);
    let q = |c: &str| quote(backend, c);
    let (consumer, event_id, received_at) = (q("consumer"), q("event_id"), q("received_at"));
    // The database's clock stamps each row: a client clock could purge a row early.
    let stamp = match backend {
        DbBackend::Postgres => "timestamptz NOT NULL DEFAULT now()",
        DbBackend::MySql => "datetime(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)",
        _ => "text NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now'))",
    };
    // MySQL has no `CREATE INDEX IF NOT EXISTS`, so its index is declared in the table.
    let inline_index = match backend {
        DbBackend::MySql => format!(",\n  KEY ({received_at})"),
        _ => String::new(),
    };
    let mut statements = vec![format!(
        "CREATE TABLE IF NOT EXISTS {name} (\n  \
         {consumer} varchar(255) NOT NULL,\n  \
         {event_id} varchar(255) NOT NULL,\n  \
         {received_at} {stamp},\n  \
         PRIMARY KEY ({consumer}, {event_id}){inline_index}\n)"
    )];
    if backend != DbBackend::MySql {
        // An index lives in its table's schema on PostgreSQL, so its name is not qualified.
        let index = q(&format!("{}_received_at", table.name));
        statements.push(format!(
            "CREATE INDEX IF NOT EXISTS {index} ON {name} ({received_at})"
        ));
    }
    statements
}

/// Records that `consumer` handled `event_id`, on the handler's transaction. `false` means the
/// row was already there: the event is a duplicate.
///
/// A concurrent handler of the same event blocks on the uncommitted row and sees the duplicate
/// once the first commits (or inserts the row if the first rolls back).
pub(crate) async fn record<C: ConnectionTrait + ?Sized>(
    conn: &C,
    table: &InboxTable,
    consumer: &str,
    event_id: &str,
) -> Result<bool, DbErr> {
    let backend = conn.get_database_backend();
    let name = table.qualified(backend);
    let (c, e) = (quote(backend, "consumer"), quote(backend, "event_id"));
    // `INSERT IGNORE` would also turn truncation into a warning; the lengths are checked before.
    let sql = match backend {
        DbBackend::Postgres => {
            format!("INSERT INTO {name} ({c}, {e}) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        }
        DbBackend::MySql => format!("INSERT IGNORE INTO {name} ({c}, {e}) VALUES (?, ?)"),
        _ => format!("INSERT INTO {name} ({c}, {e}) VALUES (?, ?) ON CONFLICT DO NOTHING"),
    };
    let values: [Value; 2] = [consumer.into(), event_id.into()];
    let result = conn
        .execute_raw(Statement::from_sql_and_values(backend, sql, values))
        .await?;
    Ok(result.rows_affected() == 1)
}

/// Deletes the rows older than `window` by the database's clock, for one consumer or (with
/// `None`) for all, and returns how many went.
pub async fn purge<C: ConnectionTrait + ?Sized>(
    conn: &C,
    table: &InboxTable,
    consumer: Option<&str>,
    window: Duration,
) -> Result<u64, DbErr> {
    table.validate()?;
    let backend = conn.get_database_backend();
    let name = table.qualified(backend);
    let received_at = quote(backend, "received_at");
    let (cutoff, window_value): (&str, Value) = match backend {
        DbBackend::Postgres => (
            "now() - make_interval(secs => $1)",
            window.as_secs_f64().into(),
        ),
        DbBackend::MySql => (
            "NOW(6) - INTERVAL ? MICROSECOND",
            i64::try_from(window.as_micros()).unwrap_or(i64::MAX).into(),
        ),
        _ => (
            "strftime('%Y-%m-%d %H:%M:%f', 'now', ?)",
            format!("-{:.3} seconds", window.as_secs_f64()).into(),
        ),
    };
    let mut sql = format!("DELETE FROM {name} WHERE {received_at} < {cutoff}");
    let mut values = vec![window_value];
    if let Some(consumer) = consumer {
        let placeholder = if backend == DbBackend::Postgres {
            "$2"
        } else {
            "?"
        };
        sql.push_str(&format!(
            " AND {} = {placeholder}",
            quote(backend, "consumer")
        ));
        values.push(consumer.into());
    }
    let result = conn
        .execute_raw(Statement::from_sql_and_values(backend, sql, values))
        .await?;
    Ok(result.rows_affected())
}

/// Fails unless the table exists with the inbox's columns: checked once when a consumer starts,
/// so a missing migration stops it with the table's name rather than on every message.
pub(crate) async fn check<C: ConnectionTrait + ?Sized>(
    conn: &C,
    table: &InboxTable,
) -> Result<(), DbErr> {
    table.validate()?;
    let backend = conn.get_database_backend();
    let sql = format!(
        "SELECT {}, {}, {} FROM {} WHERE 1 = 0",
        quote(backend, "consumer"),
        quote(backend, "event_id"),
        quote(backend, "received_at"),
        table.qualified(backend)
    );
    conn.execute_unprepared(&sql).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddl_quotes_every_identifier_and_keys_consumer_and_event_id() {
        let table = InboxTable::new("In\"box").in_schema("Shipping");
        let pg = create_table_sql(DbBackend::Postgres, &table);
        assert!(pg[0].contains("\"Shipping\".\"In\"\"box\""), "{}", pg[0]);
        assert!(pg[0].contains("PRIMARY KEY (\"consumer\", \"event_id\")"));
        assert!(pg[1].starts_with("CREATE INDEX IF NOT EXISTS \"In\"\"box_received_at\""));
        let my = create_table_sql(DbBackend::MySql, &InboxTable::new("in`box"));
        assert_eq!(my.len(), 1);
        assert!(my[0].contains("`in``box`") && my[0].contains("KEY (`received_at`)"));
    }

    #[test]
    fn empty_names_are_refused() {
        assert!(InboxTable::new("").validate().is_err());
        assert!(InboxTable::default().in_schema("").validate().is_err());
    }
}
