//! One claiming session: a task that claims, yields, waits for the acknowledgement, settles.
//!
//! The claim's transaction lives in the task, not in [`PollSession::next`]: the pipeline may drop
//! a `next` at any time, and ending the session (closing it, or dropping it) ends the task, which
//! rolls an unsettled claim back. Only one batch is out at a time, and it is settled before the
//! next is claimed: that is what keeps each aggregate's events in order.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use sea_orm::{DbBackend, IsolationLevel, TransactionTrait};
use tokio::sync::{Notify, OwnedMutexGuard, mpsc, watch};
use tokio::task::JoinHandle;

use super::leader::Leader;
use super::shape::Shape;
use super::{AfterAck, Outbox, PollError, execute};
use crate::source::{OutboxRecord, Source, SourceError, SourceEvent};

/// A claimed batch, numbered in this process: the `poll` source's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Batch(pub u64);

impl std::fmt::Display for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "batch {}", self.0)
    }
}

/// A batch number means nothing to another process: the exactly-once mode is refused for the
/// `poll` source at start (see `Config::validate`); this form serves the status alone.
impl crate::source::StoredPosition for Batch {
    fn encode(&self) -> String {
        self.0.to_string()
    }

    fn decode(text: &str) -> Result<Batch, String> {
        text.parse()
            .map(Batch)
            .map_err(|e| format!("`{text}` is not a batch number: {e}"))
    }

    fn order(&self, other: &Batch) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

type Yield = Result<SourceEvent<Batch>, SourceError>;

/// A claiming session, leading.
pub struct PollSession {
    events: mpsc::Receiver<Yield>,
    acknowledged: watch::Sender<u64>,
    task: JoinHandle<()>,
}

impl Drop for PollSession {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the claiming task works with.
struct Claimer {
    outbox: Arc<Outbox>,
    shape: Arc<Shape>,
    leader: OwnedMutexGuard<Option<Leader>>,
    events: mpsc::Sender<Yield>,
    acknowledged: watch::Receiver<u64>,
    batches: Arc<AtomicU64>,
}

impl PollSession {
    pub(super) fn start(
        outbox: Arc<Outbox>,
        shape: Arc<Shape>,
        leader: OwnedMutexGuard<Option<Leader>>,
        wake: Arc<Notify>,
        batches: Arc<AtomicU64>,
    ) -> PollSession {
        let capacity = outbox.poll().batch_size + 2;
        let (sender, events) = mpsc::channel(capacity);
        let (acknowledged, watching) = watch::channel(batches.load(Ordering::Relaxed));
        let claimer = Claimer {
            outbox,
            shape,
            leader,
            events: sender,
            acknowledged: watching,
            batches,
        };
        PollSession {
            events,
            acknowledged,
            task: tokio::spawn(claimer.run(wake)),
        }
    }
}

impl Source for PollSession {
    type Position = Batch;

    async fn next(&mut self) -> Result<SourceEvent<Batch>, SourceError> {
        // Cancel-safe: a message stays in the channel until received.
        match self.events.recv().await {
            Some(event) => event,
            None => Err(PollError::Ended.into()),
        }
    }

    fn acknowledge(&mut self, position: &Batch) {
        self.acknowledged.send_replace(position.0);
    }

    /// Lets the task settle an acknowledged batch (bounded by `claim_timeout`, as every claim
    /// is), then ends it.
    async fn close(mut self) {
        self.events.close();
        let task = &mut self.task;
        if tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .is_err()
        {
            tracing::debug!("the claiming task did not end in time; its claim is rolled back");
        }
    }
}

impl Claimer {
    async fn run(mut self, wake: Arc<Notify>) {
        let poll = self.outbox.poll().clone();
        let mut last_purge: Option<Instant> = None;
        loop {
            let shipped = match self.cycle().await {
                Ok(shipped) => shipped,
                Err(error) => {
                    if matches!(error, PollError::LostLeadership) {
                        *self.leader = None;
                    }
                    let _ = self.events.send(Err(error.into())).await;
                    return;
                }
            };
            if poll.after_ack == AfterAck::Mark
                && last_purge.is_none_or(|at| at.elapsed() >= Duration::from_secs(60))
            {
                last_purge = Some(Instant::now());
                if let Err(error) = self.outbox.purge(&self.shape).await {
                    tracing::warn!(%error, "purging relayed rows failed; trying again later");
                }
            }
            if shipped == poll.batch_size {
                continue;
            }
            if self.events.is_closed() {
                return;
            }
            // Idle: a notification or the fallback interval.
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(poll.interval) => {}
            }
        }
    }

