//! The outbox table as the database describes it, read at start: which of the outbox columns
//! exist, which are binary, the type of `id`, and the sequence that the database assigns at
//! INSERT, which the claim orders by.
//!
//! Contract:
//! - Required: the columns the configuration names, as Debezium's Event Router names them: the
//!   event id, key and payload (`id`, `aggregateid`, `payload` by default), the routing column
//!   (`aggregatetype`), the timestamp column when one is set, and every placed column. A
//!   missing one is named with the setting that names it. Debezium's documented DDL has these
//!   plus `type`; `type`, `schemaversion`, `timestamp` and `tracingspancontext` are read when
//!   present. Other columns are ignored.
//! - The order is a sequence that the database assigns at INSERT, never a client clock: `seq`
//!   (PostgreSQL identity or serial, MariaDB/MySQL `AUTO_INCREMENT`), SQLite's `rowid`. A writer
//!   takes its aggregate's row lock before it inserts the event, so per aggregate the sequence
//!   follows the lock order, which is the commit order. `outbox-relay setup --source poll` adds
//!   `seq`; `run` refuses a table without it.
//! - Binary columns (`bytea`, `blob`, `varbinary`, `binary`) are read as bytes, the others as text;
//!   on PostgreSQL each is then typed by its type as the wal source types it
//!   ([`crate::format::postgres_value`]), so both ship the same bytes for the same row.

use sea_orm::{ConnectionTrait, DbBackend, Statement};

use super::PollError;
use super::table::Table;

/// The sequence column that `setup` adds on PostgreSQL and MariaDB/MySQL.
pub const SEQUENCE: &str = "seq";

/// How a column's value is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Text,
    Bytes,
}

/// One column of the table, as the catalog describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Found {
    pub name: String,
    /// The declared SQL type (PostgreSQL: `format_type`, e.g. `character varying(36)`).
    pub sql_type: String,
    pub binary: bool,
    /// The database assigns it at INSERT (identity, serial, `AUTO_INCREMENT`).
    pub generated: bool,
    /// PostgreSQL: the type OID and modifier (`atttypid`, `atttypmod`), which decide how the
    /// value renders.
    pub pg_type: Option<(u32, i32)>,
}

/// The table as found: its columns, and on PostgreSQL whether it is partitioned.
#[derive(Clone, Debug, Default)]
pub(crate) struct Catalog {
    pub columns: Vec<Found>,
    pub partitioned: bool,
    /// PostgreSQL: the table has (or had) child tables, declarative partitions or `INHERITS`
    /// children (`relhassubclass`), so a read of it may return rows stored in several tables.
    pub inherited: bool,
    /// SQLite: the name under which the rowid is reachable (`rowid`, `_rowid_` or `oid`, the
    /// first that no column shadows); None when the table is `WITHOUT ROWID`.
    pub rowid: Option<&'static str>,
    /// MariaDB/MySQL: the columns that a unique index of that column alone covers (the primary
    /// key among them), which a settle may look rows up by, one row per value.
    pub unique: Vec<String>,
    /// MariaDB/MySQL: each index by its first column, `(index, column)`, unique ones first.
    pub leading: Vec<(String, String)>,
}

impl Catalog {
    /// PostgreSQL: the table's rows may live in several tables (partitions, or `INHERITS`
    /// children). A `ctid` then names a row only within its own table (`Shape::spans_tables`),
    /// and `ALTER TABLE ... ADD COLUMN` numbers the rows one child at a time (`setup`).
    pub fn spans_tables(&self) -> bool {
        self.partitioned || self.inherited
    }

    /// The column `name`; case-insensitive where the database is (MariaDB/MySQL, SQLite).
    pub fn find(&self, backend: DbBackend, name: &str) -> Option<&Found> {
        self.columns.iter().find(|c| match backend {
            DbBackend::Postgres => c.name == name,
            _ => c.name.eq_ignore_ascii_case(name),
        })
    }

