//! The acknowledged position: which LSN may be confirmed to PostgreSQL.
//!
//! Invariant: the confirmed LSN only ever moves to the commit end LSN of a transaction such that
//! it and every transaction before it (in commit order) had all of its events acknowledged by
//! Kafka (delivered, or dead-lettered). Acknowledgements may come back in any order; the
//! confirmed position moves over the acknowledged prefix only. Whatever lies past it is read
//! again after a crash: duplicates, never loss.

use std::collections::VecDeque;

/// A transaction's handle in the [`Position`].
pub type TxId = u64;

#[derive(Debug)]
struct Tx {
    /// None while the transaction's events are still being read.
    end_lsn: Option<u64>,
    outstanding: usize,
    commit_time_micros: i64,
}

/// Tracks in-flight transactions and the confirmed LSN.
#[derive(Debug, Default)]
pub struct Position {
    txs: VecDeque<Tx>,
    /// The id of `txs[0]`.
    first: TxId,
    confirmed: u64,
}

impl Position {
    /// Starts at `confirmed` (the LSN the session resumes from).
    pub fn new(confirmed: u64) -> Position {
        Position {
            confirmed,
            ..Position::default()
        }
    }

    /// The LSN that is safe to confirm.
    pub fn confirmed(&self) -> u64 {
        self.confirmed
    }

    /// Whether any transaction is read but not wholly acknowledged.
    pub fn is_idle(&self) -> bool {
        self.txs.is_empty()
    }

    /// Commit time of the oldest unacknowledged transaction (PostgreSQL epoch microseconds).
    pub fn oldest_pending_commit(&self) -> Option<i64> {
        self.txs.front().map(|t| t.commit_time_micros)
    }

    /// A transaction begins.
    pub fn begin(&mut self, commit_time_micros: i64) -> TxId {
        self.txs.push_back(Tx {
            end_lsn: None,
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

    /// All of `tx`'s events have been read; it ends at `end_lsn`.
    pub fn commit(&mut self, tx: TxId, end_lsn: u64) -> Option<u64> {
        if let Some(t) = self.get(tx) {
            t.end_lsn = Some(end_lsn);
        }
        self.advance()
    }

    /// Kafka acknowledged one event of `tx`. Returns the new confirmed LSN if it moved.
    pub fn acked(&mut self, tx: TxId) -> Option<u64> {
        if let Some(t) = self.get(tx) {
            t.outstanding = t.outstanding.saturating_sub(1);
        }
        self.advance()
    }

    /// A keepalive reported the server's WAL end: with nothing pending, everything before it
    /// was either shipped or not outbox data, so it may be confirmed (the heartbeat).
    pub fn idle_at(&mut self, wal_end: u64) -> Option<u64> {
        if self.txs.is_empty() && wal_end > self.confirmed {
            self.confirmed = wal_end;
            return Some(wal_end);
        }
        None
    }

    fn get(&mut self, tx: TxId) -> Option<&mut Tx> {
        let index = tx.checked_sub(self.first)?;
        self.txs.get_mut(usize::try_from(index).ok()?)
    }

    fn advance(&mut self) -> Option<u64> {
        let before = self.confirmed;
        while let Some(front) = self.txs.front() {
            match front.end_lsn {
                Some(end) if front.outstanding == 0 => {
                    self.confirmed = self.confirmed.max(end);
                    self.txs.pop_front();
                    self.first += 1;
                }
                _ => break,
            }
        }
        (self.confirmed > before).then_some(self.confirmed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn confirms_only_the_acknowledged_prefix() {
        let mut p = Position::new(10);
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
        assert_eq!(p.idle_at(150), None);
        assert_eq!(p.idle_at(300), Some(300));
    }

    #[test]
    fn an_open_transaction_holds_the_position() {
        let mut p = Position::new(0);
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
            let mut p = Position::new(0);
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
                prop_assert!(p.confirmed() < lowest_unacked);
                prop_assert!(p.confirmed() >= end || pending.iter().any(|(_, e)| *e <= end));
            }
            prop_assert_eq!(p.confirmed(), sizes.len() as u64 * 10);
        }
    }
}
