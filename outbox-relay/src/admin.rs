//! Administration over a plain SQL connection: set up and tear down the publication and the
//! slot (both idempotent), check before `run` that they and the outbox table can work
//! ([`preflight`]), and confirm a position on a released slot. (`status` reads the slot through
//! [`crate::inspect`].)
//!
//! Every identifier from configuration is quoted; values are bound parameters.

use std::collections::HashSet;
use std::time::Duration;

use outbox_core::migration::quote;
use sea_orm::sqlx::{self, PgPool};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, Statement, Value};

use crate::config::{Config, SourceKind};
use crate::connection::sqlx_error_is_transient;

/// A failed administrative step, naming it.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{step}: {source}")]
    Database { step: &'static str, source: DbErr },
    #[error("{step}: {source}")]
    Catalog {
        step: &'static str,
        source: sqlx::Error,
    },
    #[error("{0}")]
    State(String),
}

fn db(step: &'static str) -> impl FnOnce(DbErr) -> AdminError {
    move |source| AdminError::Database { step, source }
}

fn sqlx_step(step: &'static str) -> impl FnOnce(sqlx::Error) -> AdminError {
    move |source| AdminError::Catalog { step, source }
}

async fn connect(config: &Config) -> Result<DatabaseConnection, AdminError> {
    let mut options =
        crate::connection::connect_options(config.database_url.as_deref().unwrap_or_default())
            .map_err(|e| AdminError::State(e.to_string()))?;
    options.sqlx_logging(false).max_connections(1);
    Database::connect(options)
        .await
        .map_err(db("connecting to database_url"))
}

