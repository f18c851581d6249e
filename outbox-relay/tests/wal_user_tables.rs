//! End-to-end tests of the `wal` and `message` sources on the tables users already have, against
//! the real PostgreSQL and Kafka: Debezium's documented outbox DDL, a partitioned outbox, `bytea`
//! payloads, mixed-case names, text that is not UTF-8, a publication shared with other tables,
//! and the mistakes that must stop `outbox-relay run` at start with the fix named. Each test has
//! its own table, slot, publication and topics, so they run in parallel.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, TransactionTrait, Value};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(120);
/// How long a refused start may take: one connection and a few catalog reads.
const START: Duration = Duration::from_secs(30);

/// Debezium's documented outbox columns for PostgreSQL.
const DEBEZIUM_COLUMNS: &str = r#"id uuid NOT NULL,
    aggregatetype varchar(255) NOT NULL,
    aggregateid varchar(255) NOT NULL,
    type varchar(255) NOT NULL,
    payload jsonb,
    "timestamp" timestamptz NOT NULL DEFAULT now(),
    tracingspancontext varchar(256)"#;

fn quoted(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// An outbox on a table the test creates with its own DDL, with its slot, publication and
/// topics. Dropped: the relay's `teardown`, then the test's own `cleanup` statements.
struct UserOutbox {
    /// Unique and lower case: the slot and the topic prefix.
    name: String,
    url: String,
    schema: Option<String>,
    table: String,
    publication: String,
    db: DatabaseConnection,
    /// Statements run on the main test database when the outbox is dropped.
    cleanup: Vec<String>,
}

impl UserOutbox {
    async fn new(prefix: &str) -> UserOutbox {
        let name = unique(prefix);
        UserOutbox {
            url: database_url(),
            schema: None,
            table: name.clone(),
            publication: name.clone(),
            db: postgres(4).await,
            cleanup: vec![format!("DROP TABLE IF EXISTS {} CASCADE", quoted(&name))],
            name,
        }
    }

    /// Moves this outbox into a database of its own with the server `encoding` (dropped with
    /// the outbox).
    async fn in_new_database(&mut self, encoding: &str) {
        let database = self.name.clone();
        self.sql(&format!(
            "CREATE DATABASE {} ENCODING '{encoding}' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'",
            quoted(&database)
        ))
        .await;
        self.cleanup = vec![format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quoted(&database)
        )];
        let base = database_url();
        let (server, _) = base
            .rsplit_once('/')
            .expect("DATABASE_URL names a database");
        self.url = format!("{server}/{database}");
        self.db = sea_orm::Database::connect(self.url.as_str())
            .await
            .unwrap_or_else(|e| panic!("connecting to the {encoding} database: {e}"));
    }

    fn qualified(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{}.{}", quoted(schema), quoted(&self.table)),
            None => quoted(&self.table),
        }
    }

    async fn sql(&self, sql: &str) {
        self.db
            .execute_unprepared(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    async fn create_table(&self, columns: &str, suffix: &str) {
        self.sql(&format!(
            "CREATE TABLE {} ({columns}) {suffix}",
            self.qualified()
        ))
        .await;
    }

    async fn create_slot(&self) {
        self.sql(&format!(
            "SELECT pg_create_logical_replication_slot('{}', 'pgoutput')",
            self.name
        ))
        .await;
    }

    fn topic(&self) -> String {
        format!("{}.{AGGREGATE_TYPE}", self.name)
    }

    fn dlq_topic(&self) -> String {
        format!("{}.dlq", self.name)
    }

    /// `outbox-relay <subcommand>` with this outbox's names.
    fn command(&self, subcommand: &str) -> Command {
        let mut c = Command::new(BIN);
        c.arg(subcommand)
            .args(["--slot", &self.name, "--publication", &self.publication])
            .args(["--table", &self.table])
            .args(["--topic", &format!("{}.${{routedByValue}}", self.name)])
            .args(["--dead-letter-topic", &self.dlq_topic()])
            .env("DATABASE_URL", &self.url)
            .env("KAFKA_BROKERS", kafka_brokers())
            .env("RUST_LOG", "info,sqlx=warn,outbox_relay=debug");
        if let Some(schema) = &self.schema {
            c.args(["--schema", schema]);
        }
        c
    }

    async fn setup(&self) {
        create_topics(&[&self.topic(), &self.dlq_topic()]).await;
        let out = self.command("setup").output().expect("outbox-relay setup");
        assert!(
            out.status.success(),
            "setup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn run(&self, extra: &[&str]) -> RelayProcess {
        let mut command = self.command("run");
        command
            .args(["-X", "message.timeout.ms=600000"])
            .args(extra);
        RelayProcess::spawn(command, &self.name)
    }

    /// Inserts one transaction of events (aggregate id, payload, `timestamp` or None for the
    /// database's `now()`); returns their ids in insertion order.
    async fn insert(&self, rows: &[(&str, serde_json::Value, Option<&str>)]) -> Vec<String> {
        let txn = self.db.begin().await.expect("begin");
        let mut ids = Vec::new();
        for (aggregate_id, payload, timestamp) in rows {
            let row = txn
                .query_one_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    format!(
                        "INSERT INTO {} (id, aggregatetype, aggregateid, type, payload, \"timestamp\") \
                         VALUES (gen_random_uuid(), '{AGGREGATE_TYPE}', $1, 'OrderChanged', $2::jsonb, \
                         COALESCE($3::timestamptz, now())) RETURNING id::text",
                        self.qualified()
                    ),
                    [
                        (*aggregate_id).into(),
                        payload.to_string().into(),
                        Value::String(timestamp.map(|t| t.to_owned())),
                    ],
                ))
                .await
                .expect("insert")
                .expect("a row");
            ids.push(row.try_get_by_index(0).expect("id"));
        }
        txn.commit().await.expect("commit");
        ids
    }
}

