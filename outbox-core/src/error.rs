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
    /// The write mode cannot be used on this database.
    #[error("write mode {mode} needs PostgreSQL, but the connection is {backend}")]
    UnsupportedMode { mode: &'static str, backend: String },
    /// A configured identifier is unusable.
    #[error("invalid outbox configuration: {0}")]
    Config(String),
}

/// The entity-listener hooks of SeaORM return `DbErr`, so the write path's error must fit there.
impl From<Error> for sea_orm::DbErr {
    fn from(e: Error) -> Self {
        match e {
            Error::Database { source, .. } => source,
            other => sea_orm::DbErr::Custom(other.to_string()),
        }
    }
}
