//! Byte parity with Debezium (issue 16): the real Debezium 3.6.1 (PostgreSQL connector + Outbox
//! Event Router on Kafka Connect 4.3.1, started through `scripts/bench-debezium --serve`) and
//! our relay read the same rows of one table, in Debezium's documented outbox shape plus the
//! columns a case needs, and both write to the same topics. Messages are paired by event id
//! (Debezium's carry `__debezium.*` headers); a case fails if any pair differs in topic,
//! partition, key bytes, value bytes (null vs empty included), any header other than
//! `__debezium.*` (name, order, bytes, null vs empty) or, where the case sets the timestamp
//! column, the record timestamp; or if there are fewer pairs than rows. The relay runs without
//! trace headers: Debezium without OpenTelemetry adds none.
//!
//! Cases: every common column type placed as a header (StringConverter); the Event Router
//! options (`route.topic.regex`/`.replacement`, `table.field.event.timestamp`, `partition` and
//! `envelope` placements, `route.tombstone.on.empty.payload`, `table.expand.json.payload` under
//! JsonConverter), the relay configured by `--debezium-config` with the connector's own
//! configuration (REST JSON); and expanded JSON payloads of every shape (properties file).
//!
//! Needs PostgreSQL, Kafka, Java and Maven (or the jars cached in `.services/debezium`), as
//! `scripts/debezium/README.md` describes; one Connect per case.

mod common;
mod raw_support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use raw_support::{Raw, read_raw};
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
    ("c_float8", "double precision", "h_float8"),
    ("c_real", "real", "h_real"),
    ("c_uuid", "uuid", "h_uuid"),
    ("c_text", "text", "h_text"),
    ("c_jsonb", "jsonb", "h_jsonb"),
];

/// Whether Debezium sent `m` (it adds `__debezium.*` headers).
fn is_debezium(m: &Raw) -> bool {
    m.headers.iter().any(|(k, _)| k.starts_with("__debezium."))
}

/// `m` without Debezium's own headers, and without its timestamp unless `timestamps`.
fn comparable(m: &Raw, timestamps: bool) -> Raw {
    let mut m = m.clone();
    m.headers.retain(|(k, _)| !k.starts_with("__debezium."));
    if !timestamps {
        m.timestamp = None;
    }
    m
}

/// `scripts/bench-debezium --serve`, stopped (slot and publication dropped) when dropped.
struct Debezium {
    child: Child,
    log: std::path::PathBuf,
}

impl Debezium {
    /// Debezium on `table` with value converter `converter` (`string`, `json`) and `extra`
    /// connector lines.
    fn serve(table: &str, aggregate_type: &str, converter: &str, extra: &str) -> Debezium {
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
                "--converter",
                converter,
            ])
            .env("DBZ_CONNECTOR_EXTRA", extra)
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

/// How the relay is told what Debezium is told.
enum RelayConfig {
    /// Command-line flags.
    Flags(Vec<String>),
    /// `--debezium-config` with this file text (`{table}` replaced by the table's name).
    DebeziumConfig { file: &'static str, text: String },
}

/// One parity case.
struct Case {
    /// Columns after Debezium's documented ones, as DDL.
    columns: String,
    /// `scripts/bench-debezium --converter`.
    converter: &'static str,
    /// Connector lines for Debezium (`transforms.outbox.*` and others).
    debezium: String,
    relay: RelayConfig,
    /// The rows: `(aggregatetype, the other columns' names, their SQL values)`; the id is
    /// derived from the row's index.
    rows: Vec<(String, String, String)>,
    /// Every topic a row routes to.
    topics: Vec<String>,
    /// Whether the record timestamp must match too.
    timestamps: bool,
}

/// One case at a time: each starts a Kafka Connect JVM, and two machine cores do not start
/// several within the READY bound.
static ONE_CONNECT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs `case` through Debezium and the relay and compares the pairs.
async fn compare(table: &str, aggregate_type: &str, case: Case) {
    let _one = ONE_CONNECT.lock().await;
    let db = postgres(2).await;
    // Debezium's documented outbox DDL, and the case's columns.
    db.execute_unprepared(&format!(
        "CREATE TABLE public.\"{table}\" (
           id uuid NOT NULL PRIMARY KEY, aggregatetype varchar(255) NOT NULL,
           aggregateid varchar(255) NOT NULL, type varchar(255) NOT NULL,
           payload jsonb, \"timestamp\" timestamptz NOT NULL DEFAULT now(),
           tracingspancontext varchar(256){})",
        case.columns
    ))
    .await
    .expect("creating the outbox table");
    let topics: Vec<&str> = case.topics.iter().map(String::as_str).collect();
    create_topics(&topics).await;

