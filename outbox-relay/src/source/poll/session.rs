//! One claiming session: a task that claims, yields, waits for the acknowledgement, settles.
//!
//! The claim's transaction lives in the task, not in [`PollSession::next`]: the pipeline may drop
//! a `next` at any time, and ending the session (closing it, or dropping it) ends the task, which
//! rolls an unsettled claim back. On PostgreSQL and SQLite (at least once) the next batch is
//! claimed and shipped while Kafka acknowledges the one before (on PostgreSQL each in a
//! transaction of its own), and they are settled in claim order (`Claimer::claim_pipelined`
//! says why each aggregate's events stay in order); on MariaDB/MySQL (see `Claimer::depth`) and
//! in the exactly-once mode one batch is out at a time, settled before the next is claimed.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::FutureExt as _;
use sea_orm::{DatabaseTransaction, DbBackend, IsolationLevel, QueryResult, TransactionTrait};
use tokio::sync::{Notify, OwnedMutexGuard, mpsc, watch};
use tokio::task::JoinHandle;

use super::leader::Leader;
use super::shape::Shape;
use super::waiting::WaitMark;
use super::{AfterAck, Claimed, Outbox, PollError, Settle, consecutive_runs};
use crate::config::Delivery;
use crate::source::{OutboxRecord, Source, SourceError, SourceEvent};