    /// Reads the catalog entry of `table`; `PollError::NoTable` when there is no such table.
    pub async fn read<C: ConnectionTrait>(conn: &C, table: &Table) -> Result<Catalog, PollError> {
        let mut catalog = Catalog::default();
        match table.backend {
            DbBackend::Postgres => {
                let sql = "SELECT CAST(a.attname AS TEXT), format_type(a.atttypid, a.atttypmod), \
                     t.typname = 'bytea', \
                     a.attidentity IN ('a', 'd') OR COALESCE(pg_get_expr(d.adbin, d.adrelid) LIKE 'nextval(%', FALSE), \
                     c.relkind = 'p', CAST(a.atttypid AS BIGINT), a.atttypmod, c.relhassubclass \
                     FROM pg_catalog.pg_attribute a \
                     JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
                     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                     JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
                     LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
                     WHERE n.nspname = COALESCE($1, current_schema()) AND c.relname = $2 \
                     AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped \
                     ORDER BY a.attnum";
                let rows = catalog_rows(conn, table, sql).await?;
                for row in rows {
                    catalog.columns.push(Found {
                        name: row.try_get_by_index(0)?,
                        sql_type: row.try_get_by_index(1)?,
                        binary: row.try_get_by_index(2)?,
                        generated: row.try_get_by_index(3)?,
                        pg_type: u32::try_from(row.try_get_by_index::<i64>(5)?)
                            .ok()
                            .map(|oid| (oid, row.try_get_by_index::<i32>(6).unwrap_or(-1))),
                    });
                    catalog.partitioned = row.try_get_by_index(4)?;
                    catalog.inherited = row.try_get_by_index(7)?;
                }
            }
            DbBackend::MySql => {
                let sql = "SELECT CAST(column_name AS CHAR), CAST(data_type AS CHAR), \
                     CAST(column_type AS CHAR), CAST(extra AS CHAR) \
                     FROM information_schema.columns \
                     WHERE table_schema = COALESCE(?, DATABASE()) AND table_name = ? \
                     ORDER BY ordinal_position";
                let rows = catalog_rows(conn, table, sql).await?;
                for row in rows {
                    let data_type: String = row.try_get_by_index(1)?;
                    let extra: Option<String> = row.try_get_by_index(3)?;
                    catalog.columns.push(Found {
                        name: row.try_get_by_index(0)?,
                        sql_type: row.try_get_by_index(2)?,
                        binary: matches!(
                            data_type.to_ascii_lowercase().as_str(),
                            "binary"
                                | "varbinary"
                                | "tinyblob"
                                | "blob"
                                | "mediumblob"
                                | "longblob"
                        ),
                        generated: extra
                            .is_some_and(|e| e.to_ascii_lowercase().contains("auto_increment")),
                        pg_type: None,
                    });
                }
                let sql = "SELECT CAST(index_name AS CHAR), CAST(column_name AS CHAR), \
                     CAST(seq_in_index AS SIGNED), CAST(non_unique AS SIGNED) \
                     FROM information_schema.statistics \
                     WHERE table_schema = COALESCE(?, DATABASE()) AND table_name = ? \
                     ORDER BY non_unique, index_name, seq_in_index";
                let rows = catalog_rows(conn, table, sql).await?;
                let mut indexes: Vec<(String, String, i64, bool)> = Vec::with_capacity(rows.len());
                for row in rows {
                    indexes.push((
                        row.try_get_by_index(0)?,
                        row.try_get_by_index(1)?,
                        row.try_get_by_index(2)?,
                        row.try_get_by_index::<i64>(3)? == 0,
                    ));
                }
                let leading = indexes.iter().filter(|(_, _, position, _)| *position == 1);
                // Unique indexes of one column: `seq_in_index` 1 and no second column.
                catalog.unique = leading
                    .clone()
                    .filter(|(index, _, _, unique)| {
                        *unique
                            && !indexes
                                .iter()
                                .any(|(other, _, p, _)| other == index && *p > 1)
                    })
                    .map(|(_, column, _, _)| column.clone())
                    .collect();
                catalog.leading = leading
                    .map(|(index, column, _, _)| (index.clone(), column.clone()))
                    .collect();
            }
            DbBackend::Sqlite => {
                let rows = conn
                    .query_all_raw(Statement::from_sql_and_values(
                        DbBackend::Sqlite,
                        "SELECT name, type FROM pragma_table_info(?)",
                        [table.name().into()],
                    ))
                    .await?;
                for row in rows {
                    let sql_type: String = row.try_get_by_index(1)?;
                    catalog.columns.push(Found {
                        name: row.try_get_by_index(0)?,
                        binary: sql_type.to_ascii_uppercase().contains("BLOB"),
                        sql_type,
                        generated: false,
                        pg_type: None,
                    });
                }
                if !catalog.columns.is_empty() {
                    catalog.rowid = sqlite_rowid(conn, table, &catalog).await?;
                }
            }
            other => return Err(PollError::Unsupported(format!("{other:?}"))),
        }
        if catalog.columns.is_empty() {
            return Err(PollError::NoTable { table: table.key() });
        }
        Ok(catalog)
    }
}

