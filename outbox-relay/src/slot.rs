//! The replication slot while the relay runs: the heartbeats that let it advance when the outbox
//! is idle, the WAL it retains (a metric, and a warning past `source.max_retained_wal`), and its
//! loss.
//!
//! Contract: a slot that was dropped, or invalidated by the server (`wal_status = 'lost'`), stops
//! the relay with [`SlotLost`], which names the remedy. The relay never recreates it: a new slot
//! starts at the server's current WAL position, so every event committed after the last
//! confirmed position would be skipped without a trace.

use std::time::Duration;

use sea_orm::sqlx::{self, PgPool};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::{HEARTBEAT_PREFIX, SourceConfig};
use crate::metrics::Metrics;

/// How the slot was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotLoss {
    /// `pg_replication_slots` has no such slot: it was dropped, or the relay follows a server
    /// promoted from a replica that never had it.
    Dropped,
    /// The server removed WAL the slot still needed (`wal_status = 'lost'`).
    Invalidated,
}

/// The slot is gone; the relay stopped. No retry can bring back the WAL it held.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.explain())]
pub struct SlotLost {
    pub slot: String,
    pub loss: SlotLoss,
    /// The last position the relay confirmed (0: none in this run).
    pub confirmed: u64,
}

impl SlotLost {
    fn explain(&self) -> String {
        let slot = &self.slot;
        let what = match self.loss {
            SlotLoss::Dropped => format!(
                "replication slot `{slot}` (`source.slot`) no longer exists: it was dropped, or \
                 this server was promoted from a replica without it"
            ),
            SlotLoss::Invalidated => format!(
                "replication slot `{slot}` (`source.slot`) was invalidated (wal_status = 'lost'): \
                 the server removed WAL it still needed (see `max_slot_wal_keep_size`)"
            ),
        };
        let after = if self.confirmed == 0 {
            "the relay's last confirmed position".to_owned()
        } else {
            crate::source::wal::lsn::Lsn(self.confirmed).to_string()
        };
        format!(
            "{what}. Events committed after {after} cannot be read from it any more, and the \
             relay does not recreate the slot, which would skip them silently. Either restore \
             it (fail back to the server that holds it, or restore from backup), or create a new \
             one with `outbox-relay teardown` and `outbox-relay setup` and accept that the events \
             committed after {after} were not relayed (re-send them from the outbox table or \
             their source)"
        )
    }
}

/// What `pg_replication_slots` shows of the slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotState {
    /// The server's WAL position minus the slot's `restart_lsn`: the WAL it keeps from removal.
    pub retained_wal_bytes: Option<i64>,
    /// `reserved`, `extended`, `unreserved` or `lost`.
    pub wal_status: Option<String>,
}

impl SlotState {
    /// How the slot was lost, if it was: `state` is None when the slot does not exist.
    pub fn loss(state: Option<&SlotState>) -> Option<SlotLoss> {
        match state {
            None => Some(SlotLoss::Dropped),
            Some(s) if s.wal_status.as_deref() == Some("lost") => Some(SlotLoss::Invalidated),
            Some(_) => None,
        }
    }
}

/// The slot's state, or None when there is no such slot.
pub async fn read(pool: &PgPool, slot: &str) -> Result<Option<SlotState>, sqlx::Error> {
    let facts = crate::inspect::read_slot(pool, slot).await?;
    Ok(facts.exists.then_some(SlotState {
        retained_wal_bytes: facts.retained_wal_bytes,
        wal_status: facts.wal_status,
    }))
}

/// Writes one heartbeat: a transactional logical message in the slot's database, which the
/// session reads as an empty transaction and confirms.
pub async fn heartbeat(pool: &PgPool, slot: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_logical_emit_message(true, $1, $2)::text")
        .bind(HEARTBEAT_PREFIX)
        .bind(slot)
        .execute(pool)
        .await
        .map(drop)
}

