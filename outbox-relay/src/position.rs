//! The acknowledged position: which source position may be acknowledged to the source.
//!
//! Invariant: the confirmed position only ever moves to the end of a transaction such that it
//! and every transaction before it (in commit order) had all of its events acknowledged by
//! Kafka (delivered, or dead-lettered). Acknowledgements may come back in any order; the
//! confirmed position moves over the acknowledged prefix only. Whatever lies past it is read
//! again after a crash: duplicates, never loss.

use std::collections::VecDeque;

/// A transaction's handle in the [`Position`].
pub type TxId = u64;

#[derive(Debug)]
struct Tx<P> {
    /// None while the transaction's events are still being read.
    end: Option<P>,
    outstanding: usize,
    commit_time_micros: i64,
}

/// Tracks in-flight transactions and the confirmed position. Positions are the source's, and
/// come in the order the source yields them, which is commit order.
#[derive(Debug)]
pub struct Position<P> {
    txs: VecDeque<Tx<P>>,
    /// The id of `txs[0]`.
    first: TxId,
    confirmed: Option<P>,
}

impl<P: Clone + PartialEq> Position<P> {
    /// Starts at `confirmed` (the position the session resumes from; None: the source's own).
    pub fn new(confirmed: Option<P>) -> Position<P> {
        Position {
            txs: VecDeque::new(),
            first: 0,
            confirmed,
        }
    }

    /// The position that is safe to acknowledge.
    pub fn confirmed(&self) -> Option<&P> {
        self.confirmed.as_ref()
    }

    /// Whether any transaction is read but not wholly acknowledged.
    pub fn is_idle(&self) -> bool {
        self.txs.is_empty()
    }

    /// Commit time of the oldest unacknowledged transaction (Unix epoch microseconds).
    pub fn oldest_pending_commit(&self) -> Option<i64> {
        self.txs.front().map(|t| t.commit_time_micros)
    }

    /// A transaction begins.
    pub fn begin(&mut self, commit_time_micros: i64) -> TxId {
        self.txs.push_back(Tx {
            end: None,
            outstanding: 0,
            commit_time_micros,
        });
        self.first + self.txs.len() as u64 - 1
    }

    /// One more event of `tx` is on its way to Kafka.
    pub fn sent(&mut self, tx: TxId) {
        if let Some(t) = self.get(tx) {
            t.outstanding += 1;
        }
    }

    /// All of `tx`'s events have been read; it ends at `end`.
    pub fn commit(&mut self, tx: TxId, end: P) -> Option<P> {
        if let Some(t) = self.get(tx) {
            t.end = Some(end);
        }
        self.advance()
    }

    /// Kafka acknowledged one event of `tx`. Returns the new confirmed position if it moved.
    pub fn acked(&mut self, tx: TxId) -> Option<P> {
        if let Some(t) = self.get(tx) {
            t.outstanding = t.outstanding.saturating_sub(1);
        }
        self.advance()
    }

    /// A keepalive reported the source's end: with nothing pending, everything before it was
    /// either shipped or not outbox data, so it may be confirmed (the heartbeat).
    pub fn idle_at(&mut self, end: P) -> Option<P> {
        if self.txs.is_empty() && self.confirmed.as_ref() != Some(&end) {
            self.confirmed = Some(end.clone());
            return Some(end);
        }
        None
    }

    fn get(&mut self, tx: TxId) -> Option<&mut Tx<P>> {
        let index = tx.checked_sub(self.first)?;
        self.txs.get_mut(usize::try_from(index).ok()?)
    }

    fn advance(&mut self) -> Option<P> {
        let mut moved = None;
        while let Some(front) = self.txs.front() {
            if front.outstanding > 0 || front.end.is_none() {
                break;
            }
            moved = self.txs.pop_front().and_then(|tx| tx.end);
            self.first += 1;
        }
        if let Some(end) = &moved {
            self.confirmed = Some(end.clone());
        }
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn confirms_only_the_acknowledged_prefix() {
        let mut p = Position::new(Some(10u64));
        let a = p.begin(0);
        p.sent(a);
        p.sent(a);
        assert_eq!(p.commit(a, 100), None);
        let b = p.begin(0);
        p.sent(b);
        assert_eq!(p.commit(b, 200), None);
        // b's event is acknowledged first: nothing moves, a is not done.
        assert_eq!(p.acked(b), None);
        assert_eq!(p.acked(a), None);
        assert_eq!(p.acked(a), Some(200));
        assert!(p.is_idle());
        assert_eq!(p.idle_at(200), None);
        assert_eq!(p.idle_at(300), Some(300));
    }

    #[test]
    fn an_open_transaction_holds_the_position() {
        let mut p = Position::new(Some(0u64));
        let a = p.begin(0);
        p.sent(a);
        assert_eq!(p.acked(a), None);
        assert_eq!(p.idle_at(50), None);
        assert_eq!(p.commit(a, 40), Some(40));
    }

    proptest! {
        /// Whatever the acknowledgement order, the confirmed LSN never passes a transaction with
        /// an unacknowledged event, and ends at the last commit.
        #[test]
        fn never_passes_an_unacked_event(sizes in prop::collection::vec(0usize..4, 1..12), seed in any::<u64>()) {
            let mut p = Position::new(Some(0u64));
            let mut pending = Vec::new();
            for (i, n) in sizes.iter().enumerate() {
                let tx = p.begin(0);
                for _ in 0..*n { p.sent(tx); pending.push((tx, (i as u64 + 1) * 10)); }
                p.commit(tx, (i as u64 + 1) * 10);
            }
            let mut state = seed;
            while !pending.is_empty() {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let (tx, end) = pending.swap_remove((state >> 33) as usize % pending.len());
                p.acked(tx);
                let lowest_unacked = pending.iter().map(|(_, e)| *e).min().unwrap_or(u64::MAX);
                prop_assert!(p.confirmed().copied().unwrap_or(0) < lowest_unacked);
                prop_assert!(p.confirmed().copied().unwrap_or(0) >= end || pending.iter().any(|(_, e)| *e <= end));
            }
            prop_assert_eq!(p.confirmed().copied(), Some(sizes.len() as u64 * 10));
        }
    }
}
