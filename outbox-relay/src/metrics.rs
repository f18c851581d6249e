//! What the relay reports: one typed method per thing that happens, each updating a Prometheus
//! metric with a stable name and a `source` label (`wal`, `message`, `poll`, `binlog`), and
//! logging where a human should know. [`crate::listener`] serves them.
//!
//! Names, each with the `source` label: `outbox_relay_events_published_total`,
//! `outbox_relay_events_failed_total`, `outbox_relay_events_dead_lettered_total`,
//! `outbox_relay_transaction_events` (histogram of events per source transaction),
//! `outbox_relay_lag_seconds` (age of the oldest transaction not yet wholly acknowledged),
//! `outbox_relay_lag_bytes` (a log source's end minus the acknowledged position),
//! `outbox_relay_oldest_pending_age_seconds` (the oldest event committed but not yet acknowledged
//! by Kafka: for `poll` the table's oldest pending row by the database's clock, for the others
//! the same figure as `lag_seconds`),
//! `outbox_relay_reconnects_total`, `outbox_relay_state` (one-hot over the `state` label:
//! `starting`, `leading`, `standby`, `reconnecting`, `stopped`), `outbox_relay_connected` (1 while
//! leading); for `wal` and `message`: `outbox_relay_confirmed_lsn`,
//! `outbox_relay_slot_retained_wal_bytes` (the server's WAL position minus the slot's
//! `restart_lsn`: the WAL the slot keeps on disk), `outbox_relay_heartbeats_total` and
//! `outbox_relay_heartbeats_failed_total`; for `poll`: `outbox_relay_pending_rows`; for
//! `binlog`: `outbox_relay_binlog_position_on_server` (0 when the stored position's file was
//! purged), `outbox_relay_binlog_position_file_index` and `outbox_relay_binlog_oldest_file_index`
//! (the numbers their binlog file names end with), `outbox_relay_binlog_expire_seconds` (the
//! server's age limit for binlog files, 0 = none). The `poll` and `binlog` figures are re-read
//! every [`crate::inspect::WATCH_INTERVAL`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

/// The values of `outbox_relay_state`'s `state` label (see [`crate::status::State`]).
pub const STATES: [&str; 5] = ["starting", "leading", "standby", "reconnecting", "stopped"];
type Ratio = Gauge<f64, AtomicU64>;

/// The relay's metrics. Cheap to clone (all handles are shared).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    families: Families,
    /// The handles of this relay's source, fixed by [`Metrics::bind`].
    bound: OnceLock<Bound>,
    leading: AtomicBool,
}

struct Families {
    published: Family<Labels, Counter>,
    failed: Family<Labels, Counter>,
    dead_lettered: Family<Labels, Counter>,
    reconnects: Family<Labels, Counter>,
    transaction_events: Family<Labels, Histogram, fn() -> Histogram>,
    lag_bytes: Family<Labels, Gauge>,
    lag_seconds: Family<Labels, Ratio>,
    confirmed_lsn: Family<Labels, Gauge>,
    connected: Family<Labels, Gauge>,
    state: Family<Labels, Gauge>,
    slot_retained_wal_bytes: Family<Labels, Gauge>,
    heartbeats: Family<Labels, Counter>,
    heartbeats_failed: Family<Labels, Counter>,
    oldest_pending_age_seconds: Family<Labels, Ratio>,
    pending_rows: Family<Labels, Gauge>,
    binlog_position_on_server: Family<Labels, Gauge>,
    binlog_position_file_index: Family<Labels, Gauge>,
    binlog_oldest_file_index: Family<Labels, Gauge>,
    binlog_expire_seconds: Family<Labels, Gauge>,
}

