//! The poll source's benchmark: drain rate per database, and commit→consumer latency.
//!
//! ```text
//! source .services/env
//! cargo run --release --example poll_drain -- --db postgres            # or mariadb, sqlite
//! cargo run --release --example poll_drain -- --db postgres --latency  # p99 at 1,000 events/s
//! cargo run --release --example poll_drain -- --db sqlite --sqlite-journal WAL
//! ```
//!
//! `RUST_LOG=outbox_relay::source::poll=debug` prints each batch's claim, hand-off, wait and
//! settle times on stderr. `--batch N` sets `source.poll.batch_size` (default: the relay's own,
//! 4,000).
//!
//! Drain: commits `--events` events (default 100,000; transactions of 100, through
//! `write_events`) into a fresh outbox table, then starts the poll relay in-process and times
//! until Kafka acknowledged all of them and their rows were deleted. `--runs` times (default 3),
//! printing each rate and the median.
//!
//! Latency (PostgreSQL, NOTIFY on): writers commit one event per transaction at `--rate`
//! events/s (default 1,000) for `--seconds` (default 20) while the relay runs; a consumer in the
//! same process takes each event's time from just after its commit returned to its arrival.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use outbox::{DomainEvent, Outbox, OutboxTable};
use outbox_relay::Metrics;
use outbox_relay::config::{Config, SourceKind};
use outbox_relay::relay::PollRelay;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement, TransactionTrait};

type Error = Box<dyn std::error::Error + Send + Sync>;

use outbox_testkit::Bench;

struct Args {
    db: String,
    events: u64,
    runs: usize,
    batch: usize,
    latency: bool,
    rate: u64,
    seconds: u64,
    /// SQLite's `journal_mode` for the drain's database file (`--sqlite-journal WAL`); the
    /// file's default (a rollback journal) without it.
    sqlite_journal: Option<String>,
}

fn args() -> Result<Args, Error> {
    let mut args = Args {
        db: "postgres".into(),
        events: 100_000,
        runs: 3,
        // The relay's own default, so that the drain measures what a user runs.
        batch: Config::default().source.poll.batch_size,
        latency: false,
        rate: 1000,
        seconds: 20,
        sqlite_journal: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--db" => args.db = value()?,
            "--events" => args.events = value()?.parse()?,
            "--runs" => args.runs = value()?.parse()?,
            "--batch" => args.batch = value()?.parse()?,
            "--rate" => args.rate = value()?.parse()?,
            "--seconds" => args.seconds = value()?.parse()?,
            "--sqlite-journal" => args.sqlite_journal = Some(value()?),
            "--latency" => args.latency = true,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    Ok(args)
}

fn env(name: &str) -> Result<String, Error> {
    std::env::var(name).map_err(|_| format!("{name} is not set (source .services/env)").into())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    // The relay's own logs (e.g. `RUST_LOG=outbox_relay::source::poll=debug` for each batch's
    // claim, acknowledgement and settle times), on stderr; none without RUST_LOG.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .init();
    }
    let args = args()?;
    let brokers = env("KAFKA_BROKERS")?;
    let url = match args.db.as_str() {
        "postgres" => env("DATABASE_URL")?,
        "mariadb" | "mysql" => env("MYSQL_URL")?,
        "sqlite" => {
            let path =
                std::env::temp_dir().join(format!("poll_drain_{}.sqlite", std::process::id()));
            format!("sqlite://{}?mode=rwc", path.display())
        }
        other => return Err(format!("--db {other}: expected postgres, mariadb or sqlite").into()),
    };
    let topic = "poll-drain.Bench";
    create_topic(&brokers, topic).await?;
    // The relay binary's own options (SQLite's row buffer among them), so that the drain
    // measures what a user runs.
    let mut options = outbox_relay::connection::connect_options(&url)?;
    options.sqlx_logging(false).max_connections(8);
    let db = Database::connect(options).await?;
    if let (Some(mode), "sqlite") = (&args.sqlite_journal, args.db.as_str()) {
        db.execute_unprepared(&format!("PRAGMA journal_mode={mode}"))
            .await?;
    }
    if args.latency {
        return latency(&args, &db, &url, &brokers, topic).await;
    }
    let mut rates = Vec::new();
    for run in 1..=args.runs {
        let rate = drain(&args, &db, &url, &brokers, run).await?;
        println!(
            "{} run {run}: {} events in {:.2} s = {:.0} events/s",
            args.db,
            args.events,
            args.events as f64 / rate,
            rate
        );
        rates.push(rate);
    }
    rates.sort_by(f64::total_cmp);
    if let Some(median) = rates.get(rates.len() / 2) {
        println!(
            "{} median of {}: {median:.0} events/s",
            args.db,
            rates.len()
        );
    }
    Ok(())
}

fn config(url: &str, brokers: &str, table: &str, batch: usize) -> Config {
    let mut config = Config {
        database_url: Some(url.to_owned()),
        ..Config::default()
    };
    config.source.kind = SourceKind::Poll;
    config.source.table = table.to_owned();
    config.source.poll.batch_size = batch;
    config.kafka.brokers = Some(brokers.to_owned());
    config.kafka.topic = "poll-drain.${routedByValue}".into();
    config
}

/// A fresh outbox table for `config`, and its relay, set up.
async fn prepare(
    db: &DatabaseConnection,
    config: &Config,
) -> Result<(Outbox, Arc<PollRelay>), Error> {
    let outbox = Outbox::new(OutboxTable::new(&config.source.table));
    outbox::migration::create_table(db, &outbox.table).await?;
    let relay = Arc::new(PollRelay::new(config.clone(), db.clone(), Metrics::new())?);
    relay.setup().await?;
    Ok((outbox, relay))
}

