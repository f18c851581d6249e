//! The outbox table as the polling source sees it: the claim, the settle (delete or mark) after
//! Kafka's ack, the retention purge, and the setup DDL, for each backend.
//!
//! Every identifier is quoted with [`outbox_core::migration::quote`]; every value is a bind
//! parameter (the batch size, a number, is the only literal).

use chrono::{DateTime, Utc};
use outbox_core::migration::{COLUMNS, quote};
use sea_orm::{DbBackend, Statement, Value};

use crate::source::{ColumnValue, OutboxRecord};

/// The extra column of the `mark` mode: when Kafka acknowledged the row (NULL = pending).
pub const RELAYED_AT: &str = "relayed_at";

/// The outbox table on one backend.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    pub backend: DbBackend,
    schema: Option<String>,
    name: String,
    /// The columns a claim reads, in order: the outbox columns, then any other column that a
    /// header placement names.
    columns: Vec<String>,
    /// Rows are marked (`relayed_at`) instead of deleted.
    mark: bool,
}

impl Table {
    pub fn new(
        backend: DbBackend,
        schema: Option<&str>,
        name: &str,
        placed: &[String],
        mark: bool,
    ) -> Table {
        let mut columns: Vec<String> = COLUMNS.iter().map(|c| (*c).to_owned()).collect();
        for column in placed {
            if !columns.contains(column) {
                columns.push(column.clone());
            }
        }
        Table {
            backend,
            // SQLite has no schemas in our sense (attached databases aside).
            schema: schema
                .filter(|_| backend != DbBackend::Sqlite)
                .map(str::to_owned),
            name: name.to_owned(),
            columns,
            mark,
        }
    }

    fn q(&self, ident: &str) -> String {
        quote(self.backend, ident)
    }

    /// `"schema"."table"` (or `"table"`).
    pub fn qualified(&self) -> String {
        self.in_schema(&self.name)
    }

    /// Another object (function, lease table) next to the outbox table.
    fn in_schema(&self, object: &str) -> String {
        match &self.schema {
            Some(schema) => format!("{}.{}", self.q(schema), self.q(object)),
            None => self.q(object),
        }
    }

