//! The Rust side of `scripts/bench` (issue 6). Three measurements that need a Kafka client in the
//! same process as the clock:
//!
//! ```text
//! bench producer --rows N --topic T            # the bare-producer limit (no database)
//! bench latency  --table T --aggregate-type A --topic T --rate 2000 --seconds 60 --warmup 5 --writers 16 [--events-per-txn 1] [--raw FILE]
//! bench latency  --table T --aggregate-type A --slot S --publication P ...  # the floor: a bare slot reader, no relay, no Kafka
//! bench latency  --table T --aggregate-type A --topic T --direct-linger 0 ... # the Kafka leg: the writers send after commit
//! bench compare  --topic T --rows K            # our relay's and Debezium's messages, pairwise
//! bench distinct --topic T --rows N            # a drain's topic holds N distinct event ids
//! bench binlog-read --table T --rows N --file F --pos P [--server-id S] [--clk-tck 100]
//! bench wal-read --slot S --publication P --rows N [--clk-tck 100] [--timeout 600]
//! ```
//!
//! Each prints one JSON object on stdout (progress goes to stderr). `scripts/bench` owns the
//! services, the tables, the relay process and its footprint; this harness never starts a relay.
//!
//! - `producer`: the relay's own [`KafkaSink`] (same settings: idempotent, `acks=all`,
//!   `linger.ms=1`, `batch.num.messages=10000`, murmur2) sends N messages equal to the workload's
//!   rows (topic, key, value bytes as PostgreSQL prints the jsonb, `id` header) with no database,
//!   until all are acknowledged, the way the relay's pipeline does (`KafkaSink::produce` under a
//!   tag, the delivery reports in batches, at most `kafka.max_in_flight` out, a current-thread
//!   runtime): the Kafka leg's CPU per event, a floor under the relay's. Prints this process's
//!   CPU seconds from the first message to the last acknowledgement (the messages are built
//!   before) and samples the acknowledged count every 100 ms.
//! - `latency`: WRITERS connections insert EVENTS-PER-TXN rows (default 1) per transaction (one
//!   autocommit multi-row INSERT) on a fixed schedule of RATE rows/s; the instant the INSERT
//!   returned is recorded for every event of its transaction; a consumer in this process records
//!   when each message arrives; latency = receive − commit returned, both `Instant`s of this
//!   process. The first WARMUP seconds are left out. It prints the rate the writers achieved
//!   (the database may commit fewer transactions per second than the schedule asks; more
//!   writers or more events per transaction then offer the rate) and `base_unix_us`, the wall
//!   clock at the start of the `*_ms` stamps of `--raw`, to join them with other processes'.
//!   `DATABASE_URL` chooses the database: `postgres://…` or `mysql://…` (MariaDB: the same row
//!   in MySQL syntax), so every contender of a round, Debezium included, is stamped by this one
//!   writer and this one consumer. It exits non-zero when no event was measured or any event
//!   is missing (after the JSON): a contender without samples never yields a figure. With
//!   `--slot S --publication P` in place of `--topic`, a bare replication client on slot S
//!   (pgoutput, as `wal-read` connects) stamps each `Insert` as it arrives instead: commit →
//!   the log's delivery to any client, the floor under every relay that reads PostgreSQL's log
//!   (the walsender may send a transaction before its writer's `INSERT` returns, so a
//!   latency there can be below zero). With `--direct-linger MS` the writers themselves send
//!   each event to `--topic` right after their commit returned (the relay's producer settings,
//!   `linger.ms` MS) and no relay runs: the Kafka leg alone under the same writers (the dual
//!   write an outbox replaces).
//! - `binlog-read`: the limit L of the MariaDB round without Kafka: one binlog connection
//!   (`mysql_async`'s stream, as the `binlog` source uses, as the binlog user of
//!   `MYSQL_RELAY_URL`) from file F, offset P until N rows of table T were decoded (each
//!   INSERT row into `mysql_common`'s values, as the source does; then discarded). Prints the
//!   time from connecting to the Nth row, and this process's CPU seconds.
//! - `wal-read`: the limit L of the PostgreSQL round without a client in the way: one
//!   replication connection (`pgwire-replication`, as the `wal` source connects, to
//!   `DATABASE_URL` without TLS) on slot S (pgoutput, publication P) that counts the first N
//!   `Insert` messages and discards them, then confirms the end of the transaction that holds
//!   the Nth (the standby status the server acknowledges) and prints the time from connecting to
//!   that confirmation, this process's CPU seconds (on a current-thread runtime, as the relay's)
//!   and the walsender backend's (its pid is
//!   `pg_backend_pid()` of the replication session, read from `/proc`, so the services must run
//!   on this machine), from before START_REPLICATION to the confirmation.
//! - `compare`: reads topic T from the beginning until every event id was seen twice, once from
//!   Debezium (it carries `__debezium.*` headers) and once from our relay, and compares
//!   partition, key bytes, value bytes (null included) and every header but `__debezium.*`. It
//!   exits non-zero when fewer pairs than K were seen or any pair differs.
//! - `distinct`: after a drain, reads topic T from the beginning until N distinct `id` headers
//!   were seen (or the timeout, default 120 s); prints the messages read and the distinct ids, and
//!   exits non-zero when fewer than N distinct ids arrived: a drain's end is counted in messages
//!   (end offsets), and duplicates there could hide missing events.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use outbox_relay::config::KafkaConfig;
use outbox_relay::sink::{KafkaMessage, KafkaSink};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DbBackend, Statement};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Args(Vec<String>);