/// The rows of a catalog query whose parameters are the table's schema (None: the connection's
/// own) and its name.
async fn catalog_rows<C: ConnectionTrait>(
    conn: &C,
    table: &Table,
    sql: &str,
) -> Result<Vec<sea_orm::QueryResult>, PollError> {
    let values = [
        table.schema().map(str::to_owned).into(),
        table.name().into(),
    ];
    Ok(conn
        .query_all_raw(Statement::from_sql_and_values(table.backend, sql, values))
        .await?)
}

/// The unshadowed name of SQLite's rowid, if the table has one (it has none when declared
/// `WITHOUT ROWID`; selecting it then fails).
async fn sqlite_rowid<C: ConnectionTrait>(
    conn: &C,
    table: &Table,
    catalog: &Catalog,
) -> Result<Option<&'static str>, PollError> {
    let Some(alias) = ["rowid", "_rowid_", "oid"]
        .into_iter()
        .find(|alias| catalog.find(DbBackend::Sqlite, alias).is_none())
    else {
        return Ok(None);
    };
    let probe = format!("SELECT {alias} FROM {} LIMIT 0", table.qualified());
    Ok(conn
        .query_all_raw(Statement::from_string(DbBackend::Sqlite, probe))
        .await
        .ok()
        .map(|_| alias))
}

/// One column a claim reads: its name in the record, its name in the table, how it is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Column {
    /// Shared by every record of the table.
    pub name: crate::record::ColumnName,
    pub actual: String,
    pub kind: Kind,
    /// PostgreSQL: the type OID and modifier the text value is typed by.
    pub pg_type: Option<(u32, i32)>,
}

/// What a claim needs to know of the table, checked at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Shape {
    /// The columns a claim reads, `id` first.
    pub columns: Vec<Column>,
    /// The ordering expression, quoted: the `seq` column, or SQLite's rowid.
    pub sequence: String,
    /// PostgreSQL: `id`'s declared type; ids are bound as text and cast to it, so the
    /// comparison is in the column's own type (`uuid`, `varchar(36)`, `bigint`, ...).
    pub id_type: Option<String>,
    /// MariaDB/MySQL: a unique index of `id` alone (the primary key in Debezium's DDL) finds
    /// each row by its id, touching no other row: a settle may then delete a batch in one
    /// statement (see `Table::delete`).
    pub id_unique: bool,
    /// PostgreSQL: the table's rows may live in several tables (partitions, or `INHERITS`
    /// children), where a row's `ctid` names it only within its own (see
    /// `Table::deletes_at_claim`).
    pub spans_tables: bool,
    /// MariaDB/MySQL: an index whose first column is the sequence (the key its
    /// `AUTO_INCREMENT` needs), which the claim forces (see `Table::claim`).
    pub sequence_index: Option<String>,
    /// MariaDB/MySQL: a unique index of the sequence alone (outbox-core's DDL has one): no two
    /// rows share a value, so a run of consecutive values that a batch claimed names exactly the
    /// batch's rows, and a settle may delete them by it (see `Table::deletes_by_sequence`).
    pub sequence_unique: bool,
}

/// A column the configuration names, with the setting that names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Required {
    pub column: String,
    /// The setting, as the relay's configuration and Debezium's Event Router spell it.
    pub setting: &'static str,
}

