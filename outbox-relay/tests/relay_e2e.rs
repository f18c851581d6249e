//! End-to-end tests of `outbox-relay` against the real PostgreSQL and Kafka: each test has its
//! own table, slot, publication and topics, so they run in parallel. The outage tests, which
//! stop shared services, live in `relay_outages.rs`.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::*;
use outbox_core::WriteMode;
use sea_orm::{ConnectionTrait, DbBackend, Statement, TransactionTrait};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(180);

/// A tiny deterministic generator (xorshift), so writers need no `rand`.
struct Rng(u64);
impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// (a) 10,000 events from 8 concurrent writers; transactions interleave aggregates and commit
/// out of their start order. Every event arrives once the stream settles, each aggregate's
/// events in commit order (a per-aggregate sequence taken under a row lock held to commit), with
/// the topic, key, value and headers of Debezium's Event Router.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_arrive_complete_and_in_per_aggregate_commit_order() {
    const WRITERS: u64 = 8;
    const PER_WRITER: usize = 1250;
    const AGGREGATES: u64 = 40;
    let fx = Fixture::new("relay_order", WriteMode::Insert).await;
    let seq_table = format!("{}_seq", fx.name);
    fx.db
        .execute_unprepared(&format!(
            "CREATE TABLE \"{seq_table}\" (agg text PRIMARY KEY, n integer NOT NULL);
             INSERT INTO \"{seq_table}\" SELECT 'agg-' || g, 0 FROM generate_series(0, {}) g",
            AGGREGATES - 1
        ))
        .await
        .expect("sequence table");
    let mut relay = fx.start_relay(&[]);

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let db = fx.db.clone();
        let outbox = fx.outbox();
        let seq_table = seq_table.clone();
        writers.push(tokio::spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (w + 1));
            let mut written = Vec::new();
            while written.len() < PER_WRITER {
                let size = (1 + rng.next(4) as usize).min(PER_WRITER - written.len());
                let mut aggs: Vec<u64> = (0..size).map(|_| rng.next(AGGREGATES)).collect();
                aggs.sort_unstable();
                let txn = db.begin().await.expect("begin");
                let mut events = Vec::new();
                for a in aggs {
                    let agg = format!("agg-{a}");
                    // The row lock is held to commit, so `seq` is this aggregate's commit order.
                    let row = txn
                        .query_one_raw(Statement::from_sql_and_values(
                            DbBackend::Postgres,
                            format!(
                                "UPDATE \"{seq_table}\" SET n = n + 1 WHERE agg = $1 RETURNING n"
                            ),
                            [agg.clone().into()],
                        ))
                        .await
                        .expect("next seq")
                        .expect("seq row");
                    let seq: i32 = row.try_get_by_index(0).expect("seq");
                    events.push(event(
                        agg,
                        json!({"seq": seq, "writer": w, "note": "ünïcode ✓"}),
                    ));
                }
                let rows = outbox_core::write_events(
                    &txn,
                    &outbox,
                    events.iter().map(|e| e as &dyn outbox_core::DomainEvent),
                )
                .await
                .expect("write_events");
                // Hold the transaction open a little, so commits land out of start order.
                tokio::time::sleep(Duration::from_micros(rng.next(3000))).await;
                txn.commit().await.expect("commit");
                written.extend(rows);
            }
            written
        }));
    }
    let mut expected = HashMap::new();
    for w in writers {
        for row in w.await.expect("writer") {
            expected.insert(row.id.to_string(), row);
        }
    }
    assert_eq!(expected.len(), (WRITERS as usize) * PER_WRITER);
    let ids: HashSet<String> = expected.keys().cloned().collect();

    let mut reader = Reader::new(&[&fx.topic()]);
    reader
        .read_until(WAIT, has_all(&ids), || relay.log_text())
        .await;
    reader.settle(Duration::from_secs(2)).await;
    assert!(relay.is_running(), "relay died:\n{}", relay.log_text());

    let mut last_seq: HashMap<String, i64> = HashMap::new();
    let mut seen = HashSet::new();
    let mut by_offset = reader.messages.clone();
    by_offset.sort_by_key(|m| (m.partition, m.offset));
    for m in &by_offset {
        let id = m.id();
        let row = expected
            .get(&id)
            .unwrap_or_else(|| panic!("unexpected event {id}"));
        assert_eq!(m.topic, fx.topic());
        assert_eq!(
            m.key.as_deref(),
            Some(row.aggregate_id.as_str()),
            "key of {id}"
        );
        assert_eq!(m.json(), row.payload, "value of {id}");
        assert_eq!(
            m.headers.get("eventType").map(String::as_str),
            Some("OrderChanged")
        );
        assert!(
            !m.headers.contains_key("traceparent"),
            "no trace context was written"
        );
        if !seen.insert(id.clone()) {
            continue; // a duplicate; order is judged on first deliveries
        }
        let seq = m.json()["seq"].as_i64().expect("seq");
        let last = last_seq.entry(row.aggregate_id.clone()).or_insert(0);
        assert_eq!(
            seq,
            *last + 1,
            "aggregate {} out of commit order",
            row.aggregate_id
        );
        *last = seq;
    }
    assert_eq!(seen, ids);
    let duplicates = reader.messages.len() - ids.len();
    println!("(a) {} events, {duplicates} duplicates", ids.len());
    assert_eq!(
        duplicates, 0,
        "no failure happened, so nothing is sent twice"
    );

    relay.stop_gracefully(Duration::from_secs(60));
    fx.db
        .execute_unprepared(&format!("DROP TABLE \"{seq_table}\""))
        .await
        .expect("drop seq");
    fx.teardown().await;
}