impl Args {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .position(|a| a == name)
            .and_then(|i| self.0.get(i + 1))
            .map(String::as_str)
    }
    fn str(&self, name: &str) -> Result<String, BoxError> {
        self.get(name)
            .map(str::to_owned)
            .ok_or_else(|| format!("missing {name}").into())
    }
    fn num(&self, name: &str, default: u64) -> Result<u64, BoxError> {
        match self.get(name) {
            Some(v) => Ok(v
                .parse()
                .map_err(|_| format!("{name}: not a number: {v}"))?),
            None => Ok(default),
        }
    }
}

/// Row `i` of the workload (scripts/debezium/bench-lib.sh `bench_rows_sql`), as PostgreSQL's
/// `jsonb_out` prints the payload (keys ordered by length, then bytes).
fn workload_message(topic: &str, i: u64) -> KafkaMessage {
    let agg = i % 10_000;
    let total = ((i % 997) as f64) * 1.25 + 0.99;
    let value = format!(
        "{{\"note\": \"benchmark event {i:010}\", \"lines\": [{{\"qty\": {q1}, \"sku\": \"SKU-{s1:04}\", \"price\": 9.99}}, \
         {{\"qty\": 2, \"sku\": \"SKU-{s2:04}\", \"price\": 19.5}}], \"total\": {total:.2}, \"status\": \"PLACED\", \
         \"orderId\": \"ord-{i:010}\", \"currency\": \"EUR\", \"customerId\": \"cust-{agg:05}\"}}",
        q1 = 1 + i % 5,
        s1 = i % 500,
        s2 = i % 321,
    );
    KafkaMessage {
        topic: topic.to_owned(),
        partition: None,
        timestamp: None,
        key: Some(format!("order-{agg:05}").into_bytes()),
        value: Some(value.into_bytes()),
        headers: vec![("id".to_owned(), Some(seq_id(i).into_bytes()))],
    }
}

/// A uuid-shaped id that carries the sequence number (for the latency and producer runs).
fn seq_id(seq: u64) -> String {
    format!("00000000-0000-4000-8000-{seq:012x}")
}

fn parse_seq_id(id: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(id).ok()?;
    let tail = s.strip_prefix("00000000-0000-4000-8000-")?;
    u64::from_str_radix(tail, 16).ok()
}

