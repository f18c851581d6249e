//! The `poll` source on the users' own outbox tables (issue 16), through the real binary on the
//! real PostgreSQL and Kafka:
//! - it reads the columns the configuration names (`kafka.event_id_field`, `.event_key_field`,
//!   `.payload_field`, `.event_timestamp_field`, `.route_by_field`: Debezium's
//!   `table.field.event.*` and `route.by.field`), on a table whose columns are all renamed;
//! - a named column the table lacks stops it at start, naming the setting and the column;
//! - the `wal` source reads the same renamed table (its start checks the configured columns);
//! - it ships each column as the `wal` source ships it (Debezium's rendering): the same row read
//!   by both relays gives the same key, value (an envelope with every type) and header bytes.

mod common;
mod poll_support;
mod raw_support;

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::time::Duration;

use common::{BIN, RelayProcess, create_topics, database_url, kafka_brokers};
use poll_support::{Backend, PollFixture};
use raw_support::{Raw, read_raw};

/// Every message of `topics` from the beginning, until `n` distinct ids arrived on each topic,
/// or `timeout` passed.
fn read_ids(topics: &[&str], n: usize, timeout: Duration) -> Vec<Raw> {
    read_raw(topics, timeout, |messages| {
        topics.iter().all(|t| {
            let ids: HashSet<Option<String>> = messages
                .iter()
                .filter(|m| m.topic == *t)
                .map(Raw::id)
                .collect();
            ids.len() >= n
        })
    })
}

/// `outbox-relay <subcommand> -c <config>`, the database and broker from the environment.
fn relay_with_config(subcommand: &str, config: &std::path::Path) -> Command {
    let mut c = Command::new(BIN);
    c.arg(subcommand)
        .arg("-c")
        .arg(config)
        .env("DATABASE_URL", database_url())
        .env("KAFKA_BROKERS", kafka_brokers())
        .env("RUST_LOG", "info,sqlx=warn");
    c
}

/// A relay configuration for `fx`'s table whose columns are all renamed, with `event_id` as
/// the event id column, read by `source` (`poll`, or `wal` on a slot and publication named as
/// the table).
fn renamed_config(fx: &PollFixture, source: &str, event_id: &str) -> std::path::PathBuf {
    let dir =
        std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/relay-logs"));
    std::fs::create_dir_all(&dir).expect("creating target/relay-logs");
    let path = dir.join(format!("{}-{source}-{event_id}.toml", fx.name));
    let toml = format!(
        r#"[source]
kind = "{source}"
table = "{table}"
slot = "{table}"
publication = "{table}"

[source.poll]
interval = "100ms"

[kafka]
topic = "{table}.${{routedByValue}}"
dead_letter_topic = "{dlq}"
route_by_field = "kind"
event_id_field = "{event_id}"
event_key_field = "AggId"
payload_field = "body"
event_timestamp_field = "created"
additional_placement = ["kind:header:eventKind"]
"#,
        table = fx.name,
        dlq = fx.dlq_topic(),
    );
    std::fs::write(&path, toml).expect("writing the relay config");
    path
}