/// (b) SIGKILL mid-stream, then restart: nothing is lost, and the duplicates are exactly the
/// unacknowledged tail, sent again in order (checked per partition); their count is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_nothing_and_duplicates_only_the_tail() {
    let fx = Fixture::new("relay_crash", WriteMode::Insert).await;
    let mut relay = fx.start_relay(&[]);
    let mut ids = HashSet::new();
    let mut reader = Reader::new(&[&fx.topic()]);
    // Write for a few seconds, so that several standby status updates confirm part of the
    // stream, and kill the relay while events still flow.
    for batch in 0..40 {
        fx.write_batches(&mut ids, batch..batch + 1, 50, ("a", 13))
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        if batch == 30 {
            relay.kill();
        }
    }
    fx.write_batches(&mut ids, 40..50, 50, ("a", 13)).await;
    let mut relay = fx.start_relay(&[]);
    reader
        .read_until(WAIT, has_all(&ids), || relay.log_text())
        .await;
    reader.settle(Duration::from_secs(2)).await;
    assert_eq!(reader.ids(), ids, "every event arrives, and nothing else");
    let duplicates = check_duplicates_are_one_tail(&reader.messages);
    println!(
        "(b) crash: {} events, {} messages, {duplicates} duplicates from the unacknowledged tail",
        ids.len(),
        reader.messages.len()
    );
    assert_eq!(reader.messages.len(), ids.len() + duplicates);
    assert!(
        duplicates < 1500,
        "the tail is what followed the last confirmed position"
    );
    relay.stop_gracefully(Duration::from_secs(60));
    fx.teardown().await;
}