impl std::fmt::Display for Required {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` ({})", self.column, self.setting)
    }
}

/// The columns a relay reads: required first (the event id leading), then optional.
pub(crate) struct Wanted {
    pub required: Vec<Required>,
    pub optional: Vec<String>,
}

impl Wanted {
    /// The columns `kafka` names (event id, key, payload, routing, timestamp, placements) are
    /// required; Debezium's other outbox columns are read when present.
    pub fn new(kafka: &crate::config::KafkaConfig, placed: &[String]) -> Wanted {
        let named = [
            (
                &kafka.event_id_field,
                "`kafka.event_id_field`, Debezium's `table.field.event.id`",
            ),
            (
                &kafka.event_key_field,
                "`kafka.event_key_field`, Debezium's `table.field.event.key`",
            ),
            (
                &kafka.payload_field,
                "`kafka.payload_field`, Debezium's `table.field.event.payload`",
            ),
            (
                &kafka.route_by_field,
                "`kafka.route_by_field`, Debezium's `route.by.field`",
            ),
        ];
        let timestamp = kafka.event_timestamp_field.iter().map(|column| {
            (
                column,
                "`kafka.event_timestamp_field`, Debezium's `table.field.event.timestamp`",
            )
        });
        let placements = placed.iter().map(|column| {
            (
                column,
                "`kafka.additional_placement`, Debezium's `table.fields.additional.placement`",
            )
        });
        let mut required: Vec<Required> = Vec::new();
        for (column, setting) in named.into_iter().chain(timestamp).chain(placements) {
            if !required.iter().any(|r| r.column == *column) {
                required.push(Required {
                    column: column.clone(),
                    setting,
                });
            }
        }
        let optional = outbox_core::migration::COLUMNS
            .iter()
            .map(|c| (*c).to_owned())
            .filter(|c| !required.iter().any(|r| r.column == *c))
            .collect();
        Wanted { required, optional }
    }
}

impl Shape {
    /// Checks `catalog` for what polling needs; every problem is permanent and named.
    pub fn check(table: &Table, catalog: &Catalog, wanted: &Wanted) -> Result<Shape, PollError> {
        let backend = table.backend;
        require(table, catalog, wanted)?;
        if table.marks() && catalog.find(backend, super::RELAYED_AT).is_none() {
            return Err(PollError::NotReady {
                table: table.key(),
                problem: format!(
                    "it lacks the `{}` column of `after_ack = \"mark\"`",
                    super::RELAYED_AT
                ),
            });
        }
        event_id_is_text(table, catalog, wanted)?;
        let sequence = sequence(table, catalog)?;
        let columns: Vec<Column> = wanted
            .required
            .iter()
            .map(|r| &r.column)
            .chain(&wanted.optional)
            .filter_map(|name| {
                catalog.find(backend, name).map(|found| Column {
                    name: name.as_str().into(),
                    actual: found.name.clone(),
                    kind: if found.binary {
                        Kind::Bytes
                    } else {
                        Kind::Text
                    },
                    pg_type: found.pg_type,
                })
            })
            .collect();
        // The event id leads: claims, settles and purges select by it.
        let id_type = (backend == DbBackend::Postgres)
            .then(|| {
                columns
                    .first()
                    .and_then(|id| catalog.find(backend, &id.actual))
                    .map(|id| id.sql_type.clone())
            })
            .flatten();
        let id_unique = backend == DbBackend::MySql
            && columns.first().is_some_and(|id| {
                catalog
                    .unique
                    .iter()
                    .any(|c| c.eq_ignore_ascii_case(&id.actual))
            });
        let sequence_index = match backend {
            DbBackend::MySql => catalog.find(backend, SEQUENCE).and_then(|seq| {
                catalog
                    .leading
                    .iter()
                    .find(|(_, column)| column.eq_ignore_ascii_case(&seq.name))
                    .map(|(index, _)| index.clone())
            }),
            _ => None,
        };
        let sequence_unique = backend == DbBackend::MySql
            && catalog.find(backend, SEQUENCE).is_some_and(|seq| {
                catalog
                    .unique
                    .iter()
                    .any(|c| c.eq_ignore_ascii_case(&seq.name))
            });
        Ok(Shape {
            columns,
            sequence,
            id_type,
            id_unique,
            spans_tables: catalog.spans_tables(),
            sequence_index,
            sequence_unique,
        })
    }
}

