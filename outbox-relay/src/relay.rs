//! The relay as a library: one configured source through the one [`crate::pipeline`], with its
//! metrics and status.

use std::future::Future;

use crate::config::Config;
use crate::metrics::Metrics;
pub use crate::pipeline::{RelayError, State, StatusReport};
use crate::pipeline::Status;

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
        let status = Status::new(&metrics);
        Ok(Relay {
            config,
            metrics,
            status,
        })
    }

    /// Runs until `shutdown` resolves (then drains and returns `Ok`) or a fatal error.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> Result<(), RelayError> {
        crate::source::run(&self.config, self.metrics.clone(), self.status.clone(), shutdown).await
    }

    /// What the relay is doing, and its counts.
    pub fn status(&self) -> StatusReport {
        self.status.snapshot()
    }
}