/// (e) An event over the producer's size limit goes to the dead-letter topic with headers that
/// name the reason and the WAL position; so does one whose topic name is illegal; the events
/// after them are delivered (with `traceparent` propagated from `tracingspancontext`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_and_invalid_topic_events_are_dead_lettered_and_the_stream_goes_on() {
    let fx = Fixture::new("relay_dlq", WriteMode::Insert).await;
    let mut relay = fx.start_relay(&["-X", "message.max.bytes=200000"]);
    let before = fx.write(&[event("k1", json!({"n": 1}))]).await;
    let big = fx
        .write(&[event("k2", json!({"blob": "x".repeat(300_000)}))])
        .await;
    // An aggregate type that makes an illegal topic name, written with plain SQL.
    let bad_id = uuid::Uuid::now_v7().to_string();
    fx.db
        .execute_unprepared(&format!(
            "INSERT INTO \"{}\" (id, aggregatetype, aggregateid, type, payload, timestamp, tracingspancontext) \
             VALUES ('{bad_id}', 'not a/topic!', 'k3', 'Bad', '{{\"n\": 3}}', now(), NULL)",
            fx.name
        ))
        .await
        .expect("insert bad");
    let traced_id = uuid::Uuid::now_v7().to_string();
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    fx.db
        .execute_unprepared(&format!(
            "INSERT INTO \"{}\" (id, aggregatetype, aggregateid, type, payload, timestamp, tracingspancontext) \
             VALUES ('{traced_id}', 'Order', 'k4', 'Traced', '{{\"n\": 4}}', now(), '{traceparent}, congo=t61')",
            fx.name
        ))
        .await
        .expect("insert traced");
    let after = fx.write(&[event("k5", json!({"n": 5}))]).await;

    let mut delivered = Reader::new(&[&fx.topic()]);
    let want: HashSet<String> = [
        before[0].id.to_string(),
        traced_id.clone(),
        after[0].id.to_string(),
    ]
    .into();
    delivered
        .read_until(WAIT, has_all(&want), || relay.log_text())
        .await;
    let traced = delivered
        .messages
        .iter()
        .find(|m| m.id() == traced_id)
        .expect("traced");
    assert_eq!(
        traced.headers.get("traceparent").map(String::as_str),
        Some(traceparent)
    );
    assert_eq!(
        traced.headers.get("tracestate").map(String::as_str),
        Some("congo=t61")
    );
    assert_eq!(
        traced.headers.get("eventType").map(String::as_str),
        Some("Traced")
    );

    let mut dlq = Reader::new(&[&fx.dlq_topic()]);
    let dead: HashSet<String> = [big[0].id.to_string(), bad_id.clone()].into();
    dlq.read_until(WAIT, has_all(&dead), || relay.log_text())
        .await;
    let oversize = dlq
        .messages
        .iter()
        .find(|m| m.id() == big[0].id.to_string())
        .expect("oversize");
    let reason = oversize
        .headers
        .get("dlq.reason")
        .cloned()
        .unwrap_or_default();
    assert!(
        reason.to_lowercase().contains("too large"),
        "reason: {reason}"
    );
    assert_eq!(oversize.key.as_deref(), Some("k2"));
    assert_eq!(
        oversize.value, None,
        "the oversize value is left out of the dead letter"
    );
    assert!(oversize.headers.contains_key("dlq.original.value.bytes"));
    assert!(
        oversize
            .headers
            .get("dlq.source.lsn")
            .is_some_and(|l| l.contains('/'))
    );
    assert_eq!(
        oversize.headers.get("dlq.original.topic"),
        Some(&fx.topic())
    );
    let invalid = dlq
        .messages
        .iter()
        .find(|m| m.id() == bad_id)
        .expect("invalid topic");
    assert!(invalid.headers.contains_key("dlq.reason"));
    assert_eq!(invalid.json(), json!({"n": 3}));
    assert!(relay.is_running());
    relay.stop_gracefully(Duration::from_secs(60));
    fx.teardown().await;
}

/// (f) Remove-after-insert: the table stays empty, and every event is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_after_insert_keeps_the_table_empty_and_delivers_everything() {
    let fx = Fixture::new("relay_rai", WriteMode::RemoveAfterInsert).await;
    let mut relay = fx.start_relay(&[]);
    let mut ids = HashSet::new();
    fx.write_batches(&mut ids, 0..10, 50, ("r", 7)).await;
    assert_eq!(
        fx.row_count().await,
        0,
        "remove-after-insert leaves no rows"
    );
    let mut reader = Reader::new(&[&fx.topic()]);
    reader
        .read_until(WAIT, has_all(&ids), || relay.log_text())
        .await;
    reader.settle(Duration::from_secs(1)).await;
    assert_eq!(reader.messages.len(), ids.len());
    relay.stop_gracefully(Duration::from_secs(60));
    fx.teardown().await;
}