impl Drop for UserOutbox {
    fn drop(&mut self) {
        let _ = self.command("teardown").output();
        best_effort_sql(None, std::mem::take(&mut self.cleanup));
    }
}

/// The messages' `seq` payload fields, in Kafka order (one aggregate, so one partition).
fn seqs(messages: &[Received]) -> Vec<i64> {
    let mut by_offset = messages.to_vec();
    by_offset.sort_by_key(|m| (m.partition, m.offset));
    by_offset
        .iter()
        .map(|m| m.json()["seq"].as_i64().expect("seq"))
        .collect()
}

/// Item 1: a partitioned outbox (Debezium's columns, `PARTITION BY RANGE ("timestamp")`), rows in
/// both partitions: `setup` publishes it via its root, and every event arrives in commit order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_outbox_delivers_every_event_in_commit_order() {
    let ux = UserOutbox::new("wal_partitioned").await;
    ux.create_table(
        &format!("{DEBEZIUM_COLUMNS}, PRIMARY KEY (id, \"timestamp\")"),
        "PARTITION BY RANGE (\"timestamp\")",
    )
    .await;
    let (old, new) = (format!("{}_2020", ux.name), format!("{}_now", ux.name));
    ux.sql(&format!(
        "CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ('2020-01-01') TO ('2021-01-01');
         CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ('2021-01-01') TO (MAXVALUE)",
        quoted(&old),
        ux.qualified(),
        quoted(&new),
        ux.qualified()
    ))
    .await;
    ux.setup().await;
    let mut relay = ux.run(&[]);

    let mut ids = Vec::new();
    for batch in 0..10 {
        let rows: Vec<_> = (0..5)
            .map(|i| {
                let seq = batch * 5 + i;
                let at = (seq % 2 == 0).then_some("2020-06-01T00:00:00Z");
                ("p-1", json!({"seq": seq}), at)
            })
            .collect();
        ids.extend(ux.insert(&rows).await);
    }
    for leaf in [&old, &new] {
        let row = ux
            .db
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                format!("SELECT count(*) FROM ONLY {}", quoted(leaf)),
            ))
            .await
            .expect("count")
            .expect("row");
        let n: i64 = row.try_get_by_index(0).expect("count");
        assert_eq!(n, 25, "partition {leaf} holds half the rows");
    }

    let expected: std::collections::HashSet<String> = ids.iter().cloned().collect();
    let mut reader = Reader::new(&[&ux.topic()]);
    reader
        .read_until(WAIT, has_all(&expected), || relay.log_text())
        .await;
    reader.settle(Duration::from_secs(2)).await;
    assert_eq!(seqs(&reader.messages), (0..50).collect::<Vec<_>>());
    relay.stop_gracefully(Duration::from_secs(60));
}