/// Refuses an event id column that is binary (`bytea`, `BINARY(16)`, `BLOB`, ...): the relay
/// names a claimed batch's rows by their ids as text, to settle them after Kafka's
/// acknowledgement and to recognise them on a resume, so rows with binary ids would never be
/// settled and would ship again on every cycle.
pub(crate) fn event_id_is_text(
    table: &Table,
    catalog: &Catalog,
    wanted: &Wanted,
) -> Result<(), PollError> {
    let Some(id) = wanted.required.first() else {
        return Ok(());
    };
    match catalog.find(table.backend, &id.column) {
        Some(found) if found.binary => Err(PollError::Unfit {
            table: table.key(),
            problem: format!(
                "its event id column `{}` ({}) is binary, and the poll source settles and \
                 recognises rows by their ids as text; store the id as text (`uuid` on \
                 PostgreSQL, `UUID` on MariaDB 10.7+, `CHAR(36)`, `VARCHAR(36)`), or name a \
                 text column that holds it in {}",
                found.name, found.sql_type, id.setting
            ),
        }),
        _ => Ok(()),
    }
}

/// Checks that every required column is there, naming all that are not.
pub(crate) fn require(table: &Table, catalog: &Catalog, wanted: &Wanted) -> Result<(), PollError> {
    let missing: Vec<Required> = wanted
        .required
        .iter()
        .filter(|r| catalog.find(table.backend, &r.column).is_none())
        .cloned()
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(PollError::MissingColumns {
            table: table.key(),
            columns: missing,
        })
    }
}

/// The claim's ordering expression, or why the table has none.
fn sequence(table: &Table, catalog: &Catalog) -> Result<String, PollError> {
    let unfit = |problem: String| PollError::Unfit {
        table: table.key(),
        problem,
    };
    match table.backend {
        DbBackend::Sqlite => catalog
            .rowid
            .map(str::to_owned)
            .ok_or_else(|| {
                unfit(
                    "it is a WITHOUT ROWID table, so it has no rowid to order by; recreate it with a rowid"
                        .to_owned(),
                )
            }),
        backend => match catalog.find(backend, SEQUENCE) {
            Some(found) if found.generated => Ok(table.q(&found.name)),
            Some(found) => Err(unfit(format!(
                "its `{}` column ({}) is not assigned by the database at INSERT (it must be {})",
                found.name,
                found.sql_type,
                if backend == DbBackend::Postgres {
                    "an identity or serial column"
                } else {
                    "AUTO_INCREMENT"
                }
            ))),
            None => Err(PollError::NotReady {
                table: table.key(),
                problem: format!(
                    "it has no `{SEQUENCE}` column, the sequence the database assigns at INSERT"
                ),
            }),
        },
    }
}

