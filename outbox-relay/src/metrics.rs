//! What the relay reports: one typed method per thing that happens, each updating a Prometheus
//! metric with a stable name (and logging where a human should know), plus the small HTTP
//! listener that serves `/metrics` and the Kubernetes probes.
//!
//! Probes: `/livez` (and its older name `/healthz`) is 200 whenever the process answers, so a
//! liveness probe never restarts a relay that is standing by or reconnecting; `/readyz` is 200
//! only while this relay leads and its source is connected, 503 otherwise.
//!
//! Names: `outbox_relay_events_published_total`, `outbox_relay_events_failed_total`,
//! `outbox_relay_events_dead_lettered_total`, `outbox_relay_transaction_events` (histogram of
//! events per source transaction), `outbox_relay_lag_bytes` (server WAL end minus the confirmed
//! LSN), `outbox_relay_lag_seconds` (age of the oldest unacknowledged transaction),
//! `outbox_relay_confirmed_lsn`, `outbox_relay_reconnects_total`, `outbox_relay_connected`,
//! `outbox_relay_slot_retained_wal_bytes` (the server's WAL position minus the slot's
//! `restart_lsn`: the WAL the slot keeps on disk), `outbox_relay_heartbeats_total` and
//! `outbox_relay_heartbeats_failed_total`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::dashboard::Response;

