//! What a relay shows of itself: its state and counts, as `outbox-relay status` (through
//! `GET /status` on the metrics listener), the metrics and the dashboard read them.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::metrics::Metrics;

/// What the relay is doing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Checking the source and Kafka before the first session.
    #[default]
    Starting,
    /// A session streams: this relay ships.
    Leading,
    /// Another relay ships (the `poll` source's leadership); this one waits to take over.
    Standby,
    /// Waiting out a transient failure before the next session.
    Reconnecting,
    Stopped,
}

impl State {
    pub const ALL: [State; 5] = [
        State::Starting,
        State::Leading,
        State::Standby,
        State::Reconnecting,
        State::Stopped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Leading => "leading",
            State::Standby => "standby",
            State::Reconnecting => "reconnecting",
            State::Stopped => "stopped",
        }
    }
}

/// What a running relay shows of itself, served as JSON at `GET /status`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The source: `wal`, `message`, `poll`, `binlog`.
    #[serde(skip_deserializing)]
    pub source: &'static str,
    pub state: State,
    /// Whether this relay is the one shipping.
    pub leader: bool,
    /// Failed attempts since the last progress.
    pub attempts: u32,
    /// The last error, kept after recovery.
    pub last_error: Option<String>,
    /// Events Kafka acknowledged (dead letters excluded), as `outbox_relay_events_published_total`.
    pub published: u64,
    /// Events sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// The last position acknowledged to the source, as the source prints it.
    pub confirmed: Option<String>,
    /// Age of the oldest event committed but not yet acknowledged by Kafka, 0 when none, as
    /// `outbox_relay_oldest_pending_age_seconds`; None in a report without metrics.
    pub oldest_pending_age_seconds: Option<f64>,
}

/// A shared handle on the relay's [`StatusReport`], also reflected in the metrics.
#[derive(Clone, Default)]
pub struct Status {
    report: Arc<Mutex<StatusReport>>,
    metrics: Option<Metrics>,
}

impl Status {
    /// A status whose state changes are also shown by `metrics`.
    pub fn new(metrics: &Metrics) -> Status {
        Status {
            report: Arc::default(),
            metrics: Some(metrics.clone()),
        }
    }

    /// The report; its counts are the metrics' counters (kept once, there).
    pub fn snapshot(&self) -> StatusReport {
        let mut report = self.report.lock().map(|s| s.clone()).unwrap_or_default();
        if let Some(metrics) = &self.metrics {
            report.published = metrics.published();
            report.dead_lettered = metrics.dead_lettered();
            report.oldest_pending_age_seconds = Some(metrics.oldest_pending_age());
        }
        report
    }

    pub(crate) fn update(&self, change: impl FnOnce(&mut StatusReport)) {
        if let Ok(mut report) = self.report.lock() {
            change(&mut report);
        }
    }

    /// The relay entered `state`.
    pub fn set_state(&self, state: State) {
        self.update(|s| {
            s.state = state;
            s.leader = state == State::Leading;
        });
        if let Some(metrics) = &self.metrics {
            metrics.state(state.as_str());
        }
    }
}
