//! Per-aggregate order follows the commit order, not the `timestamp` column (issue 9, item 5),
//! on the real PostgreSQL, MariaDB and SQLite and the real Kafka.
//!
//! Eight writers, as services write: each transaction locks its aggregate's business row
//! (`FOR UPDATE`; SQLite serializes writers), bumps the aggregate's counter under that lock,
//! inserts the event carrying the counter, holds a random while, and commits. So the counter is
//! the commit order of the aggregate's events. Half the writers leave `timestamp` to the
//! database (PostgreSQL's `now()` is the transaction's start, which can precede a transaction
//! that commits first), the others write it from clocks that step between +2 s and -2 s from one
//! transaction to the next. Kafka must show each aggregate's events in counter order.

mod common;
mod poll_support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::Reader;
use poll_support::*;
use sea_orm::{
    ConnectionTrait, DatabaseTransaction, DbBackend, Statement, TransactionTrait, Value,
};

const WAIT: Duration = Duration::from_secs(120);
const WRITERS: u64 = 8;
const TRANSACTIONS: u64 = 30;
const AGGREGATES: u64 = 4;

/// Debezium's outbox columns, a `timestamp` the database fills in, an extra column, and the
/// business table whose rows the writers lock.
fn ddl(db: Backend, fx: &PollFixture) -> [String; 2] {
    let (t, agg) = (fx.q(&fx.name), fx.q(&format!("{}_agg", fx.name)));
    let outbox = match db {
        Backend::Postgres => format!(
            "CREATE TABLE {t} (id uuid NOT NULL PRIMARY KEY, aggregatetype varchar(255) NOT NULL, \
             aggregateid varchar(255) NOT NULL, type varchar(255) NOT NULL, payload jsonb, \
             \"timestamp\" timestamptz NOT NULL DEFAULT now(), tenant text)"
        ),
        Backend::MariaDb => format!(
            "CREATE TABLE {t} (id char(36) NOT NULL PRIMARY KEY, aggregatetype varchar(255) NOT NULL, \
             aggregateid varchar(255) NOT NULL, type varchar(255) NOT NULL, payload json, \
             `timestamp` datetime(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), tenant varchar(64))"
        ),
        Backend::Sqlite => format!(
            "CREATE TABLE {t} (id text NOT NULL PRIMARY KEY, aggregatetype varchar(255) NOT NULL, \
             aggregateid varchar(255) NOT NULL, type varchar(255) NOT NULL, payload text, \
             \"timestamp\" text NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')), tenant text)"
        ),
    };
    let business = format!(
        "CREATE TABLE {agg} (id varchar(64) NOT NULL PRIMARY KEY, counter integer NOT NULL)"
    );
    [outbox, business]
}

/// One event as its writer committed it.
#[derive(Debug, Clone)]
struct Committed {
    aggregate: String,
    n: i64,
    id: String,
    /// The client's `timestamp`, or None when the database set it.
    client_time: Option<DateTime<Utc>>,
}

fn value(db: Backend, at: DateTime<Utc>) -> Value {
    match db {
        Backend::Postgres => at.into(),
        Backend::MariaDb => at.naive_utc().into(),
        Backend::Sqlite => at.format("%Y-%m-%d %H:%M:%S%.3f").to_string().into(),
    }
}

/// One writer transaction on `aggregate`: lock, count, insert, hold, commit.
async fn write_one(
    fx: &PollFixture,
    txn: &DatabaseTransaction,
    aggregate: &str,
    skew: Option<chrono::Duration>,
) -> Committed {
    let backend = fx.db.get_database_backend();
    let p = |n: usize| match backend {
        DbBackend::Postgres => format!("${n}"),
        _ => "?".to_owned(),
    };
    let agg = fx.q(&format!("{}_agg", fx.name));
    let n: i64 = if fx.db_kind == Backend::Sqlite {
        // SQLite: the first write takes the database's write lock, which serializes writers.
        let bump = format!("UPDATE {agg} SET counter = counter + 1 WHERE id = {}", p(1));
        txn.execute_raw(Statement::from_sql_and_values(
            backend,
            bump,
            [aggregate.into()],
        ))
        .await
        .expect("bump the counter");
        let read = format!("SELECT counter FROM {agg} WHERE id = {}", p(1));
        let row = txn
            .query_one_raw(Statement::from_sql_and_values(
                backend,
                read,
                [aggregate.into()],
            ))
            .await
            .expect("read the counter")
            .expect("the aggregate's row");
        row.try_get_by_index::<i32>(0).expect("counter").into()
    } else {
        let lock = format!("SELECT counter FROM {agg} WHERE id = {} FOR UPDATE", p(1));
        let row = txn
            .query_one_raw(Statement::from_sql_and_values(
                backend,
                lock,
                [aggregate.into()],
            ))
            .await
            .expect("lock the aggregate")
            .expect("the aggregate's row");
        let n = i64::from(row.try_get_by_index::<i32>(0).expect("counter")) + 1;
        let bump = format!("UPDATE {agg} SET counter = {} WHERE id = {}", p(1), p(2));
        txn.execute_raw(Statement::from_sql_and_values(
            backend,
            bump,
            [(n as i32).into(), aggregate.into()],
        ))
        .await
        .expect("bump the counter");
        n
    };
    let id = uuid::Uuid::now_v7();
    let id_value: Value = match fx.db_kind {
        Backend::Postgres => id.into(),
        _ => id.to_string().into(),
    };
    let payload = serde_json::json!({ "aggregate": aggregate, "n": n }).to_string();
    let payload_param = match fx.db_kind {
        Backend::Postgres => format!("CAST({} AS jsonb)", p(3)),
        _ => p(3),
    };
    let client_time = skew.map(|skew| Utc::now() + skew);
    let t = fx.q(&fx.name);
    let (columns, values) = match client_time {
        Some(_) => (format!(", {}", fx.q("timestamp")), format!(", {}", p(4))),
        None => (String::new(), String::new()),
    };
    let sql = format!(
        "INSERT INTO {t} (id, aggregatetype, aggregateid, type, payload, tenant{columns}) \
         VALUES ({}, 'Order', {}, 'OrderChanged', {payload_param}, 'acme'{values})",
        p(1),
        p(2)
    );
    let mut params = vec![id_value, aggregate.into(), payload.into()];
    if let Some(at) = client_time {
        params.push(value(fx.db_kind, at));
    }
    txn.execute_raw(Statement::from_sql_and_values(backend, sql, params))
        .await
        .expect("insert the event");
    Committed {
        aggregate: aggregate.to_owned(),
        n,
        id: id.to_string(),
        client_time,
    }
}

