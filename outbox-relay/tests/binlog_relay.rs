//! `outbox-relay run --source binlog` end to end, as a process, on the real MariaDB and Kafka:
//! eight writers, a SIGKILL mid-stream (duplicates only, never loss), remove-after-insert, a
//! graceful stop after which nothing is shipped twice, and an oversize event in the dead letters.

mod binlog_support;
mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use binlog_support::{
    BinlogFixture, assert_first_arrivals_in_commit_order, config_file, relay, setup,
};
use common::{Reader, RelayProcess, create_topics, has_all};
use sea_orm::{ConnectionTrait, TransactionTrait};

const WAIT: Duration = Duration::from_secs(90);

fn start(config: &std::path::Path, label: &str) -> RelayProcess {
    RelayProcess::spawn(relay(config, "run"), label)
}

/// A fixture (its topics `<name>.Order` and `<name>.dlq`, `setup` run), its config file, its
/// relay started, and a reader of its topic.
async fn running(prefix: &str) -> (BinlogFixture, std::path::PathBuf, RelayProcess, Reader) {
    let fixture = BinlogFixture::new(prefix).await;
    let topic = format!("{}.Order", fixture.name);
    create_topics(&[&topic, &format!("{}.dlq", fixture.name)]).await;
    let config = config_file(&fixture, "");
    setup(&config);
    let relay = start(&config, &fixture.name);
    let reader = Reader::new(&[&topic]);
    (fixture, config, relay, reader)
}

/// Reads until every id of `ids` arrived; then each aggregate's first arrivals must be in the
/// commit order of `written`.
async fn read_all_in_commit_order(
    reader: &mut Reader,
    ids: &HashSet<String>,
    written: &HashMap<String, Vec<String>>,
    relay: &RelayProcess,
) {
    reader
        .read_until(WAIT, has_all(ids), || relay.log_text())
        .await;
    assert_first_arrivals_in_commit_order(
        reader
            .messages
            .iter()
            .map(|m| (m.key.clone().unwrap_or_default(), m.id())),
        written,
    );
}

