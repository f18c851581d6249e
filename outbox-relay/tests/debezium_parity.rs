//! Byte parity with Debezium (issue 16): the real Debezium 3.6.1 (PostgreSQL connector + Outbox
//! Event Router on Kafka Connect 4.3.1, started through `scripts/bench-debezium --serve`) and
//! our relay read the same rows of one table, in Debezium's documented outbox shape plus one
//! column of each common type placed as a header, and both write to the same topic. Messages are
//! paired by event id (Debezium's carry `__debezium.*` headers); the test fails if any pair
//! differs in topic, partition, key bytes, value bytes (null vs empty included) or any header
//! other than `__debezium.*` (name, order, bytes, null vs empty), or if there are fewer pairs
//! than rows. Our relay runs with `--trace-headers false`: Debezium without OpenTelemetry adds
//! no trace headers.
//!
//! Needs PostgreSQL, Kafka, Java and Maven (or the jars cached in `.services/debezium`), as
//! `scripts/debezium/README.md` describes; one Connect start for the whole binary.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use sea_orm::ConnectionTrait;

/// Columns placed as headers, one per common type: `(column, SQL type, header)`.
const TYPED: &[(&str, &str, &str)] = &[
    ("c_tstz", "timestamptz", "h_tstz"),
    ("c_tstz3", "timestamptz(3)", "h_tstz3"),
    ("c_ts", "timestamp", "h_ts"),
    ("c_ts3", "timestamp(3)", "h_ts3"),
    ("c_date", "date", "h_date"),
    ("c_int", "integer", "h_int"),
    ("c_big", "bigint", "h_big"),
    ("c_num", "numeric", "h_num"),
    ("c_num2", "numeric(10,2)", "h_num2"),
    ("c_bool", "boolean", "h_bool"),
    ("c_uuid", "uuid", "h_uuid"),
    ("c_text", "text", "h_text"),
    ("c_jsonb", "jsonb", "h_jsonb"),
];

/// One message as read, every byte kept (a null header value is None).
#[derive(Debug, Clone, PartialEq)]
struct Raw {
    topic: String,
    partition: i32,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Raw {
    fn id(&self) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == "id")
            .and_then(|(_, v)| v.as_deref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    fn is_debezium(&self) -> bool {
        self.headers
            .iter()
            .any(|(k, _)| k.starts_with("__debezium."))
    }

    /// The message with its bytes as (lossy) text, for a failure message.
    fn show(&self) -> String {
        let text = |b: &Option<Vec<u8>>| match b {
            Some(b) => format!("{:?}", String::from_utf8_lossy(b)),
            None => "null".to_owned(),
        };
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(k, v)| format!("{k}={}", text(v)))
            .collect();
        format!(
            "topic={} partition={} key={} value={} headers=[{}]",
            self.topic,
            self.partition,
            text(&self.key),
            text(&self.value),
            headers.join(", ")
        )
    }

    /// The message without Debezium's own headers.
    fn comparable(&self) -> Raw {
        let mut m = self.clone();
        m.headers.retain(|(k, _)| !k.starts_with("__debezium."));
        m
    }
}

/// `scripts/bench-debezium --serve`, stopped (slot and publication dropped) when dropped.
struct Debezium {
    child: Child,
    log: std::path::PathBuf,
}

impl Debezium {
    fn serve(table: &str, aggregate_type: &str, placement: &str) -> Debezium {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        let log =
            std::path::PathBuf::from(format!("{root}/target/relay-logs/{table}-debezium.log"));
        std::fs::create_dir_all(log.parent().expect("log dir")).expect("creating the log dir");
        let mut child = Command::new("bash")
            .arg(format!("{root}/scripts/bench-debezium"))
            .args([
                "--serve",
                "--table",
                table,
                "--aggregate-type",
                aggregate_type,
            ])
            .env(
                "DBZ_CONNECTOR_EXTRA",
                format!("transforms.outbox.table.fields.additional.placement={placement}"),
            )
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("creating the Debezium log"))
            .spawn()
            .expect("spawning scripts/bench-debezium (needs bash, java, maven)");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let debezium = Debezium { child, log };
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with("READY ") => return debezium,
                Ok(_) => {}
                Err(_) => panic!(
                    "Debezium (scripts/bench-debezium --serve) did not report READY; its log:\n{}",
                    std::fs::read_to_string(&debezium.log).unwrap_or_default()
                ),
            }
        }
    }
}

