//! The outbox relay: reads committed outbox events from PostgreSQL's log and publishes them to
//! Kafka in Debezium's Outbox Event Router format, at least once, in order per aggregate.
//!
//! Contract: an event is acknowledged to PostgreSQL (the slot's confirmed LSN) only after Kafka
//! acknowledged it and every event committed before it; so a crash replays the unacknowledged
//! tail (duplicates, which consumers drop by the `id` header) and never loses an event.
//!
//! - [`source`]: the `wal` (outbox table) and `message` (tableless) sources.
//! - [`sink`]: the Kafka producer and the message format.
//! - [`position`]: what may be acknowledged.
//! - [`dead_letter`]: events Kafka refuses for good.
//! - [`relay`]: the run loop; [`admin`]: setup, teardown, status; [`config`]; [`metrics`].

pub mod admin;
pub mod config;
pub mod dead_letter;
pub mod metrics;
pub mod position;
pub mod relay;
pub mod sink;
pub mod source;

pub use config::Config;
pub use metrics::Metrics;
pub use relay::{Relay, RelayError};