    let debezium = Debezium::serve(table, aggregate_type, case.converter, &case.debezium);

    let logs = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/relay-logs");
    let relay_command = |subcommand: &str| {
        let mut c = Command::new(BIN);
        c.arg(subcommand)
            .args(["--dead-letter-topic", &format!("{table}.dlq")])
            .env("DATABASE_URL", database_url())
            .env("KAFKA_BROKERS", kafka_brokers())
            .env("RUST_LOG", "info,sqlx=warn");
        match &case.relay {
            RelayConfig::Flags(flags) => {
                c.args(["--slot", table, "--publication", table, "--table", table])
                    .args(flags);
            }
            RelayConfig::DebeziumConfig { file, text } => {
                // A connector configuration with the database is the relay's only source of it.
                if text.contains("database.hostname") {
                    c.env_remove("DATABASE_URL");
                }
                let path = format!("{logs}/{table}-{file}");
                std::fs::write(&path, text.replace("{table}", table))
                    .expect("writing the connector config");
                c.args(["--debezium-config", &path]);
            }
        }
        c
    };
    let setup = relay_command("setup").output().expect("outbox-relay setup");
    assert!(
        setup.status.success(),
        "setup failed: {}",
        String::from_utf8_lossy(&setup.stderr)
    );
    let mut relay = RelayProcess::spawn(relay_command("run"), table);

    for (i, (aggregate, names, values)) in case.rows.iter().enumerate() {
        db.execute_unprepared(&format!(
            "INSERT INTO public.\"{table}\" (id, aggregatetype, type, \"timestamp\", {names}) \
             VALUES (md5('parity-{i}')::uuid, '{aggregate}', 'OrderPlaced', \
             timestamptz '2026-11-28 20:19:21.773017+00' + {i} * interval '1 ms', {values})"
        ))
        .await
        .unwrap_or_else(|e| panic!("inserting row {i}: {e}"));
    }