/// The DDL that gives `table` its sequence, if it lacks one (`setup --source poll`).
pub(crate) fn add_sequence(table: &Table, catalog: &Catalog) -> Result<Vec<String>, PollError> {
    let backend = table.backend;
    match backend {
        DbBackend::Sqlite => {
            sequence(table, catalog)?;
            return Ok(Vec::new());
        }
        _ => {
            if let Some(found) = catalog.find(backend, SEQUENCE) {
                sequence(table, catalog)?;
                // An existing identity: only the claim's index may be missing (PostgreSQL).
                return Ok(if backend == DbBackend::Postgres {
                    vec![table.sequence_index(&found.name)]
                } else {
                    Vec::new()
                });
            }
        }
    }
    let q = table.q(SEQUENCE);
    let qualified = table.qualified();
    match backend {
        DbBackend::Postgres => {
            // Identity columns on partitioned tables need PostgreSQL 17; a serial works on all.
            let column = if catalog.partitioned {
                "bigserial"
            } else {
                "bigint GENERATED BY DEFAULT AS IDENTITY"
            };
            Ok(vec![
                format!("ALTER TABLE {qualified} ADD COLUMN {q} {column}"),
                table.sequence_index(SEQUENCE),
            ])
        }
        _ => {
            // One AUTO_INCREMENT column per table, and it must be a key.
            if let Some(other) = catalog.columns.iter().find(|c| c.generated) {
                return Err(PollError::Unfit {
                    table: table.key(),
                    problem: format!(
                        "it has an AUTO_INCREMENT column `{}` already, and MariaDB/MySQL allow one per \
                     table; rename it to `{SEQUENCE}` if it numbers the events in insert order",
                        other.name
                    ),
                });
            }
            Ok(vec![format!(
                "ALTER TABLE {qualified} ADD COLUMN {q} BIGINT NOT NULL AUTO_INCREMENT, ADD UNIQUE KEY {} ({q})",
                table.q("outbox_poll_seq")
            )])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(name: &str, sql_type: &str, binary: bool, generated: bool) -> Found {
        Found {
            name: name.to_owned(),
            sql_type: sql_type.to_owned(),
            binary,
            generated,
            pg_type: None,
        }
    }

    fn kafka() -> crate::config::KafkaConfig {
        crate::config::KafkaConfig::default()
    }

    fn debezium(id: &str, payload: (&str, bool)) -> Catalog {
        Catalog {
            columns: vec![
                found("id", id, false, false),
                found("aggregatetype", "character varying(255)", false, false),
                found("aggregateid", "character varying(255)", false, false),
                found("type", "character varying(255)", false, false),
                found("payload", payload.0, payload.1, false),
                found("tenant", "text", false, false),
            ],
            partitioned: false,
            inherited: false,
            rowid: None,
            unique: vec!["id".to_owned()],
            leading: Vec::new(),
        }
    }

    /// A table whose rows may live in several tables (partitions, or `INHERITS` children) is
    /// not claimed by `ctid`, which names a row only within its own table.
    #[test]
    fn rows_in_several_tables_are_not_claimed_by_ctid() {
        let table = Table::new(DbBackend::Postgres, None, "outbox", false);
        let wanted = Wanted::new(&kafka(), &[]);
        let mut catalog = debezium("uuid", ("jsonb", false));
        catalog.columns.push(found("seq", "bigint", false, true));
        let deletes = |catalog: &Catalog| {
            Shape::check(&table, catalog, &wanted)
                .map(|shape| table.deletes_at_claim(&shape))
                .map_err(|e| e.to_string())
        };
        assert_eq!(deletes(&catalog), Ok(true));
        catalog.inherited = true;
        assert_eq!(deletes(&catalog), Ok(false));
        catalog.inherited = false;
        catalog.partitioned = true;
        assert_eq!(deletes(&catalog), Ok(false));
    }

    #[test]
    fn debezium_columns_need_only_the_sequence() {
        let table = Table::new(DbBackend::Postgres, None, "outbox", false);
        let wanted = Wanted::new(&kafka(), &[]);
        let mut catalog = debezium("character varying(36)", ("bytea", true));
        let err = Shape::check(&table, &catalog, &wanted)
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("`seq`") && e.contains("setup --source poll")),
            "{err:?}"
        );
        let ddl = add_sequence(&table, &catalog).map(|d| d.join(";"));
        assert!(
            ddl.as_deref().is_ok_and(
                |d| d.contains("ADD COLUMN \"seq\" bigint GENERATED BY DEFAULT AS IDENTITY")
            ),
            "{ddl:?}"
        );
        catalog.columns.push(found("seq", "bigint", false, true));
        let shape = Shape::check(&table, &catalog, &wanted).map_err(|e| e.to_string());
        let shape = shape.as_ref();
        assert_eq!(shape.map(|s| s.sequence.as_str()), Ok("\"seq\""));
        assert_eq!(
            shape.map(|s| s.id_type.clone()),
            Ok(Some("character varying(36)".to_owned()))
        );
        let names: Vec<_> = shape
            .map(|s| s.columns.iter().map(|c| c.name.to_string()).collect())
            .unwrap_or_default();
        assert_eq!(
            names,
            ["id", "aggregateid", "payload", "aggregatetype", "type"]
        );
        assert!(shape.is_ok_and(|s| s.columns[2].kind == Kind::Bytes));
    }

    #[test]
    fn missing_columns_are_named() {
        let table = Table::new(DbBackend::MySql, None, "outbox", false);
        let mut catalog = debezium("char(36)", ("json", false));
        catalog.columns.retain(|c| c.name != "aggregateid");
        let wanted = Wanted::new(&kafka(), &["eventtype".to_owned()]);
        let err = Shape::check(&table, &catalog, &wanted)
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(|e| e.contains(
                "`aggregateid` (`kafka.event_key_field`, Debezium's `table.field.event.key`), \
                 `eventtype` (`kafka.additional_placement`"
            )),
            "{err:?}"
        );
    }

    #[test]
    fn one_auto_increment_per_mariadb_table() {
        let table = Table::new(DbBackend::MySql, None, "outbox", false);
        let mut catalog = debezium("char(36)", ("json", false));
        let ddl = add_sequence(&table, &catalog).map(|d| d.join(";"));
        assert!(ddl.as_deref().is_ok_and(|d| d.contains(
            "ADD COLUMN `seq` BIGINT NOT NULL AUTO_INCREMENT, ADD UNIQUE KEY `outbox_poll_seq` (`seq`)"
        )), "{ddl:?}");
        catalog.columns.push(found("n", "bigint", false, true));
        assert!(add_sequence(&table, &catalog).is_err());
        catalog.columns.push(found("SEQ", "bigint", false, true));
        let shape = Shape::check(&table, &catalog, &Wanted::new(&kafka(), &[]));
        assert_eq!(shape.map(|s| s.sequence).ok().as_deref(), Some("`SEQ`"));
    }

    /// A binary event id would never be settled (the settle names rows by their ids as text):
    /// refused, naming the column, its type and the setting.
    #[test]
    fn a_binary_event_id_is_refused() {
        for backend in [DbBackend::Postgres, DbBackend::MySql, DbBackend::Sqlite] {
            let table = Table::new(backend, None, "outbox", false);
            let mut catalog = debezium("binary(16)", ("json", false));
            catalog.columns[0].binary = true;
            catalog.columns.push(found("seq", "bigint", false, true));
            catalog.rowid = Some("rowid");
            let err = Shape::check(&table, &catalog, &Wanted::new(&kafka(), &[]))
                .err()
                .map(|e| e.to_string());
            assert!(
                err.as_deref().is_some_and(|e| e
                    .contains("its event id column `id` (binary(16)) is binary")
                    && e.contains("`kafka.event_id_field`")),
                "{backend:?}: {err:?}"
            );
        }
    }

    /// The claim forces the index that leads with the sequence, whatever its name; without
    /// one it claims ids only.
    #[test]
    fn the_mariadb_claim_finds_the_sequence_index() {
        let table = Table::new(DbBackend::MySql, None, "outbox", false);
        let mut catalog = debezium("char(36)", ("json", false));
        catalog.columns.push(found("Seq", "bigint", false, true));
        let index_of = |catalog: &Catalog| {
            Shape::check(&table, catalog, &Wanted::new(&kafka(), &[]))
                .ok()
                .and_then(|s| s.sequence_index)
        };
        assert_eq!(index_of(&catalog), None);
        catalog.leading = vec![
            ("PRIMARY".to_owned(), "id".to_owned()),
            ("by_seq".to_owned(), "SEQ".to_owned()),
        ];
        assert_eq!(index_of(&catalog).as_deref(), Some("by_seq"));
    }

    /// A settle deletes by sequence values only where a unique index covers the sequence alone:
    /// an index that merely leads with it (or a unique one of several columns) lets two rows
    /// share a value.
    #[test]
    fn the_sequence_is_unique_only_by_a_unique_index_of_its_own() {
        let table = Table::new(DbBackend::MySql, None, "outbox", false);
        let mut catalog = debezium("char(36)", ("json", false));
        catalog.columns.push(found("Seq", "bigint", false, true));
        catalog.leading = vec![("by_seq".to_owned(), "SEQ".to_owned())];
        let unique = |catalog: &Catalog| {
            Shape::check(&table, catalog, &Wanted::new(&kafka(), &[]))
                .ok()
                .map(|s| s.sequence_unique)
        };
        assert_eq!(unique(&catalog), Some(false));
        catalog.unique.push("SEQ".to_owned());
        assert_eq!(unique(&catalog), Some(true));
    }
}