fn stmt(sql: &str, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

fn table_name(config: &Config) -> String {
    let q = |s: &str| quote(DbBackend::Postgres, s);
    match &config.source.schema {
        Some(schema) => format!("{}.{}", q(schema), q(&config.source.table)),
        None => q(&config.source.table),
    }
}

/// Creates the publication (for the outbox table, inserts only; or empty for the `message`
/// source) and the pgoutput slot, unless they exist. Running it twice changes nothing.
pub async fn setup(config: &Config) -> Result<(), AdminError> {
    let conn = connect(config).await?;
    let publication = &config.source.publication;
    let quoted_pub = quote(DbBackend::Postgres, publication);
    let exists = conn
        .query_one_raw(stmt(
            "SELECT 1 AS one FROM pg_publication WHERE pubname = $1",
            vec![publication.into()],
        ))
        .await
        .map_err(db("reading pg_publication"))?
        .is_some();
    match (config.source.kind, exists) {
        (SourceKind::Wal, false) => {
            // Via the partition root: the rows of a partitioned outbox then arrive under the
            // outbox's own name, whichever partition holds them (PostgreSQL 13 and later).
            let sql = format!(
                "CREATE PUBLICATION {quoted_pub} FOR TABLE {} \
                 WITH (publish = 'insert', publish_via_partition_root = true)",
                table_name(config)
            );
            conn.execute_unprepared(&sql)
                .await
                .map_err(db("creating the publication (source.publication)"))?;
        }
        (SourceKind::Message, false) => {
            let sql = format!("CREATE PUBLICATION {quoted_pub} WITH (publish = 'insert')");
            conn.execute_unprepared(&sql)
                .await
                .map_err(db("creating the publication (source.publication)"))?;
        }
        (SourceKind::Wal, true) => {
            let pool = conn.get_postgres_connection_pool();
            let table = resolve_table(pool, config)
                .await
                .map_err(sqlx_step("reading pg_class"))?
                .ok_or_else(|| AdminError::State(missing_table(config)))?;
            if !publication_includes(pool, publication, table.oid)
                .await
                .map_err(sqlx_step("reading pg_publication_tables"))?
            {
                let sql = format!(
                    "ALTER PUBLICATION {quoted_pub} ADD TABLE {}",
                    table_name(config)
                );
                conn.execute_unprepared(&sql)
                    .await
                    .map_err(db("adding the table to the publication"))?;
            }
            let via_root = read_publication(pool, publication)
                .await
                .map_err(sqlx_step("reading pg_publication"))?
                .is_some_and(|p| p.via_root);
            if table.partitioned && !via_root {
                conn.execute_unprepared(&via_root_fix(publication))
                    .await
                    .map_err(db("publishing the partitioned outbox via its root"))?;
            }
        }
        // The poll source is set up by `source::poll` (main.rs dispatches it there).
        (SourceKind::Message, true) | (SourceKind::Poll | SourceKind::Binlog, _) => {}
    }
    let plugin = conn
        .query_one_raw(stmt(
            "SELECT plugin FROM pg_replication_slots WHERE slot_name = $1",
            vec![config.source.slot.as_str().into()],
        ))
        .await
        .map_err(db("reading pg_replication_slots"))?
        .map(|row| row.try_get_by_index::<Option<String>>(0))
        .transpose()
        .map_err(db("reading pg_replication_slots"))?;
    match plugin {
        None => {
            conn.execute_raw(stmt(
                "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
                vec![config.source.slot.as_str().into()],
            ))
            .await
            .map_err(db("creating the replication slot (source.slot)"))?;
        }
        Some(Some(plugin)) if plugin == "pgoutput" => {}
        Some(other) => {
            return Err(AdminError::State(format!(
                "`source.slot`: slot `{}` exists with plugin {other:?}, not pgoutput",
                config.source.slot
            )));
        }
    }
    Ok(())
}

/// Drops the slot (refused while a relay holds it) and the publication, if they exist.
pub async fn teardown(config: &Config) -> Result<(), AdminError> {
    let conn = connect(config).await?;
    let slot = crate::inspect::read_slot(conn.get_postgres_connection_pool(), &config.source.slot)
        .await
        .map_err(sqlx_step("reading pg_replication_slots"))?;
    if slot.exists {
        if slot.active == Some(true) {
            return Err(AdminError::State(format!(
                "`source.slot`: slot `{}` is in use by a running relay; stop it first",
                config.source.slot
            )));
        }
        conn.execute_raw(stmt(
            "SELECT pg_drop_replication_slot($1)",
            vec![config.source.slot.as_str().into()],
        ))
        .await
        .map_err(db("dropping the replication slot"))?;
    }
    let sql = format!(
        "DROP PUBLICATION IF EXISTS {}",
        quote(DbBackend::Postgres, &config.source.publication)
    );
    conn.execute_unprepared(&sql)
        .await
        .map_err(db("dropping the publication"))?;
    Ok(())
}

/// Makes sure the slot has confirmed at least `lsn`, once the relay released it: the last
/// standby status before a shutdown may not have reached the server.
pub async fn confirm_slot(config: &Config, lsn: u64) -> Result<(), AdminError> {
    let conn = connect(config).await?;
    let target = crate::source::wal::lsn::Lsn(lsn).to_string();
    for _ in 0..50 {
        let row = conn
            .query_one_raw(stmt(
                "SELECT confirmed_flush_lsn >= $2::pg_lsn, active FROM pg_replication_slots WHERE slot_name = $1",
                vec![config.source.slot.as_str().into(), target.as_str().into()],
            ))
            .await
            .map_err(db("reading pg_replication_slots"))?;
        let Some(row) = row else { return Ok(()) };
        let done: Option<bool> = row
            .try_get_by_index(0)
            .map_err(db("reading pg_replication_slots"))?;
        let active: bool = row
            .try_get_by_index(1)
            .map_err(db("reading pg_replication_slots"))?;
        if done == Some(true) {
            return Ok(());
        }
        if !active {
            conn.execute_raw(stmt(
                "SELECT pg_replication_slot_advance($1, $2::pg_lsn)",
                vec![config.source.slot.as_str().into(), target.as_str().into()],
            ))
            .await
            .map_err(db("advancing the replication slot"))?;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(AdminError::State(format!(
        "slot `{}` stayed active; its confirmed position may lag {target}",
        config.source.slot
    )))
}

/// The outbox table as the catalog names it, resolved at start by [`crate::admin::preflight`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRelation {
    pub schema: String,
    pub name: String,
    pub oid: u32,
    /// Every partition under it, at any level (empty for a plain table).
    pub partitions: HashSet<u32>,
    /// Columns the relay reads from every row; a Relation without them cannot be relayed.
    pub required: Vec<String>,
}

impl OutboxRelation {
    /// `"schema"."name"`, as SQL and messages show it.
    pub fn quoted(&self) -> String {
        format!(
            "{}.{}",
            quote(DbBackend::Postgres, &self.schema),
            quote(DbBackend::Postgres, &self.name)
        )
    }
}

/// Why `run` cannot start. `Refused` is a mistake that no retry fixes, and says how to fix it;
/// the others are retried while [`PreflightError::is_transient`].
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error("connecting to `database_url`: {source}{hint}")]
    Connect {
        source: sqlx::Error,
        /// What to check, for errors that name a cause (refused credentials, no such database).
        hint: &'static str,
    },
    #[error("{step}: {source}")]
    Catalog {
        step: &'static str,
        source: sqlx::Error,
    },
    #[error("{0}")]
    Refused(String),
}

