//! Drain benchmark: how fast the relay empties a backlog of committed outbox events.
//!
//! ```text
//! source .services/env
//! cargo run --release -p outbox-relay --example drain -- 100000
//! ```
//!
//! It commits N events (transactions of 100, through `outbox_core::write_events`) into a fresh
//! outbox table, then starts the relay in-process and times from its start until Kafka has
//! acknowledged all N (`acks=all`, idempotent). The slot, publication, table and topic are
//! created for the run and dropped after it.

use std::time::{Duration, Instant};

use outbox_core::{DomainEvent, Outbox, OutboxTable};
use outbox_relay::{Config, Metrics, Relay, admin};
use sea_orm::{Database, TransactionTrait};

use outbox_testkit::Bench;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(100_000);
    let database_url =
        std::env::var("DATABASE_URL").map_err(|_| "DATABASE_URL is not set (PostgreSQL)")?;
    let brokers = std::env::var("KAFKA_BROKERS").map_err(|_| "KAFKA_BROKERS is not set (Kafka)")?;
    let name = format!("bench_{}", std::process::id());

    let mut config = Config {
        database_url: Some(database_url.clone()),
        ..Config::default()
    };
    config.kafka.brokers = Some(brokers);
    config.kafka.topic = format!("{name}.${{routedByValue}}");
    config.source.slot = name.clone();
    config.source.publication = name.clone();
    config.source.table = name.clone();

    let db = Database::connect(&database_url).await?;
    let table = OutboxTable::new(&name);
    outbox_core::migration::create_table(&db, &table).await?;
    admin::setup(&config).await?;

    let outbox = Outbox::new(table.clone());
    let started = Instant::now();
    let mut id = 0;
    while id < n {
        let events: Vec<Bench> = (id..(id + 100).min(n)).map(|id| Bench { id }).collect();
        let txn = db.begin().await?;
        outbox_core::write_events(&txn, &outbox, events.iter().map(|e| e as &dyn DomainEvent))
            .await?;
        txn.commit().await?;
        id += events.len() as u64;
    }
    eprintln!("committed {n} events in {:.2?}", started.elapsed());

    let metrics = Metrics::new();
    let relay = Relay::new(config.clone(), metrics.clone())?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let start = Instant::now();
    let run = tokio::spawn(async move {
        relay
            .run(async {
                let _ = stopped.await;
            })
            .await
    });
    while metrics.published() < n {
        if run.is_finished() {
            return Err("the relay stopped early".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = start.elapsed();
    let _ = stop.send(());
    run.await??;
    println!(
        "drained {n} events in {:.3} s: {:.0} events/s",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64()
    );

    admin::teardown(&config).await?;
    outbox_core::migration::drop_table(&db, &table).await?;
    Ok(())
}