/// Runs `outbox-relay run` and expects it to stop at start, with exit code 1 and every text of
/// `expect` in its log (no panic); returns the log.
fn refused_at_start(ux: &UserOutbox, extra: &[&str], expect: &[&str]) -> String {
    let mut relay = ux.run(extra);
    let status = relay.wait_exit(START);
    let log = relay.log_text();
    assert!(
        status.is_some(),
        "the relay kept running (retrying?) instead of stopping at start:\n{log}"
    );
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{log}");
    for text in expect {
        assert!(log.contains(text), "the log does not say `{text}`:\n{log}");
    }
    assert!(!log.contains("panicked"), "{log}");
    log
}

/// Item 1: an existing publication that publishes a partitioned outbox under its partitions'
/// names is refused at start with the statement that fixes it; `setup` applies that fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_outbox_without_publish_via_root_is_refused_with_the_fix() {
    let ux = UserOutbox::new("wal_leafpub").await;
    ux.create_table(
        &format!("{DEBEZIUM_COLUMNS}, PRIMARY KEY (id, \"timestamp\")"),
        "PARTITION BY RANGE (\"timestamp\")",
    )
    .await;
    ux.sql(&format!(
        "CREATE TABLE {} PARTITION OF {} DEFAULT",
        quoted(&format!("{}_all", ux.name)),
        ux.qualified()
    ))
    .await;
    ux.sql(&format!(
        "CREATE PUBLICATION {} FOR TABLE {} WITH (publish = 'insert')",
        quoted(&ux.publication),
        ux.qualified()
    ))
    .await;
    ux.create_slot().await;
    create_topics(&[&ux.topic(), &ux.dlq_topic()]).await;
    refused_at_start(
        &ux,
        &[],
        &[&format!(
            "ALTER PUBLICATION {} SET (publish_via_partition_root = true)",
            quoted(&ux.publication)
        )],
    );
    ux.setup().await;
    let row = ux
        .db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pubviaroot FROM pg_publication WHERE pubname = $1",
            [ux.publication.clone().into()],
        ))
        .await
        .expect("pg_publication")
        .expect("the publication");
    assert!(row.try_get_by_index::<bool>(0).expect("pubviaroot"));
}

/// Item 1, the safety net: the publication also holds tables a user added. Rows of a table the
/// catalog shows are skipped; a row of a table dropped since (which nothing can tell apart from
/// a partition of the outbox) is dead-lettered, naming the relation; the outbox's rows arrive in
/// order around both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_of_other_tables_are_skipped_and_unattributable_ones_dead_lettered() {
    let mut ux = UserOutbox::new("wal_shared").await;
    ux.create_table(&format!("{DEBEZIUM_COLUMNS}, PRIMARY KEY (id)"), "")
        .await;
    ux.setup().await;
    let (other, dropped) = (format!("{}_other", ux.name), format!("{}_gone", ux.name));
    ux.cleanup
        .push(format!("DROP TABLE IF EXISTS {}", quoted(&other)));
    for table in [&other, &dropped] {
        ux.sql(&format!(
            "CREATE TABLE {t} (note text); ALTER PUBLICATION {p} ADD TABLE {t}",
            t = quoted(table),
            p = quoted(&ux.publication)
        ))
        .await;
    }
    let mut ids = ux.insert(&[("s-1", json!({"seq": 0}), None)]).await;
    ux.sql(&format!(
        "INSERT INTO {} VALUES ('kept out'); INSERT INTO {} VALUES ('unattributable')",
        quoted(&other),
        quoted(&dropped)
    ))
    .await;
    ids.extend(ux.insert(&[("s-1", json!({"seq": 1}), None)]).await);
    ux.sql(&format!("DROP TABLE {}", quoted(&dropped))).await;
    ids.extend(ux.insert(&[("s-1", json!({"seq": 2}), None)]).await);

    let mut relay = ux.run(&[]);
    let expected = ids.iter().cloned().collect();
    let mut reader = Reader::new(&[&ux.topic(), &ux.dlq_topic()]);
    reader
        .read_until(
            WAIT,
            |m| has_all(&expected)(m) && m.iter().any(|m| m.topic == ux.dlq_topic()),
            || relay.log_text(),
        )
        .await;
    reader.settle(Duration::from_secs(3)).await;
    let (dead, events): (Vec<Received>, Vec<Received>) = reader
        .messages
        .iter()
        .cloned()
        .partition(|m| m.topic == ux.dlq_topic());
    assert_eq!(seqs(&events), [0, 1, 2]);
    assert_eq!(dead.len(), 1, "only the dropped table's row: {dead:?}");
    let reason = dead[0]
        .headers
        .get("dlq.reason")
        .cloned()
        .unwrap_or_default();
    assert!(
        reason.contains(&dropped) && reason.contains("no longer exists"),
        "{reason}"
    );
    assert!(
        String::from_utf8_lossy(dead[0].value.as_deref().unwrap_or_default())
            .contains("unattributable")
    );
    assert!(relay.is_running(), "{}", relay.log_text());
}

