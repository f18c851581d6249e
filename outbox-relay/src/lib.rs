//! The outbox relay: reads committed outbox events (from PostgreSQL's log, or by polling the
//! outbox table) and publishes them to Kafka in Debezium's Outbox Event Router format, at least
//! once, in order per aggregate.
//!
//! Contract: a source position is acknowledged (the slot's confirmed LSN; the polled rows'
//! deletion) only after Kafka acknowledged the event and every event committed before it; so a
//! crash replays the unacknowledged tail (duplicates, which consumers drop by the `id` header)
//! and never loses an event.
//!
//! - [`source`]: the seam ([`source::Source`], [`source::Connector`]) and the sources behind it:
//!   `wal` (outbox table) and `message` (tableless) log sources, and `poll` (PostgreSQL,
//!   MariaDB/MySQL, SQLite).
//! - [`pipeline`]: the one run loop for every source; [`position`]: what may be acknowledged.
//! - [`record`]: an event as read; [`sink`]: the Kafka producer and the message format.
//! - [`dead_letter`]: events Kafka refuses for good; [`dlq`]: listing and re-driving them.
//! - [`slot`]: heartbeats, retained WAL and a lost slot.
//! - [`relay`]: the relay as a library; [`admin`]: setup, teardown; [`inspect`]: what `status`
//!   reads from the source's server; [`config`]; [`metrics`]; [`status`];
//!   [`listener`]: `/metrics`, `/status`, the probes and the dashboard over HTTP.
//! - [`connection`]: the one parser of each kind of database URL, TLS settings included.

pub mod admin;
mod backoff;
pub mod config;
pub mod connection;
pub mod dashboard;
pub mod dead_letter;
pub mod debezium;
pub mod dlq;
pub mod exactly_once;
pub mod format;
pub mod inspect;
pub mod listener;
pub mod load;
pub mod metrics;
pub mod pipeline;
pub mod position;
pub mod record;
pub mod relay;
pub mod sink;
pub mod slot;
pub mod source;
pub mod status;
pub mod topic;

pub use config::Config;
pub use metrics::Metrics;
pub use relay::{Relay, RelayError};
