//! The outbox write: every event of one call in **one** statement on the caller's transaction,
//! so the events commit or roll back with the business rows. Only a call with more events than
//! one statement can carry (8,191 rows on PostgreSQL and MySQL, 4,095 on SQLite, 1,664 logical
//! messages) is split into several statements, in recording order, and only inside a transaction.

use sea_orm::sea_query::{Alias, CommonTableExpression, Expr, ExprTrait, InsertStatement, Query};
use sea_orm::{
    ActiveModelBehavior, ActiveModelTrait, ColumnTrait, ConnectionTrait, DbBackend, DbErr,
    EntityName, EntityTrait, FromQueryResult, IntoActiveModel, Iterable, QueryTrait, Statement,
    Value,
};

use crate::migration::COLUMNS;
use crate::{DomainEvent, Error, Outbox, OutboxEvent, WriteMode};

/// Writes `events` (of any types) to `outbox` on `conn`, as one multi-row INSERT (or several, in
/// order, when there are more events than one statement can carry).
///
/// Pass the active `DatabaseTransaction`: on a plain connection the statement autocommits on its
/// own, outside the business transaction, and a write that needs several statements is refused
/// with [`Error::NotInTransaction`]. Returns the written rows, ids included.
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
    outbox.mode.check_backend(backend)?;
    let per_statement = rows_per_statement(backend, &outbox.mode);
    if rows.len() > per_statement {
        // Several statements are atomic only inside a transaction.
        crate::transaction::ensure_in_transaction(
            conn,
            format!(
                "writing {} events ({} statements of at most {per_statement})",
                rows.len(),
                rows.len().div_ceil(per_statement)
            ),
            "a failure between the statements would leave only some of the events written",
        )
        .await?;
    }
    let target = outbox.table.to_string();
    let db = |source| Error::Database {
        target: target.clone(),
        source,
    };
    // In recording order: chunk after chunk, row after row within each statement.
    for chunk in rows.chunks(per_statement) {
        match &outbox.mode {
            WriteMode::Insert => {
                conn.execute_raw(insert(backend, outbox, chunk))
                    .await
                    .map_err(db)?;
            }
            WriteMode::RemoveAfterInsert => {
                conn.execute_raw(insert(backend, outbox, chunk))
                    .await
                    .map_err(db)?;
                conn.execute_raw(delete(backend, outbox, chunk))
                    .await
                    .map_err(db)?;
            }
            WriteMode::LogicalMessage { prefix } => {
                conn.execute_raw(emit_messages(prefix, chunk)?)
                    .await
                    .map_err(|source| Error::Database {
                        target: "pg_logical_emit_message".into(),
                        source,
                    })?;
            }
        }
    }
    Ok(())
}

/// What [`insert_carrying`] did: the business INSERT's result, and whether the events are
/// written (on the two-statement path, a business INSERT that fails after the events' INSERT
/// leaves them written; a failed single statement writes nothing).
pub(crate) struct Carried<M> {
    pub(crate) result: Result<M, Error>,
    pub(crate) events_written: bool,
}

/// The name of the events' data-modifying CTE: never read, so only its uniqueness in the
/// statement matters.
const CARRIED_EVENTS: &str = "outbox_carried_events";

