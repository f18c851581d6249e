//! The outbox end to end, with zero servers: `cargo run --example quickstart`.
//!
//! 1. An order service (`examples/shop`) writes orders with `#[emits]`: each order row and its
//!    `OrderCreated` event commit in one transaction, into a SQLite file in a temporary folder.
//! 2. The polling relay (`outbox_relay::source::poll`) runs in this process and ships the
//!    committed events to Kafka — here librdkafka's in-process mock cluster — in Debezium's
//!    Outbox Event Router format, deleting each row once Kafka acknowledged it.
//! 3. A Kafka consumer prints what it received: topic, key, headers and value.
//!
//! With `DATABASE_URL` (PostgreSQL, MariaDB/MySQL or SQLite URL) and/or `KAFKA_BROKERS` set, it
//! uses those servers instead.

#[path = "shop/mod.rs"]
mod shop;

use std::collections::HashSet;
use std::error::Error;
use std::io::Write;
use std::time::{Duration, Instant};

use outbox::{Outbox, OutboxTable};
use outbox_relay::Metrics;
use outbox_relay::config::{Config, SourceKind};
use outbox_relay::relay::PollRelay;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ConnectionTrait, Database, Statement, TransactionTrait,
};

/// Where the quickstart runs: `None` means the embedded default.
#[derive(Clone, Debug, Default)]
pub struct Servers {
    /// A database URL; default: a SQLite file in a temporary folder.
    pub database_url: Option<String>,
    /// Kafka bootstrap servers; default: librdkafka's in-process mock cluster.
    pub kafka_brokers: Option<String>,
}

/// What the run did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Events the service committed to the outbox.
    pub written: usize,
    /// Of those, events the consumer received.
    pub received: usize,
}

/// The topics of the shop's two aggregates, as the Event Router names them by default.
const TOPICS: [&str; 2] = ["outbox.event.Order", "outbox.event.Customer"];
/// The quickstart's own outbox table: on a real database the relay below ships and deletes only
/// what the quickstart wrote, never another service's `outbox`.
const TABLE: &str = "quickstart_outbox";