fn bar(label: &str, done: u64, total: u64, secs: f64) {
    let width = 30usize;
    let filled = if total == 0 {
        width
    } else {
        ((done.min(total) as f64 / total as f64) * width as f64) as usize
    };
    eprint!(
        "\r  {label:<10} [{}{}] {done:>9}/{total} {secs:6.1} s",
        "#".repeat(filled),
        ".".repeat(width - filled)
    );
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn producer(args: &Args) -> Result<(), BoxError> {
    let rows = args.num("--rows", 1_000_000)?;
    if rows == 0 {
        return Err("--rows must be positive: a limit over zero messages measures nothing".into());
    }
    let topic = args.str("--topic")?;
    let clk_tck = args.num("--clk-tck", 100)?;
    let config = KafkaConfig {
        brokers: Some(std::env::var("KAFKA_BROKERS").map_err(|_| "KAFKA_BROKERS is not set")?),
        ..KafkaConfig::default()
    };
    let sink = KafkaSink::new(&config)?;
    // Build the messages first: the limit is the producer's, not the formatting's.
    let messages: Vec<KafkaMessage> = (1..=rows).map(|i| workload_message(&topic, i)).collect();
    let cpu0 = own_cpu_seconds(clk_tck)?;
    let start = Instant::now();
    let (mut produced, mut acked, mut failed) = (0u64, 0u64, 0u64);
    let mut reports = Vec::new();
    let mut samples = Vec::new();
    let mut last_sample = Instant::now();
    // The relay's own path (`pipeline.rs`): each message produced under a tag, the delivery
    // reports taken in batches, at most `max_in_flight` unacknowledged, on a current-thread
    // runtime as the relay's (`main`).
    let max_in_flight = config.max_in_flight as u64;
    while acked < rows {
        while produced < rows && produced - acked < max_in_flight {
            match sink.produce(&messages[produced as usize], produced as usize) {
                Ok(()) => produced += 1,
                // librdkafka's queue is full: produced again once reports made room.
                Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)) => break,
                Err(error) => return Err(format!("message {produced}: {error}").into()),
            }
        }
        reports.clear();
        sink.reports(&mut reports).await?;
        for report in &reports {
            if report.outcome.is_err() {
                failed += 1;
            }
        }
        acked += reports.len() as u64;
        if last_sample.elapsed() >= Duration::from_millis(100) {
            last_sample = Instant::now();
            let t = start.elapsed().as_secs_f64();
            samples.push((t, acked));
            bar("producer", acked, rows, t);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = own_cpu_seconds(clk_tck)? - cpu0;
    eprintln!();
    if failed > 0 {
        return Err(format!("{failed} deliveries failed").into());
    }
    println!(
        "{}",
        serde_json::json!({
            "rows": rows, "seconds": secs, "events_per_s": rows as f64 / secs,
            "cpu_s": cpu, "cpu_s_per_m": cpu / rows as f64 * 1e6, "samples": samples,
        })
    );
    Ok(())
}

fn consumer(group: &str) -> Result<BaseConsumer, BoxError> {
    let brokers = std::env::var("KAFKA_BROKERS").map_err(|_| "KAFKA_BROKERS is not set")?;
    Ok(ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .set("enable.partition.eof", "false")
        .create()?)
}

/// Assigns every partition of `topic` from the beginning, waiting (≤ 30 s) for the topic.
fn assign_all(consumer: &BaseConsumer, topic: &str) -> Result<usize, BoxError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(5))?;
        let parts = md
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map(|t| t.partitions().len())
            .unwrap_or(0);
        if parts > 0 {
            let mut tpl = TopicPartitionList::new();
            for p in 0..parts {
                tpl.add_partition_offset(topic, p as i32, Offset::Beginning)?;
            }
            consumer.assign(&tpl)?;
            return Ok(parts);
        }
        if Instant::now() > deadline {
            return Err(format!("topic {topic} did not appear within 30 s").into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Where `bench latency` stamps an event's receipt.
enum Receiver {
    /// A Kafka consumer on the topic (every relay, Debezium included).
    Topic(String),
    /// A bare replication client on a slot (pgoutput, the publication): the floor of any relay
    /// that reads PostgreSQL's log, with no relay and no Kafka in the way.
    Slot { slot: String, publication: String },
}

async fn latency(args: &Args) -> Result<(), BoxError> {
    let table = args.str("--table")?;
    let aggtype = args.str("--aggregate-type")?;
    let receiver = match (args.get("--slot"), args.get("--publication")) {
        (None, None) => Receiver::Topic(args.str("--topic")?),
        (Some(slot), Some(publication)) => Receiver::Slot {
            slot: slot.to_owned(),
            publication: publication.to_owned(),
        },
        _ => return Err("--slot and --publication go together".into()),
    };
    let rate = args.num("--rate", 2000)?;
    let seconds = args.num("--seconds", 60)?;
    let warmup = args.num("--warmup", 5)?;
    let writers = args.num("--writers", 16)?;
    let per_txn = args.num("--events-per-txn", 1)?;
    if rate == 0 || writers == 0 || per_txn == 0 {
        return Err("--rate, --writers and --events-per-txn must be at least 1".into());
    }
    let total = rate * (seconds + warmup);
    let skip = rate * warmup;
    let url = std::env::var("DATABASE_URL").map_err(|_| "DATABASE_URL is not set")?;
    let backend = if url.starts_with("mysql://") || url.starts_with("mariadb://") {
        DbBackend::MySql
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        DbBackend::Postgres
    } else {
        return Err("DATABASE_URL must be postgres://… or mysql://…".into());
    };
    let mut opts = ConnectOptions::new(url);
    opts.max_connections(writers as u32)
        .min_connections(writers as u32)
        .sqlx_logging(false);
    let db = Database::connect(opts).await?;
    let table: &'static str = Box::leak(table.into_boxed_str());
    let aggtype: &'static String = Box::leak(Box::new(aggtype));

    let base = Instant::now();
    // The wall clock at `base`: joins the raw samples with stamps other processes take.
    let base_unix_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let nanos = move |i: Instant| i.duration_since(base).as_nanos() as u64;
    let committed: Arc<Vec<AtomicU64>> = Arc::new((0..=total).map(|_| AtomicU64::new(0)).collect());
    let received: Arc<Vec<AtomicU64>> = Arc::new((0..=total).map(|_| AtomicU64::new(0)).collect());

    // One warm-up row creates the topic (the relay auto-creates it), then the consumer assigns.
    // The rows `first..=last`, one statement: one transaction.
    let insert = move |first: u64, last: u64| {
        if backend == DbBackend::MySql {
            return maria_latency_insert(table, aggtype, first, last);
        }
        let mut rows = Vec::new();
        let mut values = Vec::new();
        for (i, seq) in (first..=last).enumerate() {
            let [id, agg, aggid, n] = [1, 2, 3, 4].map(|k| format!("${}", 4 * i + k));
            rows.push(format!(
                "({id}::uuid, {agg}, {aggid}, 'OrderPlaced', 1, \
                 jsonb_build_object('seq', {n}::bigint, 'orderId', 'ord-' || lpad({n}::text, 10, '0'), \
                 'customerId', 'cust-' || lpad(({n} % 10000)::text, 5, '0'), 'status', 'PLACED', \
                 'currency', 'EUR', 'total', round(({n} % 997) * 1.25 + 0.99, 2), \
                 'lines', jsonb_build_array(jsonb_build_object('sku', 'SKU-' || lpad(({n} % 500)::text, 4, '0'), \
                 'qty', 1 + {n} % 5, 'price', 9.99), jsonb_build_object('sku', 'SKU-' || lpad(({n} % 321)::text, 4, '0'), \
                 'qty', 2, 'price', 19.5)), 'note', 'benchmark event ' || lpad({n}::text, 10, '0')), clock_timestamp())"
            ));
            values.extend([
                seq_id(seq).into(),
                aggtype.as_str().into(),
                format!("order-{:05}", seq % 10_000).into(),
                (seq as i64).into(),
            ]);
        }
        Statement::from_sql_and_values(
            DbBackend::Postgres,
            format!(
                "INSERT INTO \"public\".\"{table}\" (\"id\", \"aggregatetype\", \"aggregateid\", \"type\", \
                 \"schemaversion\", \"payload\", \"timestamp\") VALUES {}",
                rows.join(", ")
            ),
            values,
        )
    };
    db.execute_raw(insert(0, 0)).await?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Stamps the receipt of event `seq` (the first one only).
    let stamp = {
        let received = received.clone();
        move |seq: Option<u64>| {
            let now = nanos(Instant::now());
            if let Some(seq) = seq
                && seq >= 1
                && (seq as usize) < received.len()
                && received[seq as usize].load(Ordering::Relaxed) == 0
            {
                received[seq as usize].store(now.max(1), Ordering::Relaxed);
            }
        }
    };
    let receiving = match &receiver {
        Receiver::Topic(topic) => {
            let consumer = consumer(&format!("bench-latency-{}", std::process::id()))?;
            assign_all(&consumer, topic)?;
            let stop = stop.clone();
            tokio::task::spawn_blocking(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) else {
                        continue;
                    };
                    stamp(
                        m.headers()
                            .and_then(|h| h.iter().find(|h| h.key == "id").and_then(|h| h.value))
                            .and_then(parse_seq_id),
                    );
                }
                Ok::<(), BoxError>(())
            })
        }
        Receiver::Slot { slot, publication } => {
            let mut client = replication_client(slot, publication, "latency").await?;
            client.start().await?;
            client.wait_started().await?;
            let stop = stop.clone();
            tokio::spawn(async move {
                read_slot_stamping(&mut client, &stop, stamp).await?;
                client.stop();
                client.join().await?;
                Ok::<(), BoxError>(())
            })
        }
    };

    // `--direct-linger MS`: the writers send each event to the topic themselves once their
    // commit returned (the relay's producer settings, `linger.ms` MS): the Kafka leg alone under
    // the same writers, and the latency of the dual write that an outbox replaces.
    let direct = match (args.get("--direct-linger"), &receiver) {
        (None, _) => None,
        (Some(linger), Receiver::Topic(topic)) => {
            let mut config = KafkaConfig {
                brokers: Some(
                    std::env::var("KAFKA_BROKERS").map_err(|_| "KAFKA_BROKERS is not set")?,
                ),
                ..KafkaConfig::default()
            };
            config
                .properties
                .insert("linger.ms".into(), linger.to_owned());
            Some((Arc::new(KafkaSink::new(&config)?), topic.clone()))
        }
        (Some(_), Receiver::Slot { .. }) => {
            return Err("--direct-linger sends to --topic, not to a slot".into());
        }
    };
    let start = Instant::now() + Duration::from_millis(500);
    // Transaction t (from 0) holds events t*K+1 ..= (t+1)*K, is due when its first event is,
    // and is written by writer t % WRITERS; with K = 1 the schedule is one event per transaction.
    let transactions = total.div_ceil(per_txn);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let db = db.clone();
        let committed = committed.clone();
        let direct = direct.clone();
        tasks.push(tokio::spawn(async move {
            let mut txn = w;
            while txn < transactions {
                let first = txn * per_txn + 1;
                let last = (first + per_txn - 1).min(total);
                let due = start + Duration::from_secs_f64((first - 1) as f64 / rate as f64);
                tokio::time::sleep_until(due.into()).await;
                db.execute_raw(insert(first, last)).await?;
                let done = nanos(Instant::now()).max(1);
                for seq in first..=last {
                    committed[seq as usize].store(done, Ordering::Relaxed);
                }
                if let Some((sink, topic)) = &direct {
                    for seq in first..=last {
                        // The delivery is not awaited: the consumer's receipt is what counts.
                        drop(sink.send(&workload_message(topic, seq))?);
                    }
                }
                txn += writers;
            }
            Ok::<_, BoxError>(())
        }));
    }
    // Progress: the schedule's position (what the writers are due to have committed).
    let progress = {
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let t = start.elapsed().as_secs_f64();
                let due = ((t * rate as f64) as u64).min(total);
                bar("latency", due, total, t);
                if due >= total {
                    return;
                }
            }
        })
    };
    for t in tasks {
        t.await??;
    }
    let write_secs = start.elapsed().as_secs_f64();
    progress.abort();
    eprintln!();
    // wait for the tail (≤ 30 s)
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let missing = (1..=total)
            .filter(|&s| received[s as usize].load(Ordering::Relaxed) == 0)
            .count();
        if missing == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    receiving.await??;

    let mut lat = Vec::new();
    let mut missing = 0u64;
    for s in (skip + 1)..=total {
        let c = committed[s as usize].load(Ordering::Relaxed);
        let r = received[s as usize].load(Ordering::Relaxed);
        if c == 0 || r == 0 {
            missing += 1;
            continue;
        }
        lat.push((r as f64 - c as f64) / 1e6);
    }
    // Raw samples (seq, commit ms, receive ms on this process's clock) for analysis.
    if let Some(path) = args.get("--raw") {
        let mut text = String::from("seq commit_ms recv_ms latency_ms\n");
        for s in 1..=total {
            let c = committed[s as usize].load(Ordering::Relaxed);
            let r = received[s as usize].load(Ordering::Relaxed);
            if c != 0 && r != 0 {
                text.push_str(&format!(
                    "{s} {:.3} {:.3} {:.3}\n",
                    c as f64 / 1e6,
                    r as f64 / 1e6,
                    (r as f64 - c as f64) / 1e6
                ));
            }
        }
        std::fs::write(path, text)?;
    }
    let mut sorted = lat;
    sorted.sort_by(|a, b| a.total_cmp(b));
    // histogram for the plot: 0.5 ms buckets up to 100 ms, then one overflow bucket
    let mut hist = vec![0u64; 201];
    for &l in &sorted {
        let b = ((l.max(0.0)) / 0.5) as usize;
        hist[b.min(200)] += 1;
    }
    println!(
        "{}",
        serde_json::json!({
            "rate": rate, "seconds": seconds, "warmup": warmup, "writers": writers,
            "events_per_txn": per_txn,
            "base_unix_us": base_unix_us,
            "measured": sorted.len(), "missing": missing,
            "achieved_rate": total as f64 / write_secs,
            "p50_ms": percentile(&sorted, 50.0), "p95_ms": percentile(&sorted, 95.0),
            "p99_ms": percentile(&sorted, 99.0), "max_ms": sorted.last().copied().unwrap_or(f64::NAN),
            "min_ms": sorted.first().copied().unwrap_or(f64::NAN),
            "hist_bucket_ms": 0.5, "hist": hist,
        })
    );
    // A figure needs samples, and a percentile over the events that did arrive hides the ones
    // that did not (lost, or later than the 30 s tail).
    if sorted.is_empty() {
        return Err(format!("no event measured: 0 of {} arrived", total - skip).into());
    }
    if missing > 0 {
        return Err(format!("{missing} of {} measured events missing", total - skip).into());
    }
    Ok(())
}