/// Item 7: a `bytea` payload (Avro, Protobuf) arrives as its bytes, not PostgreSQL's hex text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytea_payload_arrives_as_its_bytes() {
    let ux = UserOutbox::new("wal_bytea").await;
    ux.create_table(
        &DEBEZIUM_COLUMNS.replace("payload jsonb", "payload bytea"),
        "",
    )
    .await;
    ux.setup().await;
    let relay = ux.run(&[]);
    let payloads: Vec<Vec<u8>> = vec![
        vec![0x00, 0xff, 0xfe, 0x80, b'{', b'\\', b'x'],
        (0..=255u8).rev().collect(),
        b"\\x41".to_vec(),
    ];
    let txn = ux.db.begin().await.expect("begin");
    for payload in &payloads {
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            format!(
                "INSERT INTO {} (id, aggregatetype, aggregateid, type, payload) \
                 VALUES (gen_random_uuid(), '{AGGREGATE_TYPE}', 'b-1', 'Binary', $1)",
                ux.qualified()
            ),
            [payload.clone().into()],
        ))
        .await
        .expect("insert");
    }
    txn.commit().await.expect("commit");

    let mut reader = Reader::new(&[&ux.topic()]);
    reader
        .read_until(WAIT, |m| m.len() >= payloads.len(), || relay.log_text())
        .await;
    let mut got = reader.messages.clone();
    got.sort_by_key(|m| m.offset);
    let values: Vec<Vec<u8>> = got
        .into_iter()
        .map(|m| m.value.unwrap_or_default())
        .collect();
    assert_eq!(values, payloads);
}

/// Item 9: mixed-case publication, schema and table (`--publication OutboxPub...`,
/// `"Sales..."."OutBox"`): events arrive; an upper-case slot is a configuration error naming
/// `source.slot` (PostgreSQL allows only lower case there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_case_publication_schema_and_table() {
    let mut ux = UserOutbox::new("wal_mixed").await;
    let schema = unique("Sales");
    ux.schema = Some(schema.clone());
    ux.table = "OutBox".to_owned();
    ux.publication = unique("OutboxPub");
    ux.cleanup = vec![format!("DROP SCHEMA IF EXISTS {} CASCADE", quoted(&schema))];
    ux.sql(&format!("CREATE SCHEMA {}", quoted(&schema))).await;
    ux.create_table(&format!("{DEBEZIUM_COLUMNS}, PRIMARY KEY (id)"), "")
        .await;
    ux.setup().await;
    let relay = ux.run(&[]);
    let mut ids = Vec::new();
    for seq in 0..3 {
        ids.extend(ux.insert(&[("m-1", json!({"seq": seq}), None)]).await);
    }
    let expected = ids.iter().cloned().collect();
    let mut reader = Reader::new(&[&ux.topic()]);
    reader
        .read_until(WAIT, has_all(&expected), || relay.log_text())
        .await;
    assert_eq!(seqs(&reader.messages), [0, 1, 2]);

    let out = Command::new(BIN)
        .args([
            "run",
            "--slot",
            "OutboxSlot",
            "--publication",
            &ux.publication,
        ])
        .env("DATABASE_URL", &ux.url)
        .env("KAFKA_BROKERS", kafka_brokers())
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("source.slot") && err.contains("lower-case"),
        "{err}"
    );
}

