//! `--debezium-config` at the command line: a key that would change the messages stops the
//! relay at start with exit code 2 and the key's name; a key it does not support is named in a
//! warning and the command goes on (here `setup` and `teardown` on the real PostgreSQL, with the
//! slot, publication and table taken from the connector configuration).
//!
//! The translation of each key is unit-tested in `src/debezium.rs`; the messages of a relay so
//! configured are compared with Debezium's in `debezium_parity.rs`.

mod common;

use std::process::Command;

use common::*;
use sea_orm::ConnectionTrait;

fn write_config(name: &str, text: &str) -> String {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/relay-logs");
    std::fs::create_dir_all(dir).expect("creating the log dir");
    let path = format!("{dir}/{name}");
    std::fs::write(&path, text).expect("writing the connector config");
    path
}

const HEAD: &str = "connector.class=io.debezium.connector.postgresql.PostgresConnector
plugin.name=pgoutput
key.converter=org.apache.kafka.connect.storage.StringConverter
value.converter=org.apache.kafka.connect.storage.StringConverter
transforms=outbox
transforms.outbox.type=io.debezium.transforms.outbox.EventRouter
";

#[test]
fn a_key_that_would_change_the_messages_stops_the_relay_at_start() {
    let path = write_config(
        &format!("{}.properties", unique("dbz_refused")),
        &format!(
            "{HEAD}database.password=hunter2\ntransforms.outbox.table.expand.json.payload=true\n"
        ),
    );
    let out = Command::new(BIN)
        .args(["run", "--debezium-config", &path])
        .env("DATABASE_URL", "postgres://u@h/db")
        .env("KAFKA_BROKERS", "k:1")
        .output()
        .expect("outbox-relay run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("`value.converter`") && err.contains("table.expand.json.payload"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_keys_are_named_and_the_configuration_is_used() {
    let table = unique("dbz_config");
    let db = postgres(1).await;
    db.execute_unprepared(&format!(
        "CREATE TABLE public.\"{table}\" (id uuid NOT NULL PRIMARY KEY, aggregatetype \
         varchar(255) NOT NULL, aggregateid varchar(255) NOT NULL, type varchar(255) NOT NULL, \
         payload jsonb)"
    ))
    .await
    .expect("creating the outbox table");
    let path = write_config(
        &format!("{table}.properties"),
        &format!(
            "{HEAD}slot.name={table}\npublication.name={table}_pub\n\
             table.include.list=public.{table}\nsome.future.option=1\n"
        ),
    );
    let relay = |subcommand: &str| {
        Command::new(BIN)
            .args([subcommand, "--debezium-config", &path])
            .env("DATABASE_URL", database_url())
            .env("RUST_LOG", "info")
            .output()
            .unwrap_or_else(|e| panic!("outbox-relay {subcommand}: {e}"))
    };
    let setup = relay("setup");
    let out = String::from_utf8_lossy(&setup.stdout);
    let err = String::from_utf8_lossy(&setup.stderr);
    let slots: Vec<(String, String)> = {
        use sea_orm::{DbBackend, Statement};
        let rows = db
            .query_all_raw(Statement::from_string(
                DbBackend::Postgres,
                format!(
                    "SELECT s.slot_name::text, p.pubname::text FROM pg_replication_slots s, \
                     pg_publication p WHERE s.slot_name = '{table}' AND p.pubname = '{table}_pub'"
                ),
            ))
            .await
            .expect("reading the slot and publication");
        rows.iter()
            .map(|r| {
                (
                    r.try_get_by_index(0).expect("slot"),
                    r.try_get_by_index(1).expect("publication"),
                )
            })
            .collect()
    };
    let teardown = relay("teardown");
    db.execute_unprepared(&format!("DROP TABLE public.\"{table}\""))
        .await
        .expect("dropping the outbox table");
    assert!(setup.status.success(), "setup failed: {out}{err}");
    assert!(
        err.contains("some.future.option") && err.contains("WARN"),
        "no warning naming the unsupported key: {err}"
    );
    assert_eq!(slots, vec![(table.clone(), format!("{table}_pub"))]);
    assert!(
        teardown.status.success(),
        "teardown failed: {}",
        String::from_utf8_lossy(&teardown.stderr)
    );
}