/// (g) Tableless: the `message` source delivers the same stream, in per-aggregate order,
/// ignores messages with another prefix, and dead-letters a message with its prefix that is not
/// an outbox event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_source_delivers_the_same_stream() {
    let prefix = unique("outbox_msg");
    let fx = Fixture::new(
        "relay_msg",
        WriteMode::LogicalMessage {
            prefix: prefix.clone(),
        },
    )
    .await;
    let mut relay = fx.start_relay(&[]);
    let mut written = Vec::new();
    for batch in 0..10 {
        let events: Vec<_> = (0..50)
            .map(|i| {
                event(
                    format!("m{}", i % 5),
                    json!({"b": batch, "i": i, "k": i % 5}),
                )
            })
            .collect();
        written.extend(fx.write(&events).await);
        fx.db
            .execute_unprepared("SELECT pg_logical_emit_message(true, 'someone-else', 'not ours')")
            .await
            .expect("foreign message");
    }
    // A message with our prefix that is not an outbox event is dead-lettered, not dropped.
    fx.db
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_logical_emit_message(true, $1, 'not json')",
            [prefix.clone().into()],
        ))
        .await
        .expect("undecodable message");
    let ids: HashSet<String> = written.iter().map(|r| r.id.to_string()).collect();
    let mut reader = Reader::new(&[&fx.topic()]);
    reader
        .read_until(WAIT, has_all(&ids), || relay.log_text())
        .await;
    reader.settle(Duration::from_secs(1)).await;
    assert_eq!(reader.messages.len(), ids.len());
    let mut dlq = Reader::new(&[&fx.dlq_topic()]);
    dlq.read_until(WAIT, |m| !m.is_empty(), || relay.log_text())
        .await;
    assert_eq!(dlq.messages[0].value.as_deref(), Some(&b"not json"[..]));
    let reason = dlq.messages[0]
        .headers
        .get("dlq.reason")
        .cloned()
        .unwrap_or_default();
    assert!(reason.contains("not an outbox event"), "{reason}");
    let by_id: HashMap<String, &outbox_core::OutboxEvent> =
        written.iter().map(|r| (r.id.to_string(), r)).collect();
    let mut position: HashMap<String, usize> = HashMap::new();
    for (n, r) in written.iter().enumerate() {
        position.insert(r.id.to_string(), n);
    }
    let mut sorted = reader.messages.clone();
    sorted.sort_by_key(|m| (m.partition, m.offset));
    let mut last: HashMap<String, usize> = HashMap::new();
    for m in &sorted {
        let row = by_id[&m.id()];
        assert_eq!(m.key.as_deref(), Some(row.aggregate_id.as_str()));
        assert_eq!(m.json(), row.payload);
        assert_eq!(
            m.headers.get("eventType").map(String::as_str),
            Some("OrderChanged")
        );
        let n = position[&m.id()];
        if let Some(prev) = last.insert(row.aggregate_id.clone(), n) {
            assert!(prev < n, "aggregate {} out of order", row.aggregate_id);
        }
    }
    relay.stop_gracefully(Duration::from_secs(60));
    fx.teardown().await;
}

