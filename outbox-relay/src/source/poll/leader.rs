//! One active relay per outbox table, with failover: per-aggregate order needs a single shipper.
//!
//! - PostgreSQL: a session advisory lock, `pg_try_advisory_lock(k1, k2)`, held on a connection
//!   of its own. MariaDB/MySQL: `GET_LOCK(name, 0)`, likewise. When the leader dies, its
//!   connection closes, the server releases the lock, and a standby takes it on its next try.
//! - SQLite (one host, one writer): a lease row in `<table>_relay_lease`, renewed before every
//!   claim and taken over once it has expired.
//!
//! The claim is fenced: inside the claiming transaction the leader checks that its lock session
//! still holds the lock (`pg_locks` / `IS_USED_LOCK`) or renews its lease, so a relay whose lock
//! connection died claims nothing. What the fence cannot stop is a batch already in flight when
//! the leadership moves (the lock connection dies mid-batch, or on SQLite a batch outlives
//! `lease_ttl`, e.g. waiting out a Kafka outage up to `claim_timeout`): its late copies may then
//! interleave with the new leader's. So on SQLite a claim waits for Kafka at most half of
//! `lease_ttl` (below `claim_timeout` if that is shorter), whatever the producer's
//! `message.timeout.ms`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sea_orm::sqlx::{self, Connection};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement};

use super::PollError;
use super::store::Table;

/// The leadership of one relay over one outbox table.
pub(crate) enum Leader {
    Postgres {
        conn: sqlx::PgConnection,
        pid: i32,
    },
    MySql {
        conn: sqlx::MySqlConnection,
        id: u64,
    },
    Sqlite {
        holder: String,
    },
}

/// The advisory lock keys of a table: a constant class and a hash of `schema.table`.
fn pg_keys(table: &Table) -> (i32, i32) {
    // "ob" for outbox; both keys are kept positive so that they compare as oids in `pg_locks`.
    (0x6f62, (fnv1a(&table.key()) & 0x7fff_ffff) as i32)
}

/// The `GET_LOCK` name (at most 64 characters).
fn mysql_lock(table: &Table) -> String {
    format!("outbox-relay:{:016x}", fnv1a(&table.key()))
}