impl PreflightError {
    /// Whether a retry may pass: the database is unreachable, starting or busy.
    pub fn is_transient(&self) -> bool {
        match self {
            PreflightError::Connect { source, .. } | PreflightError::Catalog { source, .. } => {
                sqlx_error_is_transient(source)
            }
            PreflightError::Refused(_) => false,
        }
    }
}

/// What the preflight found: the catalog connection and, for the `wal` source, the outbox table.
#[derive(Debug, Clone)]
pub struct Preflight {
    pub catalog: PgPool,
    pub outbox: Option<OutboxRelation>,
}

/// Checks, before `run` streams anything, what no retry would fix: the credentials, the outbox
/// table and the columns the relay reads (`id`, `aggregateid`, the routing column (`aggregatetype`),
/// `payload`, and every placed column; `type`, `timestamp` and `tracingspancontext` are optional,
/// as they are to Debezium's Event Router), a publication that exists, publishes inserts and
/// includes the table (via its root when it is partitioned), and a pgoutput slot of this
/// database. A slot in use is fine: the session waits for it.
pub async fn preflight(config: &Config) -> Result<Preflight, PreflightError> {
    let url = config.database_url.as_deref().unwrap_or_default();
    let connect = |source: sqlx::Error| {
        let code = source
            .as_database_error()
            .and_then(|e| e.code())
            .map(|c| c.into_owned());
        let hint = match code.as_deref() {
            Some(c) if c.starts_with("28") => {
                " (check the user and password in `database_url`, and pg_hba.conf)"
            }
            Some("3D000") => " (check the database name in `database_url`)",
            _ => "",
        };
        PreflightError::Connect { source, hint }
    };
    // The one URL parser of `connection` (TLS, `?host=`, sockets), over sqlx's own reading.
    let target = crate::connection::PgTarget::parse(url)
        .map_err(|e| PreflightError::Refused(format!("`database_url`: {e}")))?;
    let options: sqlx::postgres::PgConnectOptions = url.parse().map_err(connect)?;
    let options = target
        .sqlx_options(options)
        .application_name("outbox-relay catalog");
    // One plain connection first: it fails at once, with the server's reason, where the pool
    // would retry a refused connection until its acquire timeout.
    {
        use sqlx::Connection;
        let probe = sqlx::PgConnection::connect_with(&options)
            .await
            .map_err(connect)?;
        let _ = probe.close().await;
    }
    let catalog = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy_with(options);
    let step = |step: &'static str| move |source| PreflightError::Catalog { step, source };
    let source = &config.source;
    let publication = &source.publication;
    let fix_setup = "run `outbox-relay setup` with the same settings";

    let outbox = match source.kind {
        SourceKind::Wal => {
            let table = resolve_table(&catalog, config)
                .await
                .map_err(step("reading pg_class"))?
                .ok_or_else(|| {
                    PreflightError::Refused(format!(
                        "{} (`source.table`, `source.schema`)",
                        missing_table(config)
                    ))
                })?;
            let present: HashSet<String> = sqlx::query_scalar(
                "SELECT attname::text FROM pg_attribute \
                 WHERE attrelid = $1::int8::oid AND attnum > 0 AND NOT attisdropped",
            )
            .bind(i64::from(table.oid))
            .fetch_all(&catalog)
            .await
            .map_err(step("reading pg_attribute"))?
            .into_iter()
            .collect();
            let required = required_columns(config);
            let missing: Vec<&str> = required
                .iter()
                .filter(|c| !present.contains(*c))
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                return Err(PreflightError::Refused(format!(
                    "the outbox table {} has no column `{}`: the relay reads the columns of \
                     `kafka.event_id_field` (`{}`), `kafka.event_key_field` (`{}`), \
                     `kafka.payload_field` (`{}`), `kafka.route_by_field` (`{}`), \
                     `kafka.event_timestamp_field` when set and every column of \
                     `kafka.additional_placement` (Debezium's `table.field.event.*`, \
                     `route.by.field`, `table.fields.additional.placement`); add the column, \
                     set the option to the column's name, or point `source.table` at the outbox",
                    table.quoted(),
                    missing.join("`, `"),
                    config.kafka.event_id_field,
                    config.kafka.event_key_field,
                    config.kafka.payload_field,
                    config.kafka.route_by_field,
                )));
            }
            let partitions: HashSet<u32> = sqlx::query_scalar::<_, i64>(
                "SELECT relid::oid::int8 FROM pg_partition_tree($1::int8::oid::regclass) \
                 WHERE relid::oid <> $1::int8::oid",
            )
            .bind(i64::from(table.oid))
            .fetch_all(&catalog)
            .await
            .map_err(step("reading pg_partition_tree"))?
            .into_iter()
            .filter_map(|oid| u32::try_from(oid).ok())
            .collect();
            let relation = OutboxRelation {
                schema: table.schema,
                name: table.name,
                oid: table.oid,
                partitions,
                required,
            };
            Some((relation, table.partitioned))
        }
        SourceKind::Message | SourceKind::Poll | SourceKind::Binlog => None,
    };

    let Some(found) = read_publication(&catalog, publication)
        .await
        .map_err(step("reading pg_publication"))?
    else {
        return Err(PreflightError::Refused(format!(
            "publication `{publication}` does not exist (`source.publication`): {fix_setup}"
        )));
    };
    if let Some((outbox, partitioned)) = &outbox {
        let quoted_pub = quote(DbBackend::Postgres, publication);
        if !found.inserts {
            return Err(PreflightError::Refused(format!(
                "publication `{publication}` does not publish inserts, so no event would arrive: \
                 run `ALTER PUBLICATION {quoted_pub} SET (publish = 'insert')`"
            )));
        }
        if !publication_includes(&catalog, publication, outbox.oid)
            .await
            .map_err(step("reading pg_publication_tables"))?
        {
            return Err(PreflightError::Refused(format!(
                "publication `{publication}` does not include the outbox table {}: {fix_setup}, \
                 or run `ALTER PUBLICATION {quoted_pub} ADD TABLE {}`",
                outbox.quoted(),
                outbox.quoted()
            )));
        }
        if *partitioned && !found.via_root {
            return Err(PreflightError::Refused(format!(
                "the outbox table {} is partitioned, and publication `{publication}` publishes \
                 its rows under each partition's name: run `{}`",
                outbox.quoted(),
                via_root_fix(publication)
            )));
        }
    }

    let slot = &source.slot;
    let row: Option<(Option<String>, bool, Option<String>)> = sqlx::query_as(
        "SELECT plugin::text, database IS NOT DISTINCT FROM current_database(), wal_status \
         FROM pg_replication_slots WHERE slot_name = $1",
    )
    .bind(slot)
    .fetch_optional(&catalog)
    .await
    .map_err(step("reading pg_replication_slots"))?;
    match row {
        None => {
            return Err(PreflightError::Refused(format!(
                "replication slot `{slot}` does not exist (`source.slot`): {fix_setup}"
            )));
        }
        Some((plugin, _, _)) if plugin.as_deref() != Some("pgoutput") => {
            return Err(PreflightError::Refused(format!(
                "replication slot `{slot}` is not a pgoutput slot (its plugin is {plugin:?}): \
                 name another slot in `source.slot`"
            )));
        }
        Some((_, false, _)) => {
            return Err(PreflightError::Refused(format!(
                "replication slot `{slot}` belongs to another database than `database_url`'s: \
                 name another slot in `source.slot`"
            )));
        }
        Some((_, _, Some(status))) if status == "lost" => {
            return Err(PreflightError::Refused(
                crate::slot::SlotLost {
                    slot: slot.clone(),
                    loss: crate::slot::SlotLoss::Invalidated,
                    confirmed: 0,
                }
                .to_string(),
            ));
        }
        Some(_) => {}
    }
    Ok(Preflight {
        catalog,
        outbox: outbox.map(|(outbox, _)| outbox),
    })
}