async fn write_txn(fixture: &BinlogFixture, rows: &[(String, String)], remove: bool) {
    let txn = fixture.db.begin().await.expect("begin");
    for (id, aggregate) in rows {
        txn.execute_unprepared(&format!(
            "INSERT INTO `{}` (id, aggregatetype, aggregateid, type, payload, `timestamp`) \
             VALUES ('{id}', 'Order', '{aggregate}', 'T', '{{\"id\": \"{id}\"}}', NOW(6))",
            fixture.name
        ))
        .await
        .expect("insert");
        if remove {
            txn.execute_unprepared(&format!("DELETE FROM `{}` WHERE id = '{id}'", fixture.name))
                .await
                .expect("delete");
        }
    }
    txn.commit().await.expect("commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_writers_sigkill_remove_after_insert_and_graceful_restart() {
    let (fixture, config, mut relay, mut reader) = running("binlog_e2e").await;

    // Eight writers; every third transaction deletes its rows right after inserting them.
    const WRITERS: usize = 8;
    const TXNS: usize = 30;
    let mut written: HashMap<String, Vec<String>> = HashMap::new();
    let mut all = HashSet::new();
    let fixture = std::sync::Arc::new(fixture);
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let aggregate = format!("agg-{w}");
        let ids: Vec<String> = (0..TXNS * 2).map(|i| format!("{w}-{i}")).collect();
        written.insert(aggregate.clone(), ids.clone());
        all.extend(ids.iter().cloned());
        let fixture = fixture.clone();
        tasks.push(tokio::spawn(async move {
            for t in 0..TXNS {
                let rows: Vec<(String, String)> = ids[t * 2..t * 2 + 2]
                    .iter()
                    .map(|id| (id.clone(), aggregate.clone()))
                    .collect();
                write_txn(&fixture, &rows, t % 3 == 0).await;
                tokio::time::sleep(Duration::from_millis(((w * 5 + t) % 7) as u64 * 10)).await;
            }
        }));
    }
    // SIGKILL once some (not all) events arrived, then start again while the writers go on.
    reader
        .read_until(WAIT, |m| m.len() >= 40, || relay.log_text())
        .await;
    relay.kill();
    let mut relay = start(&config, &fixture.name);
    for task in tasks {
        task.await.expect("writer");
    }
    read_all_in_commit_order(&mut reader, &all, &written, &relay).await;

    // A graceful stop, then a start: nothing is shipped twice.
    relay.stop_gracefully(Duration::from_secs(30));
    // Which positions the stopped relay stored, should the next one replay.
    let stopped = relay.log_text();
    reader.settle(Duration::from_secs(2)).await;
    let before = reader.messages.len();
    let mut relay = start(&config, &fixture.name);
    reader.settle(Duration::from_secs(5)).await;
    assert_eq!(
        reader.messages.len(),
        before,
        "nothing shipped twice after a graceful stop.\n--- the restarted relay:\n{}\n\
         --- the relay stopped before it:\n{stopped}",
        relay.log_text()
    );
    // And the restarted relay still ships.
    write_txn(&fixture, &[("after".into(), "agg-after".into())], false).await;
    reader
        .read_until(
            WAIT,
            |m| m.iter().any(|m| m.id() == "after"),
            || relay.log_text(),
        )
        .await;
    relay.stop_gracefully(Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_event_goes_to_the_dead_letters_and_the_stream_goes_on() {
    let fixture = BinlogFixture::new("binlog_dlq").await;
    let topic = format!("{}.Order", fixture.name);
    let dlq_topic = format!("{}.dlq", fixture.name);
    create_topics(&[&topic, &dlq_topic]).await;
    let config = config_file(
        &fixture,
        "[kafka.properties]\n\"message.max.bytes\" = \"200000\"\n",
    );
    setup(&config);
    let mut relay = start(&config, &fixture.name);
    write_txn(&fixture, &[("small-1".into(), "k1".into())], false).await;
    fixture
        .exec(&format!(
            "INSERT INTO `{}` (id, aggregatetype, aggregateid, type, payload, `timestamp`) \
             VALUES ('big', 'Order', 'k2', 'T', JSON_OBJECT('blob', REPEAT('x', 300000)), NOW(6))",
            fixture.name
        ))
        .await;
    write_txn(&fixture, &[("small-2".into(), "k3".into())], false).await;
    let mut delivered = Reader::new(&[&topic]);
    let want: HashSet<String> = ["small-1".to_owned(), "small-2".to_owned()].into();
    delivered
        .read_until(WAIT, has_all(&want), || relay.log_text())
        .await;
    let mut dlq = Reader::new(&[&dlq_topic]);
    let dead: HashSet<String> = ["big".to_owned()].into();
    dlq.read_until(WAIT, has_all(&dead), || relay.log_text())
        .await;
    let big = dlq.messages.iter().find(|m| m.id() == "big").expect("big");
    assert!(
        big.headers
            .get("dlq.source.binlog")
            .is_some_and(|v| v.contains(':')),
        "the dead letter names where it was read: {:?}",
        big.headers
    );
    relay.stop_gracefully(Duration::from_secs(30));
}

/// `WriteMode::RemoveAfterInsert` through the writer on MariaDB (Debezium's Quarkus extension's
/// default): the rows are deleted in the transaction that inserts them, the table stays empty,
/// and the binlog source ships every event, each aggregate in commit order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_after_insert_through_the_writer_is_shipped() {
    use outbox_core::{DomainEvent, Outbox, OutboxTable, WriteMode};
    let (fixture, _, mut relay, mut reader) = running("binlog_rai").await;
    let outbox =
        Outbox::new(OutboxTable::new(&fixture.name)).with_mode(WriteMode::RemoveAfterInsert);
    let mut written: HashMap<String, Vec<String>> = HashMap::new();
    let mut ids = HashSet::new();
    for t in 0..5 {
        let events: Vec<_> = (0..20)
            .map(|i| {
                common::event(
                    format!("agg-{}", i % 3),
                    serde_json::json!({"t": t, "i": i}),
                )
            })
            .collect();
        let txn = fixture.db.begin().await.expect("begin");
        let rows =
            outbox_core::write_events(&txn, &outbox, events.iter().map(|e| e as &dyn DomainEvent))
                .await
                .expect("remove-after-insert is accepted on MariaDB");
        txn.commit().await.expect("commit");
        for row in rows {
            ids.insert(row.id.to_string());
            written
                .entry(row.aggregate_id.clone())
                .or_default()
                .push(row.id.to_string());
        }
    }
    assert_eq!(fixture.row_count().await, 0, "the table stays empty");
    read_all_in_commit_order(&mut reader, &ids, &written, &relay).await;
    relay.stop_gracefully(Duration::from_secs(30));
}

/// Events of `fixture` with payloads `{"n": n}` for `ns`, one transaction each; their ids.
async fn write_numbered(fixture: &BinlogFixture, ns: std::ops::Range<u32>) -> Vec<String> {
    let mut ids = Vec::new();
    for n in ns {
        let id = format!("n-{n}");
        write_txn(fixture, &[(id.clone(), format!("agg-{}", n % 2))], false).await;
        ids.push(id);
    }
    ids
}

/// Every one of `ids` arrived with the payload `write_txn` gave it: no value under another
/// column's name.
fn assert_values_under_their_names(reader: &Reader, ids: &[String]) {
    for id in ids {
        let message = reader
            .messages
            .iter()
            .find(|m| &m.id() == id)
            .unwrap_or_else(|| panic!("{id} never arrived"));
        assert_eq!(
            message.json(),
            serde_json::json!({ "id": id }),
            "value of {id}"
        );
    }
}

/// A column dropped from the middle of the outbox table while the relay streams: later row
/// events have a column less, and every value after it would move to its neighbour's name
/// (`payload` would carry the timestamp). The relay reads the catalog again instead, and each
/// event arrives whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_dropped_while_streaming_keeps_every_value_under_its_name() {
    let (fixture, _, mut relay, mut reader) = running("binlog_drop").await;
    let before = write_numbered(&fixture, 0..3).await;
    reader
        .read_until(WAIT, |m| m.len() >= 3, || relay.log_text())
        .await;
    fixture
        .exec(&format!(
            "ALTER TABLE `{}` DROP COLUMN schemaversion",
            fixture.name
        ))
        .await;
    let after = write_numbered(&fixture, 3..6).await;
    let ids: HashSet<String> = before.iter().chain(&after).cloned().collect();
    reader
        .read_until(WAIT, has_all(&ids), || relay.log_text())
        .await;
    assert_values_under_their_names(&reader, &after);
    relay.stop_gracefully(Duration::from_secs(30));
}