/// FNV-1a: a stable hash, the same in every relay build.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Leader {
    /// Takes the leadership if no other relay holds it; `None` when one does.
    pub async fn try_acquire(
        db: &DatabaseConnection,
        table: &Table,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Leader>, PollError> {
        match table.backend {
            DbBackend::Postgres => {
                let mut conn = db.get_postgres_connection_pool().acquire().await?.detach();
                let (k1, k2) = pg_keys(table);
                let (locked, pid): (bool, i32) =
                    sqlx::query_as("SELECT pg_try_advisory_lock($1, $2), pg_backend_pid()")
                        .bind(k1)
                        .bind(k2)
                        .fetch_one(&mut conn)
                        .await?;
                if locked {
                    Ok(Some(Leader::Postgres { conn, pid }))
                } else {
                    conn.close().await.ok();
                    Ok(None)
                }
            }
            DbBackend::MySql => {
                let mut conn = db.get_mysql_connection_pool().acquire().await?.detach();
                let (locked, id): (Option<i64>, u64) =
                    sqlx::query_as("SELECT GET_LOCK(?, 0), CONNECTION_ID()")
                        .bind(mysql_lock(table))
                        .fetch_one(&mut conn)
                        .await?;
                if locked == Some(1) {
                    Ok(Some(Leader::MySql { conn, id }))
                } else {
                    conn.close().await.ok();
                    Ok(None)
                }
            }
            DbBackend::Sqlite => {
                let lease = table.lease_table();
                db.execute_unprepared(&format!(
                    "CREATE TABLE IF NOT EXISTS {lease} (name TEXT NOT NULL PRIMARY KEY, holder TEXT NOT NULL, expires_at INTEGER NOT NULL)"
                ))
                .await?;
                db.execute_raw(Statement::from_sql_and_values(
                    DbBackend::Sqlite,
                    format!(
                        "INSERT OR IGNORE INTO {lease} (name, holder, expires_at) VALUES (?, '', 0)"
                    ),
                    [table.key().into()],
                ))
                .await?;
                let now = now_millis();
                // One statement, so SQLite's write lock makes the take-over atomic.
                let taken = db
                    .execute_raw(Statement::from_sql_and_values(
                        DbBackend::Sqlite,
                        format!(
                            "UPDATE {lease} SET holder = ?, expires_at = ? WHERE name = ? AND (holder = ? OR expires_at < ?)"
                        ),
                        [
                            holder.into(),
                            (now + millis(ttl)).into(),
                            table.key().into(),
                            holder.into(),
                            now.into(),
                        ],
                    ))
                    .await?
                    .rows_affected();
                Ok((taken == 1).then(|| Leader::Sqlite {
                    holder: holder.to_owned(),
                }))
            }
            other => Err(PollError::Unsupported(format!("{other:?}"))),
        }
    }

    /// Whether this relay still leads; run inside the claiming transaction (`conn`). On SQLite
    /// it renews the lease for `ttl`.
    pub async fn holds<C: ConnectionTrait>(
        &self,
        conn: &C,
        table: &Table,
        ttl: Duration,
    ) -> Result<bool, DbErr> {
        let (sql, values): (String, Vec<sea_orm::Value>) = match self {
            Leader::Postgres { pid, .. } => {
                let (k1, k2) = pg_keys(table);
                (
                    "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = $1 \
                     AND classid = CAST($2 AS bigint)::oid AND objid = CAST($3 AS bigint)::oid AND objsubid = 2"
                        .to_owned(),
                    vec![(*pid).into(), i64::from(k1).into(), i64::from(k2).into()],
                )
            }
            Leader::MySql { id, .. } => (
                "SELECT CAST(COALESCE(IS_USED_LOCK(?) = ?, 0) AS SIGNED)".to_owned(),
                vec![mysql_lock(table).into(), (*id).into()],
            ),
            Leader::Sqlite { holder } => {
                let now = now_millis();
                let renewed = conn
                    .execute_raw(Statement::from_sql_and_values(
                        DbBackend::Sqlite,
                        format!(
                            "UPDATE {} SET expires_at = ? WHERE name = ? AND holder = ? AND expires_at >= ?",
                            table.lease_table()
                        ),
                        [(now + millis(ttl)).into(), table.key().into(), holder.as_str().into(), now.into()],
                    ))
                    .await?
                    .rows_affected();
                return Ok(renewed == 1);
            }
        };
        let row = conn
            .query_one_raw(Statement::from_sql_and_values(table.backend, sql, values))
            .await?;
        Ok(row
            .map(|r| r.try_get_by_index::<i64>(0))
            .transpose()?
            .unwrap_or(0)
            > 0)
    }

    /// Gives the leadership up: the lock connection closes (which releases the lock), or the
    /// lease expires now, so a standby takes over at once.
    pub async fn release(self, db: &DatabaseConnection, table: &Table) {
        let result = match self {
            Leader::Postgres { conn, .. } => conn.close().await.map_err(|e| e.to_string()),
            Leader::MySql { conn, .. } => conn.close().await.map_err(|e| e.to_string()),
            Leader::Sqlite { holder } => db
                .execute_raw(Statement::from_sql_and_values(
                    DbBackend::Sqlite,
                    format!(
                        "UPDATE {} SET expires_at = 0 WHERE name = ? AND holder = ?",
                        table.lease_table()
                    ),
                    [table.key().into(), holder.into()],
                ))
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
        };
        if let Err(error) = result {
            tracing::debug!(%error, "releasing the leadership (it lapses on its own)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_names_are_stable_and_fit() {
        let t = Table::new(DbBackend::MySql, Some("shop"), &"x".repeat(200), false);
        let name = mysql_lock(&t);
        assert!(name.len() <= 64, "{name}");
        assert_eq!(name, mysql_lock(&t.clone()));
        let (k1, k2) = pg_keys(&Table::new(DbBackend::Postgres, None, "outbox", false));
        assert!(k1 > 0 && k2 >= 0);
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
    }
}
