//! The outbox table as the polling source sees it: the claim, the settle (delete or mark) after
//! Kafka's ack, the retention purge, and the setup DDL, for each backend.
//!
//! Every identifier is quoted with [`outbox_core::migration::quote`]; every value is a bind
//! parameter (the batch size, a number, is the only literal; MariaDB's delete writes ids as hex
//! literals). What a claim reads and orders by comes from the table itself ([`Shape`]).

use chrono::{DateTime, Utc};
use sea_orm::{DbBackend, Statement, Value};

use super::shape::{Kind, Shape};
pub(crate) use super::table::Table;
use crate::source::{ColumnValue, Origin, OutboxRecord};

/// The extra column of the `mark` mode: when Kafka acknowledged the row (NULL = pending).
pub const RELAYED_AT: &str = "relayed_at";

/// One column value of a claimed row, as read.
pub(crate) type Read = Option<ColumnValue>;

impl Table {
    /// Bind parameter `n` holding an id: on PostgreSQL the text is cast to `id`'s own type, so
    /// a `uuid`, `varchar` or `bigint` id compares in its type and uses its index.
    fn id_param(&self, shape: &Shape, n: usize) -> String {
        match &shape.id_type {
            Some(id_type) if self.backend == DbBackend::Postgres => {
                format!("CAST(${n} AS {id_type})")
            }
            _ => self.param(n),
        }
    }

    /// PostgreSQL: `= ANY(CAST($n AS <id type>[]))`, the ids of a settle as one array parameter
    /// (see [`pg_array`]): one statement of a fixed text whatever the batch's size, planned once
    /// and run as an index scan of `id`, where an `IN` list of a thousand parameters is parsed
    /// and planned per batch. `None` elsewhere, or when `id`'s type is unknown.
    fn id_any(&self, shape: &Shape, n: usize) -> Option<String> {
        match &shape.id_type {
            Some(id_type) if self.backend == DbBackend::Postgres => {
                Some(format!("= ANY(CAST(${n} AS {id_type}[]))"))
            }
            _ => None,
        }
    }

    /// PostgreSQL: the condition and values that select the settled rows `ids` (the parameter
    /// `$n`), or `None` where [`Table::id_any`] is.
    ///
    /// By the ids alone, as the index condition: PostgreSQL plans the statement generically
    /// after five runs, and there an array in a filter (e.g. the ids, had the sequence values
    /// led) is parsed again for every row, 6 s per 1000-row batch in a drain.
    fn pg_rows(&self, shape: &Shape, n: usize, ids: &[String]) -> Option<(String, Vec<Value>)> {
        let any = self.id_any(shape, n)?;
        let id = self.q(&shape.columns[0].actual);
        Some((format!("{id} {any}"), vec![Value::from(pg_array(ids))]))
    }