/// Events written before the table changed, read after it (the relay was stopped): the
/// catalog cannot name their values, so the relay stops with the remedy, shipping none of them.
/// The remedy works: with the old columns back it ships the old events and stops at the new
/// shape; with the new columns again it ships the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_an_older_shape_stop_the_relay_until_their_columns_return() {
    let fixture = BinlogFixture::new("binlog_older").await;
    let topic = format!("{}.Order", fixture.name);
    create_topics(&[&topic, &format!("{}.dlq", fixture.name)]).await;
    let config = config_file(&fixture, "");
    setup(&config);
    let mut reader = Reader::new(&[&topic]);
    let older = write_numbered(&fixture, 0..2).await;
    let drop = format!("ALTER TABLE `{}` DROP COLUMN schemaversion", fixture.name);
    fixture.exec(&drop).await;
    let newer = write_numbered(&fixture, 2..4).await;

    let stops = |label: &str| {
        let mut relay = start(&config, label);
        let status = relay.wait_exit(WAIT).unwrap_or_else(|| {
            relay.kill();
            panic!("the relay went on:\n{}", relay.log_text())
        });
        let log = relay.log_text();
        assert_eq!(status.code(), Some(1), "{log}");
        assert!(
            log.contains("do not fit the table's columns as the catalog shows them now")
                && log.contains("give the table the columns it had when they were written"),
            "{log}"
        );
    };
    stops(&format!("{}-1", fixture.name));
    reader.settle(Duration::from_secs(2)).await;
    assert!(
        reader.messages.is_empty(),
        "nothing shipped under the wrong names"
    );

    fixture
        .exec(&format!(
            "ALTER TABLE `{}` ADD COLUMN schemaversion int NULL AFTER `type`",
            fixture.name
        ))
        .await;
    stops(&format!("{}-2", fixture.name));
    let ids: HashSet<String> = older.iter().cloned().collect();
    reader.read_until(WAIT, has_all(&ids), String::new).await;
    assert_values_under_their_names(&reader, &older);

    fixture.exec(&drop).await;
    let mut relay = start(&config, &format!("{}-3", fixture.name));
    let ids: HashSet<String> = newer.iter().cloned().collect();
    reader
        .read_until(WAIT, has_all(&ids), || relay.log_text())
        .await;
    assert_values_under_their_names(&reader, &newer);
    relay.stop_gracefully(Duration::from_secs(30));
}
