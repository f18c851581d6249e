//! P3, the write overhead of the outbox: the same business transaction (an order plus 3 lines)
//! with and without `#[emits]`, with 1 and with 10 events, against the PostgreSQL of
//! `scripts/services up`. Two shapes of `#[emits]` function: on the caller's
//! `&DatabaseTransaction`, and on `&DatabaseConnection` (`*OwnedTxn`: `#[emits]` begins the
//! transaction and commits it). Both write the events as one bound INSERT of their own before the
//! COMMIT; the `*OwnedTxn` variants show what taking `&DbConn` adds to that. The `*Cte` variants
//! send the events with the order's INSERT (`Events::insert_with`: one statement, a data-modifying
//! CTE), in the caller's transaction, so they have the baseline's round trips. The baseline is the
//! same for both: BEGIN, the order, its lines, COMMIT. Runs are interleaved (A, B, C, A, B, C,
//! ...) so that the machine's noise hits all variants alike; the figure is the ratio of medians.
//!
//! `cargo bench --bench write_overhead [-- ITERATIONS]`

#[path = "../examples/shop/mod.rs"]
mod shop;
use outbox_testkit as support;

use std::time::{Duration, Instant};

use sea_orm::{DatabaseConnection, TransactionTrait};

#[derive(Clone, Copy, Debug)]
enum Variant {
    WithoutOutbox,
    OneEvent,
    TenEvents,
    OneEventOwnedTxn,
    TenEventsOwnedTxn,
    OneEventCte,
    TenEventsCte,
}

async fn run_once(db: &DatabaseConnection, variant: Variant) -> Duration {
    let cmd = shop::PlaceOrder {
        customer_id: 42,
        lines: shop::three_lines(),
    };
    let start = Instant::now();
    let result = match variant {
        // `#[emits]` begins and commits the transaction itself.
        Variant::OneEventOwnedTxn => shop::place_order_on_pool(db, cmd).await,
        Variant::TenEventsOwnedTxn => shop::place_and_ship_on_pool(db, cmd, 9).await,
        // The caller's transaction.
        Variant::WithoutOutbox
        | Variant::OneEvent
        | Variant::TenEvents
        | Variant::OneEventCte
        | Variant::TenEventsCte => {
            let txn = db.begin().await.expect("begin");
            let result = match variant {
                Variant::OneEvent => shop::place_order(&txn, cmd).await,
                Variant::TenEvents => shop::place_and_ship(&txn, cmd, 9).await,
                Variant::OneEventCte => shop::place_order_with_the_order_insert(&txn, cmd).await,
                Variant::TenEventsCte => {
                    shop::place_and_ship_with_the_order_insert(&txn, cmd, 9).await
                }
                _ => shop::place_order_without_outbox(&txn, cmd).await,
            };
            result.expect("the business transaction");
            txn.commit().await.expect("commit");
            return start.elapsed();
        }
    };
    result.expect("the business transaction");
    start.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let iterations: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2000);
    let db = support::postgres().await;
    shop::create_schema(&db, &outbox::OutboxTable::default())
        .await
        .expect("create the schema");
    let variants = [
        Variant::WithoutOutbox,
        Variant::OneEvent,
        Variant::TenEvents,
        Variant::OneEventOwnedTxn,
        Variant::TenEventsOwnedTxn,
        Variant::OneEventCte,
        Variant::TenEventsCte,
    ];
    // Warm up connections, plans and caches.
    for _ in 0..100 {
        for v in variants {
            run_once(&db, v).await;
        }
    }
    let mut samples = vec![Vec::with_capacity(iterations); variants.len()];
    for _ in 0..iterations {
        for (i, v) in variants.into_iter().enumerate() {
            samples[i].push(run_once(&db, v).await);
        }
    }
    let medians: Vec<Duration> = samples.into_iter().map(median).collect();
    let base = medians[0].as_secs_f64();
    println!("write overhead: order + 3 lines, PostgreSQL, {iterations} interleaved runs each");
    println!("| variant | median latency | ratio to no outbox |");
    println!("|---|---|---|");
    for (v, m) in variants.iter().zip(&medians) {
        println!(
            "| {v:?} | {:.3} ms | {:.3}x |",
            m.as_secs_f64() * 1e3,
            m.as_secs_f64() / base
        );
    }
}