/// (h) After a graceful stop (SIGTERM, exit 0) and a restart, no event is delivered twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_then_restart_delivers_nothing_twice() {
    let fx = Fixture::new("relay_graceful", WriteMode::Insert).await;
    let metrics_addr = free_local_addr();
    let mut relay = fx.start_relay(&["--metrics-listen", &metrics_addr]);
    let mut ids = HashSet::new();
    fx.write_batches(&mut ids, 0..10, 100, ("g", 9)).await;
    let mut reader = Reader::new(&[&fx.topic()]);
    reader
        .read_until(WAIT, has_all(&ids), || relay.log_text())
        .await;

    // The metrics listener: ready and live while streaming, /metrics with the published count, and
    // `status` reads the count from the running relay.
    for probe in ["/readyz", "/livez", "/healthz"] {
        let (code, _) = http_get(&metrics_addr, probe);
        assert_eq!(code, 200, "{probe} while streaming");
    }
    let published =
        wait_for_metric(&metrics_addr, "outbox_relay_events_published_total", 1000.0).await;
    assert_eq!(published, 1000.0);
    let (_, body) = http_get(&metrics_addr, "/metrics");
    for name in [
        "outbox_relay_lag_bytes",
        "outbox_relay_lag_seconds",
        "outbox_relay_transaction_events_bucket",
        r#"outbox_relay_events_dead_lettered_total{source="wal"} 0"#,
        r#"outbox_relay_state{source="wal",state="leading"} 1"#,
    ] {
        assert!(body.contains(name), "{name} missing:\n{body}");
    }
    let out = fx
        .command("status")
        .args(["--metrics-listen", &metrics_addr])
        .output()
        .expect("status");
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|line| line == "published: 1000"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let status = relay.terminate(Duration::from_secs(60));
    assert_eq!(
        status.code(),
        Some(0),
        "graceful stop exits 0:\n{}",
        relay.log_text()
    );

    // `status` reports the slot after the stop.
    let out = fx.command("status").output().expect("status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("confirmed_lsn: ") && text.contains("lag_bytes: "),
        "{text}"
    );

    fx.write_batches(&mut ids, 10..15, 100, ("g", 9)).await;
    let mut relay = fx.start_relay(&[]);
    reader
        .read_until(WAIT, has_all(&ids), || relay.log_text())
        .await;
    reader.settle(Duration::from_secs(3)).await;
    assert_eq!(reader.messages.len(), ids.len(), "nothing delivered twice");
    relay.stop_gracefully(Duration::from_secs(60));
    fx.teardown().await;
}

/// (h1) A SIGTERM while the relay is still starting (right after its first log line, before it
/// has connected) is a graceful stop: exit 0 and "relay stopped" logged, never the signal's
/// default action. Five times, since the start-up window is short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_start_up_is_a_graceful_stop() {
    let fx = Fixture::new("relay_early_term", WriteMode::Insert).await;
    for attempt in 0..5 {
        let mut relay = fx.start_relay(&[]);
        let status = relay.terminate(Duration::from_secs(60));
        let log = relay.log_text();
        assert_eq!(
            status.code(),
            Some(0),
            "attempt {attempt}: a SIGTERM during start-up exits 0, got {status}:\n{log}"
        );
        assert!(
            log.contains("relay stopped"),
            "attempt {attempt}: the stop is logged:\n{log}"
        );
    }
    fx.teardown().await;
}

/// (h2) A graceful stop that lands inside a source transaction reads the rest of it first: the
/// whole transaction arrives before the relay exits, and the next relay sends none of it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_inside_a_transaction_finishes_it() {
    // Large enough that the relay is still inside it when the first event is read.
    const EVENTS: usize = 60_000;
    let fx = Fixture::new("relay_stop_inside", WriteMode::Insert).await;
    fx.db
        .execute_unprepared(&format!(
            r#"INSERT INTO "{}" (id, aggregatetype, aggregateid, type, payload, "timestamp")
               SELECT gen_random_uuid(), '{AGGREGATE_TYPE}', 'a' || (i % 50), 'Created',
                      jsonb_build_object('i', i), now()
               FROM generate_series(1, {EVENTS}) AS i"#,
            fx.name
        ))
        .await
        .expect("one transaction of events");
    let mut relay = fx.start_relay(&[]);
    let mut reader = Reader::new(&[&fx.topic()]);
    reader
        .read_until(WAIT, |m| !m.is_empty(), || relay.log_text())
        .await;
    let status = relay.terminate(Duration::from_secs(120));
    let log = relay.log_text();
    assert_eq!(status.code(), Some(0), "graceful stop exits 0:\n{log}");
    assert!(
        log.contains("reading the rest of the source transaction in progress"),
        "the stop came inside the transaction:\n{log}"
    );
    // Before any restart: the stop shipped the whole transaction.
    reader
        .read_until(
            Duration::from_secs(60),
            |m| m.len() >= EVENTS,
            || format!("the rest of the transaction, after the stop:\n{log}"),
        )
        .await;

    let mut relay = fx.start_relay(&[]);
    reader.settle(Duration::from_secs(3)).await;
    assert_eq!(reader.ids().len(), EVENTS);
    assert_eq!(reader.messages.len(), EVENTS, "nothing delivered twice");
    relay.stop_gracefully(Duration::from_secs(60));
    fx.teardown().await;
}