/// The columns every outbox row must have, for the relay to ship it.
fn required_columns(config: &Config) -> Vec<String> {
    let kafka = &config.kafka;
    let named = [
        &kafka.event_id_field,
        &kafka.event_key_field,
        &kafka.route_by_field,
        &kafka.payload_field,
    ]
    .into_iter()
    .chain(&kafka.event_timestamp_field)
    .cloned();
    let placed = config.placements().unwrap_or_default().into_iter();
    let mut required: Vec<String> = Vec::new();
    for column in named.chain(placed.map(|p| p.column)) {
        if !required.contains(&column) {
            required.push(column);
        }
    }
    required
}

/// The outbox table, by its configured name.
struct Table {
    schema: String,
    name: String,
    oid: u32,
    partitioned: bool,
}

impl Table {
    fn quoted(&self) -> String {
        format!(
            "{}.{}",
            quote(DbBackend::Postgres, &self.schema),
            quote(DbBackend::Postgres, &self.name)
        )
    }
}

fn missing_table(config: &Config) -> String {
    format!(
        "the outbox table {} does not exist, or is not a table",
        table_name(config)
    )
}

/// The table (plain or partitioned) that `source.schema`/`source.table` name, if there is one;
/// without a schema, the first on the `search_path`.
async fn resolve_table(pool: &PgPool, config: &Config) -> Result<Option<Table>, sqlx::Error> {
    let row: Option<(String, String, i64, bool)> = sqlx::query_as(
        "SELECT n.nspname::text, c.relname::text, c.oid::int8, c.relkind = 'p' \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.oid = to_regclass($1) AND c.relkind IN ('r', 'p')",
    )
    .bind(table_name(config))
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|(schema, name, oid, partitioned)| {
        Some(Table {
            schema,
            name,
            oid: u32::try_from(oid).ok()?,
            partitioned,
        })
    }))
}