/// The relay running on a task of its own.
struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), outbox_relay::RelayError>>,
}

impl Running {
    fn start(relay: Arc<PollRelay>) -> Running {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            relay
                .run(async {
                    stopped.await.ok();
                })
                .await
        });
        Running { stop, task }
    }

    async fn stop(self) -> Result<(), Error> {
        self.stop.send(()).ok();
        self.task.await??;
        Ok(())
    }
}

/// One drain run; returns events/s.
async fn drain(
    args: &Args,
    db: &DatabaseConnection,
    url: &str,
    brokers: &str,
    run: usize,
) -> Result<f64, Error> {
    let table = format!("poll_drain_{}_{run}", std::process::id());
    let (outbox, relay) = prepare(db, &config(url, brokers, &table, args.batch)).await?;
    let mut next = 0;
    while next < args.events {
        let events: Vec<Bench> = (next..(next + 100).min(args.events))
            .map(|id| Bench { id })
            .collect();
        next += events.len() as u64;
        let txn = db.begin().await?;
        outbox::write_events(&txn, &outbox, events.iter().map(|e| e as &dyn DomainEvent)).await?;
        txn.commit().await?;
    }
    let started = Instant::now();
    let running = Running::start(relay.clone());
    while relay.status().published < args.events {
        if running.task.is_finished() {
            return Err("the relay stopped early".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Acknowledged is not settled: the clock stops when the last batch left the table too.
    while pending(db, &table).await? > 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed();
    running.stop().await?;
    outbox::migration::drop_table(db, &outbox.table).await?;
    Ok(args.events as f64 / elapsed.as_secs_f64())
}

/// The rows left in `table` (a plain, unquoted name).
async fn pending(db: &DatabaseConnection, table: &str) -> Result<i64, Error> {
    let sql = format!("SELECT COUNT(*) AS n FROM {table}");
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await?
        .ok_or("COUNT(*) returned no row")?;
    Ok(row.try_get_by_index::<i64>(0)?)
}

/// Commit→consumer latency at a steady rate.
async fn latency(
    args: &Args,
    db: &DatabaseConnection,
    url: &str,
    brokers: &str,
    topic: &str,
) -> Result<(), Error> {
    let table = format!("poll_latency_{}", std::process::id());
    let (outbox, relay) = prepare(db, &config(url, brokers, &table, args.batch)).await?;
    let running = Running::start(relay);

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("poll-latency-{}", std::process::id()))
        .set("auto.offset.reset", "latest")
        .set("fetch.wait.max.ms", "5")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[topic])?;
    // Let the group settle before the clock starts.
    let _ = tokio::time::timeout(Duration::from_secs(5), consumer.recv()).await;

    let committed: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let total = args.rate * args.seconds;
    let seen = committed.clone();
    let seconds = args.seconds;
    let consuming = tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(total as usize);
        let deadline = Instant::now() + Duration::from_secs(seconds + 60);
        while (latencies.len() as u64) < total && Instant::now() < deadline {
            let Ok(message) = tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await
            else {
                continue;
            };
            let message = message?;
            let arrived = Instant::now();
            let id = message.headers().and_then(|h| {
                h.iter()
                    .find(|h| h.key == "id")
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            });
            // The writer records its commit time just after the commit returns; an event
            // can arrive first, which counts as zero.
            let committed_at = id.and_then(|id| seen.lock().ok().and_then(|m| m.get(&id).copied()));
            latencies.push(
                committed_at.map_or(Duration::ZERO, |at| arrived.saturating_duration_since(at)),
            );
        }
        Ok::<_, Error>(latencies)
    });
    // Four writers, each at a quarter of the rate, one event per transaction.
    const WRITERS: u64 = 4;
    let period = Duration::from_secs_f64(WRITERS as f64 / args.rate as f64);
    let writer = |w: u64| {
        let (outbox, committed) = (&outbox, &committed);
        async move {
            let mut tick = tokio::time::interval(period);
            for i in 0..total / WRITERS {
                tick.tick().await;
                let event = Bench {
                    id: i * WRITERS + w,
                };
                let txn = db.begin().await?;
                let rows = outbox::write_events(&txn, outbox, [&event as &dyn DomainEvent]).await?;
                txn.commit().await?;
                let at = Instant::now();
                if let (Some(row), Ok(mut map)) = (rows.first(), committed.lock()) {
                    map.insert(row.id.to_string(), at);
                }
            }
            Ok::<_, Error>(())
        }
    };
    let written = tokio::join!(writer(0), writer(1), writer(2), writer(3));
    for result in [written.0, written.1, written.2, written.3] {
        result?;
    }
    let mut latencies = consuming.await??;
    running.stop().await?;
    outbox::migration::drop_table(db, &outbox.table).await?;
    latencies.sort();
    let pick = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "{} at {} events/s for {} s: {} events, commit→consumer p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        args.db,
        args.rate,
        args.seconds,
        latencies.len(),
        pick(0.50).as_secs_f64() * 1e3,
        pick(0.99).as_secs_f64() * 1e3,
        pick(1.0).as_secs_f64() * 1e3,
    );
    Ok(())
}

async fn create_topic(brokers: &str, topic: &str) -> Result<(), Error> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, 4, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await?;
    for result in results {
        if let Err((topic, code)) = result
            && code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists
        {
            return Err(format!("creating {topic}: {code}").into());
        }
    }
    Ok(())
}