/// The P2 rows `first..=last` for MariaDB/MySQL, one statement: the PostgreSQL rows' fields
/// (payload built here, as MariaDB stores the JSON text it is given), the timestamp the
/// database's UTC clock.
fn maria_latency_insert(table: &str, aggtype: &str, first: u64, last: u64) -> Statement {
    let rows =
        vec!["(?, ?, ?, 'OrderPlaced', 1, ?, UTC_TIMESTAMP(6))"; (last - first + 1) as usize];
    let values: Vec<sea_orm::Value> = (first..=last)
        .flat_map(|seq| maria_latency_row(aggtype, seq))
        .collect();
    Statement::from_sql_and_values(
        DbBackend::MySql,
        format!(
            "INSERT INTO `{table}` (`id`, `aggregatetype`, `aggregateid`, `type`, `schemaversion`, \
             `payload`, `timestamp`) VALUES {}",
            rows.join(", ")
        ),
        values,
    )
}

/// The values of the MariaDB/MySQL P2 row `seq`: id, aggregate type, aggregate id, payload.
fn maria_latency_row(aggtype: &str, seq: u64) -> [sea_orm::Value; 4] {
    let payload = format!(
        "{{\"seq\": {seq}, \"orderId\": \"ord-{seq:010}\", \"customerId\": \"cust-{agg:05}\", \
         \"status\": \"PLACED\", \"currency\": \"EUR\", \"total\": {total:.2}, \"lines\": \
         [{{\"sku\": \"SKU-{s1:04}\", \"qty\": {q1}, \"price\": 9.99}}, \
         {{\"sku\": \"SKU-{s2:04}\", \"qty\": 2, \"price\": 19.5}}], \
         \"note\": \"benchmark event {seq:010}\"}}",
        agg = seq % 10_000,
        total = ((seq % 997) as f64) * 1.25 + 0.99,
        s1 = seq % 500,
        q1 = 1 + seq % 5,
        s2 = seq % 321,
    );
    [
        seq_id(seq).into(),
        aggtype.into(),
        format!("order-{:05}", seq % 10_000).into(),
        payload.into(),
    ]
}