/// The session's companion task: heartbeats and slot checks every `source.heartbeat_interval`
/// (checks every 10 s when heartbeats are off). It ends the session through `lost` when the slot
/// is gone; it is aborted when dropped.
pub struct SlotKeeper {
    task: JoinHandle<()>,
    /// Resolves when the slot was found dropped or invalidated.
    pub lost: oneshot::Receiver<SlotLoss>,
}

impl Drop for SlotKeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SlotKeeper {
    pub fn start(config: &SourceConfig, pool: PgPool, metrics: Metrics) -> SlotKeeper {
        let (report, lost) = oneshot::channel();
        let slot = config.slot.clone();
        let beat = config.heartbeat_interval;
        let threshold = config.max_retained_wal;
        let period = if beat.is_zero() {
            Duration::from_secs(10)
        } else {
            beat
        };
        let task = tokio::spawn(async move {
            let mut warnings = Warnings::default();
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if !beat.is_zero() {
                    match heartbeat(&pool, &slot).await {
                        Ok(()) => metrics.heartbeat_written(),
                        // The session's own errors decide about reconnecting; a missed heartbeat
                        // only delays the slot's advance.
                        Err(error) => metrics.heartbeat_failed(&error),
                    }
                }
                match read(&pool, &slot).await {
                    Ok(state) => {
                        if let Some(loss) = SlotState::loss(state.as_ref()) {
                            let _ = report.send(loss);
                            return;
                        }
                        if let Some(state) = state {
                            warnings.observe(&slot, &state, threshold);
                            metrics.slot_retained_wal(state.retained_wal_bytes.unwrap_or(0));
                        }
                    }
                    Err(error) => {
                        tracing::debug!(%error, "reading pg_replication_slots failed");
                    }
                }
            }
        });
        SlotKeeper { task, lost }
    }
}

/// Warns when the slot crosses `source.max_retained_wal` and when the server may invalidate
/// it, once per crossing.
#[derive(Default)]
struct Warnings {
    over: bool,
    unreserved: bool,
}

impl Warnings {
    fn observe(&mut self, slot: &str, state: &SlotState, threshold: u64) {
        let retained = state.retained_wal_bytes.unwrap_or(0);
        let over = u64::try_from(retained).is_ok_and(|r| r > threshold);
        if over && !self.over {
            tracing::warn!(
                slot,
                retained_wal_bytes = retained,
                max_retained_wal = threshold,
                "the replication slot retains more WAL than `source.max_retained_wal`: the relay \
                 is behind, or cannot confirm (is Kafka reachable?); the server keeps this WAL on \
                 disk until the slot advances"
            );
        } else if !over && self.over {
            tracing::info!(
                slot,
                retained_wal_bytes = retained,
                "the replication slot's retained WAL is back under `source.max_retained_wal`"
            );
        }
        self.over = over;
        let unreserved = state.wal_status.as_deref() == Some("unreserved");
        if unreserved && !self.unreserved {
            tracing::warn!(
                slot,
                retained_wal_bytes = retained,
                "the replication slot is past `max_slot_wal_keep_size` (wal_status = \
                 'unreserved'): the next checkpoint may invalidate it unless the relay catches up"
            );
        }
        self.unreserved = unreserved;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_is_read_from_the_slot_row() {
        let state = |status: &str| SlotState {
            retained_wal_bytes: Some(1),
            wal_status: Some(status.to_owned()),
        };
        assert_eq!(SlotState::loss(None), Some(SlotLoss::Dropped));
        assert_eq!(
            SlotState::loss(Some(&state("lost"))),
            Some(SlotLoss::Invalidated)
        );
        assert_eq!(SlotState::loss(Some(&state("unreserved"))), None);
        assert_eq!(SlotState::loss(Some(&state("reserved"))), None);
    }

    #[test]
    fn the_error_names_the_slot_the_position_and_both_remedies() {
        let e = SlotLost {
            slot: "orders".into(),
            loss: SlotLoss::Invalidated,
            confirmed: 0x1_0000_00A0,
        }
        .to_string();
        for part in [
            "`orders`",
            "invalidated",
            "1/A0",
            "outbox-relay setup",
            "restore",
        ] {
            assert!(e.contains(part), "{part} missing in {e}");
        }
    }
}