#[derive(Clone)]
struct Bound {
    source: &'static str,
    published: Counter,
    failed: Counter,
    dead_lettered: Counter,
    reconnects: Counter,
    transaction_events: Histogram,
    lag_bytes: Gauge,
    lag_seconds: Ratio,
    confirmed_lsn: Gauge,
    connected: Gauge,
    state: Vec<(&'static str, Gauge)>,
    slot_retained_wal_bytes: Gauge,
    heartbeats: Counter,
    heartbeats_failed: Counter,
    oldest_pending_age_seconds: Ratio,
    pending_rows: Gauge,
    binlog_position_on_server: Gauge,
    binlog_position_file_index: Gauge,
    binlog_oldest_file_index: Gauge,
    binlog_expire_seconds: Gauge,
}

fn transaction_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 14))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("outbox_relay");
        let families = Families {
            published: Family::default(),
            failed: Family::default(),
            dead_lettered: Family::default(),
            reconnects: Family::default(),
            transaction_events: Family::new_with_constructor(transaction_histogram),
            lag_bytes: Family::default(),
            lag_seconds: Family::default(),
            confirmed_lsn: Family::default(),
            connected: Family::default(),
            state: Family::default(),
            slot_retained_wal_bytes: Family::default(),
            heartbeats: Family::default(),
            heartbeats_failed: Family::default(),
            oldest_pending_age_seconds: Family::default(),
            pending_rows: Family::default(),
            binlog_position_on_server: Family::default(),
            binlog_position_file_index: Family::default(),
            binlog_oldest_file_index: Family::default(),
            binlog_expire_seconds: Family::default(),
        };
        let f = &families;
        registry.register(
            "events_published",
            "Events Kafka acknowledged",
            f.published.clone(),
        );
        registry.register(
            "events_failed",
            "Deliveries that failed and will be retried",
            f.failed.clone(),
        );
        registry.register(
            "events_dead_lettered",
            "Events sent to the dead-letter topic",
            f.dead_lettered.clone(),
        );
        registry.register(
            "reconnects",
            "Sessions restarted after a failure",
            f.reconnects.clone(),
        );
        registry.register(
            "transaction_events",
            "Outbox events per source transaction (the batch size)",
            f.transaction_events.clone(),
        );
        registry.register(
            "lag_bytes",
            "A log source's end minus the acknowledged position",
            f.lag_bytes.clone(),
        );
        registry.register(
            "lag_seconds",
            "Age of the oldest transaction not yet wholly acknowledged by Kafka",
            f.lag_seconds.clone(),
        );
        registry.register(
            "confirmed_lsn",
            "The LSN confirmed to PostgreSQL (wal, message)",
            f.confirmed_lsn.clone(),
        );
        registry.register(
            "connected",
            "1 while this relay leads and its source streams",
            f.connected.clone(),
        );
        registry.register(
            "state",
            "1 for the relay's current state (starting, leading, standby, reconnecting, stopped)",
            f.state.clone(),
        );
        registry.register(
            "slot_retained_wal_bytes",
            "WAL the replication slot keeps: the server's WAL position minus its restart_lsn",
            f.slot_retained_wal_bytes.clone(),
        );
        registry.register(
            "heartbeats",
            "Heartbeat messages written to the slot's database",
            f.heartbeats.clone(),
        );
        registry.register(
            "heartbeats_failed",
            "Heartbeat messages that could not be written",
            f.heartbeats_failed.clone(),
        );
        registry.register(
            "oldest_pending_age_seconds",
            "Age of the oldest event committed but not yet acknowledged by Kafka (poll: the \
             table's oldest pending row, by the database's clock)",
            f.oldest_pending_age_seconds.clone(),
        );
        registry.register(
            "pending_rows",
            "Rows in the polled outbox table not yet relayed (poll)",
            f.pending_rows.clone(),
        );
        registry.register(
            "binlog_position_on_server",
            "1 while the server still has the stored binlog position's file, 0 once it was \
             purged (binlog)",
            f.binlog_position_on_server.clone(),
        );
        registry.register(
            "binlog_position_file_index",
            "The number the stored binlog position's file name ends with (binlog)",
            f.binlog_position_file_index.clone(),
        );
        registry.register(
            "binlog_oldest_file_index",
            "The number the oldest binlog file on the server ends with (binlog)",
            f.binlog_oldest_file_index.clone(),
        );
        registry.register(
            "binlog_expire_seconds",
            "The server's age limit for binlog files, 0 for none (binlog)",
            f.binlog_expire_seconds.clone(),
        );
        Metrics {
            inner: Arc::new(Inner {
                registry,
                families,
                bound: OnceLock::new(),
                leading: AtomicBool::new(false),
            }),
        }
    }

    /// Labels everything this relay reports with `source`; the first call wins (a process runs
    /// one source).
    pub fn bind(&self, source: &'static str) {
        self.bound_to(source);
    }

    fn bound_to(&self, source: &'static str) -> &Bound {
        self.inner.bound.get_or_init(|| {
            let f = &self.inner.families;
            let labels: Labels = vec![("source", source)];
            let state = STATES
                .iter()
                .map(|state| {
                    let labels: Labels = vec![("source", source), ("state", state)];
                    (*state, f.state.get_or_create(&labels).clone())
                })
                .collect();
            Bound {
                source,
                published: f.published.get_or_create(&labels).clone(),
                failed: f.failed.get_or_create(&labels).clone(),
                dead_lettered: f.dead_lettered.get_or_create(&labels).clone(),
                reconnects: f.reconnects.get_or_create(&labels).clone(),
                transaction_events: f.transaction_events.get_or_create(&labels).clone(),
                lag_bytes: f.lag_bytes.get_or_create(&labels).clone(),
                lag_seconds: f.lag_seconds.get_or_create(&labels).clone(),
                confirmed_lsn: f.confirmed_lsn.get_or_create(&labels).clone(),
                connected: f.connected.get_or_create(&labels).clone(),
                state,
                slot_retained_wal_bytes: f.slot_retained_wal_bytes.get_or_create(&labels).clone(),
                heartbeats: f.heartbeats.get_or_create(&labels).clone(),
                heartbeats_failed: f.heartbeats_failed.get_or_create(&labels).clone(),
                oldest_pending_age_seconds: f
                    .oldest_pending_age_seconds
                    .get_or_create(&labels)
                    .clone(),
                pending_rows: f.pending_rows.get_or_create(&labels).clone(),
                binlog_position_on_server: f
                    .binlog_position_on_server
                    .get_or_create(&labels)
                    .clone(),
                binlog_position_file_index: f
                    .binlog_position_file_index
                    .get_or_create(&labels)
                    .clone(),
                binlog_oldest_file_index: f.binlog_oldest_file_index.get_or_create(&labels).clone(),
                binlog_expire_seconds: f.binlog_expire_seconds.get_or_create(&labels).clone(),
            }
        })
    }

    fn bound(&self) -> &Bound {
        self.bound_to("unknown")
    }

    /// Kafka acknowledged one event.
    pub fn event_published(&self) {
        self.bound().published.inc();
    }

    /// Events published so far.
    pub fn published(&self) -> u64 {
        self.bound().published.get()
    }

    /// A delivery failed with a transient error; the session restarts from the acknowledged
    /// position.
    pub fn event_failed(&self, error: &dyn std::fmt::Display) {
        self.bound().failed.inc();
        // One line per event at debug level: the session's failure is logged once, as a warning,
        // by `reconnecting`.
        tracing::debug!(%error, "delivery failed");
    }

    /// An event read at `origin` went to the dead-letter topic.
    pub fn event_dead_lettered(&self, topic: &str, reason: &str, origin: &str) {
        self.bound().dead_lettered.inc();
        tracing::warn!(topic, reason, origin, "event dead-lettered");
    }

    /// Events dead-lettered so far.
    pub fn dead_lettered(&self) -> u64 {
        self.bound().dead_lettered.get()
    }

    /// A source transaction with `events` outbox events was read.
    pub fn transaction_read(&self, events: usize) {
        self.bound().transaction_events.observe(events as f64);
    }

    /// The lag, refreshed: bytes of log behind (for a source with a log) and the age of the
    /// oldest unacknowledged transaction.
    pub fn lag(&self, bytes: Option<u64>, oldest_pending_age_secs: f64) {
        let bound = self.bound();
        if let Some(bytes) = bytes {
            bound
                .lag_bytes
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        bound.lag_seconds.set(oldest_pending_age_secs);
        // A polled table holds rows the relay has not claimed yet: `table` measures those.
        if bound.source != "poll" {
            bound
                .oldest_pending_age_seconds
                .set(oldest_pending_age_secs);
        }
    }

    /// The age of the oldest event not yet acknowledged by Kafka, as last measured.
    pub fn oldest_pending_age(&self) -> f64 {
        self.bound().oldest_pending_age_seconds.get()
    }

    /// The polled table's pending rows and, when it has any, its oldest pending row's age by the
    /// database's clock, as last read.
    pub fn table(&self, pending_rows: i64, oldest_pending_age_seconds: Option<f64>) {
        let bound = self.bound();
        bound.pending_rows.set(pending_rows);
        if let Some(age) = oldest_pending_age_seconds {
            bound.oldest_pending_age_seconds.set(age);
        }
    }

    /// The binlog's stored position and the server's files and retention, as last read; `None`
    /// leaves a gauge as it was. File indexes are the numbers binlog file names end with.
    pub fn binlog(&self, binlog: BinlogGauges) {
        let bound = self.bound();
        let gauge = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        if let Some(on_server) = binlog.position_on_server {
            bound.binlog_position_on_server.set(i64::from(on_server));
        }
        if let Some(index) = binlog.position_file_index {
            bound.binlog_position_file_index.set(gauge(index));
        }
        if let Some(index) = binlog.oldest_file_index {
            bound.binlog_oldest_file_index.set(gauge(index));
        }
        if let Some(seconds) = binlog.expire_seconds {
            bound.binlog_expire_seconds.set(gauge(seconds));
        }
    }

    /// The LSN acknowledged to PostgreSQL.
    pub fn confirmed_lsn(&self, lsn: u64) {
        self.bound()
            .confirmed_lsn
            .set(i64::try_from(lsn).unwrap_or(i64::MAX));
    }

    /// A heartbeat was written.
    pub fn heartbeat_written(&self) {
        self.bound().heartbeats.inc();
    }

    /// A heartbeat could not be written; the slot may not advance while the outbox is idle.
    pub fn heartbeat_failed(&self, error: &dyn std::fmt::Display) {
        self.bound().heartbeats_failed.inc();
        tracing::warn!(%error, "writing a heartbeat failed");
    }

    /// The WAL the slot retains, as last read.
    pub fn slot_retained_wal(&self, bytes: i64) {
        self.bound().slot_retained_wal_bytes.set(bytes);
    }

    /// The relay entered `state`, one of [`STATES`].
    pub fn state(&self, state: &str) {
        let bound = self.bound();
        for (each, gauge) in &bound.state {
            gauge.set(i64::from(*each == state));
        }
        let leading = state == "leading";
        bound.connected.set(i64::from(leading));
        self.inner.leading.store(leading, Ordering::Relaxed);
    }

    /// A session is being restarted after `error`, for the `attempts`th time in a row.
    pub fn reconnecting(
        &self,
        error: &dyn std::fmt::Display,
        wait: std::time::Duration,
        attempts: u32,
    ) {
        self.bound().reconnects.inc();
        tracing::warn!(%error, attempts, ?wait, "relay session failed; retrying");
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry);
        out
    }

    /// Whether this relay leads with its source connected (`/readyz`).
    pub fn is_leading(&self) -> bool {
        self.inner.leading.load(Ordering::Relaxed)
    }
}