async fn kafka_order_is_commit_order(db: Backend) {
    let fx = PollFixture::bare(db, "poll_order").await;
    for statement in ddl(db, &fx) {
        fx.exec(&statement).await;
    }
    let agg = fx.q(&format!("{}_agg", fx.name));
    for a in 0..AGGREGATES {
        fx.exec(&format!(
            "INSERT INTO {agg} (id, counter) VALUES ('agg-{a}', 0)"
        ))
        .await;
    }
    let mut config = fx.config();
    config.source.poll.batch_size = 50;
    fx.setup(config.clone()).await;
    let mut reader = Reader::new(&[&fx.topic()]);

    let fx = Arc::new(fx);
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let fx = fx.clone();
        writers.push(tokio::spawn(async move {
            let mut dice = Dice::new(w + 1);
            let mut committed = Vec::new();
            for t in 0..TRANSACTIONS {
                // Even writers leave `timestamp` to the database; odd ones stamp it with a clock
                // that steps between 2 s ahead and 2 s behind from one transaction to the next
                // (a clock corrected by NTP, say). The steps inside one writer make a later
                // commit carry an earlier time whatever order SQLite's lock lets the writers
                // in: with a fixed skew per writer, a run where one writer finished before the
                // other began had no inversion at all.
                let skew = (w % 2 == 1)
                    .then(|| chrono::Duration::seconds(if (w / 2 + t) % 2 == 0 { 2 } else { -2 }));
                let aggregate = format!("agg-{}", dice.below(AGGREGATES));
                let txn = fx.db.begin().await.expect("begin");
                // The transaction starts (PostgreSQL's `now()`) before it waits for the lock.
                tokio::time::sleep(Duration::from_millis(dice.below(15))).await;
                let event = write_one(&fx, &txn, &aggregate, skew).await;
                tokio::time::sleep(Duration::from_millis(dice.below(20))).await;
                txn.commit().await.expect("commit");
                committed.push(event);
            }
            committed
        }));
    }
    // The relay starts while the writers write, and finds a backlog.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let relay = InProcess::start(config).await;

    let mut committed: Vec<Committed> = Vec::new();
    for writer in writers {
        committed.extend(writer.await.expect("writer"));
    }
    let total = committed.len();
    reader
        .read_until(
            WAIT,
            |m| {
                m.iter()
                    .map(|m| m.id())
                    .collect::<std::collections::HashSet<_>>()
                    .len()
                    >= total
            },
            || format!("{db:?}: {total} events"),
        )
        .await;
    fx.wait_empty(WAIT).await;
    relay.stop().await;

    // The commit order of each aggregate, by its counter.
    let mut by_aggregate: HashMap<String, Vec<&Committed>> = HashMap::new();
    for event in &committed {
        by_aggregate
            .entry(event.aggregate.clone())
            .or_default()
            .push(event);
    }
    // The workload must be one that ordering by `timestamp` gets wrong: some aggregate has a
    // later commit with an earlier client timestamp.
    let mut inversions = 0;
    for events in by_aggregate.values_mut() {
        events.sort_by_key(|e| e.n);
        let stamped: Vec<DateTime<Utc>> = events.iter().filter_map(|e| e.client_time).collect();
        inversions += stamped.windows(2).filter(|w| w[1] < w[0]).count();
    }
    assert!(
        inversions > 0,
        "{db:?}: no timestamp inversions; the test would not tell the orders apart"
    );

    let arrivals = first_arrivals(&reader.messages, &fx.topic());
    for (aggregate, events) in &by_aggregate {
        let want: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
        let counters: Vec<i64> = events.iter().map(|e| e.n).collect();
        assert_eq!(
            counters,
            (1..=events.len() as i64).collect::<Vec<_>>(),
            "{db:?}: {aggregate}'s counter"
        );
        let got: Vec<&str> = arrivals
            .get(aggregate)
            .map(|ids| ids.iter().map(String::as_str).collect())
            .unwrap_or_default();
        assert_eq!(
            got, want,
            "{db:?}: Kafka order of {aggregate} vs its commit order"
        );
    }
    eprintln!("{db:?}: {total} events, {inversions} timestamp inversions, order kept");
    fx.exec(&format!("DROP TABLE IF EXISTS {agg}")).await;
    if let Ok(fx) = Arc::try_unwrap(fx) {
        fx.teardown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_order_is_commit_order_postgres() {
    kafka_order_is_commit_order(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_order_is_commit_order_mariadb() {
    kafka_order_is_commit_order(Backend::MariaDb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_order_is_commit_order_sqlite() {
    kafka_order_is_commit_order(Backend::Sqlite).await;
}