/// The relay's metrics. Cheap to clone (all handles are shared).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    published: Counter,
    failed: Counter,
    dead_lettered: Counter,
    reconnects: Counter,
    transaction_events: Histogram,
    lag_bytes: Gauge,
    lag_seconds: Gauge<f64, AtomicU64>,
    confirmed_lsn: Gauge,
    connected: Arc<AtomicBool>,
    connected_gauge: Gauge,
    slot_retained_wal_bytes: Gauge,
    /// Whether the last reading was above `source.max_retained_wal` (warn on crossing only).
    retained_over: Arc<AtomicBool>,
    /// Whether the slot was last seen past `max_slot_wal_keep_size`.
    slot_unreserved: Arc<AtomicBool>,
    heartbeats: Counter,
    heartbeats_failed: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("outbox_relay");
        let published = Counter::default();
        let failed = Counter::default();
        let dead_lettered = Counter::default();
        let reconnects = Counter::default();
        let transaction_events = Histogram::new(exponential_buckets(1.0, 2.0, 14));
        let lag_bytes = Gauge::default();
        let lag_seconds = Gauge::<f64, AtomicU64>::default();
        let confirmed_lsn = Gauge::default();
        let connected_gauge = Gauge::default();
        let slot_retained_wal_bytes = Gauge::default();
        let heartbeats = Counter::default();
        let heartbeats_failed = Counter::default();
        registry.register(
            "slot_retained_wal_bytes",
            "WAL the replication slot keeps: the server's WAL position minus its restart_lsn",
            slot_retained_wal_bytes.clone(),
        );
        registry.register(
            "heartbeats",
            "Heartbeat messages written to the slot's database",
            heartbeats.clone(),
        );
        registry.register(
            "heartbeats_failed",
            "Heartbeat messages that could not be written",
            heartbeats_failed.clone(),
        );
        registry.register(
            "events_published",
            "Events Kafka acknowledged",
            published.clone(),
        );
        registry.register(
            "events_failed",
            "Deliveries that failed and will be retried",
            failed.clone(),
        );
        registry.register(
            "events_dead_lettered",
            "Events sent to the dead-letter topic",
            dead_lettered.clone(),
        );
        registry.register(
            "reconnects",
            "Sessions restarted after a failure",
            reconnects.clone(),
        );
        registry.register(
            "transaction_events",
            "Outbox events per source transaction (the batch size)",
            transaction_events.clone(),
        );
        registry.register(
            "lag_bytes",
            "Server WAL end minus the confirmed LSN",
            lag_bytes.clone(),
        );
        registry.register(
            "lag_seconds",
            "Age of the oldest transaction not yet wholly acknowledged by Kafka",
            lag_seconds.clone(),
        );
        registry.register(
            "confirmed_lsn",
            "The LSN confirmed to PostgreSQL",
            confirmed_lsn.clone(),
        );
        registry.register(
            "connected",
            "1 while a replication session streams",
            connected_gauge.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            published,
            failed,
            dead_lettered,
            reconnects,
            transaction_events,
            lag_bytes,
            lag_seconds,
            confirmed_lsn,
            connected: Arc::new(AtomicBool::new(false)),
            connected_gauge,
            slot_retained_wal_bytes,
            retained_over: Arc::new(AtomicBool::new(false)),
            slot_unreserved: Arc::new(AtomicBool::new(false)),
            heartbeats,
            heartbeats_failed,
        }
    }

    /// Kafka acknowledged one event.
    pub fn event_published(&self) {
        self.published.inc();
    }

    /// Events published so far.
    pub fn published(&self) -> u64 {
        self.published.get()
    }

    /// A delivery failed with a transient error; the session restarts from the acknowledged
    /// position.
    pub fn event_failed(&self, error: &dyn std::fmt::Display) {
        self.failed.inc();
        // One line per event at debug level: the session's failure is logged once, as a warning,
        // by `reconnecting`.
        tracing::debug!(%error, "delivery failed");
    }

    /// An event went to the dead-letter topic.
    pub fn event_dead_lettered(&self, topic: &str, reason: &str, lsn: u64) {
        self.dead_lettered.inc();
        tracing::warn!(
            topic,
            reason,
            lsn = %crate::dead_letter::format_lsn(lsn),
            "event dead-lettered"
        );
    }

    /// Events dead-lettered so far.
    pub fn dead_lettered(&self) -> u64 {
        self.dead_lettered.get()
    }

    /// A source transaction with `events` outbox events was read.
    pub fn transaction_read(&self, events: usize) {
        self.transaction_events.observe(events as f64);
    }

    /// The position and lag, refreshed.
    pub fn position(&self, confirmed: u64, wal_end: u64, oldest_pending_age_secs: f64) {
        self.confirmed_lsn
            .set(i64::try_from(confirmed).unwrap_or(i64::MAX));
        self.lag_bytes
            .set(i64::try_from(wal_end.saturating_sub(confirmed)).unwrap_or(i64::MAX));
        self.lag_seconds.set(oldest_pending_age_secs);
    }

    /// A heartbeat was written.
    pub fn heartbeat_written(&self) {
        self.heartbeats.inc();
    }

    /// A heartbeat could not be written; the slot may not advance while the outbox is idle.
    pub fn heartbeat_failed(&self, error: &dyn std::fmt::Display) {
        self.heartbeats_failed.inc();
        tracing::warn!(%error, "writing a heartbeat failed");
    }

    /// The slot as last read: its retained WAL, warned about when it crosses `threshold`
    /// (`source.max_retained_wal`) and when the server may invalidate it.
    pub fn slot_state(&self, slot: &str, state: &crate::slot::SlotState, threshold: u64) {
        let retained = state.retained_wal_bytes.unwrap_or(0);
        self.slot_retained_wal_bytes.set(retained);
        let over = u64::try_from(retained).is_ok_and(|r| r > threshold);
        if over && !self.retained_over.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                slot,
                retained_wal_bytes = retained,
                max_retained_wal = threshold,
                "the replication slot retains more WAL than `source.max_retained_wal`: the relay \
                 is behind, or cannot confirm (is Kafka reachable?); the server keeps this WAL on \
                 disk until the slot advances"
            );
        } else if !over && self.retained_over.swap(false, Ordering::Relaxed) {
            tracing::info!(
                slot,
                retained_wal_bytes = retained,
                "the replication slot's retained WAL is back under `source.max_retained_wal`"
            );
        }
        let unreserved = state.wal_status.as_deref() == Some("unreserved");
        if unreserved && !self.slot_unreserved.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                slot,
                retained_wal_bytes = retained,
                "the replication slot is past `max_slot_wal_keep_size` (wal_status = \
                 'unreserved'): the next checkpoint may invalidate it unless the relay catches up"
            );
        } else if !unreserved {
            self.slot_unreserved.store(false, Ordering::Relaxed);
        }
    }

    /// A replication session started streaming, or stopped.
    pub fn connected(&self, up: bool) {
        self.connected.store(up, Ordering::Relaxed);
        self.connected_gauge.set(i64::from(up));
    }

    /// A session is being restarted after `error`.
    pub fn reconnecting(&self, error: &dyn std::fmt::Display, wait: std::time::Duration) {
        self.reconnects.inc();
        tracing::warn!(%error, ?wait, "relay session failed; reconnecting");
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Serves `/metrics`, `/livez` (`/healthz`), `/readyz` and the `dashboard` on `addr` until
    /// the task is dropped.
    pub async fn serve(
        self,
        addr: SocketAddr,
        dashboard: crate::dashboard::Dashboard,
    ) -> std::io::Result<tokio::task::JoinHandle<()>> {
        let listener = TcpListener::bind(addr).await?;
        tracing::info!(%addr, "metrics listening");
        Ok(tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let metrics = self.clone();
                let dashboard = dashboard.clone();
                tokio::spawn(async move {
                    // Read the request head (up to 8 KiB): closing with unread bytes would reset
                    // the connection before the client reads the response.
                    let mut buf = vec![0u8; 8192];
                    let mut n = 0;
                    let read_head = async {
                        while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                            match stream.read(&mut buf[n..]).await {
                                Ok(0) | Err(_) => break,
                                Ok(m) => n += m,
                            }
                        }
                    };
                    if tokio::time::timeout(std::time::Duration::from_secs(5), read_head)
                        .await
                        .is_err()
                    {
                        return;
                    }
                    let request = String::from_utf8_lossy(&buf[..n]);
                    let path = request.split_whitespace().nth(1).unwrap_or("/");
                    let response = match path {
                        "/livez" | "/healthz" => Response::text("200 OK", "ok\n"),
                        "/readyz" if metrics.connected.load(Ordering::Relaxed) => {
                            Response::text("200 OK", "ready\n")
                        }
                        "/readyz" => Response::text(
                            "503 Service Unavailable",
                            "not ready: standing by, or the source is not connected\n",
                        ),
                        // `metrics.token`: every path but the probes needs it.
                        _ if !dashboard.authorized(&request) => Response::unauthorized(),
                        "/metrics" => Response::metrics(metrics.render()),
                        _ => dashboard.respond(path).await,
                    };
                    let _ = stream.write_all(&response.into_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_stable_names() {
        let m = Metrics::new();
        m.event_published();
        m.transaction_read(3);
        m.position(100, 150, 0.5);
        let text = m.render();
        for name in [
            "outbox_relay_events_published_total 1",
            "outbox_relay_events_dead_lettered_total 0",
            "outbox_relay_events_failed_total 0",
            "outbox_relay_lag_bytes 50",
            "outbox_relay_lag_seconds 0.5",
            "outbox_relay_transaction_events_count 1",
            "outbox_relay_slot_retained_wal_bytes 0",
            "outbox_relay_heartbeats_total 0",
        ] {
            assert!(text.contains(name), "{name} missing in\n{text}");
        }
    }
}
