//! Capped exponential backoff, shared by every retry loop of the relay: the replication
//! session, the poll cycle and the `LISTEN` connection. Each resets it once it makes progress.

use std::time::Duration;

#[derive(Debug)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// The wait before the next attempt; each call doubles the following one, up to the cap.
    pub(crate) fn wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    /// Back to the initial wait, after progress.
    pub(crate) fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(300));
        let waits: Vec<u128> = (0..4).map(|_| b.wait().as_millis()).collect();
        assert_eq!(waits, [100, 200, 300, 300]);
        b.reset();
        assert_eq!(b.wait(), Duration::from_millis(100));
    }
}