/// What matters of a publication.
struct Publication {
    inserts: bool,
    via_root: bool,
}

async fn read_publication(pool: &PgPool, name: &str) -> Result<Option<Publication>, sqlx::Error> {
    let row: Option<(bool, bool)> =
        sqlx::query_as("SELECT pubinsert, pubviaroot FROM pg_publication WHERE pubname = $1")
            .bind(name)
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|(inserts, via_root)| Publication { inserts, via_root }))
}

/// Whether `publication` publishes the table `oid`: itself, or (when it is partitioned and the
/// publication is not via the root) its partitions; `FOR ALL TABLES` and `FOR TABLES IN SCHEMA`
/// included, as `pg_publication_tables` lists them.
async fn publication_includes(
    pool: &PgPool,
    publication: &str,
    oid: u32,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_publication_tables pt \
         JOIN pg_namespace n ON n.nspname = pt.schemaname \
         JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename \
         WHERE pt.pubname = $1 AND (c.oid = $2::int8::oid OR c.oid IN \
         (SELECT relid::oid FROM pg_partition_tree($2::int8::oid::regclass))))",
    )
    .bind(publication)
    .bind(i64::from(oid))
    .fetch_one(pool)
    .await
}

/// The statement that publishes a partitioned outbox under its own name.
fn via_root_fix(publication: &str) -> String {
    format!(
        "ALTER PUBLICATION {} SET (publish_via_partition_root = true)",
        quote(DbBackend::Postgres, publication)
    )
}