/// The binlog figures of [`Metrics::binlog`].
#[derive(Clone, Copy, Debug, Default)]
pub struct BinlogGauges {
    pub position_on_server: Option<bool>,
    pub position_file_index: Option<u64>,
    pub oldest_file_index: Option<u64>,
    pub expire_seconds: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_stable_names_with_the_source_label() {
        let m = Metrics::new();
        m.bind("poll");
        m.event_published();
        m.transaction_read(3);
        m.lag(Some(50), 0.5);
        m.state("standby");
        let text = m.render();
        for name in [
            r#"outbox_relay_events_published_total{source="poll"} 1"#,
            r#"outbox_relay_events_dead_lettered_total{source="poll"} 0"#,
            r#"outbox_relay_events_failed_total{source="poll"} 0"#,
            r#"outbox_relay_lag_bytes{source="poll"} 50"#,
            r#"outbox_relay_lag_seconds{source="poll"} 0.5"#,
            r#"outbox_relay_transaction_events_count{source="poll"} 1"#,
            r#"outbox_relay_state{source="poll",state="standby"} 1"#,
            r#"outbox_relay_state{source="poll",state="leading"} 0"#,
            r#"outbox_relay_connected{source="poll"} 0"#,
        ] {
            assert!(text.contains(name), "{name} missing in\n{text}");
        }
    }
}