/// Bad configuration is a clear error naming the key, never a panic.
#[test]
fn bad_configuration_names_the_key() {
    let dir = std::env::temp_dir().join(unique("relay_cfg"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("relay.toml");
    std::fs::write(&file, "[kafka]\ntopik = \"x\"\n").expect("write config");
    let out = std::process::Command::new(BIN)
        .args(["run", "--config"])
        .arg(&file)
        .env_remove("DATABASE_URL")
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("topik") && !err.contains("panicked"), "{err}");

    let out = std::process::Command::new(BIN)
        .args(["run", "--kafka-brokers", "k:1"])
        .env_remove("DATABASE_URL")
        .env_remove("OUTBOX_RELAY_CONFIG")
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("`database_url`"), "{err}");

    let out = std::process::Command::new(BIN)
        .args([
            "run",
            "--database-url",
            "postgres://u:hunter2@h/db",
            "--kafka-brokers",
            "k:1",
        ])
        .args(["--placement", "type:body"])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("kafka.additional_placement") && !err.contains("hunter2"),
        "{err}"
    );

    // Topic names Kafka would refuse stop the relay at start, for either source: a bad
    // dead-letter topic would otherwise stall the stream at its first dead letter.
    for source in ["wal", "poll"] {
        for (flag, value, key) in [
            (
                "--dead-letter-topic",
                "dead letters",
                "kafka.dead_letter_topic",
            ),
            ("--topic", "outbox/${routedByValue}", "kafka.topic"),
        ] {
            let out = std::process::Command::new(BIN)
                .args(["run", "--source", source, flag, value])
                .args(["--database-url", "postgres://u:p@127.0.0.1:1/db"])
                .args(["--kafka-brokers", "127.0.0.1:1"])
                .output()
                .expect("run");
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{source} {flag}: {err}");
            assert!(
                err.contains(key) && err.contains("Kafka topic") && err.contains(value),
                "{source} {flag}: {err}"
            );
        }
    }
}

/// Polls `/metrics` until `name` reaches `at_least` (or 30 s pass); returns the last value.
/// The value of `line` when it is the `wal` source's sample of metric `name`.
fn metric_value(line: &str, name: &str) -> Option<f64> {
    let rest = line.strip_prefix(name)?.strip_prefix(r#"{source="wal"}"#)?;
    rest.trim().parse().ok()
}

async fn wait_for_metric(addr: &str, name: &str, at_least: f64) -> f64 {
    let mut value = 0.0;
    for _ in 0..300 {
        let (_, body) = http_get(addr, "/metrics");
        value = body
            .lines()
            .find_map(|l| metric_value(l, name))
            .unwrap_or(0.0);
        if value >= at_least {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    value
}

/// Heartbeat: with nothing to ship, the slot still follows the server's WAL, so an idle outbox
/// holds no WAL while other tables are written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_outbox_does_not_hold_wal() {
    let fx = Fixture::new("relay_idle", WriteMode::Insert).await;
    let mut relay = fx.start_relay(&[]);
    let other = format!("{}_other", fx.name);
    fx.db
        .execute_unprepared(&format!(
            "CREATE TABLE \"{other}\" (n integer); INSERT INTO \"{other}\" SELECT generate_series(1, 20000)"
        ))
        .await
        .expect("unrelated writes");
    let row = fx
        .db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT pg_current_wal_lsn()::text",
        ))
        .await
        .expect("lsn")
        .expect("row");
    let after: String = row.try_get_by_index(0).expect("lsn");
    let mut caught_up = false;
    for _ in 0..300 {
        let row = fx
            .db
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT confirmed_flush_lsn >= $2::pg_lsn FROM pg_replication_slots WHERE slot_name = $1",
                [fx.name.clone().into(), after.clone().into()],
            ))
            .await
            .expect("slot")
            .expect("row");
        if row.try_get_by_index::<bool>(0).expect("bool") {
            caught_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        caught_up,
        "the slot did not follow the WAL past {after}:\n{}",
        relay.log_text()
    );
    relay.stop_gracefully(Duration::from_secs(60));
    fx.db
        .execute_unprepared(&format!("DROP TABLE \"{other}\""))
        .await
        .expect("drop");
    fx.teardown().await;
}