impl Drop for Debezium {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(90);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = self.child.kill();
    }
}

/// Every message of `topic` from the beginning, until `done` holds or `timeout` passes.
fn read_all(topic: &str, timeout: Duration, done: impl Fn(&[Raw]) -> bool) -> Vec<Raw> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("group.id", unique("parity"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .create()
        .expect("Kafka consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut messages = Vec::new();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline && !done(&messages) {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        messages.push(Raw {
            topic: m.topic().to_owned(),
            partition: m.partition(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers,
        });
    }
    messages
}

/// The edge-case rows: `(id, aggregateid, payload, tracingspancontext, typed values)`, SQL
/// literals. Row 1 has every type set; others a NULL payload, NULL typed columns, trace
/// contexts as Java's `Properties.store` and other writers store them.
fn rows() -> Vec<String> {
    let all_types = "'2026-11-28 20:19:21.773017+00', '2026-11-28 20:19:21.5+02', \
         '2026-11-28 20:19:21.773017', '2026-11-28 20:19:21.5', '2026-11-28', 42, \
         9007199254740993, 12345.678900, 3.10, true, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', \
         'h\u{e9}llo \"x\" ''q''', '{\"b\": [1, 2.50], \"a\": null}'";
    let nulls = vec!["NULL"; TYPED.len()].join(", ");
    let other_types = "'1969-12-31 23:59:59.999999-03', '2026-01-01 00:00:00+00', \
         '1960-01-01 00:00:00.000001', '2026-01-01 00:00:00', '1970-01-01', -7, -1, -0.0012300, \
         -1.00, false, '00000000-0000-0000-0000-000000000000', '', '{}'";
    let java_trace = "E'#Sat Nov 28 20:19:21 UTC 2026\\r\\ntracestate=rojo\\\\=00f067aa0ba902b7,\
         congo\\\\=t61rcWkgMzE\\r\\ntraceparent=00-0af7651916cd43dd8448eb211c80319c-\
         b7ad6b7169203331-01\\r\\n'";
    let bare_trace = "'00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'";
    let mut rows = vec![
        format!("'order-1', '{{\"total\": 3, \"lines\": []}}', NULL, {all_types}"),
        format!("'order-2', NULL, NULL, {all_types}"),
        format!("'order-3', '{{\"a\": 1}}', NULL, {nulls}"),
        format!("'order-4', NULL, NULL, {nulls}"),
        format!("'order-5', '\"text\"', {java_trace}, {other_types}"),
        format!("'order-6', '[1, 2]', {bare_trace}, {other_types}"),
        format!("'order-7', 'null', NULL, {other_types}"),
    ];
    for i in 8..=24 {
        rows.push(format!(
            "'order-{i}', '{{\"n\": {i}}}', NULL, {}",
            if i % 2 == 0 { all_types } else { other_types }
        ));
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_ships_what_debezium_ships_byte_for_byte() {
    let table = unique("dbz_parity");
    let aggregate_type = unique("parity");
    let topic = format!("outbox.event.{aggregate_type}");
    let db = postgres(2).await;
    let typed: Vec<String> = TYPED
        .iter()
        .map(|(c, t, _)| format!("\"{c}\" {t} NULL"))
        .collect();
    // Debezium's documented outbox DDL, and the typed columns.
    db.execute_unprepared(&format!(
        "CREATE TABLE public.\"{table}\" (
           id uuid NOT NULL PRIMARY KEY, aggregatetype varchar(255) NOT NULL,
           aggregateid varchar(255) NOT NULL, type varchar(255) NOT NULL,
           payload jsonb, \"timestamp\" timestamptz NOT NULL DEFAULT now(),
           tracingspancontext varchar(256), {})",
        typed.join(", ")
    ))
    .await
    .expect("creating the outbox table");
    create_topics(&[&topic]).await;

    let mut placements = vec![
        "timestamp:header:h_ts_row".to_owned(),
        "type:header:eventType".to_owned(),
    ];
    placements.extend(TYPED.iter().map(|(c, _, h)| format!("{c}:header:{h}")));
    let debezium = Debezium::serve(&table, &aggregate_type, &placements.join(","));

    let relay_command = |subcommand: &str| {
        let mut c = Command::new(BIN);
        c.arg(subcommand)
            .args(["--slot", &table, "--publication", &table, "--table", &table])
            .args(["--dead-letter-topic", &format!("{table}.dlq")])
            .env("DATABASE_URL", database_url())
            .env("KAFKA_BROKERS", kafka_brokers())
            .env("RUST_LOG", "info,sqlx=warn");
        c
    };
    let setup = relay_command("setup").output().expect("outbox-relay setup");
    assert!(
        setup.status.success(),
        "setup failed: {}",
        String::from_utf8_lossy(&setup.stderr)
    );
    let mut run = relay_command("run");
    run.args(["--trace-headers", "false"]);
    for p in &placements {
        run.args(["--placement", p]);
    }
    let mut relay = RelayProcess::spawn(run, &table);

    let rows = rows();
    let columns: Vec<&str> = TYPED.iter().map(|(c, _, _)| *c).collect();
    for (i, row) in rows.iter().enumerate() {
        db.execute_unprepared(&format!(
            "INSERT INTO public.\"{table}\" (id, aggregatetype, type, \"timestamp\", aggregateid, \
             payload, tracingspancontext, {}) VALUES (md5('parity-{i}')::uuid, '{aggregate_type}', \
             'OrderPlaced', timestamptz '2026-11-28 20:19:21.773017+00' + {i} * interval '1 ms', {row})",
            columns.join(", ")
        ))
        .await
        .unwrap_or_else(|e| panic!("inserting row {i}: {e}"));
    }

    let n = rows.len();
    let messages = read_all(&topic, Duration::from_secs(240), |m| {
        m.iter().filter(|m| m.is_debezium()).count() >= n
            && m.iter().filter(|m| !m.is_debezium()).count() >= n
    });
    assert!(relay.is_running(), "the relay exited: {}", relay.log_text());
    relay.terminate(Duration::from_secs(30));
    drop(debezium);
    // The relay's slot and publication, then the table: an inactive slot would hold WAL.
    let teardown = relay_command("teardown")
        .output()
        .expect("outbox-relay teardown");
    assert!(
        teardown.status.success(),
        "teardown failed: {}",
        String::from_utf8_lossy(&teardown.stderr)
    );
    db.execute_unprepared(&format!("DROP TABLE public.\"{table}\""))
        .await
        .expect("dropping the outbox table");

    let mut theirs: HashMap<String, Raw> = HashMap::new();
    let mut ours: HashMap<String, Raw> = HashMap::new();
    for m in &messages {
        let id = m
            .id()
            .unwrap_or_else(|| panic!("a message without an id header: {m:?}"));
        let side = if m.is_debezium() {
            &mut theirs
        } else {
            &mut ours
        };
        assert!(
            side.insert(id.clone(), m.comparable()).is_none(),
            "id {id} twice"
        );
    }
    let mut pairs = 0;
    let mut differences = Vec::new();
    for (id, debezium) in &theirs {
        let Some(relay) = ours.get(id) else { continue };
        pairs += 1;
        if debezium != relay {
            differences.push(format!(
                "id {id}:\n  Debezium {}\n  relay    {}",
                debezium.show(),
                relay.show()
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "{} of {pairs} pairs differ:\n{}",
        differences.len(),
        differences.join("\n")
    );
    assert_eq!(
        pairs,
        n,
        "{n} rows but {pairs} pairs (Debezium sent {}, the relay {})",
        theirs.len(),
        ours.len()
    );
}