/// `model.insert(conn)` carrying `rows`: on PostgreSQL in [`WriteMode::Insert`], one statement
/// `WITH "outbox_carried_events" AS (INSERT INTO <outbox> ..) INSERT INTO <table> .. RETURNING ..`
/// (sea-query numbers the placeholders of both parts in one sequence, so every value stays bound);
/// elsewhere the events' INSERT and then `model.insert(conn)`, inside a transaction only.
///
/// PostgreSQL runs a data-modifying CTE exactly once and to completion whether or not the main
/// query reads it, and inserts its VALUES rows in order, so the outbox's `seq` numbers the events
/// in recording order; events written by a later statement of the transaction come after them.
pub(crate) async fn insert_carrying<A, C>(
    conn: &C,
    outbox: &Outbox,
    rows: &[OutboxEvent],
    model: A,
) -> Carried<<A::Entity as EntityTrait>::Model>
where
    A: ActiveModelTrait + ActiveModelBehavior + Send,
    <A::Entity as EntityTrait>::Model: IntoActiveModel<A>,
    C: ConnectionTrait,
{
    let table = <A::Entity as Default>::default().table_name().to_owned();
    let carrying = |source: DbErr| Error::Carrying {
        outbox: outbox.table.to_string(),
        table: table.clone(),
        source,
    };
    if rows.is_empty() {
        return Carried {
            result: model.insert(conn).await.map_err(carrying),
            events_written: true,
        };
    }
    let refused = |error| Carried {
        result: Err(error),
        events_written: false,
    };
    if let Err(error) = outbox.table.validate() {
        return refused(error);
    }
    let backend = conn.get_database_backend();
    if let Err(error) = outbox.mode.check_backend(backend) {
        return refused(error);
    }
    let business_columns = <A::Entity as EntityTrait>::Column::iter().count();
    let one_statement = backend == DbBackend::Postgres
        && outbox.mode == WriteMode::Insert
        && rows.len() * COLUMNS.len() + business_columns <= max_bind_parameters(backend);
    if one_statement {
        let result = insert_with_cte(conn, outbox, rows, model)
            .await
            .map_err(carrying);
        let events_written = result.is_ok();
        return Carried {
            result,
            events_written,
        };
    }
    // Two statements: atomic only inside a transaction.
    if let Err(error) = crate::transaction::ensure_in_transaction(
        conn,
        format!(
            "`Events::insert_with` into \"{table}\" on {}",
            crate::error::backend_name(backend)
        ),
        "there (no data-modifying CTE, or another write mode) the events' INSERT and the business \
         INSERT are two statements, and a failure between them would leave the events without \
         their row",
    )
    .await
    {
        return refused(error);
    }
    if let Err(error) = write_rows(conn, outbox, rows).await {
        return refused(error);
    }
    Carried {
        result: model.insert(conn).await.map_err(carrying),
        events_written: true,
    }
}

/// What `ActiveModelTrait::insert` does on a backend with `RETURNING` (its hooks, the INSERT
/// returning every column as SeaORM selects it, the model read back), with the events' INSERT as
/// a CTE of the same statement.
async fn insert_with_cte<A, C>(
    conn: &C,
    outbox: &Outbox,
    rows: &[OutboxEvent],
    model: A,
) -> Result<<A::Entity as EntityTrait>::Model, DbErr>
where
    A: ActiveModelTrait + ActiveModelBehavior + Send,
    <A::Entity as EntityTrait>::Model: IntoActiveModel<A>,
    C: ConnectionTrait,
{
    let backend = conn.get_database_backend();
    let model = A::before_save(model, conn, true).await?;
    let statement = carrying_statement(backend, outbox, rows, model);
    let row = conn
        .query_one_raw(statement)
        .await?
        .ok_or(DbErr::RecordNotInserted)?;
    let inserted = <A::Entity as EntityTrait>::Model::from_query_result(&row, "")?;
    A::after_save(inserted, conn, true).await
}

/// The events' INSERT as a data-modifying CTE of `model`'s INSERT, which returns every column
/// as SeaORM's `exec_with_returning` selects them.
fn carrying_statement<A: ActiveModelTrait>(
    backend: DbBackend,
    outbox: &Outbox,
    rows: &[OutboxEvent],
    model: A,
) -> Statement {
    let mut business = <A::Entity as EntityTrait>::insert(model).into_query();
    business.returning(
        Query::returning().exprs(
            <A::Entity as EntityTrait>::Column::iter()
                .map(|c| c.select_as(c.into_returning_expr(backend))),
        ),
    );
    let events = CommonTableExpression::new()
        .table_name(Alias::new(CARRIED_EVENTS))
        .query(insert_query(backend, outbox, rows))
        .to_owned();
    backend.build(&Query::with().cte(events).to_owned().query(business))
}

/// The most bind parameters one prepared statement may carry: the wire protocols of PostgreSQL
/// and MySQL count them in 16 bits; SQLite's limit is `SQLITE_MAX_VARIABLE_NUMBER`, 32,766 in
/// the SQLite that sqlx bundles (3.51, libsqlite3-sys 0.37; the default since SQLite 3.32).
fn max_bind_parameters(backend: DbBackend) -> usize {
    match backend {
        DbBackend::Postgres | DbBackend::MySql => 65_535,
        _ => 32_766,
    }
}

/// PostgreSQL's `MaxTupleAttributeNumber`: "target lists can have at most 1664 entries".
const MAX_TARGET_LIST_ENTRIES: usize = 1_664;