#[cfg_attr(test, allow(dead_code))]
#[tokio::main]
async fn main() -> std::process::ExitCode {
    let servers = Servers {
        database_url: std::env::var("DATABASE_URL").ok().filter(|v| !v.is_empty()),
        kafka_brokers: std::env::var("KAFKA_BROKERS")
            .ok()
            .filter(|v| !v.is_empty()),
    };
    match run(servers, &mut std::io::stdout()).await {
        Ok(_) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("quickstart failed: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The whole quickstart, printing to `out`.
pub async fn run(servers: Servers, out: &mut dyn Write) -> Result<Summary, Box<dyn Error>> {
    let started = Instant::now();
    let folder = std::env::temp_dir().join(format!("outbox-quickstart-{}", uuid::Uuid::now_v7()));
    let database_url = match servers.database_url {
        Some(url) => url,
        None => {
            std::fs::create_dir_all(&folder)?;
            format!("sqlite://{}?mode=rwc", folder.join("shop.sqlite").display())
        }
    };
    // The mock cluster lives as long as this function: the producer and consumer talk to it.
    let mut mock = None;
    let brokers = match servers.kafka_brokers {
        Some(brokers) => brokers,
        None => {
            let cluster = MockCluster::new(1)?;
            for topic in TOPICS.iter().chain(&["outbox.dlq"]) {
                cluster.create_topic(topic, 1, 1)?;
            }
            mock.insert(cluster).bootstrap_servers()
        }
    };
    let kafka_name = if mock.is_some() {
        "in-process mock Kafka"
    } else {
        brokers.as_str()
    };
    writeln!(out, "database: {database_url}")?;
    writeln!(out, "kafka:    {kafka_name}")?;

    // 1. The service: three orders, one shipped, and a customer (an aggregate root whose
    //    entity listener writes a snapshot event on save).
    let db = Database::connect(&database_url).await?;
    let table = OutboxTable::new(TABLE);
    // `#[emits]` and the entity listener write to the process-wide outbox.
    if let Err(installed) = Outbox::new(table.clone()).install()
        && installed.table != table
    {
        return Err(format!("another outbox table is installed: {}", installed.table).into());
    }
    shop::create_schema(&db, &table).await?;
    // Events left by an interrupted earlier run are shipped too, but this run follows its own.
    let before = pending_ids(&db).await?;
    let mut orders = Vec::new();
    for customer_id in 1..=3 {
        let txn = db.begin().await?;
        let order = shop::place_order(
            &txn,
            shop::PlaceOrder {
                customer_id,
                lines: shop::three_lines(),
            },
        )
        .await?;
        txn.commit().await?;
        orders.push(order);
    }
    if let Some(first) = orders.first() {
        let txn = db.begin().await?;
        shop::ship_order(&txn, first.id, "DHL").await?;
        txn.commit().await?;
    }
    let txn = db.begin().await?;
    shop::customer::ActiveModel {
        id: Set((uuid::Uuid::now_v7().as_u64_pair().1 & 0x7fff_ffff) as i64),
        name: Set("Ada".into()),
        email: Set("ada@example.com".into()),
    }
    .insert(&txn)
    .await?;
    txn.commit().await?;
    let written: HashSet<String> = pending_ids(&db)
        .await?
        .difference(&before)
        .cloned()
        .collect();
    writeln!(
        out,
        "wrote {} events through #[emits] and the Customer entity listener",
        written.len()
    )?;

    // 2. The relay, in this process, with the Event Router's defaults.
    let mut config = Config {
        database_url: Some(database_url.clone()),
        ..Config::default()
    };
    config.source.kind = SourceKind::Poll;
    config.source.table = TABLE.to_owned();
    config.source.poll.interval = Duration::from_millis(50);
    config.kafka.brokers = Some(brokers.clone());
    config.kafka.additional_placement = vec!["type:header:eventType".to_owned()];
    let relay = PollRelay::new(config, db.clone(), Metrics::new())?;
    relay.setup().await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let relaying = tokio::spawn(async move {
        let result = relay
            .run(async {
                stopped.await.ok();
            })
            .await;
        (result, relay.status())
    });

    // 3. A consumer, printing each of this run's events.
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", format!("quickstart-{}", uuid::Uuid::now_v7()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&TOPICS)?;
    let mut received = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while received.len() < written.len() && Instant::now() < deadline {
        let Ok(message) = tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await
        else {
            continue;
        };
        let message = match message {
            Ok(message) => message,
            // A real broker creates the topics on the relay's first send.
            Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::UnknownTopicOrPartition) => {
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let mut headers = Vec::new();
        let mut id = None;
        if let Some(list) = message.headers() {
            for header in list.iter() {
                let value = String::from_utf8_lossy(header.value.unwrap_or_default()).into_owned();
                if header.key == "id" {
                    id = Some(value.clone());
                }
                headers.push(format!("{}={value}", header.key));
            }
        }
        let Some(id) = id.filter(|id| written.contains(id)) else {
            continue; // another run's event on a shared Kafka
        };
        if !received.insert(id) {
            continue; // a redelivery: consumers dedupe on the `id` header
        }
        let key = message
            .key()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        let value = message
            .payload()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        writeln!(out, "received  topic={}  key={key}", message.topic())?;
        writeln!(out, "          headers: {}", headers.join(", "))?;
        writeln!(out, "          value:   {value}")?;
    }
    stop.send(()).ok();
    let (result, status) = relaying.await?;
    result?;
    let left = pending_ids(&db).await?.intersection(&written).count();
    let summary = Summary {
        written: written.len(),
        received: received.len(),
    };
    writeln!(
        out,
        "summary: {} events written, {} relayed, {} received by the consumer, {left} left in the outbox, in {} ms",
        summary.written,
        status.published,
        summary.received,
        started.elapsed().as_millis()
    )?;
    db.close().await?;
    if folder.exists() {
        std::fs::remove_dir_all(&folder).ok();
    }
    if summary.received < summary.written {
        return Err(format!(
            "only {} of {} events arrived within 30 s",
            summary.received, summary.written
        )
        .into());
    }
    Ok(summary)
}

/// The ids of the events still in the outbox table.
async fn pending_ids(db: &sea_orm::DatabaseConnection) -> Result<HashSet<String>, sea_orm::DbErr> {
    let backend = db.get_database_backend();
    let text = if backend == sea_orm::DbBackend::MySql {
        "CHAR"
    } else {
        "TEXT"
    };
    let sql = format!(
        "SELECT CAST({id} AS {text}) FROM {table}",
        id = outbox::migration::quote(backend, "id"),
        table = outbox::migration::quote(backend, TABLE),
    );
    let rows = db
        .query_all_raw(Statement::from_string(backend, sql))
        .await?;
    rows.iter()
        .map(|row| row.try_get_by_index::<String>(0))
        .collect()
}