    /// `schema.table` unquoted: the name leases and locks are keyed by.
    pub fn key(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{schema}.{}", self.name),
            None => self.name.clone(),
        }
    }

    /// Bind parameter `n` (1-based) in the backend's syntax.
    pub fn param(&self, n: usize) -> String {
        match self.backend {
            DbBackend::Postgres => format!("${n}"),
            _ => "?".to_owned(),
        }
    }

    /// The claim: the oldest pending rows by `(timestamp, id)` (ids are UUIDv7), every value as
    /// text. On PostgreSQL and MariaDB the rows are locked `FOR UPDATE SKIP LOCKED` by the
    /// claiming transaction; rows of transactions not yet committed are invisible (PostgreSQL)
    /// or locked by their writer and skipped (MariaDB), and are claimed once they commit — no
    /// cursor, so no gap. SQLite has a single writer and no row locks: the leader reads.
    ///
    /// On MariaDB/MySQL this selects the ids only: the `(timestamp, id)` index covers them, so
    /// the locking read walks the index; with every column MariaDB prefers a full scan and a
    /// filesort, locking every row of the table on the way. [`Table::fetch`] reads the rest.
    pub fn claim(&self, limit: usize) -> Statement {
        let select = if self.claims_ids() {
            self.text(&self.columns[..1])
        } else {
            self.text(&self.columns)
        };
        let pending = if self.mark {
            format!(" WHERE {} IS NULL", self.q(RELAYED_AT))
        } else {
            String::new()
        };
        let lock = match self.backend {
            DbBackend::Sqlite => "",
            _ => " FOR UPDATE SKIP LOCKED",
        };
        // The sort keys are qualified: a bare `id` would name the text output column, and
        // PostgreSQL would sort by text instead of walking the `(timestamp, id)` index.
        let table = self.qualified();
        let sql = format!(
            "SELECT {select} FROM {table}{pending} ORDER BY {table}.{ts}, {table}.{id} LIMIT {limit}{lock}",
            ts = self.q("timestamp"),
            id = self.q("id"),
        );
        Statement::from_string(self.backend, sql)
    }

    /// Whether [`Table::claim`] returns ids only, to be read by [`Table::fetch`].
    pub fn claims_ids(&self) -> bool {
        self.backend == DbBackend::MySql
    }

    /// The claimed rows `ids`, every column as text. A plain (consistent) read: the claiming
    /// transaction already holds the rows' locks.
    pub fn fetch(&self, ids: &[String]) -> Statement {
        let list = (1..=ids.len())
            .map(|n| self.param(n))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT {} FROM {} WHERE {} IN ({list})",
            self.text(&self.columns),
            self.qualified(),
            self.q("id")
        );
        Statement::from_sql_and_values(self.backend, sql, ids.iter().map(|id| self.id_value(id)))
    }

    /// `CAST(c AS TEXT), ...` for `columns`.
    fn text(&self, columns: &[String]) -> String {
        let text = if self.backend == DbBackend::MySql {
            "CHAR"
        } else {
            "TEXT"
        };
        columns
            .iter()
            .map(|c| format!("CAST({} AS {text})", self.q(c)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The record of a claimed row (values in the order of [`Table::claim`]).
    pub fn record(&self, values: Vec<Option<String>>) -> OutboxRecord {
        OutboxRecord {
            lsn: 0,
            columns: self
                .columns
                .iter()
                .cloned()
                .zip(values.into_iter().map(|v| v.map(ColumnValue::Text)))
                .collect(),
        }
    }

    /// How many columns a claim reads.
    pub fn width(&self) -> usize {
        self.columns.len()
    }

    /// After Kafka acknowledged `ids`: delete them, or mark them relayed at `now`.
    pub fn settle(&self, ids: &[String], now: DateTime<Utc>) -> Statement {
        if !self.mark {
            return self.delete(ids);
        }
        // An UPDATE reads semi-consistently on MariaDB (READ COMMITTED): rows that writers hold
        // are passed over, not waited for.
        let list = (2..=ids.len() + 1)
            .map(|n| self.param(n))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "UPDATE {} SET {} = {} WHERE {} IN ({list})",
            self.qualified(),
            self.q(RELAYED_AT),
            self.param(1),
            self.q("id")
        );
        let values = std::iter::once(now.into()).chain(ids.iter().map(|id| self.id_value(id)));
        Statement::from_sql_and_values(self.backend, sql, values)
    }

    /// Deletes `ids`.
    ///
    /// On MariaDB/MySQL a `DELETE ... WHERE id IN (...)` on a small table may run as a full
    /// scan, which waits for the row lock of every uncommitted insert it passes (a DELETE has no
    /// semi-consistent read): the relay would stall behind the service's open transactions. So
    /// there it is one `DELETE ... WHERE id = <literal>` per row — a primary-key lookup that
    /// touches only the row it deletes — all sent in one round trip as a multi-statement
    /// without parameters (`values` is `None`). The ids are written as `_utf8mb4 X'<hex>'`
    /// literals, so no value can escape its quotes.
    pub fn delete(&self, ids: &[String]) -> Statement {
        if self.backend == DbBackend::MySql {
            let sql = ids
                .iter()
                .map(|id| {
                    let hex: String = id.bytes().map(|b| format!("{b:02x}")).collect();
                    format!(
                        "DELETE FROM {} WHERE {} = _utf8mb4 X'{hex}'",
                        self.qualified(),
                        self.q("id")
                    )
                })
                .collect::<Vec<_>>()
                .join(";\n");
            return Statement::from_string(self.backend, sql);
        }
        let list = (1..=ids.len())
            .map(|n| self.param(n))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "DELETE FROM {} WHERE {} IN ({list})",
            self.qualified(),
            self.q("id")
        );
        Statement::from_sql_and_values(self.backend, sql, ids.iter().map(|id| self.id_value(id)))
    }

    /// The id as its column type: `uuid` on PostgreSQL (read from the column, so it parses),
    /// text elsewhere.
    fn id_value(&self, id: &str) -> Value {
        match (self.backend, uuid::Uuid::parse_str(id)) {
            (DbBackend::Postgres, Ok(uuid)) => uuid.into(),
            _ => id.to_owned().into(),
        }
    }

    /// The ids of rows marked before `cutoff` (the `mark` mode's retention), at most `limit`;
    /// a plain read, so it waits for no lock. The purge deletes them with [`Table::delete`].
    pub fn expired(&self, cutoff: DateTime<Utc>, limit: usize) -> Statement {
        let text = if self.backend == DbBackend::MySql {
            "CHAR"
        } else {
            "TEXT"
        };
        let sql = format!(
            "SELECT CAST({id} AS {text}) FROM {} WHERE {} < {} LIMIT {limit}",
            self.qualified(),
            self.q(RELAYED_AT),
            self.param(1),
            id = self.q("id"),
        );
        Statement::from_sql_and_values(self.backend, sql, [cutoff.into()])
    }

    /// The DDL of `setup`, idempotent: the claim's index on `(timestamp, id)`; with `mark`, the
    /// `relayed_at` column (SQLite's is added by [`Table::add_relayed_at_sqlite`], as SQLite has
    /// no `ADD COLUMN IF NOT EXISTS`); on PostgreSQL with a `channel`, the NOTIFY trigger.
    ///
    /// The trigger is `AFTER INSERT ... FOR EACH STATEMENT`, so a multi-row insert notifies
    /// once, and PostgreSQL delivers a NOTIFY only when the inserting transaction commits (and
    /// folds duplicates within a transaction): the relay wakes exactly when rows become visible.
    pub fn setup(&self, channel: Option<&str>) -> Vec<String> {
        let mut ddl = Vec::new();
        if self.mark && self.backend != DbBackend::Sqlite {
            let column_type = match self.backend {
                DbBackend::Postgres => "timestamptz",
                _ => "datetime(6)",
            };
            ddl.push(format!(
                "ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {column_type} NULL",
                self.qualified(),
                self.q(RELAYED_AT)
            ));
        }
        let index = format!("{}_poll_order", self.name);
        let index_name = self.q(&index);
        ddl.push(format!(
            "CREATE INDEX IF NOT EXISTS {index_name} ON {} ({}, {})",
            self.qualified(),
            self.q("timestamp"),
            self.q("id")
        ));
        if let (DbBackend::Postgres, Some(channel)) = (self.backend, channel) {
            let function = self.in_schema("outbox_relay_notify");
            let trigger = self.q(&format!("{}_notify", self.name));
            ddl.push(format!(
                "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS \
                 $outbox$ BEGIN PERFORM pg_notify(TG_ARGV[0], ''); RETURN NULL; END $outbox$"
            ));
            ddl.push(format!(
                "DROP TRIGGER IF EXISTS {trigger} ON {}",
                self.qualified()
            ));
            ddl.push(format!(
                "CREATE TRIGGER {trigger} AFTER INSERT ON {} FOR EACH STATEMENT EXECUTE FUNCTION {function}('{}')",
                self.qualified(),
                channel.replace('\'', "''")
            ));
        }
        ddl
    }

    /// SQLite's `relayed_at` column, added when `PRAGMA table_info` lacks it.
    pub fn add_relayed_at_sqlite(&self) -> (Statement, String) {
        (
            Statement::from_sql_and_values(
                DbBackend::Sqlite,
                "SELECT COUNT(*) FROM pragma_table_info(?) WHERE name = ?",
                [self.name.clone().into(), RELAYED_AT.into()],
            ),
            format!(
                "ALTER TABLE {} ADD COLUMN {} TEXT NULL",
                self.qualified(),
                self.q(RELAYED_AT)
            ),
        )
    }

    /// SQLite's lease table: one row per outbox, naming the relay that leads it until when.
    pub fn lease_table(&self) -> String {
        self.in_schema(&format!("{}_relay_lease", self.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_per_backend() {
        let pg = Table::new(DbBackend::Postgres, Some("app"), "out\"box", &[], false);
        let sql = pg.claim(500).to_string();
        assert!(sql.starts_with("SELECT CAST(\"id\" AS TEXT), "), "{sql}");
        assert!(
            sql.ends_with(
                "FROM \"app\".\"out\"\"box\" ORDER BY \"app\".\"out\"\"box\".\"timestamp\", \"app\".\"out\"\"box\".\"id\" LIMIT 500 FOR UPDATE SKIP LOCKED"
            ),
            "{sql}"
        );
        let my = Table::new(
            DbBackend::MySql,
            None,
            "outbox",
            &["extra".to_owned()],
            true,
        );
        let sql = my.claim(10).to_string();
        assert!(sql.starts_with("SELECT CAST(`id` AS CHAR) FROM"), "{sql}");
        let fetch = my.fetch(&["a".to_owned(), "b".to_owned()]).sql;
        assert!(
            fetch.contains("CAST(`extra` AS CHAR) FROM `outbox` WHERE `id` IN (?, ?)"),
            "{fetch}"
        );
        assert!(sql.contains("WHERE `relayed_at` IS NULL ORDER BY `outbox`.`timestamp`, `outbox`.`id` LIMIT 10 FOR UPDATE SKIP LOCKED"), "{sql}");
        let lite = Table::new(DbBackend::Sqlite, Some("ignored"), "outbox", &[], false);
        assert!(lite.claim(1).to_string().ends_with(
            "FROM \"outbox\" ORDER BY \"outbox\".\"timestamp\", \"outbox\".\"id\" LIMIT 1"
        ));
    }

    #[test]
    fn settle_binds_every_id() {
        let pg = Table::new(DbBackend::Postgres, None, "outbox", &[], false);
        let ids = [
            "0190a0b2-0000-7000-8000-000000000001".to_owned(),
            "x'); DROP TABLE outbox; --".to_owned(),
        ];
        let s = pg.settle(&ids, Utc::now());
        assert_eq!(s.sql, "DELETE FROM \"outbox\" WHERE \"id\" IN ($1, $2)");
        assert_eq!(s.values.map(|v| v.0.len()), Some(2));
        let my = Table::new(DbBackend::MySql, None, "outbox", &[], true);
        let s = my.settle(&ids, Utc::now());
        assert_eq!(
            s.sql,
            "UPDATE `outbox` SET `relayed_at` = ? WHERE `id` IN (?, ?)"
        );
        let s = my.delete(&ids[..1]);
        assert_eq!(
            s.sql,
            "DELETE FROM `outbox` WHERE `id` = _utf8mb4 \
             X'30313930613062322d303030302d373030302d383030302d303030303030303030303031'"
        );
        assert!(s.values.is_none());
        assert_eq!(my.delete(&ids).sql.matches("DELETE").count(), 2);
    }

    #[test]
    fn notify_trigger_is_per_statement_and_quoted() {
        let pg = Table::new(DbBackend::Postgres, None, "outbox", &[], false);
        let ddl = pg.setup(Some("it's")).join(";\n");
        assert!(
            ddl.contains("AFTER INSERT ON \"outbox\" FOR EACH STATEMENT"),
            "{ddl}"
        );
        assert!(ddl.contains("('it''s')"), "{ddl}");
        let lite = Table::new(DbBackend::Sqlite, None, "outbox", &[], false);
        assert_eq!(lite.setup(Some("x")).len(), 1);
    }
}