/// Item 10: in a `SQL_ASCII` database, text columns can hold bytes that are not UTF-8. The
/// replication connection speaks UTF-8, so the server itself refuses to send such a row (SQLSTATE
/// 22021): no relay can dead-letter what it never receives, and a retry meets the same row. The
/// relay ships everything before it, then stops with a message naming the problem and the way
/// out, instead of reconnecting forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_that_is_not_utf8_stops_the_relay_naming_the_problem() {
    let mut ux = UserOutbox::new("wal_sqlascii").await;
    ux.in_new_database("SQL_ASCII").await;
    ux.create_table(&format!("{DEBEZIUM_COLUMNS}, PRIMARY KEY (id)"), "")
        .await;
    ux.setup().await;
    let mut relay = ux.run(&[]);

    let first = ux.insert(&[("u-1", json!({"seq": 0}), None)]).await;
    let expected = first.iter().cloned().collect();
    let mut reader = Reader::new(&[&ux.topic()]);
    reader
        .read_until(WAIT, has_all(&expected), || relay.log_text())
        .await;
    // 0xff 0xfe: not UTF-8, stored as they are (SQL_ASCII checks nothing).
    ux.sql(&format!(
        "INSERT INTO {} (id, aggregatetype, aggregateid, type, payload) \
         VALUES (gen_random_uuid(), '{AGGREGATE_TYPE}', 'u-1', \
         convert_from('\\xfffe'::bytea, 'SQL_ASCII'), '{{\"seq\": 1}}')",
        ux.qualified()
    ))
    .await;
    let status = relay.wait_exit(WAIT);
    let log = relay.log_text();
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{log}");
    for text in [
        "22021",
        "SQL_ASCII",
        "pg_replication_slot_advance",
        &ux.name,
    ] {
        assert!(log.contains(text), "the log does not say `{text}`:\n{log}");
    }
    drop(reader);
    ux.db = postgres(1).await;
}

/// A database whose server encoding is not UTF-8 (`LATIN1`, `WIN1252`: older installations,
/// and Windows-created clusters): its text arrives in Kafka as UTF-8, the key, the headers and
/// the payload alike, each character as the database shows it. The replication connection asks
/// for UTF-8 and the server converts what it sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_of_a_latin1_or_win1252_database_arrives_as_utf8() {
    for (encoding, aggregate, event_type, text) in [
        ("LATIN1", "Müller-ß", "Überweisung", "Ça a été reçu ©½"),
        ("WIN1252", "Ærø–Œuvre", "Zahlung€", "„Preis“ 5 € … ™"),
    ] {
        let mut ux = UserOutbox::new(&format!("wal_{}", encoding.to_lowercase())).await;
        ux.in_new_database(encoding).await;
        ux.create_table(&format!("{DEBEZIUM_COLUMNS}, PRIMARY KEY (id)"), "")
            .await;
        ux.setup().await;
        let relay = ux.run(&["--placement", "type:header:eventType"]);
        // Through a UTF-8 client connection: the server stores each character in `encoding`.
        let id = ux
            .db
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                format!(
                    "INSERT INTO {} (id, aggregatetype, aggregateid, type, payload) \
                     VALUES (gen_random_uuid(), '{AGGREGATE_TYPE}', $1, $2, $3::jsonb) \
                     RETURNING id::text",
                    ux.qualified()
                ),
                [
                    aggregate.into(),
                    event_type.into(),
                    json!({ "text": text }).to_string().into(),
                ],
            ))
            .await
            .expect("insert")
            .expect("a row")
            .try_get_by_index::<String>(0)
            .expect("id");
        let expected = [id.clone()].into_iter().collect();
        let mut reader = Reader::new(&[&ux.topic()]);
        reader
            .read_until(WAIT, has_all(&expected), || relay.log_text())
            .await;
        let message = &reader.messages[0];
        assert_eq!(message.id(), id);
        assert_eq!(
            message.key.as_deref(),
            Some(aggregate),
            "{encoding}: the key"
        );
        assert_eq!(
            message.header("eventType"),
            Some(event_type),
            "{encoding}: the `type` header"
        );
        assert_eq!(
            message.json()["text"],
            json!(text),
            "{encoding}: the payload"
        );
        drop(reader);
        drop(relay);
        ux.db = postgres(1).await;
    }
}