/// How long taking the wait mark waits for the writers in flight (`waiting.rs`) before the task
/// claims again: an event committed meanwhile waits no longer than this for its claim, also
/// beside a writer's transaction that stays open.
const MARK_PATIENCE: Duration = Duration::from_millis(50);

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
        BatchRows {
            seqs: consecutive_runs(sorted.iter().map(|(seq, _)| *seq)),
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

/// Batches out at once in the at-least-once mode (see `Claimer::depth`): two, so that the
/// next claim's round trips overlap Kafka's acknowledgement of the batch before. Measured
/// against one: 1.19× on SQLite (BENCHMARKS.md, round 2, part 7), 1.17–1.27× on MariaDB
/// (part 16); three gained nothing on MariaDB, whose server is then the bound (part 16).
const PIPELINE_DEPTH: usize = 2;

/// A batch claimed and shipped, waiting for Kafka's acknowledgement; dropping it rolls the
/// claim back (SQLite: nothing was written, so the rows simply stay).
struct Claim {
    number: u64,
    /// The claiming transaction, which holds the rows' locks; None on SQLite, whose leader
    /// reads outside a transaction (see `Claimer::claim`).
    txn: Option<DatabaseTransaction>,
    /// What settles the batch.
    settle: Settle,
    rows: usize,
    /// The highest sequence value claimed: SQLite's next claim starts above it.
    high: i64,
    /// Kafka must acknowledge the batch by then ([`Claimer::claim_bound`] from the claim), or
    /// the claim is rolled back.
    deadline: tokio::time::Instant,
    shipped: Instant,
}

/// A batch claimed and not yet shipped.
struct Taken {
    /// As [`Claim::txn`].
    txn: Option<DatabaseTransaction>,
    /// As read: decoded while the next batch is claimed.
    rows: Vec<QueryResult>,
    /// The highest sequence value claimed.
    high: i64,
    claimed_in: Duration,
    /// As [`Claim::deadline`]: the bound runs from the claim.
    deadline: tokio::time::Instant,
}

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
    /// PostgreSQL with `LISTEN`: the mark held while the task waits for rows (`waiting.rs`).
    mark: Option<WaitMark>,
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
        let mark = outbox.channel().map(|channel| {
            WaitMark::new(
                outbox.db.get_postgres_connection_pool().clone(),
                channel.to_owned(),
                outbox.poll().interval.min(MARK_PATIENCE),
            )
        });
        let claimer = Claimer {
            outbox,
            shape,
            leader,
            events: sender,
            acknowledged: watching,
            batches,
            resume,
            mark,
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

    /// A batch is settled only once acknowledged, and with its batches out (`Claimer::depth`)
    /// the task waits for that before it claims more.
    fn awaits_acknowledgements(&self) -> bool {
        true
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
        if let Some(resume) = self.resume.take()
            && let Err(error) = self.settle_shipped(&resume).await
        {
            let _ = self.events.send(Err(error.into())).await;
            return;
        }
        if let Err(error) = self.claim_pipelined(&wake).await {
            if matches!(error, PollError::LostLeadership) {
                *self.leader = None;
            }
            let _ = self.events.send(Err(error.into())).await;
        }
    }

    /// How many claimed batches may be out at once: the next batch is claimed and shipped
    /// while Kafka acknowledges the one before, and they are settled in claim order. One in the
    /// exactly-once mode, where a batch must be settled before the next one's Kafka transaction
    /// commits: a resumed session settles, without shipping, only the rows of the last batch
    /// stored in Kafka.
    ///
    /// One also where a claim may lock rows beyond those it returns
    /// ([`Table::claim_locks_only_its_rows`]: MariaDB/MySQL without an index that leads with
    /// the sequence). The second claim would skip those rows, committed and not shipped, and
    /// take later ones first: `poll_order.rs` saw an aggregate's last event shipped before
    /// five earlier ones, 3–4 runs in 12, when MariaDB's claim was so planned (BENCHMARKS.md,
    /// round 2, parts 3 and 16).
    fn depth(&self) -> usize {
        let table = &self.outbox.table;
        if self.outbox.config().delivery == Delivery::ExactlyOnce
            || !table.claim_locks_only_its_rows(&self.shape)
        {
            return 1;
        }
        PIPELINE_DEPTH
    }

    /// Waits for new rows: a notification or the fallback interval. Purges in the `mark` mode
    /// when due.
    ///
    /// With `LISTEN` on PostgreSQL it first takes the wait mark and returns, so that the task
    /// claims once more before it waits: rows committed before the mark was taken did not
    /// notify (`waiting.rs`).
    async fn idle(&mut self, wake: &Notify, last_purge: &mut Option<Instant>) {
        self.purge_when_due(last_purge).await;
        if self.events.is_closed() {
            return;
        }
        if let Some(mark) = &mut self.mark
            && !mark.held()
        {
            let taken = tokio::select! {
                taken = mark.take() => taken,
                _ = self.events.closed() => return,
            };
            match taken {
                Ok(()) => return,
                Err(error) => tracing::warn!(
                    %error,
                    "cannot take the wait mark, so writers do not notify; the poll interval wakes the relay"
                ),
            }
        }
        let interval = self.outbox.poll().interval;
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(interval) => {}
            _ = self.events.closed() => {}
        }
    }

    async fn purge_when_due(&self, last_purge: &mut Option<Instant>) {
        if self.outbox.poll().after_ack == AfterAck::Mark
            && last_purge.is_none_or(|at| at.elapsed() >= Duration::from_secs(60))
        {
            *last_purge = Some(Instant::now());
            if let Err(error) = self.outbox.purge(&self.shape).await {
                tracing::warn!(%error, "purging relayed rows failed; trying again later");
            }
        }
    }

    /// Claim → ship → (claim → ship the next, up to [`Self::depth`]) → wait for the oldest
    /// batch's acknowledgement → settle it and commit, and so on. While a claimed batch is handed
    /// to the pipeline, the next one is claimed (when there is room) and the oldest one out is
    /// settled (when Kafka has acknowledged it), all three at once: the database's statements
    /// do not wait for the hand-off, nor the hand-off for them (a `poll` batch's cycle was their
    /// sum: BENCHMARKS.md, round 2, part 13). On SQLite, which writes one at a time, the settle
    /// and then the claim run beside the hand-off.
    ///
    /// Why pipelining keeps the guarantees: a later claim starts only after the claim before it
    /// returned its rows, and skips the rows of the batches still out (PostgreSQL, MariaDB:
    /// they are locked by their claims, which lock no other row: see
    /// [`Self::depth`]; SQLite: see [`Self::claim_after`]), so it takes the oldest rows not
    /// yet claimed; a row of it numbered below a batch still out is one whose writer
    /// committed late, and no later event of its aggregate can be in that batch (the writer held
    /// the aggregate's lock until its commit). The batches reach the pipeline in claim order,
    /// each whole before the next, and are acknowledged in that order; each is settled only
    /// after its own acknowledgement. Any failure ends the task, which rolls back every claim
    /// not yet settled: their rows are claimed again, in sequence order, by the next session.
    async fn claim_pipelined(&mut self, wake: &Notify) -> Result<(), PollError> {
        let limit = self.outbox.poll().batch_size;
        let depth = self.depth();
        let mut last_purge: Option<Instant> = None;
        let mut out: VecDeque<Claim> = VecDeque::with_capacity(depth);
        // The batch claimed and not yet shipped; it counts against `depth` as `out` does.
        let mut taken: Option<Taken> = None;
        // Whether the last claim came back full: more rows may be waiting now.
        let mut more = true;
        loop {
            if let Some(batch) = taken.take() {
                let settling = match out.front() {
                    Some(oldest) if self.acknowledged(oldest.number) => out.pop_front(),
                    _ => None,
                };
                let claim_next = more && out.len() + 2 <= depth && !self.events.is_closed();
                let after = self.claim_after(Some(batch.high));
                let this = &*self;
                let claim_next_batch = async {
                    match claim_next {
                        true => this.claim(after).await,
                        false => Ok(None),
                    }
                };
                let settle_oldest = async {
                    match settling {
                        Some(claim) => this.settle(claim, Duration::ZERO).await,
                        None => Ok(()),
                    }
                };
                let (shipped, (next, settled)) = tokio::join!(this.ship_taken(batch), async {
                    if this.outbox.table.backend != DbBackend::Sqlite {
                        return tokio::join!(claim_next_batch, settle_oldest);
                    }
                    // SQLite writes one at a time: beside the settle, the claim's lease
                    // `UPDATE` (and, in a rollback journal, its read) only collides with it,
                    // and the loser sleeps in SQLite's busy handler (1, 2, 5, 10 ms, ...).
                    // Settling first, then claiming, drained 1.07-1.15x faster, the claim
                    // 22 -> 8.5 ms per 4,000 rows (BENCHMARKS.md, round 2, part 15).
                    let settled = settle_oldest.await;
                    if settled.is_err() {
                        return (Ok(None), settled);
                    }
                    (claim_next_batch.await, settled)
                });
                settled?;
                self.purge_when_due(&mut last_purge).await;
                match shipped {
                    Ok(claim) => out.push_back(claim),
                    // The session closed while this batch was shipped (it is rolled back, and
                    // so is the one claimed beside it): the batches before it that Kafka
                    // acknowledged are still settled below, or the next session would ship
                    // them again.
                    Err(PollError::Ended) if self.events.is_closed() => {
                        more = false;
                        continue;
                    }
                    Err(error) => return Err(error),
                }
                if claim_next {
                    taken = next?;
                    more = self.took(&taken, limit).await;
                }
                continue;
            }
            if more && out.len() < depth && !self.events.is_closed() {
                taken = self
                    .claim(self.claim_after(out.back().map(|c| c.high)))
                    .await?;
                more = self.took(&taken, limit).await;
                continue;
            }
            // Rows committed since the last claim (their NOTIFY came meanwhile) are claimed now,
            // beside the batch waiting for Kafka, not after it settled: at a low rate an event
            // then waits for one batch's round, not two.
            if !more && out.len() < depth && wake.notified().now_or_never().is_some() {
                more = true;
                continue;
            }
            if let Some(oldest) = out.pop_front() {
                if !self.settle_when_acknowledged(oldest).await? {
                    // The session closed before Kafka acknowledged it: dropping `out` rolls
                    // this claim and the later ones back.
                    return Ok(());
                }
                self.purge_when_due(&mut last_purge).await;
                continue;
            }
            if self.events.is_closed() {
                return Ok(());
            }
            self.idle(wake, &mut last_purge).await;
            more = true;
        }
    }

    /// After a claim: whether it came back full (more rows may be waiting). A batch taken means
    /// the task is busy and claims again by itself, so writers need not notify.
    async fn took(&mut self, taken: &Option<Taken>, limit: usize) -> bool {
        let Some(batch) = taken else {
            return false;
        };
        if let Some(mark) = &mut self.mark {
            mark.give_up().await;
        }
        batch.rows.len() == limit
    }

    /// Whether Kafka acknowledged batch `number` (and so every batch before it).
    fn acknowledged(&self, number: u64) -> bool {
        *self.acknowledged.borrow() >= number
    }

    /// SQLite's claim locks nothing, so a second claim must be told where the batches still
    /// out end: above the last one's highest sequence value. No row below it can be pending
    /// outside those batches: SQLite has one writer at a time, and a new row's rowid is above
    /// every rowid in the table, including the unsettled batches' rows, so a row committed
    /// after a claim is numbered above it. With nothing out, the claim starts from the oldest
    /// row (so a row that an application numbered itself, below a batch out, waits for a claim
    /// with nothing out: delayed, never skipped). PostgreSQL's and MariaDB's claims skip the
    /// locked rows by themselves.
    ///
    /// `high`: the highest sequence value of the batches claimed and not yet settled, if any.
    fn claim_after(&self, high: Option<i64>) -> Option<i64> {
        if self.outbox.table.backend != DbBackend::Sqlite {
            return None;
        }
        high
    }

    /// How long Kafka has to acknowledge a claimed batch: `claim_timeout`, and on SQLite at
    /// most half the lease, which is not renewed while a batch waits: a batch must end well
    /// within it, or a standby could take over while its copies are still queued.
    fn claim_bound(&self) -> Duration {
        let poll = self.outbox.poll();
        match self.outbox.table.backend {
            DbBackend::Sqlite => poll.claim_timeout.min(poll.lease_ttl / 2),
            _ => poll.claim_timeout,
        }
    }

    /// Claims the oldest pending rows (above `after`, see [`Self::claim_after`]); `None` when
    /// there were none. PostgreSQL and MariaDB claim in a transaction of their own, which holds
    /// the rows' locks until the settle. SQLite reads outside a transaction and writes only the
    /// short settle, so the service's writers never wait on Kafka.
    async fn claim(&self, after: Option<i64>) -> Result<Option<Taken>, PollError> {
        let outbox = &self.outbox;
        let (table, shape) = (&outbox.table, &self.shape);
        let poll = outbox.poll();
        let Some(leader) = self.leader.as_ref() else {
            return Err(PollError::LostLeadership);
        };
        let started = Instant::now();
        let (txn, rows) = if table.backend == DbBackend::Sqlite {
            if !leader.holds(&outbox.db, table, poll.lease_ttl).await? {
                return Err(PollError::LostLeadership);
            }
            let claimed = outbox
                .claim(shape, &outbox.db, poll.batch_size, after)
                .await?;
            (None, claimed)
        } else {
            // READ COMMITTED on MariaDB: its default (REPEATABLE READ) would take gap locks on
            // the index and stall the service's inserts for the length of a Kafka round trip.
            let isolation =
                (table.backend == DbBackend::MySql).then_some(IsolationLevel::ReadCommitted);
            let txn = outbox.db.begin_with_config(isolation, None).await?;
            if !leader.holds(&txn, table, poll.lease_ttl).await? {
                return Err(PollError::LostLeadership);
            }
            let rows = outbox.claim(shape, &txn, poll.batch_size, after).await?;
            if rows.is_empty() {
                txn.commit().await?;
                return Ok(None);
            }
            (Some(txn), rows)
        };
        let Some(high) = outbox.highest(shape, &rows)? else {
            return Ok(None);
        };
        Ok(Some(Taken {
            txn,
            high,
            rows,
            claimed_in: started.elapsed(),
            deadline: tokio::time::Instant::now() + self.claim_bound(),
        }))
    }

    /// Hands a claimed batch to the pipeline, whole, within its claim's bound.
    async fn ship_taken(&self, taken: Taken) -> Result<Claim, PollError> {
        let shipping = Instant::now();
        // An error drops `taken.txn`, which rolls the claim back: the rows stay for the next try.
        let claimed = self.outbox.decode(&self.shape, taken.rows)?;
        let settle = self.outbox.settle_of(&self.shape, &claimed);
        let rows = claimed.len();
        let number = tokio::time::timeout_at(taken.deadline, self.ship(claimed))
            .await
            .map_err(|_| PollError::ClaimTimeout(self.claim_bound()))??;
        tracing::debug!(
            batch = number,
            rows,
            claim_ms = taken.claimed_in.as_secs_f64() * 1e3,
            ship_ms = shipping.elapsed().as_secs_f64() * 1e3,
            "claimed and shipped"
        );
        Ok(Claim {
            number,
            txn: taken.txn,
            settle,
            rows,
            high: taken.high,
            deadline: taken.deadline,
            shipped: Instant::now(),
        })
    }

    /// Waits until Kafka acknowledged `claim` (within its `claim_timeout`), then settles it;
    /// false, settling nothing, when the session closed before the acknowledgement.
    async fn settle_when_acknowledged(&mut self, claim: Claim) -> Result<bool, PollError> {
        let number = claim.number;
        let bound = self.claim_bound();
        let wait_started = Instant::now();
        let waiting = tokio::select! {
            acked = tokio::time::timeout_at(claim.deadline, self.acknowledged.wait_for(|acked| *acked >= number)) => {
                acked
                    .map_err(|_| PollError::ClaimTimeout(bound))?
                    .map_err(|_| PollError::Ended)
                    .map(drop)
            }
            _ = self.events.closed() => Err(PollError::Ended),
        };
        // The pipeline acknowledges what Kafka delivered before it closes the session.
        if waiting.is_err() && !self.acknowledged(number) {
            return Ok(false);
        }
        self.settle(claim, wait_started.elapsed()).await?;
        Ok(true)
    }

    /// Settles `claim`, which Kafka acknowledged, and commits its transaction. `waited`: how
    /// long the claim loop waited for the acknowledgement with nothing else to do (logged).
    async fn settle(&self, claim: Claim, waited: Duration) -> Result<(), PollError> {
        let outbox = &self.outbox;
        let since_shipped = claim.shipped.elapsed();
        let settling = Instant::now();
        let settled_in = match claim.txn {
            Some(txn) => {
                outbox.settle(&txn, &self.shape, &claim.settle).await?;
                let settled_in = settling.elapsed();
                txn.commit().await?;
                settled_in
            }
            None => {
                outbox
                    .settle(&outbox.db, &self.shape, &claim.settle)
                    .await?;
                settling.elapsed()
            }
        };
        tracing::debug!(
            batch = claim.number,
            rows = claim.rows,
            since_shipped_ms = since_shipped.as_secs_f64() * 1e3,
            // What the claim loop spent waiting, with nothing else to do: the rest of the time
            // since the hand-off went to the claims pipelined meanwhile.
            waited_ms = waited.as_secs_f64() * 1e3,
            settle_ms = settled_in.as_secs_f64() * 1e3,
            commit_ms = (settling.elapsed() - settled_in).as_secs_f64() * 1e3,
            "settled"
        );
        Ok(())
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
        let settled = ids.len();
        outbox.settle(conn, &self.shape, &Settle::Ids(ids)).await?;
        Ok(settled)
    }

    /// Yields `claimed` (in sequence order) as one transaction, numbered; the batch's number.
    /// Kafka's acknowledgement of it is waited for apart.
    async fn ship(&self, claimed: Vec<Claimed>) -> Result<u64, PollError> {
        let number = self.batches.fetch_add(1, Ordering::Relaxed) + 1;
        let outbox = self.outbox.clone();
        let batch = Batch {
            number,
            rows: BatchRows::of(&claimed, |r| {
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
        .chain(claimed.into_iter().map(|c| SourceEvent::Event(c.record)))
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
        Ok(number)
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
                    value: "outbox".into(),
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