/// One relay per slot: a second relay on the same slot waits (the slot is busy, so it backs off
/// and retries), and takes over when the first dies; nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_relay_waits_for_the_slot_and_takes_over() {
    let fx = Fixture::new("relay_failover", WriteMode::Insert).await;
    let mut first = fx.start_relay(&[]);
    let mut ids = HashSet::new();
    let mut reader = Reader::new(&[&fx.topic()]);
    fx.write_batches(&mut ids, 0..5, 100, ("f", 7)).await;
    reader
        .read_until(WAIT, has_all(&ids), || first.log_text())
        .await;

    let mut second = fx.start_relay(&[]);
    let mut waiting = false;
    for _ in 0..300 {
        if second.log_text().contains("is active for PID") {
            waiting = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        waiting,
        "the second relay should find the slot busy:\n{}",
        second.log_text()
    );
    first.kill();
    fx.write_batches(&mut ids, 5..10, 100, ("f", 7)).await;
    reader
        .read_until(WAIT, has_all(&ids), || second.log_text())
        .await;
    assert!(second.is_running());
    println!(
        "failover: {} events, {} duplicates",
        ids.len(),
        reader.messages.len() - ids.len()
    );
    second.stop_gracefully(Duration::from_secs(60));
    fx.teardown().await;
}

/// Kafka's Java producer partitioner (Debezium's): `toPositive(murmur2(key)) % partitions`, the
/// published murmur2 variant with seed 0x9747b28c.
fn java_partition(key: &[u8], partitions: u32) -> i32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ key.len() as u32;
    let mut chunks = key.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        for (i, b) in tail.iter().enumerate() {
            h ^= u32::from(*b) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    ((h & 0x7fff_ffff) % partitions) as i32
}

#[test]
fn java_partition_matches_what_debezium_chose_on_this_broker() {
    // Observed with Debezium 3.6.1 on a 4-partition topic (scripts/debezium/README.md).
    for (key, partition) in [
        ("order-00001", 0),
        ("order-00002", 0),
        ("order-00003", 0),
        ("order-00004", 1),
    ] {
        assert_eq!(java_partition(key.as_bytes(), 4), partition, "{key}");
    }
}

/// Switching from Debezium to this relay keeps every aggregate on the partition Debezium used,
/// so per-aggregate order holds across the switch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_lands_on_the_partition_debeziums_java_producer_picks() {
    let fx = Fixture::new("relay_partition", WriteMode::Insert).await;
    let mut relay = fx.start_relay(&[]);
    let events: Vec<TestEvent> = (1..=200)
        .map(|i| event(format!("order-{i:05}"), json!({ "n": i })))
        .collect();
    let ids: HashSet<String> = fx
        .write(&events)
        .await
        .iter()
        .map(|e| e.id.to_string())
        .collect();
    let mut reader = Reader::new(&[&fx.topic()]);
    reader
        .read_until(WAIT, has_all(&ids), || relay.log_text())
        .await;
    let mut partitions_used = HashSet::new();
    for m in &reader.messages {
        let key = m.key.as_deref().expect("keyed by aggregateid");
        assert_eq!(m.partition, java_partition(key.as_bytes(), 4), "key {key}");
        partitions_used.insert(m.partition);
    }
    assert_eq!(
        partitions_used.len(),
        4,
        "200 keys spread over all 4 partitions"
    );
    relay.stop_gracefully(Duration::from_secs(60));
    fx.teardown().await;
}
