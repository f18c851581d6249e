//! The relay as a library: one configured source through the one [`crate::pipeline`], with its
//! metrics and status.

use std::future::Future;
use std::sync::Arc;

use sea_orm::DatabaseConnection;

use crate::config::{Config, Delivery, SourceKind};
use crate::exactly_once::ExactlyOnce;
use crate::metrics::Metrics;
pub use crate::pipeline::RelayError;
use crate::pipeline::{AtLeastOnce, Pipeline, Status};
use crate::source::binlog::BinlogConnector;
use crate::source::poll::{Outbox, PollConnector, PollError, PollStatus};
use crate::source::wal::WalConnector;
use crate::source::{Connector, SourceError};
pub use crate::status::{State, StatusReport};

/// The relay: the configured source, one Kafka producer.
pub struct Relay {
    config: Config,
    metrics: Metrics,
    status: Status,
}

impl Relay {
    /// A relay for a validated `config`.
    pub fn new(config: Config, metrics: Metrics) -> Result<Relay, RelayError> {
        config.validate()?;
        if let Some((key, value)) = crate::sink::finite_delivery_timeout(&config.kafka) {
            tracing::warn!(
                "`{key}={value}`: after a Kafka outage longer than this, an event can be resent \
                 behind a younger event of its key (librdkafka expires queued messages by age); \
                 leave it unset (no timeout, as Kafka Connect runs Debezium) to keep the order"
            );
        }
        let status = Status::new(&metrics);
        Ok(Relay {
            config,
            metrics,
            status,
        })
    }

    /// Runs until `shutdown` resolves (then drains and returns `Ok`) or a fatal error.
    ///
    /// The list of sources: adding one is its module under [`crate::source`] and one line here.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> Result<(), RelayError> {
        let (config, metrics, status) = (&self.config, &self.metrics, &self.status);
        let pipeline = Pipeline::new(config, metrics.clone(), status.clone())?;
        match config.source.kind {
            SourceKind::Wal | SourceKind::Message => {
                let connector = WalConnector::new(config, metrics).map_err(SourceError::from)?;
                run(&pipeline, connector, shutdown).await
            }
            SourceKind::Poll => {
                let connector = PollConnector::connect(config, status)
                    .await
                    .map_err(SourceError::from)?;
                run(&pipeline, connector, shutdown).await
            }
            SourceKind::Binlog => {
                let connector = BinlogConnector::new(config).map_err(SourceError::from)?;
                run(&pipeline, connector, shutdown).await
            }
        }
    }

    /// What the relay is doing, and its counts.
    pub fn status(&self) -> StatusReport {
        self.status.snapshot()
    }

    /// The shared handle on the relay's status (what the metrics listener serves at `/status`).
    pub fn status_handle(&self) -> Status {
        self.status.clone()
    }
}

/// The polling relay as a library: one outbox table, one Kafka producer, through the pipeline.
pub struct PollRelay {
    outbox: Arc<Outbox>,
    metrics: Metrics,
    status: Status,
}

impl PollRelay {
    /// A relay for `config.database_url` (a `postgres://`, `mysql://` (MariaDB too) or
    /// `sqlite://` URL). The pool connects on first use, so that [`PollRelay::run`] can wait for
    /// a database that is not up yet, and still stop at once on a refused login.
    pub async fn connect(config: Config, metrics: Metrics) -> Result<PollRelay, PollError> {
        let outbox = Outbox::connect(config).await?;
        Ok(PollRelay::with(outbox, metrics))
    }

    /// A relay on an existing connection pool (its own connections: the lock connection is
    /// taken out of the pool for as long as the relay leads). A pool made from
    /// [`crate::connection::connect_options`] has the relay's own settings: on SQLite, room for
    /// a whole batch in sqlx's row buffer (its default of 50 rows made drains slower;
    /// BENCHMARKS.md, round 2, part 15).
    pub fn new(
        config: Config,
        db: DatabaseConnection,
        metrics: Metrics,
    ) -> Result<PollRelay, PollError> {
        Ok(PollRelay::with(Outbox::new(config, db)?, metrics))
    }

    fn with(outbox: Outbox, metrics: Metrics) -> PollRelay {
        let status = Status::new(&metrics);
        PollRelay {
            outbox: Arc::new(outbox),
            metrics,
            status,
        }
    }

    /// A snapshot of the relay's state.
    pub fn status(&self) -> PollStatus {
        self.status.snapshot()
    }

    /// Prepares the existing table for polling (idempotent).
    pub async fn setup(&self) -> Result<(), PollError> {
        self.outbox.setup().await
    }

    /// Relays until `shutdown` resolves: the batch in flight is acknowledged and settled (up to
    /// `drain_timeout`), the leadership released, and `Ok` returned. Returns early only on a
    /// permanent error.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> Result<(), RelayError> {
        let config = self.outbox.config();
        let pipeline = Pipeline::new(config, self.metrics.clone(), self.status.clone())?;
        let connector = PollConnector::on(self.outbox.clone(), &self.status);
        run(&pipeline, connector, shutdown).await
    }
}

/// Runs `connector` through `pipeline` in the configured delivery mode: the one place where
/// the mode is chosen.
async fn run<C: Connector>(
    pipeline: &Pipeline<'_>,
    connector: C,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RelayError> {
    match pipeline.config.delivery {
        Delivery::AtLeastOnce => pipeline.run(connector, AtLeastOnce, shutdown).await,
        Delivery::ExactlyOnce => {
            let policy = ExactlyOnce::new(pipeline.config);
            pipeline.run(connector, policy, shutdown).await
        }
    }
}
