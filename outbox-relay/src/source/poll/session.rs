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
use super::{AfterAck, Claimed, Outbox, PollError, execute};
use crate::config::Delivery;
use crate::source::{OutboxRecord, Source, SourceError, SourceEvent};

/// A claimed batch: the `poll` source's position.
///
/// `number` orders the batches: they are numbered across the sessions of a process, and, in
/// the exactly-once mode, on from the number stored in Kafka. `rows` names the batch's rows by
/// their sequence values: the rows to settle without shipping them again when a session
/// resumes after this batch (it was shipped, and the last session may have stopped before the
/// settle).
///
/// Not a high-water mark: a row below a batch's highest sequence value may not be in it (its
/// writer committed after the claim) and is still to be shipped.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Batch {
    pub number: u64,
    pub rows: BatchRows,
}

/// The rows of a claimed batch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BatchRows {
    /// Inclusive ranges of sequence values, ascending.
    pub seqs: Vec<(i64, i64)>,
    pub count: usize,
    /// The event ids at the lowest and highest sequence values: a table recreated (or its
    /// sequence reset) since is told apart by them.
    pub first_id: String,
    pub last_id: String,
}

impl BatchRows {
    /// The rows of `claimed`, in sequence order.
    pub(super) fn of(claimed: &[Claimed], id_of: impl Fn(&OutboxRecord) -> String) -> BatchRows {
        let mut sorted: Vec<(i64, &OutboxRecord)> =
            claimed.iter().map(|c| (c.seq, &c.record)).collect();
        sorted.sort_by_key(|(seq, _)| *seq);
        let mut seqs: Vec<(i64, i64)> = Vec::new();
        for (seq, _) in &sorted {
            match seqs.last_mut() {
                Some((_, high)) if high.checked_add(1) == Some(*seq) => *high = *seq,
                Some((_, high)) if *high == *seq => {}
                _ => seqs.push((*seq, *seq)),
            }
        }
        BatchRows {
            seqs,
            count: sorted.len(),
            first_id: sorted.first().map(|(_, r)| id_of(r)).unwrap_or_default(),
            last_id: sorted.last().map(|(_, r)| id_of(r)).unwrap_or_default(),
        }
    }
}

/// Bounded: the count and the outer sequence values, not every range.
impl std::fmt::Display for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rows = &self.rows;
        match (rows.seqs.first(), rows.seqs.last()) {
            (Some((low, _)), Some((_, high))) => write!(
                f,
                "batch {} ({} rows, seq {low}..={high})",
                self.number, rows.count
            ),
            _ => write!(f, "batch {} (no rows)", self.number),
        }
    }
}

/// Stored as JSON; ordered by the batch number.
impl crate::source::StoredPosition for Batch {
    fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    fn decode(text: &str) -> Result<Batch, String> {
        serde_json::from_str(text).map_err(|e| format!("`{text}` is not a poll batch: {e}"))
    }

