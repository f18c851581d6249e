//! PostgreSQL: the mark a relay holds while it waits for rows, so that the service's writers
//! NOTIFY only then.
//!
//! Why: a transaction that calls `pg_notify` takes a lock at commit that serializes it with
//! every other notifying commit, so the WAL flushes of concurrent writers no longer share one
//! fsync. With the trigger notifying on every insert, 16 writers committing one event each did
//! 2,600 transactions/s instead of 7,500 (`scripts/bench-notify-writes`, BENCHMARKS.md, round 2,
//! part 10). A notification is only of use to a relay that waits; a busy relay claims again by
//! itself.
//!
//! The mark is a session-level advisory lock, exclusive, on a connection of its own, keyed by
//! the channel (`hashtext('outbox-relay')`, `hashtext(<channel>)`). The trigger that `setup`
//! creates tries the same lock shared, for the writer's transaction, without ever waiting:
//! - it fails while the relay holds the mark, or waits for it: the writer notifies;
//! - it succeeds otherwise, and the writer holds it until its commit, without notifying.
//!
//! No wake-up is lost: the relay takes the mark (waiting, at most `lock_timeout`, for the
//! writers that hold the lock shared to commit), then claims once more before it waits for a
//! notification. A writer that did not notify held the shared lock, so it committed before the
//! mark was taken, and that claim sees its rows; every writer after it notifies. The relay
//! gives the mark up as soon as a claim finds rows. If the mark's connection is lost the lock
//! goes with it: writers stop notifying and the poll interval is the wake-up, as when `LISTEN`
//! is lost.

use std::time::Duration;

use sea_orm::sqlx::{Connection as _, PgConnection, PgPool, postgres::PgDatabaseError};

/// The advisory lock's first key, shared with the trigger (`Table::notify_trigger`).
pub(super) const LOCK_CLASS: &str = "outbox-relay";

/// What tells this trigger from an earlier build's, which notified on every insert.
pub(super) const NOTIFY_GUARD: &str = "pg_try_advisory_xact_lock_shared";

/// The relay's mark for one NOTIFY channel.
pub(super) struct WaitMark {
    pool: PgPool,
    channel: String,
    /// How long taking the mark waits for writers in flight; then the relay claims again.
    patience: Duration,
    connection: Option<PgConnection>,
    held: bool,
}

impl WaitMark {
    pub(super) fn new(pool: PgPool, channel: String, patience: Duration) -> WaitMark {
        WaitMark {
            pool,
            channel,
            patience,
            connection: None,
            held: false,
        }
    }

    pub(super) fn held(&self) -> bool {
        self.held
    }

    /// Takes the mark, or stops waiting for it after `patience` while writers hold the lock
    /// shared (they are committing rows): either way the relay claims next, and then waits
    /// for a notification only if the mark is [`WaitMark::held`]. An error leaves no mark held
    /// (the connection is dropped, and the lock with it).
    pub(super) async fn take(&mut self) -> Result<(), sea_orm::sqlx::Error> {
        if self.held {
            return Ok(());
        }
        match self.lock().await {
            Ok(()) => {
                self.held = true;
                Ok(())
            }
            // lock_not_available: `lock_timeout` passed with writers holding the lock shared.
            Err(sea_orm::sqlx::Error::Database(error))
                if error
                    .try_downcast_ref::<PgDatabaseError>()
                    .is_some_and(|e| e.code() == "55P03") =>
            {
                Ok(())
            }
            Err(error) => {
                self.connection = None;
                Err(error)
            }
        }
    }

    async fn lock(&mut self) -> Result<(), sea_orm::sqlx::Error> {
        let connection = match &mut self.connection {
            Some(connection) => connection,
            None => {
                // Out of the pool for good: a session lock must not go back to it.
                let mut connection = self.pool.acquire().await?.detach();
                sea_orm::sqlx::query("SELECT set_config('lock_timeout', $1, false)")
                    .bind(format!("{}ms", self.patience.as_millis().max(1)))
                    .execute(&mut connection)
                    .await?;
                self.connection.insert(connection)
            }
        };
        sea_orm::sqlx::query("SELECT pg_advisory_lock(hashtext($1), hashtext($2))")
            .bind(LOCK_CLASS)
            .bind(&self.channel)
            .execute(&mut *connection)
            .await?;
        Ok(())
    }

    /// Gives the mark up: the relay is busy and claims again by itself.
    pub(super) async fn give_up(&mut self) {
        if !self.held {
            return;
        }
        self.held = false;
        let released = match &mut self.connection {
            Some(connection) => {
                sea_orm::sqlx::query("SELECT pg_advisory_unlock(hashtext($1), hashtext($2))")
                    .bind(LOCK_CLASS)
                    .bind(&self.channel)
                    .execute(&mut *connection)
                    .await
                    .is_ok()
            }
            None => true,
        };
        if !released {
            // Closing the connection releases the lock.
            if let Some(connection) = self.connection.take() {
                let _ = connection.close().await;
            }
        }
    }
}
