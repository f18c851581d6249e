//! The outbox table's identity on one backend: its name, schema and settle mode, quoted as that
//! backend quotes. What is read of it ([`super::shape`]) and written to it ([`super::store`])
//! both start here.

use outbox_core::migration::quote;
use sea_orm::DbBackend;

/// The outbox table on one backend: its name and settle mode.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    pub backend: DbBackend,
    schema: Option<String>,
    name: String,
    /// Rows are marked (`relayed_at`) instead of deleted.
    mark: bool,
}

impl Table {
    pub fn new(backend: DbBackend, schema: Option<&str>, name: &str, mark: bool) -> Table {
        Table {
            backend,
            // SQLite has no schemas in our sense (attached databases aside).
            schema: schema
                .filter(|_| backend != DbBackend::Sqlite)
                .map(str::to_owned),
            name: name.to_owned(),
            mark,
        }
    }

    pub fn q(&self, ident: &str) -> String {
        quote(self.backend, ident)
    }

    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether rows are marked rather than deleted.
    pub fn marks(&self) -> bool {
        self.mark
    }

    /// `"schema"."table"` (or `"table"`).
    pub fn qualified(&self) -> String {
        self.in_schema(&self.name)
    }

    /// Another object (function, lease table) next to the outbox table.
    pub(super) fn in_schema(&self, object: &str) -> String {
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
}