    let n = case.rows.len();
    let messages = read_raw(&topics, Duration::from_secs(240), |m| {
        m.iter().filter(|m| is_debezium(m)).count() >= n
            && m.iter().filter(|m| !is_debezium(m)).count() >= n
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
        let side = if is_debezium(m) {
            &mut theirs
        } else {
            &mut ours
        };
        assert!(
            side.insert(id.clone(), comparable(m, case.timestamps))
                .is_none(),
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

/// The edge-case rows: `(id, aggregateid, payload, tracingspancontext, typed values)`, SQL
/// literals. Row 1 has every type set; others a NULL payload, NULL typed columns, trace
/// contexts as Java's `Properties.store` and other writers store them.
fn rows() -> Vec<String> {
    let all_types = "'2026-11-28 20:19:21.773017+00', '2026-11-28 20:19:21.5+02', \
         '2026-11-28 20:19:21.773017', '2026-11-28 20:19:21.5', '2026-11-28', 42, \
         9007199254740993, 12345.678900, 3.10, true, 1e20, 3, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', \
         'h\u{e9}llo \"x\" ''q''', '{\"b\": [1, 2.50], \"a\": null}'";
    let nulls = vec!["NULL"; TYPED.len()].join(", ");
    let other_types = "'1969-12-31 23:59:59.999999-03', '2026-01-01 00:00:00+00', \
         '1960-01-01 00:00:00.000001', '2026-01-01 00:00:00', '1970-01-01', -7, -1, -0.0012300, \
         -1.00, false, -0.1, 1.1, '00000000-0000-0000-0000-000000000000', '', '{}'";
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

/// The edge-case rows on a table with a column of every common type, each placed as `place`
/// (`header` or `envelope`), under Debezium's value converter `converter` (the relay's
/// `flags` match it).
async fn typed_case(place: &str, converter: &'static str, flags: &[&str]) {
    let table = unique(&format!("dbz_{place}"));
    let aggregate_type = unique(place);
    let typed: Vec<String> = TYPED
        .iter()
        .map(|(c, t, _)| format!(", \"{c}\" {t} NULL"))
        .collect();
    let mut placements = vec![
        format!("timestamp:{place}:h_ts_row"),
        format!("type:{place}:eventType"),
    ];
    placements.extend(TYPED.iter().map(|(c, _, h)| format!("{c}:{place}:{h}")));
    let mut relay_flags: Vec<String> = ["--trace-headers", "false"]
        .iter()
        .chain(flags)
        .map(|f| (*f).to_owned())
        .collect();
    for p in &placements {
        relay_flags.extend(["--placement".to_owned(), p.clone()]);
    }
    let columns: Vec<&str> = TYPED.iter().map(|(c, _, _)| *c).collect();
    let names = format!(
        "aggregateid, payload, tracingspancontext, {}",
        columns.join(", ")
    );
    let case = Case {
        columns: typed.concat(),
        converter,
        debezium: format!(
            "transforms.outbox.table.fields.additional.placement={}",
            placements.join(",")
        ),
        relay: RelayConfig::Flags(relay_flags),
        rows: rows()
            .into_iter()
            .map(|values| (aggregate_type.clone(), names.clone(), values))
            .collect(),
        topics: vec![format!("outbox.event.{aggregate_type}")],
        timestamps: false,
    };
    compare(&table, &aggregate_type, case).await;
}

/// Every common column type placed as a header (StringConverter, SimpleHeaderConverter).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_ships_what_debezium_ships_byte_for_byte() {
    typed_case("header", "string", &[]).await;
}

/// Every common column type placed as an `envelope` field (JsonConverter, schemas off): each
/// is rendered by its Kafka Connect schema, a number as a number, a boolean as `true`/`false`,
/// a decimal as its Kafka Connect form, a NULL as `null`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_envelope_fields_match_debezium() {
    typed_case("envelope", "json-string", &["--value-converter", "json"]).await;
}

/// JSON payloads of every shape Debezium's expansion meets (jsonb text, as both read it):
/// members null or empty, numbers of each Jackson kind, escapes, nested and mixed arrays, and
/// the ones Debezium keeps as a string. Not here: the payloads whose inferred schema Debezium
/// 3.6.1 keeps while it keeps the payload a string, which stop its task in JsonConverter
/// ("Invalid type for ARRAY: class java.lang.String"): a top-level array, an integer beyond
/// `long`, an array of objects and other values (the relay sends each as a JSON string; see
/// `format`'s tests).
const PAYLOADS: &[&str] = &[
    r#"{"total": 3, "lines": []}"#,
    r#"{"a": 1}"#,
    r#""text""#,
    "null",
    r#"{"b": [1, 2.50], "a": null}"#,
    r#"{"f": 2.50, "h": 0.0001, "j": 12345678.9, "k": -0.5, "z": 0.0}"#,
    r#"{"s": "h\u00e9llo \"q\" \\ \n\t\u001f / \u20ac"}"#,
    r#"{"l": [{"id": 1, "q": "x"}, {"id": 2, "q": "y"}]}"#,
    r#"{"n": {"m": {"k": [[1, 2], [3]]}}}"#,
    r#"{"big": 3000000000, "small": -5, "neg": -2147483649}"#,
    r#"{"e": {}, "t": true, "f": false}"#,
    r#"{"arr": [null, 1, null]}"#,
    r#"{"arr": [null]}"#,
    r#"{"l": [1, "a"]}"#,
    r#"{"l": [1, 3000000000]}"#,
];

/// A SQL literal of `text`.
fn sql_text(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The connector configuration both get, as a user keeps it: Debezium's outbox example
/// (debezium-examples `outbox/register-postgres.json`, in Kafka Connect's REST form) pointed
/// at the test database, with the case's Event Router options.
fn rest_json(router: &[(&str, &str)]) -> String {
    let url = url::Url::parse(&database_url()).expect("DATABASE_URL is a URL");
    let mut config = serde_json::json!({
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "tasks.max": "1",
        "plugin.name": "pgoutput",
        "database.hostname": url.host_str().unwrap_or("localhost"),
        "database.port": url.port().unwrap_or(5432).to_string(),
        "database.user": url.username(),
        "database.password": url.password().unwrap_or_default(),
        "database.dbname": url.path().trim_start_matches('/'),
        "topic.prefix": "dbserver1",
        "slot.name": "{table}",
        "publication.name": "{table}",
        "table.include.list": "public.{table}",
        "tombstones.on.delete": "false",
        "key.converter": "org.apache.kafka.connect.storage.StringConverter",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        "value.converter.schemas.enable": "false",
        "transforms": "outbox",
        "transforms.outbox.type": "io.debezium.transforms.outbox.EventRouter",
    });
    for (k, v) in router {
        config[format!("transforms.outbox.{k}")] = serde_json::json!(v);
    }
    serde_json::to_string_pretty(&serde_json::json!({"name": "outbox-connector", "config": config}))
        .expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_router_options_match_debezium() {
    let table = unique("dbz_options");
    let aggregate_type = unique("opts");
    // Routing values the regex matches (`<aggregate>.v<n>`, to `outbox.<aggregate>.v<n>`) and
    // one it does not (routed to itself).
    let routed = [
        format!("{aggregate_type}.v1"),
        format!("{aggregate_type}.v22"),
        aggregate_type.clone(),
    ];
    let router = [
        (
            "route.topic.regex",
            "(?<aggregate>[a-z_0-9]+)[.](?<version>v[0-9]+)",
        ),
        ("route.topic.replacement", "outbox.${aggregate}.$2"),
        ("table.field.event.timestamp", "created"),
        (
            "table.fields.additional.placement",
            "type:header:eventType,part:partition,type:envelope:eventType,note:envelope",
        ),
        ("route.tombstone.on.empty.payload", "true"),
        ("table.expand.json.payload", "true"),
    ];
    let debezium: Vec<String> = router
        .iter()
        .map(|(k, v)| format!("transforms.outbox.{k}={v}"))
        .collect();
    let notes = [
        "NULL",
        "'plain'",
        r#"E'q\"uote \\ line\nnext \u00e9'"#,
        "''",
    ];
    // In the past: Kafka 4 refuses timestamps more than an hour ahead
    // (`log.message.timestamp.after.max.ms`).
    let created = [
        "'2026-11-28 20:19:21.773017'",
        "'1999-12-31 23:59:59.999999'",
        "'2026-01-01 00:00:00'",
        "'2020-06-15 12:00:00.000001'",
    ];
    let mut rows = Vec::new();
    let payloads = PAYLOADS
        .iter()
        .map(|p| sql_text(p))
        .chain(["NULL".to_owned()]);
    for (i, payload) in payloads.enumerate() {
        let part = if i % 5 == 4 {
            "NULL".to_owned()
        } else {
            (i % 4).to_string()
        };
        rows.push((
            routed[i % routed.len()].clone(),
            "aggregateid, payload, created, part, note".to_owned(),
            format!(
                "'order-{}', {payload}, {}, {part}, {}",
                i % 3,
                created[i % created.len()],
                notes[i % notes.len()]
            ),
        ));
    }
    let case = Case {
        columns: ", created timestamp(6) NOT NULL, part integer, note text".to_owned(),
        converter: "json",
        debezium: debezium.join("\n"),
        relay: RelayConfig::DebeziumConfig {
            file: "register-postgres.json",
            text: rest_json(&router),
        },
        rows,
        topics: vec![
            format!("outbox.{aggregate_type}.v1"),
            format!("outbox.{aggregate_type}.v22"),
            aggregate_type.clone(),
        ],
        timestamps: true,
    };
    compare(&table, &aggregate_type, case).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expanded_json_payloads_match_debezium() {
    let table = unique("dbz_expand");
    let aggregate_type = unique("expand");
    let properties = "\
# The connector as Debezium's outbox documentation configures it for expanded JSON.
connector.class=io.debezium.connector.postgresql.PostgresConnector
plugin.name=pgoutput
topic.prefix=dbserver1
slot.name={table}
publication.name={table}
table.include.list=public.{table}
key.converter=org.apache.kafka.connect.storage.StringConverter
value.converter=org.apache.kafka.connect.json.JsonConverter
value.converter.schemas.enable=false
transforms=outbox
transforms.outbox.type=io.debezium.transforms.outbox.EventRouter
transforms.outbox.table.expand.json.payload=true
transforms.outbox.table.fields.additional.placement=type:header:eventType
";
    let rows = PAYLOADS
        .iter()
        .map(|p| sql_text(p))
        .chain(["NULL".to_owned()])
        .enumerate()
        .map(|(i, payload)| {
            (
                aggregate_type.clone(),
                "aggregateid, payload".to_owned(),
                format!("'order-{i}', {payload}"),
            )
        })
        .collect();
    let case = Case {
        columns: String::new(),
        converter: "json",
        debezium: "transforms.outbox.table.fields.additional.placement=type:header:eventType"
            .to_owned(),
        relay: RelayConfig::DebeziumConfig {
            file: "connector.properties",
            text: properties.to_owned(),
        },
        rows,
        topics: vec![format!("outbox.event.{aggregate_type}")],
        timestamps: false,
    };
    compare(&table, &aggregate_type, case).await;
}