fn compare(args: &Args) -> Result<(), BoxError> {
    let topic = args.str("--topic")?;
    let rows = args.num("--rows", 1000)? as usize;
    let timeout = Duration::from_secs(args.num("--timeout", 120)?);
    let consumer = consumer(&format!("bench-compare-{}", std::process::id()))?;
    assign_all(&consumer, &topic)?;
    /// What a consumer can tell apart. The topic is not here: both relays are read from the one
    /// topic T, so a message routed anywhere else never pairs, and the pair count catches it.
    #[derive(PartialEq)]
    struct Seen {
        partition: i32,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        /// Every header but Debezium's own `__debezium.*`, in order (null values included).
        headers: Vec<(String, Option<Vec<u8>>)>,
    }
    let mut ours: HashMap<Vec<u8>, Seen> = HashMap::new();
    let mut theirs: HashMap<Vec<u8>, Seen> = HashMap::new();
    let mut without_id = 0u64;
    let deadline = Instant::now() + timeout;
    while (ours.len() < rows || theirs.len() < rows) && Instant::now() < deadline {
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m?;
        let mut id = None;
        let mut debezium = false;
        let mut headers = Vec::new();
        if let Some(h) = m.headers() {
            for h in h.iter() {
                if h.key.starts_with("__debezium") {
                    debezium = true;
                    continue;
                }
                if h.key == "id" {
                    id = h.value.map(<[u8]>::to_vec);
                }
                headers.push((h.key.to_owned(), h.value.map(<[u8]>::to_vec)));
            }
        }
        let Some(id) = id else {
            without_id += 1;
            continue;
        };
        let seen = Seen {
            partition: m.partition(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers,
        };
        if debezium {
            theirs.insert(id, seen);
        } else {
            ours.insert(id, seen);
        }
        bar(
            "compare",
            (ours.len() + theirs.len()) as u64,
            2 * rows as u64,
            0.0,
        );
    }
    eprintln!();
    let (mut pairs, mut key_eq, mut part_eq, mut bytes_eq, mut headers_eq) = (0, 0, 0, 0, 0);
    let mut first_diff: Option<String> = None;
    let show = |s: &Seen| {
        format!(
            "partition {} key {:?} value {:?} headers {:?}",
            s.partition,
            s.key.as_deref().map(String::from_utf8_lossy),
            s.value.as_deref().map(String::from_utf8_lossy),
            s.headers
                .iter()
                .map(|(k, v)| (k, v.as_deref().map(String::from_utf8_lossy)))
                .collect::<Vec<_>>()
        )
    };
    for (id, a) in &ours {
        let Some(b) = theirs.get(id) else { continue };
        pairs += 1;
        key_eq += usize::from(a.key == b.key);
        part_eq += usize::from(a.partition == b.partition);
        bytes_eq += usize::from(a.value == b.value);
        headers_eq += usize::from(a.headers == b.headers);
        if a != b && first_diff.is_none() {
            first_diff = Some(format!(
                "id {}: ours {} / debezium {}",
                String::from_utf8_lossy(id),
                show(a),
                show(b)
            ));
        }
    }
    // Equal means: every row paired, and every pair equal in every field a consumer sees.
    let equal = pairs >= rows
        && [key_eq, part_eq, bytes_eq, headers_eq]
            .iter()
            .all(|&n| n == pairs);
    println!(
        "{}",
        serde_json::json!({
            "rows": rows, "ours": ours.len(), "debezium": theirs.len(), "pairs": pairs,
            "key_equal": key_eq, "partition_equal": part_eq, "value_bytes_equal": bytes_eq,
            "headers_equal": headers_eq, "messages_without_id": without_id,
            "first_difference": first_diff, "equal": equal,
        })
    );
    if !equal {
        return Err(format!(
            "messages differ: {pairs} pairs for {rows} rows (ours {}, debezium {}); \
             equal keys {key_eq}, partitions {part_eq}, values {bytes_eq}, headers {headers_eq}",
            ours.len(),
            theirs.len()
        )
        .into());
    }
    Ok(())
}

fn distinct(args: &Args) -> Result<(), BoxError> {
    let topic = args.str("--topic")?;
    let rows = args.num("--rows", 0)? as usize;
    if rows == 0 {
        return Err("--rows must be positive: a check of zero events passes on nothing".into());
    }
    let timeout = Duration::from_secs(args.num("--timeout", 120)?);
    let consumer = consumer(&format!("bench-distinct-{}", std::process::id()))?;
    assign_all(&consumer, &topic)?;
    let mut ids: HashSet<Vec<u8>> = HashSet::with_capacity(rows);
    let (mut messages, mut without_id) = (0u64, 0u64);
    let t0 = Instant::now();
    while ids.len() < rows && t0.elapsed() < timeout {
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m?;
        messages += 1;
        let id = m
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == "id").and_then(|h| h.value));
        match id {
            Some(id) => {
                ids.insert(id.to_vec());
            }
            None => without_id += 1,
        }
        if messages % 10_000 == 0 {
            bar(
                "distinct",
                ids.len() as u64,
                rows as u64,
                t0.elapsed().as_secs_f64(),
            );
        }
    }
    eprintln!();
    let complete = ids.len() >= rows;
    println!(
        "{}",
        serde_json::json!({
            "topic": topic, "rows": rows, "messages_read": messages,
            "distinct_ids": ids.len(), "messages_without_id": without_id, "complete": complete,
        })
    );
    if !complete {
        return Err(format!(
            "{topic}: {} distinct event ids for {rows} rows ({messages} messages read, \
             {without_id} without an id header)",
            ids.len()
        )
        .into());
    }
    Ok(())
}

