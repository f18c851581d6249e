//! The outbox write: every event of one call in **one** statement on the caller's transaction,
//! so the events commit or roll back with the business rows. Only a call with more events than
//! one statement can carry (8,191 rows on PostgreSQL and MySQL, 4,095 on SQLite, 1,664 logical
//! messages) is split into several statements, in recording order, and only inside a transaction.

use std::convert::Infallible;

use sea_orm::sea_query::{Alias, Expr, ExprTrait, Query};
use sea_orm::{ConnectionTrait, DbBackend, Statement, Value};

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
    let bound = Bound::new(backend);
    // In recording order: chunk after chunk, row after row within each statement.
    for chunk in rows.chunks(per_statement) {
        match &outbox.mode {
            WriteMode::Insert => {
                let Ok(insert) = insert(&bound, outbox, chunk);
                conn.execute_raw(insert).await.map_err(db)?;
            }
            WriteMode::RemoveAfterInsert => {
                let Ok(insert) = insert(&bound, outbox, chunk);
                conn.execute_raw(insert).await.map_err(db)?;
                let Ok(delete) = delete(&bound, outbox, chunk);
                conn.execute_raw(delete).await.map_err(db)?;
            }
            WriteMode::LogicalMessage { prefix } => {
                conn.execute_raw(bound_messages(prefix, chunk)?)
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

/// How a statement carries the events' values: as bound parameters (the ordinary write, on every
/// backend), or as PostgreSQL literals in its text (the batch sent with the COMMIT, a simple query,
/// which carries no parameters). Each statement has one builder, generic over the form, so the two
/// forms cannot drift apart: the same columns, in the same order, of the same types.
trait ValueForm {
    /// Why a value cannot take this form; a bound value always can.
    type Refusal;

    fn backend(&self) -> DbBackend;

    /// The values of one row, in [`COLUMNS`] order.
    fn row(&self, row: &OutboxEvent) -> Result<[Expr; COLUMNS.len()], Self::Refusal>;

    /// The id, as the `id` column holds it.
    fn id(&self, row: &OutboxEvent) -> Result<Expr, Self::Refusal>;

    /// A `text` value of a statement written by hand: the next `$n`, or the literal.
    fn text(&mut self, text: String) -> Result<String, Self::Refusal>;
}

/// Bound parameters, typed as each backend's columns are.
struct Bound {
    backend: DbBackend,
    /// The values of a statement written by hand, `$1` first.
    values: Vec<Value>,
}

impl Bound {
    fn new(backend: DbBackend) -> Self {
        Bound {
            backend,
            values: Vec::new(),
        }
    }

    /// The id as the column type of each backend: `uuid` on PostgreSQL, its text form elsewhere.
    fn id_value(&self, row: &OutboxEvent) -> Value {
        match self.backend {
            DbBackend::Postgres => row.id.into(),
            _ => row.id.to_string().into(),
        }
    }
}

impl ValueForm for Bound {
    type Refusal = Infallible;

    fn backend(&self) -> DbBackend {
        self.backend
    }

    fn row(&self, row: &OutboxEvent) -> Result<[Expr; COLUMNS.len()], Infallible> {
        let payload: Value = match self.backend {
            DbBackend::Postgres => row.payload.clone().into(),
            // MySQL's JSON and SQLite's TEXT take the JSON text.
            _ => row.payload.to_string().into(),
        };
        Ok([
            Expr::val(self.id_value(row)),
            Expr::val(row.aggregate_type.as_str()),
            Expr::val(row.aggregate_id.as_str()),
            Expr::val(row.event_type.as_str()),
            Expr::val(row.schema_version),
            Expr::val(payload),
            Expr::val(row.timestamp),
            Expr::val(row.tracing_span_context.clone()),
        ])
    }

    fn id(&self, row: &OutboxEvent) -> Result<Expr, Infallible> {
        Ok(Expr::val(self.id_value(row)))
    }

    fn text(&mut self, text: String) -> Result<String, Infallible> {
        self.values.push(text.into());
        Ok(format!("${}", self.values.len()))
    }
}

/// PostgreSQL literals, each cast to the type the bound form sends (`uuid`, `text`, `int4`,
/// `jsonb`, `timestamptz`), so the column types, the casts to them and the errors stay the same.
struct Literal;

/// A value that no PostgreSQL literal can hold: a NUL character (see [`quote`]).
struct NotALiteral;

impl ValueForm for Literal {
    type Refusal = NotALiteral;

    fn backend(&self) -> DbBackend {
        DbBackend::Postgres
    }

    fn row(&self, row: &OutboxEvent) -> Result<[Expr; COLUMNS.len()], NotALiteral> {
        use chrono::SecondsFormat;
        Ok([
            self.id(row)?,
            typed(&row.aggregate_type, "text")?,
            typed(&row.aggregate_id, "text")?,
            typed(&row.event_type, "text")?,
            Expr::cust(match row.schema_version {
                Some(version) => format!("{version}::int4"),
                None => "NULL::int4".to_owned(),
            }),
            typed(&row.payload.to_string(), "jsonb")?,
            // Microseconds, truncated, as sqlx encodes a bound `timestamptz`.
            typed(
                &row.timestamp.to_rfc3339_opts(SecondsFormat::Micros, true),
                "timestamptz",
            )?,
            match row.tracing_span_context.as_deref() {
                Some(context) => typed(context, "text")?,
                None => Expr::cust("NULL::text"),
            },
        ])
    }

    fn id(&self, row: &OutboxEvent) -> Result<Expr, NotALiteral> {
        typed(&row.id.hyphenated().to_string(), "uuid")
    }

    fn text(&mut self, text: String) -> Result<String, NotALiteral> {
        quote(&text)
            .map(|literal| format!("{literal}::text"))
            .ok_or(NotALiteral)
    }
}

/// `s` as a literal of type `ty`.
fn typed(s: &str, ty: &str) -> Result<Expr, NotALiteral> {
    quote(s)
        .map(|literal| Expr::cust(format!("{literal}::{ty}")))
        .ok_or(NotALiteral)
}

/// The events' multi-row INSERT, in recording order.
fn insert<F: ValueForm>(
    form: &F,
    outbox: &Outbox,
    rows: &[OutboxEvent],
) -> Result<Statement, F::Refusal> {
    let mut query = Query::insert();
    query
        .into_table(outbox.table.table_ref())
        .columns(COLUMNS.map(Alias::new));
    for row in rows {
        query.values_panic(form.row(row)?);
    }
    Ok(form.backend().build(&query))
}

/// Remove-after-insert's DELETE of the rows just inserted.
fn delete<F: ValueForm>(
    form: &F,
    outbox: &Outbox,
    rows: &[OutboxEvent],
) -> Result<Statement, F::Refusal> {
    let ids = rows
        .iter()
        .map(|row| form.id(row))
        .collect::<Result<Vec<_>, _>>()?;
    let query = Query::delete()
        .from_table(outbox.table.table_ref())
        .and_where(Expr::col(Alias::new("id")).is_in(ids))
        .to_owned();
    Ok(form.backend().build(&query))
}

/// Each event as the logical message carries it: the JSON of every outbox column (see
/// [`OutboxEvent`]'s serde form), which the relay's `message` source decodes.
fn message_texts(rows: &[OutboxEvent]) -> Result<Vec<String>, Error> {
    rows.iter()
        .map(|row| {
            serde_json::to_string(row).map_err(|source| Error::Serialize {
                aggregate_type: row.aggregate_type.clone(),
                event_type: row.event_type.clone(),
                source,
            })
        })
        .collect()
}

/// One `SELECT` of `pg_logical_emit_message(true, prefix, message)` per event, evaluated left to
/// right, so the messages enter the log in recording order. The prefix is one value, shared.
fn emit_messages<F: ValueForm>(
    form: &mut F,
    prefix: &str,
    messages: Vec<String>,
) -> Result<String, F::Refusal> {
    let prefix = form.text(prefix.to_owned())?;
    let mut sql = String::from("SELECT ");
    for (i, message) in messages.into_iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        let message = form.text(message)?;
        sql.push_str(&format!(
            "pg_logical_emit_message(true, {prefix}, {message})"
        ));
    }
    Ok(sql)
}

/// [`emit_messages`] with bound values, on PostgreSQL.
fn bound_messages(prefix: &str, rows: &[OutboxEvent]) -> Result<Statement, Error> {
    let mut form = Bound::new(DbBackend::Postgres);
    let Ok(sql) = emit_messages(&mut form, prefix, message_texts(rows)?);
    Ok(Statement::from_sql_and_values(
        DbBackend::Postgres,
        sql,
        form.values,
    ))
}

/// PostgreSQL, when `#[emits]` began the transaction itself: the events' statement and the
/// COMMIT as **one** simple-query batch, so the events cost no round trip of their own.
///
/// `None` when the events must take the ordinary path instead (bound parameters, then a COMMIT of
/// its own): no events; another backend; more events than one statement carries; or a value the
/// batch cannot carry as a literal (a NUL character, which the bound path reports as the database's
/// own error).
///
/// The batch is `<events>; COMMIT; BEGIN`. PostgreSQL runs a simple-query batch statement by
/// statement and stops at the first error, so the events and the business rows commit together
/// or not at all, exactly as with a separate COMMIT. The closing `BEGIN` leaves the connection in
/// the (empty) transaction that sqlx's bookkeeping still counts: dropping SeaORM's transaction then
/// queues sqlx's ROLLBACK of it, which ends it without a round trip of its own and without a
/// "no transaction in progress" warning. An empty transaction takes no snapshot and no xid.
///
/// The statements are those of the bound path, with [`Literal`] values. One difference a user can
/// see: sqlx's statement log (SeaORM's `sqlx_logging`) prints the batch with the event values in
/// it, where the bound INSERT shows only `$1`, `$2`, ...
pub(crate) fn commit_batch(outbox: &Outbox, rows: &[OutboxEvent]) -> Result<Option<String>, Error> {
    let backend = DbBackend::Postgres;
    if rows.is_empty() || rows.len() > rows_per_statement(backend, &outbox.mode) {
        return Ok(None);
    }
    outbox.table.validate()?;
    let events = match &outbox.mode {
        WriteMode::Insert => insert(&Literal, outbox, rows).map(|insert| insert.sql),
        WriteMode::RemoveAfterInsert => insert(&Literal, outbox, rows).and_then(|insert| {
            delete(&Literal, outbox, rows).map(|delete| format!("{}; {}", insert.sql, delete.sql))
        }),
        WriteMode::LogicalMessage { prefix } => {
            emit_messages(&mut Literal, prefix, message_texts(rows)?)
        }
    };
    Ok(events.ok().map(|events| format!("{events}; COMMIT; BEGIN")))
}

/// `s` as a PostgreSQL escape-string literal, `E'...'`: backslashes and quotes doubled, nothing
/// else special, whatever `standard_conforming_strings` says (sqlx connects with
/// `client_encoding` UTF8, so no multibyte sequence can hide a quote). `None` for a NUL, which no
/// PostgreSQL string can hold and which would end the query message early.
fn quote(s: &str) -> Option<String> {
    if s.contains('\0') {
        return None;
    }
    let mut literal = String::with_capacity(s.len() + 3);
    literal.push_str("E'");
    for c in s.chars() {
        match c {
            '\\' => literal.push_str("\\\\"),
            '\'' => literal.push_str("''"),
            c => literal.push(c),
        }
    }
    literal.push('\'');
    Some(literal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OutboxTable;

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
            let Ok(statement) = insert(&Bound::new(backend), &outbox, &rows(per_statement));
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

    #[test]
    fn a_full_logical_message_statement_fills_the_target_list() {
        let per_statement = rows_per_statement(DbBackend::Postgres, &WriteMode::logical_message());
        assert_eq!(per_statement, MAX_TARGET_LIST_ENTRIES);
        let statement = bound_messages("outbox", &rows(per_statement)).expect("statement");
        assert_eq!(
            statement.sql.matches("pg_logical_emit_message(").count(),
            MAX_TARGET_LIST_ENTRIES
        );
    }

    #[test]
    fn a_literal_doubles_quotes_and_backslashes_and_refuses_a_nul() {
        assert_eq!(quote("it's").as_deref(), Some("E'it''s'"));
        assert_eq!(quote("a\\'b").as_deref(), Some("E'a\\\\''b'"));
        assert_eq!(quote("$1 ? ::text").as_deref(), Some("E'$1 ? ::text'"));
        assert_eq!(
            quote("tab\tnew\nline").as_deref(),
            Some("E'tab\tnew\nline'")
        );
        assert_eq!(quote("nul\0"), None);
    }

    /// Every quote inside a literal is doubled, so a literal ends only at its closing quote:
    /// scanning the batch, quotes outside the literals are exactly the literals' delimiters.
    #[test]
    fn a_hostile_value_stays_inside_its_literal() {
        let hostile = "x'); DELETE FROM outbox; --\\'";
        let rows = vec![OutboxEvent::new(
            "Order",
            hostile,
            "OrderCreated",
            Some(2),
            serde_json::json!({ "note": hostile }),
        )];
        let batch = commit_batch(&Outbox::default(), &rows)
            .expect("batch")
            .expect("literals");
        // Strip the literals; what is left is the statement skeleton.
        let skeleton = skeleton(&batch, 'L');
        assert_eq!(
            skeleton,
            "INSERT INTO \"outbox\" (\"id\", \"aggregatetype\", \"aggregateid\", \"type\", \
             \"schemaversion\", \"payload\", \"timestamp\", \"tracingspancontext\") VALUES \
             (L::uuid, L::text, L::text, L::text, 2::int4, L::jsonb, L::timestamptz, NULL::text); \
             COMMIT; BEGIN"
        );
    }

    /// `batch` with each literal replaced by `marker`; panics on a literal left open.
    fn skeleton(batch: &str, marker: char) -> String {
        let mut skeleton = String::new();
        let mut chars = batch.chars().peekable();
        let mut in_literal = false;
        while let Some(c) = chars.next() {
            match (in_literal, c) {
                (false, 'E') if chars.peek() == Some(&'\'') => {
                    chars.next();
                    in_literal = true;
                    skeleton.push(marker);
                }
                (true, '\\') => {
                    chars.next();
                }
                (true, '\'') if chars.peek() == Some(&'\'') => {
                    chars.next();
                }
                (true, '\'') => in_literal = false,
                (true, _) => {}
                (false, c) => skeleton.push(c),
            }
        }
        assert!(!in_literal, "every literal is closed: {batch}");
        skeleton
    }

    /// The two value forms build the same statements: the batch sent with the COMMIT is the bound
    /// path's statements, each `$n` a literal (cast to the type of the bound value), then the
    /// COMMIT.
    #[test]
    fn the_batch_is_the_bound_statements_with_literals() {
        let rows = rows(3);
        let backend = DbBackend::Postgres;
        let bound_sql = |outbox: &Outbox| -> Vec<String> {
            let Ok(insert) = insert(&Bound::new(backend), outbox, &rows);
            let Ok(delete) = delete(&Bound::new(backend), outbox, &rows);
            match &outbox.mode {
                WriteMode::Insert => vec![insert.sql],
                WriteMode::RemoveAfterInsert => vec![insert.sql, delete.sql],
                WriteMode::LogicalMessage { prefix } => {
                    vec![bound_messages(prefix, &rows).expect("messages").sql]
                }
            }
        };
        for mode in [
            WriteMode::Insert,
            WriteMode::RemoveAfterInsert,
            WriteMode::logical_message(),
        ] {
            let outbox = Outbox::default().with_mode(mode);
            let mut expected = String::new();
            let bound = bound_sql(&outbox).join("; ");
            let mut chars = bound.chars().peekable();
            while let Some(c) = chars.next() {
                if c == '$' {
                    while chars.next_if(char::is_ascii_digit).is_some() {}
                    expected.push('?');
                } else {
                    expected.push(c);
                }
            }
            expected.push_str("; COMMIT; BEGIN");
            let batch = commit_batch(&outbox, &rows)
                .expect("batch")
                .expect("literals");
            let mut literal = skeleton(&batch, '?');
            for ty in ["uuid", "text", "int4", "jsonb", "timestamptz"] {
                literal = literal
                    .replace(&format!("?::{ty}"), "?")
                    .replace(&format!("NULL::{ty}"), "?");
            }
            assert_eq!(literal, expected, "{:?}", outbox.mode);
        }
    }

    #[test]
    fn what_cannot_be_a_literal_takes_the_bound_path() {
        let outbox = Outbox::default();
        assert!(commit_batch(&outbox, &[]).expect("no events").is_none());
        let nul = OutboxEvent::new("Order", "a\0b", "OrderCreated", None, "{}".into());
        assert!(commit_batch(&outbox, &[nul]).expect("a NUL").is_none());
        let too_many = rows(rows_per_statement(DbBackend::Postgres, &WriteMode::Insert) + 1);
        assert!(commit_batch(&outbox, &too_many).expect("many").is_none());
    }

    #[test]
    fn every_mode_has_its_batch() {
        let rows = rows(2);
        let quoted =
            Outbox::new(OutboxTable::new("we\"ird")).with_mode(WriteMode::RemoveAfterInsert);
        let batch = commit_batch(&quoted, &rows)
            .expect("batch")
            .expect("literals");
        assert!(batch.starts_with("INSERT INTO \"we\"\"ird\" "), "{batch}");
        assert!(
            batch.contains("; DELETE FROM \"we\"\"ird\" WHERE \"id\" IN ("),
            "{batch}"
        );
        assert!(batch.ends_with("; COMMIT; BEGIN"), "{batch}");
        let batch = commit_batch(
            &Outbox::default().with_mode(WriteMode::logical_message()),
            &rows,
        )
        .expect("batch")
        .expect("literals");
        assert!(
            batch.starts_with("SELECT pg_logical_emit_message(true, E'outbox'::text, E'{"),
            "{batch}"
        );
        assert_eq!(batch.matches("pg_logical_emit_message(").count(), 2);
    }
}