    fn order(&self, other: &Batch) -> Option<std::cmp::Ordering> {
        Some(self.number.cmp(&other.number))
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
    /// The batch the session resumes after: its rows still pending are settled, not shipped.
    resume: Option<Batch>,
}

impl PollSession {
    pub(super) fn start(
        outbox: Arc<Outbox>,
        shape: Arc<Shape>,
        leader: OwnedMutexGuard<Option<Leader>>,
        wake: Arc<Notify>,
        batches: Arc<AtomicU64>,
        resume: Option<Batch>,
    ) -> PollSession {
        if let Some(resume) = &resume {
            batches.fetch_max(resume.number, Ordering::Relaxed);
        }
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
            resume,
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
        self.acknowledged.send_replace(position.number);
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
        if let Some(resume) = self.resume.take()
            && let Err(error) = self.settle_shipped(&resume).await
        {
            let _ = self.events.send(Err(error.into())).await;
            return;
        }
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

    /// Before the first claim: the rows of `batch` (the position the session resumes after)
    /// that are still pending were shipped — acknowledged by Kafka, or committed there with the
    /// position in the exactly-once mode — but the last session stopped before settling them.
    /// They are settled now, without being shipped again. Only the rows the batch names: a
    /// pending row with a lower sequence value whose writer committed late is not among them,
    /// and is claimed as usual.
    async fn settle_shipped(&mut self, batch: &Batch) -> Result<(), PollError> {
        let outbox = self.outbox.clone();
        let table = &outbox.table;
        let ttl = outbox.poll().lease_ttl;
        let Some(leader) = self.leader.as_ref() else {
            return Err(PollError::LostLeadership);
        };
        let settled = if table.backend == DbBackend::Sqlite {
            if !leader.holds(&outbox.db, table, ttl).await? {
                return Err(PollError::LostLeadership);
            }
            self.settle_shipped_in(&outbox.db, batch).await?
        } else {
            let isolation =
                (table.backend == DbBackend::MySql).then_some(IsolationLevel::ReadCommitted);
            let txn = outbox.db.begin_with_config(isolation, None).await?;
            if !leader.holds(&txn, table, ttl).await? {
                return Err(PollError::LostLeadership);
            }
            let settled = self.settle_shipped_in(&txn, batch).await?;
            txn.commit().await?;
            settled
        };
        if settled > 0 {
            tracing::info!(
                batch = %batch,
                rows = settled,
                "settled rows already shipped, without shipping them again (the last session \
                 stopped after the Kafka commit, before settling them)"
            );
        }
        Ok(())
    }

    /// The rows of `batch` still pending, checked to be the batch's own, settled in `conn`; how
    /// many.
    async fn settle_shipped_in<C: sea_orm::ConnectionTrait>(
        &self,
        conn: &C,
        batch: &Batch,
    ) -> Result<usize, PollError> {
        let outbox = &self.outbox;
        let table = &outbox.table;
        if batch.rows.seqs.is_empty() {
            return Ok(0);
        }
        let rows = conn
            .query_all_raw(table.shipped(&self.shape, &batch.rows.seqs))
            .await?;
        let found = rows
            .iter()
            .map(|row| {
                Ok::<_, PollError>((
                    row.try_get_by_index::<String>(0)?,
                    row.try_get_by_index::<i64>(1)?,
                ))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if found.is_empty() {
            return Ok(0);
        }
        // A batch is settled in one statement: its rows are all pending, or none is.
        let first = found.first().map(|(id, _)| id.as_str()).unwrap_or_default();
        let last = found.last().map(|(id, _)| id.as_str()).unwrap_or_default();
        if found.len() != batch.rows.count
            || first != batch.rows.first_id
            || last != batch.rows.last_id
        {
            return Err(PollError::NotShipped {
                table: table.key(),
                batch: batch.to_string(),
                found: found.len(),
                count: batch.rows.count,
                expected: format!("{}..{}", batch.rows.first_id, batch.rows.last_id),
                ids: format!("{first}..{last}"),
            });
        }
        let ids: Vec<String> = found.into_iter().map(|(id, _)| id).collect();
        execute(conn, table.settle(&self.shape, &ids, Utc::now())).await?;
        Ok(ids.len())
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
            let claimed = outbox.claim(&shape, &outbox.db, limit).await?;
            if claimed.is_empty() {
                return Ok(0);
            }
            self.ship_within_claim(&claimed).await?;
            execute(&outbox.db, outbox.settle(&shape, &claimed)).await?;
            return Ok(claimed.len());
        }
        // READ COMMITTED on MariaDB: its default (REPEATABLE READ) would take gap locks on the
        // index and stall the service's inserts for the length of a Kafka round trip.
        let isolation =
            (table.backend == DbBackend::MySql).then_some(IsolationLevel::ReadCommitted);
        let txn = outbox.db.begin_with_config(isolation, None).await?;
        if !leader.holds(&txn, table, ttl).await? {
            return Err(PollError::LostLeadership);
        }
        let claimed = outbox.claim(&shape, &txn, limit).await?;
        if claimed.is_empty() {
            txn.commit().await?;
            return Ok(0);
        }
        // An error drops `txn`, which rolls the claim back: the rows stay for the next try.
        self.ship_within_claim(&claimed).await?;
        execute(&txn, outbox.settle(&shape, &claimed)).await?;
        txn.commit().await?;
        Ok(claimed.len())
    }

    /// Yields the batch as one transaction and waits for the pipeline to acknowledge it, within
    /// `claim_timeout`.
    async fn ship_within_claim(&mut self, records: &[Claimed]) -> Result<(), PollError> {
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

    async fn ship(&mut self, claimed: &[Claimed]) -> Result<(), PollError> {
        let number = self.batches.fetch_add(1, Ordering::Relaxed) + 1;
        let outbox = self.outbox.clone();
        let batch = Batch {
            number,
            rows: BatchRows::of(claimed, |r| {
                outbox.event_id(r).map(str::to_owned).unwrap_or_default()
            }),
        };
        // The lag is measured from the oldest event's own time (the timestamp column, as
        // configured); without one, from now.
        let kafka = &self.outbox.config().kafka;
        let column = kafka
            .event_timestamp_field
            .as_deref()
            .unwrap_or("timestamp");
        let committed_at_micros = claimed
            .first()
            .and_then(|c| c.record.get(column))
            .and_then(crate::format::timestamp_millis)
            .map_or_else(|| Utc::now().timestamp_micros(), |ms| ms * 1_000);
        let events = std::iter::once(SourceEvent::Begin {
            committed_at_micros,
        })
        .chain(claimed.iter().map(|c| SourceEvent::Event(c.record.clone())))
        .chain(std::iter::once(SourceEvent::Commit { end: batch.clone() }))
        // In the exactly-once mode nothing more comes before the batch is acknowledged, so the
        // Kafka transaction is committed now rather than at `transaction_interval`.
        .chain(
            (self.outbox.config().delivery == Delivery::ExactlyOnce)
                .then_some(SourceEvent::KeepAlive { end: batch }),
        );
        for event in events {
            self.events
                .send(Ok(event))
                .await
                .map_err(|_| PollError::Ended)?;
        }
        self.acknowledged
            .wait_for(|acked| *acked >= number)
            .await
            .map_err(|_| PollError::Ended)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{ColumnValue, Origin, StoredPosition};

    fn claimed(seq: i64) -> Claimed {
        Claimed {
            seq,
            record: OutboxRecord {
                origin: Origin {
                    header: "dlq.source.table",
                    value: "outbox".to_owned(),
                },
                columns: vec![("id".into(), Some(ColumnValue::Text(format!("e{seq}"))))],
            },
        }
    }

    #[test]
    fn a_batch_names_its_rows_not_a_high_water_mark() {
        // Claimed in sequence order, with 4 and 8 not (yet) committed.
        let rows = [1, 2, 3, 5, 6, 7, 9].map(claimed);
        let id = |r: &OutboxRecord| r.get("id").unwrap_or_default().to_owned();
        let batch = Batch {
            number: 7,
            rows: BatchRows::of(&rows, id),
        };
        assert_eq!(batch.rows.seqs, vec![(1, 3), (5, 7), (9, 9)]);
        assert_eq!(batch.rows.count, 7);
        assert_eq!(
            (batch.rows.first_id.as_str(), batch.rows.last_id.as_str()),
            ("e1", "e9")
        );
        assert_eq!(batch.to_string(), "batch 7 (7 rows, seq 1..=9)");
        let stored = batch.encode();
        assert_eq!(Batch::decode(&stored), Ok(batch.clone()));
        assert!(Batch::decode("7").is_err_and(|e| e.contains("not a poll batch")));
        let next = Batch {
            number: 8,
            rows: BatchRows::of(&[claimed(4)], id),
        };
        // Ordered by the claim, not by the sequence: batch 8 holds a lower `seq`.
        assert_eq!(next.order(&batch), Some(std::cmp::Ordering::Greater));
    }
}