/// The CPU seconds (user + system) this process used so far, from `/proc/self/stat`.
fn own_cpu_seconds(clk_tck: u64) -> Result<f64, BoxError> {
    cpu_seconds("self", clk_tck)
}

/// The CPU seconds (user + system) process `pid` used so far, from `/proc/PID/stat`.
fn cpu_seconds(pid: &str, clk_tck: u64) -> Result<f64, BoxError> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest)
        .ok_or("/proc/self/stat: no command name")?;
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks = |i: usize| -> Result<u64, BoxError> {
        Ok(fields
            .get(i)
            .ok_or("/proc/self/stat: too few fields")?
            .parse()?)
    };
    Ok((ticks(11)? + ticks(12)?) as f64 / clk_tck.max(1) as f64)
}

async fn binlog_read(args: &Args) -> Result<(), BoxError> {
    use mysql_async::binlog::events::{EventData, RowsEventData};
    use mysql_async::prelude::Queryable;

    let table = args.str("--table")?;
    let rows = args.num("--rows", 0)?;
    if rows == 0 {
        return Err("--rows must be positive: a limit over zero rows measures nothing".into());
    }
    let file = args.str("--file")?;
    let pos = args.num("--pos", 4)?;
    let server_id = u32::try_from(args.num("--server-id", 48_700)?)?;
    let clk_tck = args.num("--clk-tck", 100)?;
    let timeout = Duration::from_secs(args.num("--timeout", 600)?);
    let url = std::env::var("MYSQL_RELAY_URL").map_err(|_| "MYSQL_RELAY_URL is not set")?;
    let opts = mysql_async::Opts::from_url(&url)?;
    let cpu0 = own_cpu_seconds(clk_tck)?;
    let start = Instant::now();
    let mut conn = mysql_async::Conn::new(opts).await?;
    // As the binlog source announces itself to MariaDB (its GTID events are then sent).
    conn.query_drop("SET @mariadb_slave_capability = 4").await?;
    let request = mysql_async::BinlogStreamRequest::new(server_id)
        .with_filename(file.as_bytes())
        .with_pos(pos);
    let mut stream = conn.get_binlog_stream(request).await?;
    let (mut seen, mut values, mut events) = (0u64, 0u64, 0u64);
    let mut first: Option<f64> = None;
    let mut samples = Vec::new();
    let mut last_sample = Instant::now();
    while seen < rows {
        if start.elapsed() > timeout {
            return Err(format!("{seen} of {rows} rows of {table} within {timeout:?}").into());
        }
        let event = match tokio::time::timeout(Duration::from_secs(30), stream.next()).await {
            Ok(Some(event)) => event?,
            Ok(None) => return Err("the binlog stream ended".into()),
            Err(_) => {
                return Err(format!("no binlog event for 30 s after {seen} of {rows} rows").into());
            }
        };
        events += 1;
        let Some(EventData::RowsEvent(data)) = event.read_data()? else {
            continue;
        };
        if !matches!(
            data,
            RowsEventData::WriteRowsEvent(_) | RowsEventData::WriteRowsEventV1(_)
        ) {
            continue;
        }
        let tme = stream
            .get_tme(data.table_id())
            .ok_or("a row event without its table map")?;
        if tme.table_name() != table.as_str() {
            continue;
        }
        for row in data.rows(tme) {
            let (_, after) = row?;
            if let Some(after) = after {
                values += after.unwrap().len() as u64;
                seen += 1;
            }
        }
        if first.is_none() {
            first = Some(start.elapsed().as_secs_f64());
        }
        if last_sample.elapsed() >= Duration::from_millis(100) {
            last_sample = Instant::now();
            let t = start.elapsed().as_secs_f64();
            samples.push((t, seen));
            bar("binlog", seen, rows, t);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = own_cpu_seconds(clk_tck)? - cpu0;
    eprintln!();
    let first = first.unwrap_or(secs);
    println!(
        "{}",
        serde_json::json!({
            "rows": seen, "values": values, "binlog_events": events, "seconds": secs,
            "t_first": first, "events_per_s": seen as f64 / secs,
            "events_per_s_drain": if secs > first { Some(seen as f64 / (secs - first)) } else { None },
            "cpu_s": cpu, "cpu_s_per_m": cpu / seen as f64 * 1e6, "samples": samples,
        })
    );
    // Not a graceful close: a dump connection has no end; the server drops it.
    drop(stream);
    Ok(())
}

/// A replication connection to `DATABASE_URL` on `slot` (pgoutput, `publication`), connected,
/// not yet streaming.
async fn replication_client(
    slot: &str,
    publication: &str,
    purpose: &str,
) -> Result<pgwire_replication::ReplicationClient, BoxError> {
    let raw = std::env::var("DATABASE_URL").map_err(|_| "DATABASE_URL is not set")?;
    // Parsed as the relay parses it, TLS included (`sslmode`): the limit and the relay it is
    // compared with read over the same transport.
    let target = outbox_relay::connection::PgTarget::parse(&raw)
        .map_err(|e| format!("DATABASE_URL: {}", e.0))?;
    // Quoted, as the relay passes it: pgoutput folds an unquoted name to lower case.
    let quoted_publication = format!("\"{}\"", publication.replace('"', "\"\""));
    let tls = target.replication_tls();
    let config = pgwire_replication::ReplicationConfig::new(
        target.host,
        target.user,
        target.password,
        target.database,
        slot.to_owned(),
        quoted_publication,
    )
    .with_port(target.port)
    .with_tls(tls)
    .with_status_interval(Duration::from_millis(100))
    .with_buffer_size(8192)
    .with_application_name(format!("bench {purpose} {slot}"));
    Ok(pgwire_replication::ReplicationClient::connect_gated(config).await?)
}

/// Stamps each `Insert` of the slot's stream by its `id` column (the sequence the writers put
/// in it) until `stop`, confirming each transaction's end as it is read.
async fn read_slot_stamping(
    client: &mut pgwire_replication::ReplicationClient,
    stop: &std::sync::atomic::AtomicBool,
    stamp: impl Fn(Option<u64>),
) -> Result<(), BoxError> {
    use pgwire_replication::ReplicationEvent;
    let mut id_column = None;
    while !stop.load(Ordering::Relaxed) {
        let event = match tokio::time::timeout(Duration::from_millis(100), client.recv()).await {
            Ok(Ok(Some(event))) => event,
            Ok(Ok(None)) => return Err("the replication stream ended".into()),
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => continue,
        };
        match event {
            ReplicationEvent::XLogData { data, .. } => match data.first() {
                Some(b'R') => id_column = pgoutput_relation_column(&data, "id"),
                Some(b'I') => stamp(
                    id_column
                        .and_then(|column| pgoutput_insert_column(&data, column))
                        .and_then(parse_seq_id),
                ),
                _ => {}
            },
            ReplicationEvent::Commit { end_lsn, .. } => client.update_applied_lsn(end_lsn),
            _ => {}
        }
    }
    Ok(())
}

/// The index of column `name` in a pgoutput `Relation` message: `R`, the relation's oid, its
/// schema and name (C strings), its replica identity, the column count, then per column its
/// flags, name (C string), type oid and type modifier.
fn pgoutput_relation_column(data: &[u8], name: &str) -> Option<usize> {
    let after_cstring = |at: usize| {
        data.get(at..)?
            .iter()
            .position(|&b| b == 0)
            .map(|n| at + n + 1)
    };
    let at = after_cstring(after_cstring(1 + 4)?)? + 1;
    let columns = u16::from_be_bytes(data.get(at..at + 2)?.try_into().ok()?);
    let mut at = at + 2;
    for index in 0..usize::from(columns) {
        let end = after_cstring(at + 1)?;
        if data.get(at + 1..end - 1)? == name.as_bytes() {
            return Some(index);
        }
        at = end + 8;
    }
    None
}

/// The text of column `index` of a pgoutput `Insert` message's new tuple: `I`, the relation's
/// oid, `N`, the column count, then per column `n` (null), `u` (unchanged TOAST) or `t`/`b`
/// with a length and the bytes.
fn pgoutput_insert_column(data: &[u8], index: usize) -> Option<&[u8]> {
    let columns = u16::from_be_bytes(data.get(6..8)?.try_into().ok()?);
    let mut at = 8;
    for column in 0..usize::from(columns) {
        let kind = *data.get(at)?;
        at += 1;
        let value = match kind {
            b't' | b'b' => {
                let len = u32::from_be_bytes(data.get(at..at + 4)?.try_into().ok()?) as usize;
                at += 4 + len;
                Some(data.get(at - len..at)?)
            }
            _ => None,
        };
        if column == index {
            return value;
        }
    }
    None
}

async fn wal_read(args: &Args) -> Result<(), BoxError> {
    use pgwire_replication::ReplicationEvent;

    let slot = args.str("--slot")?;
    let publication = args.str("--publication")?;
    let rows = args.num("--rows", 0)?;
    if rows == 0 {
        return Err("--rows must be positive: a limit over zero rows measures nothing".into());
    }
    let clk_tck = args.num("--clk-tck", 100)?;
    let timeout = Duration::from_secs(args.num("--timeout", 600)?);
    let cpu0 = own_cpu_seconds(clk_tck)?;
    let start = Instant::now();
    let mut client = replication_client(&slot, &publication, "wal-read").await?;
    // The walsender serving this session: its CPU is the decoding's (pgoutput runs in it).
    let walsender = client
        .simple_query("SELECT pg_backend_pid()")
        .await?
        .first()
        .and_then(|row| row.first().cloned().flatten())
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .ok_or("SELECT pg_backend_pid() returned no row")?;
    let ws0 = cpu_seconds(&walsender, clk_tck)?;
    client.start().await?;
    client.wait_started().await?;

    let (mut seen, mut transactions) = (0u64, 0u64);
    let mut first: Option<f64> = None;
    let mut samples = Vec::new();
    let mut last_sample = Instant::now();
    // The end of the transaction that holds the Nth row: what is confirmed.
    let end = loop {
        if start.elapsed() > timeout {
            return Err(format!("{seen} of {rows} rows on slot {slot} within {timeout:?}").into());
        }
        let event = match tokio::time::timeout(Duration::from_secs(30), client.recv()).await {
            Ok(Ok(Some(event))) => event,
            Ok(Ok(None)) => return Err("the replication stream ended".into()),
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => {
                return Err(
                    format!("no replication event for 30 s after {seen} of {rows} rows").into(),
                );
            }
        };
        match event {
            // pgoutput's Insert message; the publication holds only the benchmark's table.
            ReplicationEvent::XLogData { data, .. } if data.first() == Some(&b'I') => {
                seen += 1;
                if first.is_none() {
                    first = Some(start.elapsed().as_secs_f64());
                }
            }
            ReplicationEvent::Commit { end_lsn, .. } => {
                transactions += 1;
                if seen >= rows {
                    break end_lsn;
                }
            }
            _ => {}
        }
        if last_sample.elapsed() >= Duration::from_millis(100) {
            last_sample = Instant::now();
            let t = start.elapsed().as_secs_f64();
            samples.push((t, seen));
            bar("wal", seen, rows, t);
        }
    };
    client.update_applied_lsn(end);
    // Confirmed: the standby status carrying `end` was sent (status interval 100 ms).
    let metrics = client.metrics();
    let confirm_deadline = Instant::now() + Duration::from_secs(30);
    while metrics.last_applied_lsn() < end {
        if Instant::now() > confirm_deadline {
            return Err(format!("the position {end} was not confirmed within 30 s").into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let ws = cpu_seconds(&walsender, clk_tck)? - ws0;
    let cpu = own_cpu_seconds(clk_tck)? - cpu0;
    client.stop();
    client.join().await?;
    eprintln!();
    let first = first.unwrap_or(secs);
    println!(
        "{}",
        serde_json::json!({
            "rows": seen, "transactions": transactions, "confirmed_lsn": end.to_string(),
            "seconds": secs, "t_first": first, "events_per_s": seen as f64 / secs,
            "events_per_s_drain": if secs > first { Some(seen as f64 / (secs - first)) } else { None },
            "cpu_s": cpu, "cpu_s_per_m": cpu / seen as f64 * 1e6,
            "walsender_pid": walsender, "walsender_cpu_s": ws,
            "walsender_cpu_s_per_m": ws / seen as f64 * 1e6, "samples": samples,
        })
    );
    Ok(())
}

fn main() -> Result<(), BoxError> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = Args(argv.clone());
    // The two limits run on a current-thread runtime, as the relay does (`outbox-relay`'s
    // `main`): on a multi-thread one the replication reader hands every message to another
    // thread, which cost the relay a third of its CPU per event (BENCHMARKS.md, round 2).
    let limit = matches!(
        argv.first().map(String::as_str),
        Some("producer" | "wal-read")
    );
    let runtime = if limit {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    }
    .enable_all()
    .build()?;
    runtime.block_on(async {
        match argv.first().map(String::as_str) {
            Some("producer") => producer(&args).await,
            Some("latency") => latency(&args).await,
            Some("compare") => tokio::task::spawn_blocking(move || compare(&args)).await?,
            Some("distinct") => tokio::task::spawn_blocking(move || distinct(&args)).await?,
            Some("binlog-read") => binlog_read(&args).await,
            Some("wal-read") => wal_read(&args).await,
            _ => Err(
                "usage: bench producer|latency|compare|distinct|binlog-read|wal-read ... (see the file's doc comment)"
                    .into(),
            ),
        }
    })
}
