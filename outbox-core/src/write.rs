//! The outbox write: every event of one call in **one** statement on the caller's connection
//! (normally its transaction), so the events commit or roll back with the business rows.

use sea_orm::sea_query::{Alias, Expr, ExprTrait, Query};
use sea_orm::{ConnectionTrait, DbBackend, Statement, Value};

use crate::migration::COLUMNS;
use crate::{DomainEvent, Error, Outbox, OutboxEvent, WriteMode};

/// Writes `events` (of any types) to `outbox` on `conn`, as one multi-row INSERT.
///
/// Pass the active `DatabaseTransaction`: on a plain connection the statement autocommits on its
/// own, outside the business transaction. Returns the written rows, ids included.
///
/// ```no_run
/// # async fn demo(txn: &sea_orm::DatabaseTransaction, a: impl outbox_core::DomainEvent, b: impl outbox_core::DomainEvent) -> Result<(), outbox_core::Error> {
/// let written = outbox_core::write_events(txn, outbox_core::Outbox::global(), [&a as &dyn outbox_core::DomainEvent, &b]).await?;
/// assert_eq!(written.len(), 2);
/// # Ok(()) }
/// ```
pub async fn write_events<'e, C, I>(
    conn: &C,
    outbox: &Outbox,
    events: I,
) -> Result<Vec<OutboxEvent>, Error>
where
    C: ConnectionTrait + ?Sized,
    I: IntoIterator<Item = &'e dyn DomainEvent>,
{
    let rows = events
        .into_iter()
        .map(OutboxEvent::from_event)
        .collect::<Result<Vec<_>, _>>()?;
    write_rows(conn, outbox, &rows).await?;
    Ok(rows)
}

pub(crate) async fn write_rows<C>(
    conn: &C,
    outbox: &Outbox,
    rows: &[OutboxEvent],
) -> Result<(), Error>
where
    C: ConnectionTrait + ?Sized,
{
    if rows.is_empty() {
        return Ok(());
    }
    outbox.table.validate()?;
    let backend = conn.get_database_backend();
    let target = outbox.table.to_string();
    let db = |source| Error::Database {
        target: target.clone(),
        source,
    };
    match &outbox.mode {
        WriteMode::Insert => conn
            .execute_raw(insert(backend, outbox, rows))
            .await
            .map(drop)
            .map_err(db),
        WriteMode::RemoveAfterInsert => {
            conn.execute_raw(insert(backend, outbox, rows))
                .await
                .map_err(db)?;
            conn.execute_raw(delete(backend, outbox, rows))
                .await
                .map(drop)
                .map_err(db)
        }
        WriteMode::LogicalMessage { prefix } => {
            if backend != DbBackend::Postgres {
                return Err(Error::UnsupportedMode {
                    mode: outbox.mode.name(),
                    backend: format!("{backend:?}"),
                });
            }
            conn.execute_raw(emit_messages(prefix, rows)?)
                .await
                .map(drop)
                .map_err(|source| Error::Database {
                    target: "pg_logical_emit_message".into(),
                    source,
                })
        }
    }
}

/// The id as the column type of each backend: `uuid` on PostgreSQL, its text form elsewhere.
fn id_value(backend: DbBackend, row: &OutboxEvent) -> Value {
    match backend {
        DbBackend::Postgres => row.id.into(),
        _ => row.id.to_string().into(),
    }
}

fn insert(backend: DbBackend, outbox: &Outbox, rows: &[OutboxEvent]) -> Statement {
    let mut query = Query::insert();
    query
        .into_table(outbox.table.table_ref())
        .columns(COLUMNS.map(Alias::new));
    for row in rows {
        let payload: Value = match backend {
            DbBackend::Postgres => row.payload.clone().into(),
            // MySQL's JSON and SQLite's TEXT take the JSON text.
            _ => row.payload.to_string().into(),
        };
        query.values_panic([
            Expr::val(id_value(backend, row)),
            Expr::val(row.aggregate_type.as_str()),
            Expr::val(row.aggregate_id.as_str()),
            Expr::val(row.event_type.as_str()),
            Expr::val(row.schema_version),
            Expr::val(payload),
            Expr::val(row.timestamp),
            Expr::val(row.tracing_span_context.clone()),
        ]);
    }
    backend.build(&query)
}

fn delete(backend: DbBackend, outbox: &Outbox, rows: &[OutboxEvent]) -> Statement {
    let query = Query::delete()
        .from_table(outbox.table.table_ref())
        .and_where(Expr::col(Alias::new("id")).is_in(rows.iter().map(|r| id_value(backend, r))))
        .to_owned();
    backend.build(&query)
}

/// One `SELECT` of `pg_logical_emit_message(true, prefix, json)` per event, evaluated left to
/// right, so the messages enter the log in recording order. The JSON carries every outbox column
/// (see [`OutboxEvent`]'s serde form), which the relay's `message` source decodes.
fn emit_messages(prefix: &str, rows: &[OutboxEvent]) -> Result<Statement, Error> {
    let mut sql = String::from("SELECT ");
    let mut values: Vec<Value> = vec![prefix.into()];
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        let json = serde_json::to_string(row).map_err(|source| Error::Serialize {
            aggregate_type: row.aggregate_type.clone(),
            event_type: row.event_type.clone(),
            source,
        })?;
        values.push(json.into());
        sql.push_str(&format!("pg_logical_emit_message(true, $1, ${})", i + 2));
    }
    Ok(Statement::from_sql_and_values(
        DbBackend::Postgres,
        sql,
        values,
    ))
}
