//! Where and how events are written: the table (or none) and the write mode.

use std::sync::OnceLock;

use sea_orm::DbBackend;
use sea_orm::sea_query::{Alias, IntoTableRef, TableRef};

use crate::Error;
use crate::error::backend_name;

/// The outbox table's schema-qualified name. Identifiers are always quoted in SQL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxTable {
    /// The schema (PostgreSQL) or database (MySQL); `None` uses the connection's default.
    pub schema: Option<String>,
    /// The table name. Default `outbox`.
    pub name: String,
}

impl Default for OutboxTable {
    fn default() -> Self {
        OutboxTable {
            schema: None,
            name: "outbox".to_owned(),
        }
    }
}

impl OutboxTable {
    /// A table in the connection's default schema.
    pub fn new(name: impl Into<String>) -> Self {
        OutboxTable {
            schema: None,
            name: name.into(),
        }
    }

    /// The same table in `schema`.
    pub fn in_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    pub(crate) fn table_ref(&self) -> TableRef {
        match &self.schema {
            Some(schema) => (Alias::new(schema), Alias::new(&self.name)).into_table_ref(),
            None => Alias::new(&self.name).into_table_ref(),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        // Checked here rather than at construction so that a struct literal cannot bypass it.
        if self.name.is_empty() {
            return Err(Error::Config("the outbox table name is empty".into()));
        }
        if self.schema.as_deref() == Some("") {
            return Err(Error::Config("the outbox schema name is empty".into()));
        }
        Ok(())
    }
}

impl std::fmt::Display for OutboxTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "\"{schema}\".\"{}\"", self.name),
            None => write!(f, "\"{}\"", self.name),
        }
    }
}

/// How recorded events reach the database log.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum WriteMode {
    /// One multi-row INSERT into the outbox table. Every relay source can read it.
    #[default]
    Insert,
    /// INSERT, then DELETE the same rows in the same transaction, as Debezium's Quarkus extension
    /// does: a log-tailing relay (the `wal` source on PostgreSQL, `binlog` on MySQL/MariaDB) still
    /// sees the inserts, and the table stays empty. Only for a log-tailing relay: the `poll`
    /// source would find an empty table. A write on SQLite, which has no log a relay can tail, is
    /// refused with [`Error::UnsupportedMode`].
    RemoveAfterInsert,
    /// No table: each event is a transactional `pg_logical_emit_message(true, prefix, json)`,
    /// read by the relay's `message` source. PostgreSQL only.
    LogicalMessage {
        /// The message prefix the relay filters on. Default `outbox`.
        prefix: String,
    },
}

impl WriteMode {
    /// Tableless mode with the default prefix `outbox`.
    pub fn logical_message() -> Self {
        WriteMode::LogicalMessage {
            prefix: "outbox".to_owned(),
        }
    }

    /// Refuses a mode that would lose events on `backend`, before anything is written.
    pub(crate) fn check_backend(&self, backend: DbBackend) -> Result<(), Error> {
        let reason = match (self, backend) {
            (WriteMode::Insert, _)
            | (_, DbBackend::Postgres)
            | (WriteMode::RemoveAfterInsert, DbBackend::MySql) => return Ok(()),
            (WriteMode::RemoveAfterInsert, _) => {
                "its rows are deleted in the transaction that inserts them, so only a relay that \
                 tails the database log could see them, and SQLite has no log a relay can tail \
                 (the poll source would find an empty table and the events would be lost); use \
                 WriteMode::Insert with the poll source"
            }
            (WriteMode::LogicalMessage { .. }, _) => {
                "pg_logical_emit_message exists only in PostgreSQL; use WriteMode::Insert with the \
                 poll source"
            }
        };
        Err(Error::UnsupportedMode {
            mode: self.name(),
            backend: backend_name(backend),
            reason,
        })
    }

    pub(crate) fn name(&self) -> &'static str {
        match self {
            WriteMode::Insert => "insert",
            WriteMode::RemoveAfterInsert => "remove-after-insert",
            WriteMode::LogicalMessage { .. } => "logical-message",
        }
    }
}

/// An outbox: where events go and how they are written.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Outbox {
    pub table: OutboxTable,
    pub mode: WriteMode,
}

static GLOBAL: OnceLock<Outbox> = OnceLock::new();

impl Outbox {
    /// An outbox in `table` with the plain insert mode.
    pub fn new(table: OutboxTable) -> Self {
        Outbox {
            table,
            mode: WriteMode::Insert,
        }
    }

    /// The same outbox with another write mode.
    pub fn with_mode(mut self, mode: WriteMode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets the process-wide outbox used by `#[emits]` functions and aggregate-root listeners that
    /// name none. Call it once at start-up, before the first write; later calls are refused with
    /// the outbox already in force.
    pub fn install(self) -> Result<(), Outbox> {
        GLOBAL.set(self).map_err(|_| Outbox::global().clone())
    }

    /// The process-wide outbox: the installed one, or table `outbox` with [`WriteMode::Insert`].
    pub fn global() -> &'static Outbox {
        GLOBAL.get_or_init(Outbox::default)
    }
}
