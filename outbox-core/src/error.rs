//! The one error type of the write path. It converts into the caller's error through `From`.

/// What can go wrong while writing events to the outbox.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An event's payload could not be serialized to JSON.
    #[error(
        "event `{event_type}` of aggregate `{aggregate_type}` could not be serialized to JSON: {source}"
    )]
    Serialize {
        aggregate_type: String,
        event_type: String,
        #[source]
        source: serde_json::Error,
    },
    /// The database refused the outbox statement (or beginning/committing the transaction).
    #[error("outbox write to {target} failed: {source}")]
    Database {
        target: String,
        #[source]
        source: sea_orm::DbErr,
    },
    /// The business INSERT that carries the events ([`Events::insert_with`](crate::Events::insert_with))
    /// failed. On PostgreSQL the events' INSERT and the business INSERT are one statement, so
    /// either may be the cause; nothing of it was written.
    #[error("outbox write to {outbox} with the INSERT into \"{table}\" failed: {source}")]
    Carrying {
        /// The outbox table, quoted as in SQL.
        outbox: String,
        /// The business table of the INSERT that carried the events.
        table: String,
        #[source]
        source: sea_orm::DbErr,
    },
    /// The write mode cannot be used on this database; `reason` says why and what to use instead.
    #[error("write mode {mode} cannot be used on {backend}: {reason}")]
    UnsupportedMode {
        mode: &'static str,
        backend: &'static str,
        reason: &'static str,
    },
    /// A write that must commit with the caller's business rows was handed a connection that is
    /// not inside a transaction (a plain `DatabaseConnection` autocommits every statement).
    #[error(
        "{operation} must run in the caller's transaction, but the {backend} connection it was given \
         is not in one (a plain `DatabaseConnection` autocommits each statement): {consequence}. \
         Run it on a `DatabaseTransaction` from `db.begin()` and commit that"
    )]
    NotInTransaction {
        operation: String,
        backend: &'static str,
        consequence: &'static str,
    },
    /// A configured identifier is unusable.
    #[error("invalid outbox configuration: {0}")]
    Config(String),
}

impl Error {
    /// A copy of a recorded error, for a collector that reports it more than once (the errors of
    /// `serde_json` and SeaORM are not `Clone`).
    pub(crate) fn duplicate(&self) -> Error {
        match self {
            Error::Serialize {
                aggregate_type,
                event_type,
                source,
            } => Error::Serialize {
                aggregate_type: aggregate_type.clone(),
                event_type: event_type.clone(),
                source: <serde_json::Error as serde::ser::Error>::custom(source.to_string()),
            },
            other => Error::Config(other.to_string()),
        }
    }
}

/// The entity-listener hooks of SeaORM return `DbErr`, so the write path's error must fit there.
impl From<Error> for sea_orm::DbErr {
    fn from(e: Error) -> Self {
        match e {
            Error::Database { source, .. } | Error::Carrying { source, .. } => source,
            other => sea_orm::DbErr::Custom(other.to_string()),
        }
    }
}

/// The product name of a backend, for messages.
pub(crate) fn backend_name(backend: sea_orm::DbBackend) -> &'static str {
    match backend {
        sea_orm::DbBackend::Postgres => "PostgreSQL",
        sea_orm::DbBackend::MySql => "MySQL/MariaDB",
        _ => "SQLite",
    }
}