    /// One claim → yield → wait for the acknowledgement → settle cycle; the rows shipped.
    async fn cycle(&mut self) -> Result<usize, PollError> {
        let outbox = self.outbox.clone();
        let (table, shape) = (&outbox.table, self.shape.clone());
        let ttl = outbox.poll().lease_ttl;
        let limit = outbox.poll().batch_size;
        let Some(leader) = self.leader.as_ref() else {
            return Err(PollError::LostLeadership);
        };
        if table.backend == DbBackend::Sqlite {
            // SQLite: one writer for the whole database. The leader reads outside a
            // transaction and writes only the short settle, so the service's writers never
            // wait on Kafka.
            if !leader.holds(&outbox.db, table, ttl).await? {
                return Err(PollError::LostLeadership);
            }
            let records = outbox.claim(&shape, &outbox.db, limit).await?;
            if records.is_empty() {
                return Ok(0);
            }
            self.ship_within_claim(&records).await?;
            execute(&outbox.db, outbox.settle(&shape, &records)).await?;
            return Ok(records.len());
        }
        // READ COMMITTED on MariaDB: its default (REPEATABLE READ) would take gap locks on the
        // index and stall the service's inserts for the length of a Kafka round trip.
        let isolation =
            (table.backend == DbBackend::MySql).then_some(IsolationLevel::ReadCommitted);
        let txn = outbox.db.begin_with_config(isolation, None).await?;
        if !leader.holds(&txn, table, ttl).await? {
            return Err(PollError::LostLeadership);
        }
        let records = outbox.claim(&shape, &txn, limit).await?;
        if records.is_empty() {
            txn.commit().await?;
            return Ok(0);
        }
        // An error drops `txn`, which rolls the claim back: the rows stay for the next try.
        self.ship_within_claim(&records).await?;
        execute(&txn, outbox.settle(&shape, &records)).await?;
        txn.commit().await?;
        Ok(records.len())
    }

    /// Yields the batch as one transaction and waits for the pipeline to acknowledge it, within
    /// `claim_timeout`.
    async fn ship_within_claim(&mut self, records: &[OutboxRecord]) -> Result<(), PollError> {
        let poll = self.outbox.poll();
        // SQLite's leadership is a lease that is not renewed while a batch waits: a batch must
        // end well within it, or a standby could take over while its copies are still queued.
        let bound = match self.outbox.table.backend {
            DbBackend::Sqlite => poll.claim_timeout.min(poll.lease_ttl / 2),
            _ => poll.claim_timeout,
        };
        tokio::time::timeout(bound, self.ship(records))
            .await
            .map_err(|_| PollError::ClaimTimeout(bound))?
    }

    async fn ship(&mut self, records: &[OutboxRecord]) -> Result<(), PollError> {
        let batch = self.batches.fetch_add(1, Ordering::Relaxed) + 1;
        // The lag is measured from the oldest event's own time (the timestamp column, as
        // configured); without one, from now.
        let kafka = &self.outbox.config().kafka;
        let column = kafka
            .event_timestamp_field
            .as_deref()
            .unwrap_or("timestamp");
        let committed_at_micros = records
            .first()
            .and_then(|r| r.get(column))
            .and_then(crate::format::timestamp_millis)
            .map_or_else(|| Utc::now().timestamp_micros(), |ms| ms * 1_000);
        let events = std::iter::once(SourceEvent::Begin {
            committed_at_micros,
        })
        .chain(records.iter().cloned().map(SourceEvent::Event))
        .chain(std::iter::once(SourceEvent::Commit { end: Batch(batch) }));
        for event in events {
            self.events
                .send(Ok(event))
                .await
                .map_err(|_| PollError::Ended)?;
        }
        self.acknowledged
            .wait_for(|acked| *acked >= batch)
            .await
            .map_err(|_| PollError::Ended)?;
        Ok(())
    }
}