    /// `ids` in runs, each small enough that a statement naming one run (a settle, a delete, a
    /// fetch) leaves in one write on the wire; SQLite (no network) takes them in one run.
    ///
    /// Why: sqlx 0.9 leaves Nagle's algorithm on (sqlx #4335). Over TLS a longer statement goes
    /// out as several records, one write each; the second waits for the server to acknowledge
    /// the first, which the server's kernel delays by 40 ms, since nothing else is sent back
    /// before the whole statement is in. A 1000-id settle of `uuid`s (37 KB) took 50 ms so,
    /// 6 ms of it in PostgreSQL. The runs are settled in the claim's transaction, so a batch
    /// is still settled whole or not at all.
    pub fn runs<'i>(&self, shape: &Shape, ids: &'i [String]) -> impl Iterator<Item = &'i [String]> {
        // Plaintext per write, below a TLS record's 16 KiB, with room for the statement's text
        // and the protocol's framing; no bound on SQLite.
        let budget = match self.backend {
            DbBackend::Sqlite => usize::MAX,
            _ => 12 * 1024,
        };
        // What an id costs in the statement: its text and separators; on MariaDB/MySQL with a
        // unique `id` index a `SELECT ? UNION ALL` each too (the joined delete, see
        // `Table::delete`), without one a `DELETE ... X'<hex>'` statement per id.
        let statement = 64 + self.qualified().len();
        let mysql = self.backend == DbBackend::MySql;
        let id_unique = shape.id_unique;
        let per_id = move |id: &String| match (mysql, id_unique) {
            (true, false) => 2 * id.len() + statement,
            (true, true) => id.len() + 24,
            (false, _) => id.len() + 8,
        };
        let mut rest = ids;
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            let mut bytes = 0usize;
            let end = rest
                .iter()
                .position(|id| {
                    bytes = bytes.saturating_add(per_id(id));
                    bytes > budget
                })
                .unwrap_or(rest.len())
                .max(1);
            let (run, after) = rest.split_at(end);
            rest = after;
            Some(run)
        })
    }

    /// The claim: the oldest pending rows by the sequence the database assigned at INSERT,
    /// never by a client clock. On PostgreSQL and MariaDB the rows are locked `FOR UPDATE SKIP
    /// LOCKED` by the claiming transaction; rows of transactions not yet committed are invisible
    /// (PostgreSQL) or locked by their writer and skipped (MariaDB), and are claimed once they
    /// commit — no cursor, so no gap. SQLite has a single writer and no row locks: the leader
    /// reads.
    ///
    /// On MariaDB/MySQL the locking read must walk the sequence's index: with a full scan and a
    /// filesort, which MariaDB may prefer for a read of every column, it would lock every row
    /// of the table on the way. So the claim names that index (`FORCE INDEX`, the index that
    /// [`Shape::sequence_index`] found) and reads every column at once. Without such an index
    /// it selects the ids only, which the sequence's index holds (InnoDB secondary indexes
    /// carry the primary key), and [`Table::fetch`] reads the rest ([`Table::claims_ids`]).
    /// Measured: 1.5× the MariaDB drain (BENCHMARKS.md, round 2, part 7).
    ///
    /// Without [`Table::claims_ids`], the row's sequence follows its columns (see
    /// [`Table::sequence_value`]).
    ///
    /// Where [`Table::deletes_at_claim`], the claim also deletes the rows it locks, in the
    /// claiming transaction, and returns them in sequence order.
    ///
    /// `after`: only rows numbered above it. SQLite's claim, which locks nothing, skips the
    /// batches still waiting for Kafka by it (see `Claimer::claim_after`).
    pub fn claim(&self, shape: &Shape, limit: usize, after: Option<i64>) -> Statement {
        if self.deletes_at_claim(shape) {
            return self.claim_deleting(shape, limit, after);
        }
        let select = if self.claims_ids(shape) {
            self.select(&shape.columns[..1])
        } else {
            format!(
                "{}, {}",
                self.select(&shape.columns),
                self.sequence_value(shape)
            )
        };
        let pending = self.pending(shape, after);
        let lock = match self.backend {
            DbBackend::Sqlite => "",
            _ => " FOR UPDATE SKIP LOCKED",
        };
        let index = self.sequence_index_hint(shape);
        let table = self.qualified();
        let sql = format!(
            "SELECT {select} FROM {table}{index}{pending} ORDER BY {} LIMIT {limit}{lock}",
            self.sequence(shape)
        );
        Statement::from_string(self.backend, sql)
    }

    /// The claim's `WHERE` clause, empty or with a leading space: not yet marked (in `mark`
    /// mode), and numbered above `after`.
    fn pending(&self, shape: &Shape, after: Option<i64>) -> String {
        let unmarked = self
            .marks()
            .then(|| format!("{} IS NULL", self.q(RELAYED_AT)));
        let above = after.map(|seq| format!("{} > {seq}", self.sequence(shape)));
        let conditions: Vec<String> = unmarked.into_iter().chain(above).collect();
        if conditions.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conditions.join(" AND "))
        }
    }

    /// Whether the claim deletes its rows (PostgreSQL, delete mode, a table that is neither
    /// partitioned nor a parent of `INHERITS` children), so that nothing is left to settle
    /// after Kafka's acknowledgement but the claiming transaction's commit.
    ///
    /// The guarantees are those of a settle after the acknowledgement: the delete is not
    /// committed before it, and a claim that fails or times out rolls back, rows and all. What
    /// changes is the cost: one statement per batch where a claim and one `DELETE` per
    /// [`Table::runs`] run were several, and the rows are found by their `ctid` (a TID scan),
    /// not looked up again by `id` (`scripts/bench-poll-claim`: 8.4–8.9 ms per 1,000-row batch
    /// against 9.9–12.6 for the locking read and one `DELETE`). The `ctid`s come from the same
    /// statement's locking read, so they name the very rows locked, which no one else can
    /// change or remove meanwhile. A table whose rows live in several tables keeps the settle:
    /// a `ctid` is unique within one table only.
    pub fn deletes_at_claim(&self, shape: &Shape) -> bool {
        self.backend == DbBackend::Postgres && !self.marks() && !shape.spans_tables
    }

    /// PostgreSQL's deleting claim (see [`Table::deletes_at_claim`]): the rows that the locking
    /// read selects, in sequence order, deleted by their `ctid` and returned sorted again (a
    /// `RETURNING` list has no order of its own).
    fn claim_deleting(&self, shape: &Shape, limit: usize, after: Option<i64>) -> Statement {
        let table = self.qualified();
        let sql = format!(
            "WITH claimed AS (DELETE FROM {table} WHERE ctid = ANY(ARRAY(\
             SELECT ctid FROM {table}{} ORDER BY {} LIMIT {limit} FOR UPDATE SKIP LOCKED)) \
             RETURNING {}, {}) SELECT * FROM claimed ORDER BY {}",
            self.pending(shape, after),
            self.sequence(shape),
            self.select(&shape.columns),
            self.sequence_value(shape),
            shape.columns.len() + 1,
        );
        Statement::from_string(self.backend, sql)
    }

    /// Whether [`Table::claim`] returns ids only, to be read by [`Table::fetch`]: on
    /// MariaDB/MySQL when no index leads with the sequence (see [`Table::claim`]).
    pub fn claims_ids(&self, shape: &Shape) -> bool {
        self.backend == DbBackend::MySql && shape.sequence_index.is_none()
    }

    /// Whether a claim locks no row beyond the ones it returns, so that a second claim, made
    /// while the first one's batch waits for Kafka, takes the next committed rows and skips
    /// none of them (`Claimer::depth`). PostgreSQL locks the rows as its `LIMIT` takes them;
    /// SQLite locks nothing. MariaDB/MySQL only when the claim walks the sequence's index
    /// (`FORCE INDEX`, see [`Table::claim`]): the ids-only claim leaves the plan to the
    /// optimizer, which on a small table picks a full scan and a filesort and keeps every row
    /// it scanned locked, not only the `LIMIT` it returns (two `mariadb` sessions, 240 rows:
    /// a first claim of 50 so planned left a second one none; through the index, 190).
    pub fn claim_locks_only_its_rows(&self, shape: &Shape) -> bool {
        !self.claims_ids(shape)
    }

    /// The claimed rows `ids`, every column and then the sequence, in the claim's order. A
    /// plain (consistent) read: the claiming transaction already holds the rows' locks.
    pub fn fetch(&self, shape: &Shape, ids: &[String]) -> Statement {
        let list = (1..=ids.len())
            .map(|n| self.id_param(shape, n))
            .collect::<Vec<_>>()
            .join(", ");
        let table = self.qualified();
        let sql = format!(
            "SELECT {}, {} FROM {table} WHERE {} IN ({list}) ORDER BY {}",
            self.select(&shape.columns),
            self.sequence_value(shape),
            self.q(&shape.columns[0].actual),
            self.sequence(shape),
        );
        Statement::from_sql_and_values(self.backend, sql, ids.iter().map(|id| id_value(id)))
    }

    /// The sequence column, qualified by the table (as every statement names it).
    fn sequence(&self, shape: &Shape) -> String {
        format!("{}.{}", self.qualified(), shape.sequence)
    }

    /// The row's sequence as a 64-bit integer (an `integer` serial or an `AUTO_INCREMENT` of
    /// any width reads alike): the claimed rows are named by it in the exactly-once mode's
    /// stored position.
    pub fn sequence_value(&self, shape: &Shape) -> String {
        let sequence = self.sequence(shape);
        match self.backend {
            DbBackend::Postgres => format!("CAST({sequence} AS BIGINT)"),
            DbBackend::MySql => format!("CAST({sequence} AS SIGNED)"),
            _ => sequence,
        }
    }

    /// The rows of the sequence `ranges` (inclusive) that are still pending, as `(id,
    /// sequence)` in sequence order: rows the stored position says were shipped, which a
    /// resuming session settles without shipping them again.
    ///
    /// Locked `FOR UPDATE` (waiting for a lock, never skipping a row) on PostgreSQL. A plain read
    /// on MariaDB/MySQL: there a locking range read also locks the first index entry past each
    /// range before it compares it with the range's end, so it would wait for a writer whose
    /// uncommitted row lies just above a range (`tests/exactly_once.rs`, 7b). Nothing is lost
    /// by not locking: the leadership, checked in the same transaction, keeps other relays
    /// away, and the settle by id that follows locks the batch's own rows and no other.
    pub fn shipped(&self, shape: &Shape, ranges: &[(i64, i64)]) -> Statement {
        let text = if self.backend == DbBackend::MySql {
            "CHAR"
        } else {
            "TEXT"
        };
        let sequence = self.sequence(shape);
        let within = self.within(shape, ranges);
        let pending = if self.marks() {
            format!(" AND {} IS NULL", self.q(RELAYED_AT))
        } else {
            String::new()
        };
        let lock = match self.backend {
            DbBackend::Postgres => " FOR UPDATE",
            _ => "",
        };
        let sql = format!(
            "SELECT CAST({} AS {text}), {} FROM {} WHERE ({within}){pending} ORDER BY {sequence}{lock}",
            self.q(&shape.columns[0].actual),
            self.sequence_value(shape),
            self.qualified(),
        );
        Statement::from_sql_and_values(self.backend, sql, range_values(ranges))
    }

    /// The condition that a row's sequence value lies in one of `ranges` (inclusive), its
    /// values bound as [`range_values`] gives them.
    fn within(&self, shape: &Shape, ranges: &[(i64, i64)]) -> String {
        let sequence = self.sequence(shape);
        (0..ranges.len())
            .map(|i| {
                format!(
                    "{sequence} BETWEEN {} AND {}",
                    self.param(2 * i + 1),
                    self.param(2 * i + 2)
                )
            })
            .collect::<Vec<_>>()
            .join(" OR ")
    }

    /// MariaDB/MySQL: the hint that makes a statement walk the sequence's index
    /// ([`Shape::sequence_index`]), with a leading space; empty elsewhere.
    fn sequence_index_hint(&self, shape: &Shape) -> String {
        match (self.backend, &shape.sequence_index) {
            (DbBackend::MySql, Some(index)) => format!(" FORCE INDEX ({})", self.q(index)),
            _ => String::new(),
        }
    }

    /// Each column as it is read: text columns `CAST(c AS TEXT)`, binary columns as they are.
    fn select(&self, columns: &[super::shape::Column]) -> String {
        let text = if self.backend == DbBackend::MySql {
            "CHAR"
        } else {
            "TEXT"
        };
        columns
            .iter()
            .map(|c| match c.kind {
                Kind::Text => format!("CAST({} AS {text})", self.q(&c.actual)),
                Kind::Bytes => self.q(&c.actual),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The record of a claimed row (values in the order of [`Shape::columns`]).
    pub fn record(&self, shape: &Shape, values: Vec<Read>) -> OutboxRecord {
        OutboxRecord {
            // A polled row has no log position; its table names where it came from.
            origin: Origin {
                header: "dlq.source.table",
                value: self.key().into(),
            },
            columns: shape
                .columns
                .iter()
                .map(|c| std::sync::Arc::clone(&c.name))
                .zip(values)
                .collect(),
        }
    }

    /// After Kafka acknowledged `ids`: delete them, or mark them relayed at `now`.
    pub fn settle(&self, shape: &Shape, ids: &[String], now: DateTime<Utc>) -> Statement {
        if !self.marks() {
            return self.delete(shape, ids);
        }
        let id = self.q(&shape.columns[0].actual);
        let set = format!(
            "UPDATE {} SET {} = {}",
            self.qualified(),
            self.q(RELAYED_AT),
            self.param(1),
        );
        if let Some((condition, values)) = self.pg_rows(shape, 2, ids) {
            let sql = format!("{set} WHERE {condition}");
            let values = std::iter::once(now.into()).chain(values);
            return Statement::from_sql_and_values(self.backend, sql, values);
        }
        // An UPDATE reads semi-consistently on MariaDB (READ COMMITTED): rows that writers hold
        // are passed over, not waited for.
        let list = (2..=ids.len() + 1)
            .map(|n| self.id_param(shape, n))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!("{set} WHERE {id} IN ({list})");
        let values = std::iter::once(now.into()).chain(ids.iter().map(|id| id_value(id)));
        Statement::from_sql_and_values(self.backend, sql, values)
    }

    /// Deletes `ids`.
    ///
    /// On MariaDB/MySQL a `DELETE ... WHERE id IN (...)` on a small table may run as a full
    /// scan, which waits for the row lock of every uncommitted insert it passes (a DELETE has no
    /// semi-consistent read): the relay would stall behind the service's open transactions. So
    /// when a unique index covers `id` alone ([`Shape::id_unique`]) the ids are a derived
    /// table joined to the outbox table (`STRAIGHT_JOIN`): each is one unique-index lookup that
    /// touches only the row it deletes. Without such an index it is one `DELETE ... WHERE id =
    /// <literal>` per row, all sent in one round trip as a multi-statement without parameters
    /// (`values` is `None`); the ids are written as `_utf8mb4 X'<hex>'` literals, so no value
    /// can escape its quotes.
    ///
    /// On PostgreSQL the rows are selected as [`Table::pg_rows`] says.
    pub fn delete(&self, shape: &Shape, ids: &[String]) -> Statement {
        let id = self.q(&shape.columns[0].actual);
        if self.backend == DbBackend::MySql && shape.id_unique && !ids.is_empty() {
            // Driven from the ids (STRAIGHT_JOIN): one unique-index lookup per id, whatever the
            // table's size. `id IN (...)` is not: on a small table MariaDB scans it even with
            // FORCE INDEX (EXPLAIN, MariaDB 10.11: `ALL` for 999 ids in a 1000-row table).
            let values = (0..ids.len())
                .map(|n| if n == 0 { "SELECT ? AS id" } else { "SELECT ?" })
                .collect::<Vec<_>>()
                .join(" UNION ALL ");
            let table = self.qualified();
            let sql = format!(
                "DELETE {table} FROM ({values}) AS settled STRAIGHT_JOIN {table} \
                 ON {table}.{id} = settled.id"
            );
            return Statement::from_sql_and_values(
                self.backend,
                sql,
                ids.iter().map(|id| id_value(id)),
            );
        }
        if self.backend == DbBackend::MySql {
            let sql = ids
                .iter()
                .map(|value| {
                    let hex: String = value.bytes().map(|b| format!("{b:02x}")).collect();
                    format!(
                        "DELETE FROM {} WHERE {id} = _utf8mb4 X'{hex}'",
                        self.qualified(),
                    )
                })
                .collect::<Vec<_>>()
                .join(";\n");
            return Statement::from_string(self.backend, sql);
        }
        if let Some((condition, values)) = self.pg_rows(shape, 1, ids) {
            let sql = format!("DELETE FROM {} WHERE {condition}", self.qualified());
            return Statement::from_sql_and_values(self.backend, sql, values);
        }
        let list = (1..=ids.len())
            .map(|n| self.id_param(shape, n))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!("DELETE FROM {} WHERE {id} IN ({list})", self.qualified());
        Statement::from_sql_and_values(self.backend, sql, ids.iter().map(|id| id_value(id)))
    }

    /// Whether a settle deletes the batch's rows by ranges of their sequence values, and only
    /// the last row of each range by its id: MariaDB/MySQL in the delete mode, with a unique
    /// index of the sequence alone ([`Shape::sequence_unique`]) and an index that leads with it
    /// to force ([`Shape::sequence_index`]).
    ///
    /// Why it is safe: a settle names the batch's rows as runs of consecutive sequence values,
    /// every value of a run claimed ([`super::consecutive_runs`]); the sequence being unique,
    /// no other row holds a value inside a run. A range read of InnoDB's index ends on the
    /// first entry past the range, which it locks before it compares: past a whole run that
    /// entry may be a writer's uncommitted row, and the delete would wait for the writer (a
    /// range per whole run did, BENCHMARKS.md part 14, and
    /// `poll_relay::late_commit_inside_the_claimed_span_mariadb` fails on it). So each range
    /// stops one short of its run's end: the entry past it is the run's last row, which the
    /// claiming transaction holds, and that row goes by its id, as every row did before. The
    /// delete touches the batch's rows and no other, and waits for no writer.
    ///
    /// Why: it is one range of the index per run where the delete by id joins a derived table
    /// of the ids and looks each row up by its key. Measured alone on MariaDB (BENCHMARKS.md,
    /// round 2, part 14): 15–20 % less server CPU per row for a claim and its settle; in the
    /// relay (part 15): 1.15× the events/s in A/B drains, `mariadbd` 60–63 µs of CPU per row
    /// against 72–78.
    pub fn deletes_by_sequence(&self, shape: &Shape) -> bool {
        self.backend == DbBackend::MySql
            && !self.marks()
            && shape.sequence_unique
            && shape.sequence_index.is_some()
    }

    /// Deletes the rows whose sequence values lie in `runs` (inclusive; see
    /// [`Table::deletes_by_sequence`]). The multi-table form, for its index hint: a single-table
    /// `DELETE` of most of a small table runs as a full scan (EXPLAIN, MariaDB 10.11: `ALL` for 45
    /// of 50 rows), which waits for the lock of every row that a writer has not committed.
    pub fn delete_sequences(&self, shape: &Shape, runs: &[(i64, i64)]) -> Statement {
        let table = self.qualified();
        let index = self.sequence_index_hint(shape);
        let within = self.within(shape, runs);
        let sql = format!("DELETE {table} FROM {table}{index} WHERE {within}");
        Statement::from_sql_and_values(self.backend, sql, range_values(runs))
    }

    /// The ids of rows marked before `cutoff` (the `mark` mode's retention), at most `limit`;
    /// a plain read, so it waits for no lock. The purge deletes them with [`Table::delete`].
    pub fn expired(&self, shape: &Shape, cutoff: DateTime<Utc>, limit: usize) -> Statement {
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
            id = self.q(&shape.columns[0].actual),
        );
        Statement::from_sql_and_values(self.backend, sql, [cutoff.into()])
    }

    /// The `relayed_at` column of the `mark` mode, added by `setup` when the table lacks it.
    pub fn add_relayed_at(&self) -> String {
        let column_type = match self.backend {
            DbBackend::Postgres => "timestamptz",
            DbBackend::MySql => "datetime(6)",
            _ => "TEXT",
        };
        format!(
            "ALTER TABLE {} ADD COLUMN {} {column_type} NULL",
            self.qualified(),
            self.q(RELAYED_AT)
        )
    }

    /// PostgreSQL: the index the claim walks, on the sequence (not unique: on a partitioned
    /// table a unique index must hold the partition key).
    pub fn sequence_index(&self, column: &str) -> String {
        format!(
            "CREATE INDEX IF NOT EXISTS {} ON {} ({})",
            self.q(&format!("{}_poll_seq", self.name())),
            self.qualified(),
            self.q(column)
        )
    }

    /// The NOTIFY trigger's name, unquoted (as `pg_trigger.tgname` holds it).
    pub fn notify_trigger_name(&self) -> String {
        format!("{}_notify", self.name())
    }

    /// On PostgreSQL with a `channel`, the NOTIFY trigger of `setup` (idempotent).
    ///
    /// The trigger is `AFTER INSERT ... FOR EACH STATEMENT`, so a multi-row insert notifies
    /// once, and PostgreSQL delivers a NOTIFY only when the inserting transaction commits (and
    /// folds duplicates within a transaction): the relay wakes exactly when rows become visible.
    pub fn notify_trigger(&self, channel: Option<&str>) -> Vec<String> {
        let mut ddl = Vec::new();
        if let (DbBackend::Postgres, Some(channel)) = (self.backend, channel) {
            let function = self.in_schema("outbox_relay_notify");
            let trigger = self.q(&self.notify_trigger_name());
            ddl.push(format!(
                "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS \
                 $outbox$ BEGIN \
                 IF NOT {}(hashtext('{}'), hashtext(TG_ARGV[0])) THEN \
                 PERFORM pg_notify(TG_ARGV[0], ''); END IF; RETURN NULL; END $outbox$",
                super::waiting::NOTIFY_GUARD,
                super::waiting::LOCK_CLASS
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

    /// SQLite's lease table: one row per outbox, naming the relay that leads it until when.
    pub fn lease_table(&self) -> String {
        self.in_schema(&format!("{}_relay_lease", self.name()))
    }
}

/// The bound values of [`Table::within`]: each range's low and high end.
fn range_values(ranges: &[(i64, i64)]) -> impl Iterator<Item = Value> + '_ {
    ranges
        .iter()
        .flat_map(|&(low, high)| [Value::from(low), Value::from(high)])
}

/// An id as bound: its text (cast to the column's type on PostgreSQL, see `Table::id_param`).
fn id_value(id: &str) -> Value {
    id.to_owned().into()
}

/// `ids` as the text of a PostgreSQL array, bound as one parameter and cast to the id type's
/// array: every element double-quoted, with `"` and `\` backslash-escaped, so each element reads
/// back as exactly its text (a quoted `NULL` is the text, not a null).
fn pg_array(ids: &[String]) -> String {
    let mut text = String::with_capacity(ids.iter().map(|id| id.len() + 3).sum::<usize>() + 2);
    text.push('{');
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push('"');
        for c in id.chars() {
            if c == '"' || c == '\\' {
                text.push('\\');
            }
            text.push(c);
        }
        text.push('"');
    }
    text.push('}');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::poll::shape::Column;

    fn shape(id_type: Option<&str>, sequence: &str) -> Shape {
        let column = |name: &str, kind| Column {
            name: name.into(),
            actual: name.to_owned(),
            kind,
            pg_type: None,
        };
        Shape {
            columns: vec![
                column("id", Kind::Text),
                column("aggregateid", Kind::Text),
                column("payload", Kind::Bytes),
                column("extra", Kind::Text),
            ],
            sequence: sequence.to_owned(),
            id_type: id_type.map(str::to_owned),
            id_unique: false,
            spans_tables: false,
            sequence_index: None,
            sequence_unique: false,
        }
    }

    #[test]
    fn claim_per_backend() {
        let pg = Table::new(DbBackend::Postgres, Some("app"), "out\"box", false);
        // Delete mode: the claim deletes the rows it locks, by their ctid, and sorts them.
        let sql = pg
            .claim(&shape(Some("uuid"), "\"seq\""), 500, None)
            .to_string();
        assert_eq!(
            sql,
            "WITH claimed AS (DELETE FROM \"app\".\"out\"\"box\" WHERE ctid = ANY(ARRAY(SELECT ctid \
             FROM \"app\".\"out\"\"box\" ORDER BY \"app\".\"out\"\"box\".\"seq\" LIMIT 500 FOR UPDATE \
             SKIP LOCKED)) RETURNING CAST(\"id\" AS TEXT), CAST(\"aggregateid\" AS TEXT), \"payload\", \
             CAST(\"extra\" AS TEXT), CAST(\"app\".\"out\"\"box\".\"seq\" AS BIGINT)) \
             SELECT * FROM claimed ORDER BY 5"
        );
        // A partitioned table (a ctid is unique within a partition only) is claimed by a
        // locking read and settled after the ack.
        let partitioned = Shape {
            spans_tables: true,
            ..shape(Some("uuid"), "\"seq\"")
        };
        assert!(!pg.deletes_at_claim(&partitioned));
        let sql = pg.claim(&partitioned, 500, None).to_string();
        assert!(
            sql.starts_with(
                "SELECT CAST(\"id\" AS TEXT), CAST(\"aggregateid\" AS TEXT), \"payload\", "
            ),
            "{sql}"
        );
        assert!(
            sql.ends_with(
                "FROM \"app\".\"out\"\"box\" ORDER BY \"app\".\"out\"\"box\".\"seq\" LIMIT 500 FOR UPDATE SKIP LOCKED"
            ),
            "{sql}"
        );
        let my = Table::new(DbBackend::MySql, None, "outbox", true);
        let s = shape(None, "`seq`");
        let sql = my.claim(&s, 10, None).to_string();
        assert!(sql.starts_with("SELECT CAST(`id` AS CHAR) FROM"), "{sql}");
        let fetch = my.fetch(&s, &["a".to_owned(), "b".to_owned()]).sql;
        assert!(
            fetch.contains(
                "CAST(`extra` AS CHAR), CAST(`outbox`.`seq` AS SIGNED) FROM `outbox` WHERE `id` IN (?, ?) ORDER BY `outbox`.`seq`"
            ),
            "{fetch}"
        );
        assert!(
            sql.contains(
                "WHERE `relayed_at` IS NULL ORDER BY `outbox`.`seq` LIMIT 10 FOR UPDATE SKIP LOCKED"
            ),
            "{sql}"
        );
        // With an index led by the sequence, forced, every column in one locking read.
        let indexed = Shape {
            sequence_index: Some("outbox_poll_seq".to_owned()),
            ..shape(None, "`seq`")
        };
        assert!(!my.claims_ids(&indexed) && my.claims_ids(&s));
        // A second batch may be claimed while one is out only where the claim is the forced
        // walk of that index, which locks no row past its `LIMIT`.
        assert!(my.claim_locks_only_its_rows(&indexed) && !my.claim_locks_only_its_rows(&s));
        let sql = my.claim(&indexed, 10, None).to_string();
        assert!(
            sql.contains(
                "CAST(`extra` AS CHAR), CAST(`outbox`.`seq` AS SIGNED) FROM `outbox` FORCE INDEX \
                 (`outbox_poll_seq`) WHERE `relayed_at` IS NULL ORDER BY `outbox`.`seq` LIMIT 10 \
                 FOR UPDATE SKIP LOCKED"
            ),
            "{sql}"
        );
        let lite = Table::new(DbBackend::Sqlite, Some("ignored"), "outbox", false);
        let sql = lite.claim(&shape(None, "rowid"), 1, None).to_string();
        assert!(
            sql.ends_with("FROM \"outbox\" ORDER BY \"outbox\".rowid LIMIT 1"),
            "{sql}"
        );
        // Past the batches still out.
        let sql = lite.claim(&shape(None, "rowid"), 1, Some(41)).to_string();
        assert!(
            sql.ends_with(
                "FROM \"outbox\" WHERE \"outbox\".rowid > 41 ORDER BY \"outbox\".rowid LIMIT 1"
            ),
            "{sql}"
        );
        let marking = Table::new(DbBackend::Sqlite, None, "outbox", true);
        let sql = marking
            .claim(&shape(None, "rowid"), 1, Some(41))
            .to_string();
        assert!(
            sql.contains("WHERE \"relayed_at\" IS NULL AND \"outbox\".rowid > 41 ORDER BY"),
            "{sql}"
        );
    }

    #[test]
    fn ids_are_bound_in_the_column_type() {
        let pg = Table::new(DbBackend::Postgres, None, "outbox", false);
        let ids = [
            "0190a0b2-0000-7000-8000-000000000001".to_owned(),
            "x'); DROP TABLE outbox; --".to_owned(),
        ];
        let varchar = shape(Some("character varying(36)"), "\"seq\"");
        let s = pg.settle(&varchar, &ids, Utc::now());
        assert_eq!(
            s.sql,
            "DELETE FROM \"outbox\" WHERE \"id\" = ANY(CAST($1 AS character varying(36)[]))"
        );
        assert_eq!(
            s.values.map(|v| v.0),
            Some(vec![Value::from(
                r#"{"0190a0b2-0000-7000-8000-000000000001","x'); DROP TABLE outbox; --"}"#
            )])
        );
        assert_eq!(
            pg_array(&["a\"b\\c".to_owned(), "NULL".to_owned(), String::new()]),
            r#"{"a\"b\\c","NULL",""}"#
        );
        let my = Table::new(DbBackend::MySql, None, "outbox", true);
        let s = my.settle(&shape(None, "`seq`"), &ids, Utc::now());
        assert_eq!(
            s.sql,
            "UPDATE `outbox` SET `relayed_at` = ? WHERE `id` IN (?, ?)"
        );
        let mut unique = shape(None, "`seq`");
        unique.id_unique = true;
        let s = my.delete(&unique, &ids);
        assert_eq!(
            s.sql,
            "DELETE `outbox` FROM (SELECT ? AS id UNION ALL SELECT ?) AS settled \
             STRAIGHT_JOIN `outbox` ON `outbox`.`id` = settled.id"
        );
        assert_eq!(s.values.map(|v| v.0.len()), Some(2));
        let s = my.delete(&shape(None, "`seq`"), &ids[..1]);
        assert_eq!(
            s.sql,
            "DELETE FROM `outbox` WHERE `id` = _utf8mb4 \
             X'30313930613062322d303030302d373030302d383030302d303030303030303030303031'"
        );
        assert!(s.values.is_none());
        assert_eq!(
            my.delete(&shape(None, "`seq`"), &ids)
                .sql
                .matches("DELETE")
                .count(),
            2
        );
    }

    /// Every run's statement fits one TLS record (16 KiB, text and values), the runs keep the
    /// ids and their order, and an id past the budget still goes, alone.
    #[test]
    fn ids_go_in_runs_that_each_fit_one_write() {
        let uuids: Vec<String> = (0..1000)
            .map(|i| format!("0190a0b2-0000-7000-8000-{i:012}"))
            .collect();
        let bytes = |s: &Statement| {
            let values = s.values.as_ref().map_or(0, |values| {
                values
                    .0
                    .iter()
                    .map(|v| match v {
                        Value::String(Some(text)) => text.len(),
                        _ => 8,
                    })
                    .sum()
            });
            s.sql.len() + values
        };
        let mut unique = shape(Some("uuid"), "`seq`");
        unique.id_unique = true;
        let backends = [
            (
                Table::new(DbBackend::Postgres, None, "outbox", false),
                shape(Some("uuid"), "\"seq\""),
            ),
            (Table::new(DbBackend::MySql, None, "outbox", false), unique),
            (
                Table::new(DbBackend::MySql, None, "outbox", false),
                shape(None, "`seq`"),
            ),
            (
                Table::new(DbBackend::MySql, None, "outbox", true),
                shape(None, "`seq`"),
            ),
        ];
        for (table, shape) in &backends {
            let runs: Vec<&[String]> = table.runs(shape, &uuids).collect();
            assert!(runs.len() > 1, "{:?}: {} run(s)", table.backend, runs.len());
            assert_eq!(runs.concat(), uuids);
            for run in &runs {
                let settle = table.settle(shape, run, Utc::now());
                assert!(bytes(&settle) < 16 * 1024, "{}", bytes(&settle));
                let fetch = table.fetch(shape, run);
                assert!(bytes(&fetch) < 16 * 1024, "{}", bytes(&fetch));
            }
        }
        // MariaDB with a unique `id` index: one joined delete per run, not one statement per id.
        let unique_runs = backends[1].0.runs(&backends[1].1, &uuids).count();
        let literal_runs = backends[2].0.runs(&backends[2].1, &uuids).count();
        assert!(
            unique_runs * 2 < literal_runs,
            "{unique_runs} runs against {literal_runs}"
        );
        let (pg, pg_shape) = &backends[0];
        let long = vec!["x".repeat(20_000), "y".to_owned()];
        let runs: Vec<&[String]> = pg.runs(pg_shape, &long).collect();
        assert_eq!(runs, vec![&long[..1], &long[1..]]);
        assert_eq!(pg.runs(pg_shape, &[]).count(), 0);
        // No network: one run, so a settle outside a transaction stays one statement.
        let lite = Table::new(DbBackend::Sqlite, None, "outbox", false);
        assert_eq!(lite.runs(pg_shape, &uuids).count(), 1);
    }

    #[test]
    fn mariadb_settles_by_sequence_runs_only_with_a_unique_sequence() {
        let my = Table::new(DbBackend::MySql, None, "outbox", false);
        let unique = Shape {
            sequence_index: Some("outbox_poll_seq".to_owned()),
            sequence_unique: true,
            ..shape(None, "`seq`")
        };
        assert!(my.deletes_by_sequence(&unique));
        let s = my.delete_sequences(&unique, &[(1, 3), (9, 9)]);
        assert_eq!(
            s.sql,
            "DELETE `outbox` FROM `outbox` FORCE INDEX (`outbox_poll_seq`) WHERE `outbox`.`seq` \
             BETWEEN ? AND ? OR `outbox`.`seq` BETWEEN ? AND ?"
        );
        assert_eq!(
            s.values.map(|v| v.0),
            Some(vec![1i64.into(), 3i64.into(), 9i64.into(), 9i64.into()])
        );
        // Not without a unique sequence, nor in the mark mode, nor elsewhere.
        let leading_only = Shape {
            sequence_unique: false,
            ..unique.clone()
        };
        assert!(!my.deletes_by_sequence(&leading_only));
        let marking = Table::new(DbBackend::MySql, None, "outbox", true);
        assert!(!marking.deletes_by_sequence(&unique));
        let pg = Table::new(DbBackend::Postgres, None, "outbox", false);
        assert!(!pg.deletes_by_sequence(&unique));
    }

    #[test]
    fn shipped_rows_are_selected_by_their_sequence_ranges_and_locked_on_postgres() {
        let pg = Table::new(DbBackend::Postgres, None, "outbox", true);
        let s = pg.shipped(&shape(None, "\"seq\""), &[(1, 3), (9, 9)]);
        assert_eq!(
            s.sql,
            "SELECT CAST(\"id\" AS TEXT), CAST(\"outbox\".\"seq\" AS BIGINT) FROM \"outbox\" \
             WHERE (\"outbox\".\"seq\" BETWEEN $1 AND $2 OR \"outbox\".\"seq\" BETWEEN $3 AND $4) \
             AND \"relayed_at\" IS NULL ORDER BY \"outbox\".\"seq\" FOR UPDATE"
        );
        assert_eq!(s.values.map(|v| v.0.len()), Some(4));
        let lite = Table::new(DbBackend::Sqlite, None, "outbox", false);
        let s = lite.shipped(&shape(None, "rowid"), &[(1, 3)]);
        assert!(s.sql.ends_with("ORDER BY \"outbox\".rowid"), "{}", s.sql);
        // MariaDB: a plain read, which waits for no writer (see `Table::shipped`).
        let my = Table::new(DbBackend::MySql, None, "outbox", false);
        let s = my.shipped(&shape(None, "`seq`"), &[(1, 3)]);
        assert!(s.sql.ends_with("ORDER BY `outbox`.`seq`"), "{}", s.sql);
    }

    #[test]
    fn notify_trigger_is_per_statement_and_quoted() {
        let pg = Table::new(DbBackend::Postgres, None, "outbox", false);
        let ddl = pg.notify_trigger(Some("it's")).join(";\n");
        assert!(
            ddl.contains("AFTER INSERT ON \"outbox\" FOR EACH STATEMENT"),
            "{ddl}"
        );
        assert!(ddl.contains("('it''s')"), "{ddl}");
        // Only while a relay holds the wait mark (`waiting.rs`), and never waiting for it.
        assert!(
            ddl.contains(
                "IF NOT pg_try_advisory_xact_lock_shared(hashtext('outbox-relay'), hashtext(TG_ARGV[0]))"
            ),
            "{ddl}"
        );
        let lite = Table::new(DbBackend::Sqlite, None, "outbox", false);
        assert!(lite.notify_trigger(Some("x")).is_empty());
    }
}