/// How many events one statement may carry, so that no statement reaches a database limit. A
/// call with more is split into several statements on the same connection, in order.
pub(crate) fn rows_per_statement(backend: DbBackend, mode: &WriteMode) -> usize {
    match mode {
        // One bind parameter per column and row (NULLs are bound too). The DELETE of
        // remove-after-insert binds one id per row, fewer than its INSERT.
        WriteMode::Insert | WriteMode::RemoveAfterInsert => {
            max_bind_parameters(backend) / COLUMNS.len()
        }
        // One target-list entry and one bind parameter per event, plus the shared prefix.
        WriteMode::LogicalMessage { .. } => {
            MAX_TARGET_LIST_ENTRIES.min(max_bind_parameters(backend) - 1)
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

/// The events' multi-row INSERT, in recording order, with every value bound.
fn insert(backend: DbBackend, outbox: &Outbox, rows: &[OutboxEvent]) -> Statement {
    backend.build(&insert_query(backend, outbox, rows))
}

fn insert_query(backend: DbBackend, outbox: &Outbox, rows: &[OutboxEvent]) -> InsertStatement {
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
    query
}

/// Remove-after-insert's DELETE of the rows just inserted.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize) -> Vec<OutboxEvent> {
        (0..n)
            .map(|i| OutboxEvent::new("Order", i.to_string(), "OrderCreated", None, "{}".into()))
            .collect()
    }

    /// A full statement stays within the backend's bind-parameter limit, and one more row would
    /// not: the split is at the limit, not below it.
    #[test]
    fn a_full_insert_statement_is_at_the_bind_parameter_limit() {
        let outbox = Outbox::default();
        for backend in [DbBackend::Postgres, DbBackend::MySql, DbBackend::Sqlite] {
            let per_statement = rows_per_statement(backend, &WriteMode::Insert);
            let statement = insert(backend, &outbox, &rows(per_statement));
            let bound = statement.values.map(|v| v.0.len()).unwrap_or(0);
            assert_eq!(bound, per_statement * COLUMNS.len(), "{backend:?}");
            assert!(bound <= max_bind_parameters(backend), "{backend:?}");
            assert!(
                bound + COLUMNS.len() > max_bind_parameters(backend),
                "{backend:?}"
            );
        }
        assert_eq!(
            rows_per_statement(DbBackend::Postgres, &WriteMode::Insert),
            8_191
        );
        assert_eq!(
            rows_per_statement(DbBackend::Sqlite, &WriteMode::Insert),
            4_095
        );
    }

    mod note {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "notes")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub id: i64,
            pub text: String,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    /// The carrying statement binds every value of both INSERTs, numbered in one sequence: the
    /// events' first ($1..$16 for two rows), then the business row's, and spells none of them.
    #[test]
    fn the_carrying_statement_numbers_both_inserts_in_one_sequence() {
        use sea_orm::ActiveValue::Set;
        let model = note::ActiveModel {
            id: Set(7),
            text: Set("it's $1".to_owned()),
        };
        let statement =
            carrying_statement(DbBackend::Postgres, &Outbox::default(), &rows(2), model);
        let sql = &statement.sql;
        assert!(
            sql.starts_with(r#"WITH "outbox_carried_events" AS (INSERT INTO "outbox" ("id""#),
            "{sql}"
        );
        assert!(
            sql.contains("($9, $10, $11, $12, $13, $14, $15, $16)"),
            "{sql}"
        );
        assert!(
            sql.ends_with(
                r#"INSERT INTO "notes" ("id", "text") VALUES ($17, $18) RETURNING "id", "text""#
            ),
            "{sql}"
        );
        assert!(!sql.contains("it's"), "{sql}");
        let bound = statement.values.map(|v| v.0.len()).unwrap_or(0);
        assert_eq!(bound, 2 * COLUMNS.len() + 2);
    }

    #[test]
    fn a_full_logical_message_statement_fills_the_target_list() {
        let per_statement = rows_per_statement(DbBackend::Postgres, &WriteMode::logical_message());
        assert_eq!(per_statement, MAX_TARGET_LIST_ENTRIES);
        let statement = emit_messages("outbox", &rows(per_statement)).expect("statement");
        assert_eq!(
            statement.sql.matches("pg_logical_emit_message(").count(),
            MAX_TARGET_LIST_ENTRIES
        );
    }
}