/// Item 8: a missing outbox table stops `run` at start, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_table_is_refused_at_start() {
    let mut ux = UserOutbox::new("wal_notable").await;
    ux.create_table(DEBEZIUM_COLUMNS, "").await;
    ux.setup().await;
    ux.table = format!("{}_nosuch", ux.name);
    refused_at_start(&ux, &[], &["does not exist", &ux.table, "source.table"]);
}

/// Item 8: a table without a column the relay reads (`payload`) stops `run` at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_column_is_refused_at_start() {
    let ux = UserOutbox::new("wal_nocolumn").await;
    ux.create_table(&DEBEZIUM_COLUMNS.replace("payload jsonb,", ""), "")
        .await;
    ux.setup().await;
    refused_at_start(&ux, &[], &["has no column `payload`"]);
}

/// Item 8: a missing publication stops `run` at start, for `wal` and `message`, naming `setup`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_publication_is_refused_at_start() {
    let ux = UserOutbox::new("wal_nopub").await;
    ux.create_table(DEBEZIUM_COLUMNS, "").await;
    ux.create_slot().await;
    let expect = [
        &format!("publication `{}` does not exist", ux.publication),
        "outbox-relay setup",
    ];
    refused_at_start(&ux, &[], &expect);
    refused_at_start(&ux, &["--source", "message"], &expect);
}

/// Item 8: a missing slot stops `run` at start, for `wal` and `message`, naming `setup`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_slot_is_refused_at_start() {
    let ux = UserOutbox::new("wal_noslot").await;
    ux.create_table(DEBEZIUM_COLUMNS, "").await;
    ux.sql(&format!(
        "CREATE PUBLICATION {} FOR TABLE {} WITH (publish = 'insert')",
        quoted(&ux.publication),
        ux.qualified()
    ))
    .await;
    let expect = [
        &format!("replication slot `{}` does not exist", ux.name),
        "outbox-relay setup",
    ];
    refused_at_start(&ux, &[], &expect);
    refused_at_start(&ux, &["--source", "message"], &expect);
}

/// Item 8: a publication that does not include the outbox table stops `run` at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publication_without_the_table_is_refused_at_start() {
    let ux = UserOutbox::new("wal_otherpub").await;
    ux.create_table(DEBEZIUM_COLUMNS, "").await;
    ux.sql(&format!(
        "CREATE PUBLICATION {} WITH (publish = 'insert')",
        quoted(&ux.publication)
    ))
    .await;
    ux.create_slot().await;
    refused_at_start(
        &ux,
        &[],
        &["does not include the outbox table", "ADD TABLE"],
    );
}

/// Item 8: refused credentials stop `run` at start, naming the cause; an unreachable database
/// (connection refused) is transient: the relay keeps retrying, and stops cleanly on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_stop_the_relay_and_an_unreachable_database_is_retried() {
    let mut ux = UserOutbox::new("wal_auth").await;
    ux.create_table(DEBEZIUM_COLUMNS, "").await;
    ux.setup().await;
    let good = ux.url.clone();
    let (scheme, rest) = good.split_once("://").expect("a URL");
    let (userinfo, host) = rest.split_once('@').expect("DATABASE_URL has a user");
    let user = userinfo.split(':').next().unwrap_or_default();
    ux.url = format!("{scheme}://{user}:not-the-password@{host}");
    refused_at_start(
        &ux,
        &[],
        &["password authentication failed", "database_url"],
    );

    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let (_, db_path) = host.split_once('/').expect("a database");
    ux.url = format!("{scheme}://{userinfo}@{free}/{db_path}");
    let mut relay = ux.run(&[]);
    assert_eq!(
        relay.wait_exit(Duration::from_secs(8)),
        None,
        "{}",
        relay.log_text()
    );
    assert!(
        relay.log_text().contains("relay session failed; retrying"),
        "{}",
        relay.log_text()
    );
    relay.stop_gracefully(Duration::from_secs(30));
    ux.url = good;
}