/// A table in Debezium's outbox shape with every column renamed (one of them mixed-case).
async fn renamed_table(fx: &PollFixture) {
    fx.exec(&format!(
        "CREATE TABLE {} (event_id uuid NOT NULL PRIMARY KEY, kind varchar(255) NOT NULL, \
         \"AggId\" varchar(255) NOT NULL, body jsonb, created timestamptz NOT NULL)",
        fx.q(&fx.name)
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renamed_columns_ship_in_order_through_the_binary() {
    renamed_columns_ship_in_order("poll").await;
}

/// The `wal` source on the same table: its start checks name the configured columns too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renamed_columns_ship_in_order_through_the_wal_source_too() {
    renamed_columns_ship_in_order("wal").await;
}

async fn renamed_columns_ship_in_order(source: &str) {
    let fx = PollFixture::bare(Backend::Postgres, &format!("{source}_renamed")).await;
    renamed_table(&fx).await;
    let config = renamed_config(&fx, source, "event_id");
    let setup = relay_with_config("setup", &config)
        .output()
        .expect("outbox-relay setup");
    assert!(
        setup.status.success(),
        "setup: {}",
        String::from_utf8_lossy(&setup.stderr)
    );
    let mut relay = RelayProcess::spawn(relay_with_config("run", &config), &fx.name);

    // One transaction per event, three aggregates interleaved; `created` in the past (Kafka
    // refuses record timestamps far ahead) and 1 ms apart.
    let n = 30;
    let mut written = Vec::new();
    for i in 0..n {
        let id = uuid::Uuid::now_v7().to_string();
        let aggregate = format!("order-{}", i % 3);
        fx.exec(&format!(
            "INSERT INTO {} (event_id, kind, \"AggId\", body, created) VALUES \
             ('{id}', 'Order', '{aggregate}', '{{\"n\": {i}}}', \
             timestamptz '2026-11-28 20:19:21.773+00' + {i} * interval '1 ms')",
            fx.q(&fx.name)
        ))
        .await;
        written.push((id, aggregate, i));
    }

    let topic = fx.topic();
    let messages = read_ids(&[&topic], n, Duration::from_secs(60));
    assert!(relay.is_running(), "the relay exited: {}", relay.log_text());
    let mut first: HashMap<String, &Raw> = HashMap::new();
    let mut order: HashMap<String, Vec<String>> = HashMap::new();
    for m in messages.iter().filter(|m| m.topic == topic) {
        if first.insert(m.id().unwrap_or_default(), m).is_none() {
            let key = String::from_utf8_lossy(m.key.as_deref().unwrap_or_default()).into_owned();
            order
                .entry(key)
                .or_default()
                .push(m.id().unwrap_or_default());
        }
    }
    let mut expected: HashMap<String, Vec<String>> = HashMap::new();
    for (id, aggregate, i) in &written {
        let m = first.get(id).unwrap_or_else(|| {
            panic!(
                "event {id} never arrived ({} messages); relay log:\n{}",
                messages.len(),
                relay.log_text()
            )
        });
        assert_eq!(m.key.as_deref(), Some(aggregate.as_bytes()), "key of {id}");
        assert_eq!(
            m.value.as_deref(),
            Some(format!("{{\"n\": {i}}}").as_bytes()),
            "value of {id}"
        );
        assert_eq!(m.header("eventKind").as_deref(), Some("Order"));
        assert_eq!(
            m.timestamp,
            Some(1_795_897_161_773 + *i as i64),
            "record timestamp of {id} (from `created`)"
        );
        expected
            .entry(aggregate.clone())
            .or_default()
            .push(id.clone());
    }
    assert_eq!(order, expected, "per-aggregate order");
    if source == "poll" {
        fx.wait_empty(Duration::from_secs(30)).await;
    }
    relay.terminate(Duration::from_secs(30));
    let teardown = relay_with_config("teardown", &config)
        .output()
        .expect("outbox-relay teardown");
    assert!(
        teardown.status.success(),
        "teardown: {}",
        String::from_utf8_lossy(&teardown.stderr)
    );
    fx.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_column_the_table_lacks_stops_the_relay_at_start() {
    let fx = PollFixture::bare(Backend::Postgres, "poll_lacks").await;
    renamed_table(&fx).await;
    // The table has `event_id`, the configuration names `evt_id`.
    let config = renamed_config(&fx, "poll", "evt_id");
    let mut relay = RelayProcess::spawn(relay_with_config("run", &config), &fx.name);
    let status = relay.wait_exit(Duration::from_secs(20));
    let log = relay.log_text();
    assert!(
        status.is_some_and(|s| !s.success()),
        "expected a non-zero exit within 20 s, got {status:?}:\n{log}"
    );
    assert!(
        log.contains("`evt_id` (`kafka.event_id_field`, Debezium's `table.field.event.id`)"),
        "the error names the column and its setting:\n{log}"
    );
    fx.teardown().await;
}

/// Columns of each common type: `(column, SQL type)`; each is placed as a header and as an
/// envelope field of the same name.
const TYPED: &[(&str, &str)] = &[
    ("c_tstz", "timestamptz"),
    ("c_tstz3", "timestamptz(3)"),
    ("c_ts", "timestamp"),
    ("c_ts3", "timestamp(3)"),
    ("c_date", "date"),
    ("c_small", "smallint"),
    ("c_int", "integer"),
    ("c_big", "bigint"),
    ("c_num", "numeric"),
    ("c_num2", "numeric(10,2)"),
    ("c_bool", "boolean"),
    ("c_float8", "double precision"),
    ("c_real", "real"),
    ("c_uuid", "uuid"),
    ("c_text", "text"),
    ("c_jsonb", "jsonb"),
];

/// The typed columns' values: every one set, other values (negative, before the epoch, empty),
/// every one NULL.
fn typed_rows() -> Vec<&'static str> {
    vec![
        "'2026-11-28 20:19:21.773017+00', '2026-11-28 20:19:21.5+02', \
         '2026-11-28 20:19:21.773017', '2026-11-28 20:19:21.5', '2026-11-28', 7, 42, \
         9007199254740993, 12345.678900, 3.10, true, 1e20, 3, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', \
         'h\u{e9}llo \"x\" ''q''', '{\"b\": [1, 2.50], \"a\": null}'",
        "'1969-12-31 23:59:59.999999-03', '2026-01-01 00:00:00+00', \
         '1960-01-01 00:00:00.000001', '2026-01-01 00:00:00', '1970-01-01', -7, -7, -1, \
         -0.0012300, -1.00, false, -0.1, 1.1, '00000000-0000-0000-0000-000000000000', '', '{}'",
        "NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
         NULL",
    ]
}

/// Both relays on one table: `wal` (logical replication) and `poll` (after `setup --source
/// poll`), each to its own topic; each pair of messages for a row must be equal but for the topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_ships_each_column_type_as_the_wal_source_does() {
    let fx = PollFixture::bare(Backend::Postgres, "poll_types").await;
    let table = fx.name.clone();
    let typed: String = TYPED
        .iter()
        .map(|(c, t)| format!(", {c} {t} NULL"))
        .collect();
    fx.exec(&format!(
        "CREATE TABLE {} (id uuid NOT NULL PRIMARY KEY, aggregatetype varchar(255) NOT NULL, \
         aggregateid varchar(255) NOT NULL, type varchar(255) NOT NULL, payload jsonb, \
         \"timestamp\" timestamptz NOT NULL DEFAULT now(), tracingspancontext varchar(256){typed})",
        fx.q(&table)
    ))
    .await;
    let wal_topic = format!("wal_{table}.Order");
    let poll_topic = format!("poll_{table}.Order");
    create_topics(&[&wal_topic, &poll_topic]).await;

    let mut placements = vec!["timestamp:header:h_ts_row".to_owned()];
    for (c, _) in TYPED {
        placements.push(format!("{c}:header:h_{c}"));
        placements.push(format!("{c}:envelope:e_{c}"));
    }
    let relay = |subcommand: &str, source: &str| {
        let mut c = Command::new(BIN);
        c.arg(subcommand)
            .args(["--source", source, "--table", &table])
            .args(["--topic", &format!("{source}_{table}.${{routedByValue}}")])
            .args(["--dead-letter-topic", &fx.dlq_topic()])
            .args(["--trace-headers", "false", "--value-converter", "json"])
            .env("DATABASE_URL", database_url())
            .env("KAFKA_BROKERS", kafka_brokers())
            .env("RUST_LOG", "info,sqlx=warn");
        if source == "wal" {
            c.args(["--slot", &table, "--publication", &table]);
        }
        for p in &placements {
            c.args(["--placement", p]);
        }
        c
    };
    for source in ["poll", "wal"] {
        let setup = relay("setup", source).output().expect("outbox-relay setup");
        assert!(
            setup.status.success(),
            "{source} setup: {}",
            String::from_utf8_lossy(&setup.stderr)
        );
    }
    let mut wal = RelayProcess::spawn(relay("run", "wal"), &format!("{table}-wal"));
    let mut poll = RelayProcess::spawn(relay("run", "poll"), &format!("{table}-poll"));

    let columns: Vec<&str> = TYPED.iter().map(|(c, _)| *c).collect();
    let rows = typed_rows();
    for (i, values) in rows.iter().enumerate() {
        fx.exec(&format!(
            "INSERT INTO {} (id, aggregatetype, aggregateid, type, payload, \"timestamp\", {}) \
             VALUES (md5('{table}-{i}')::uuid, 'Order', 'order-{i}', 'OrderPlaced', \
             '{{\"n\": {i}}}', timestamptz '2026-11-28 20:19:21.773017+00', {values})",
            fx.q(&table),
            columns.join(", ")
        ))
        .await;
    }

    let messages = read_ids(
        &[&wal_topic, &poll_topic],
        rows.len(),
        Duration::from_secs(60),
    );
    assert!(wal.is_running(), "the wal relay exited: {}", wal.log_text());
    assert!(
        poll.is_running(),
        "the poll relay exited: {}",
        poll.log_text()
    );
    wal.terminate(Duration::from_secs(30));
    poll.terminate(Duration::from_secs(30));
    let teardown = relay("teardown", "wal")
        .output()
        .expect("outbox-relay teardown");
    assert!(
        teardown.status.success(),
        "wal teardown: {}",
        String::from_utf8_lossy(&teardown.stderr)
    );

    let by_id = |topic: &str| -> HashMap<String, Raw> {
        messages
            .iter()
            .filter(|m| m.topic == topic)
            .map(|m| {
                // The record timestamp is each producer's time (no timestamp column is set).
                let mut m = m.clone();
                m.topic = String::new();
                m.timestamp = None;
                (m.id().unwrap_or_default(), m)
            })
            .collect()
    };
    let (from_wal, from_poll) = (by_id(&wal_topic), by_id(&poll_topic));
    assert_eq!(
        (from_wal.len(), from_poll.len()),
        (rows.len(), rows.len()),
        "every row through both; wal log:\n{}\npoll log:\n{}",
        wal.log_text(),
        poll.log_text()
    );
    for (id, m) in &from_wal {
        let polled = from_poll.get(id);
        assert!(
            polled == Some(m),
            "row {id}:\n  wal  {}\n  poll {}",
            m.show(),
            polled.map_or_else(|| "missing".to_owned(), Raw::show)
        );
    }
    // The shared rendering is Debezium's, not the database's text (the parity test holds the
    // whole of it against Debezium 3.6.1).
    let full = from_wal
        .values()
        .find(|m| m.key.as_deref() == Some(b"order-0".as_slice()))
        .expect("row 0");
    for (header, debezium) in [
        ("h_c_tstz", "2026-11-28T20:19:21.773017Z"),
        ("h_c_ts", "1795897161773017"),
        ("h_c_date", "20785"),
        ("h_c_bool", "true"),
        ("h_c_float8", "1.0E20"),
        ("h_c_real", "3.0"),
        ("h_c_num", r#"{"scale":4,"value":"B1vNFQ=="}"#),
        ("h_ts_row", "2026-11-28T20:19:21.773017Z"),
    ] {
        assert_eq!(full.header(header).as_deref(), Some(debezium), "{header}");
    }
    let value = String::from_utf8_lossy(full.value.as_deref().unwrap_or_default()).into_owned();
    for field in [
        r#""e_c_int":42"#,
        r#""e_c_bool":true"#,
        r#""e_c_date":20785"#,
        r#""e_c_tstz":"2026-11-28T20:19:21.773017Z""#,
    ] {
        assert!(value.contains(field), "{field} in {value}");
    }
    fx.teardown().await;
}
