//! The binlog source against the real MariaDB (binlog on, ROW, FULL): what a session yields, in
//! which order, what it ignores, where it resumes, and what its preflight refuses.

mod binlog_support;

use std::collections::HashMap;
use std::time::Duration;

use binlog_support::{BinlogFixture, Seen, events, read_events, read_for, relay_url, unique};
use outbox_relay::source::binlog::{
    BinlogConnector, BinlogPosition, Connector, Fault, Source, setup,
};
use sea_orm::{ConnectionTrait, TransactionTrait};

const WITHIN: Duration = Duration::from_secs(30);

async fn connector(fixture: &BinlogFixture) -> BinlogConnector {
    setup(&fixture.config)
        .await
        .unwrap_or_else(|e| panic!("setup --source binlog: {e}"));
    let mut connector = BinlogConnector::new(&fixture.config).expect("connector");
    connector
        .preflight()
        .await
        .unwrap_or_else(|e| panic!("preflight: {e}"));
    connector
}

/// Two transactions that insert in one order and commit in the other arrive in commit order;
/// eight writers committing out of order arrive whole, each transaction between its own
/// Begin/Commit, each writer's transactions in its order, Commit positions increasing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inserts_arrive_in_commit_order_from_eight_writers() {
    let fixture = BinlogFixture::new("binlog_order").await;
    let mut connector = connector(&fixture).await;
    let mut source = connector.open(None).await.expect("open");

    // Inserted first, committed last.
    let late = fixture.db.begin().await.expect("begin");
    late.execute_unprepared(&fixture.insert_sql("late", "{\"n\": 1}"))
        .await
        .expect("insert");
    fixture.insert("early", "{\"n\": 2}").await;
    late.commit().await.expect("commit");
    let seen = read_events(&mut source, 2, WITHIN).await;
    assert_eq!(
        events(&seen),
        vec![
            ("early".to_owned(), "{\"n\": 2}".to_owned()),
            ("late".to_owned(), "{\"n\": 1}".to_owned())
        ],
        "commit order, not insert order: {seen:?}"
    );

    const WRITERS: usize = 8;
    const TXNS: usize = 25;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let db = fixture.db.clone();
        let table = fixture.name.clone();
        tasks.push(tokio::spawn(async move {
            for t in 0..TXNS {
                let txn = db.begin().await.expect("begin");
                for r in 0..2 {
                    txn.execute_unprepared(&format!(
                        "INSERT INTO `{table}` (id, aggregatetype, aggregateid, type, payload, \
                         `timestamp`) VALUES (UUID(), 'Order', 'w{w}', 'T', '{{\"t\": {t}, \"r\": {r}}}', NOW(6))"
                    ))
                    .await
                    .expect("insert");
                }
                // Commit after a pause that differs per writer, so commits interleave out of
                // the order the transactions began in.
                tokio::time::sleep(Duration::from_millis(((w * 7 + t * 3) % 11) as u64)).await;
                txn.commit().await.expect("commit");
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer");
    }
    let seen = read_events(&mut source, WRITERS * TXNS * 2, WITHIN).await;
    let mut per_writer: HashMap<String, Vec<(u64, u64)>> = HashMap::new();
    let mut in_txn: Option<Vec<(String, u64, u64)>> = None;
    let mut last_commit: Option<BinlogPosition> = None;
    for s in &seen {
        match s {
            Seen::Begin => {
                assert!(in_txn.is_none(), "Begin inside a transaction: {seen:?}");
                in_txn = Some(Vec::new());
            }
            Seen::Event(aggregate, payload) => {
                let v: serde_json::Value = serde_json::from_str(payload).expect("payload json");
                let (t, r) = (v["t"].as_u64().expect("t"), v["r"].as_u64().expect("r"));
                in_txn
                    .as_mut()
                    .expect("an event outside Begin..Commit")
                    .push((aggregate.clone(), t, r));
                per_writer
                    .entry(aggregate.clone())
                    .or_default()
                    .push((t, r));
            }
            Seen::Commit(end) => {
                let txn = in_txn.take().expect("Commit without Begin");
                assert_eq!(txn.len(), 2, "a transaction's two rows together: {txn:?}");
                assert_eq!((&txn[0].0, txn[0].1), (&txn[1].0, txn[1].1), "{txn:?}");
                if let Some(last) = &last_commit {
                    assert!(
                        (end.file.as_str(), end.offset) > (last.file.as_str(), last.offset),
                        "Commit positions increase: {last} then {end}"
                    );
                }
                last_commit = Some(end.clone());
            }
            Seen::KeepAlive(_) => assert!(in_txn.is_none(), "KeepAlive inside a transaction"),
            Seen::Other(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!(per_writer.len(), WRITERS);
    for (writer, rows) in per_writer {
        let expected: Vec<(u64, u64)> = (0..TXNS as u64).flat_map(|t| [(t, 0), (t, 1)]).collect();
        assert_eq!(
            rows, expected,
            "writer {writer}'s transactions in its order"
        );
    }
    source.close().await;
}

/// Remove-after-insert ships the insert once; DELETEs alone, UPDATEs and other tables ship
/// nothing and move the position with a KeepAlive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_updates_and_other_tables_are_ignored() {
    let fixture = BinlogFixture::new("binlog_ignore").await;
    let other = unique("binlog_other");
    fixture
        .exec(&format!(
            "CREATE TABLE `{other}` (id int PRIMARY KEY, v text)"
        ))
        .await;
    let mut connector = connector(&fixture).await;
    let mut source = connector.open(None).await.expect("open");

    let txn = fixture.db.begin().await.expect("begin");
    txn.execute_unprepared(&fixture.insert_sql("removed", "{}"))
        .await
        .expect("insert");
    txn.execute_unprepared(&format!(
        "DELETE FROM `{}` WHERE aggregateid = 'removed'",
        fixture.name
    ))
    .await
    .expect("delete");
    txn.commit().await.expect("commit");
    let seen = read_events(&mut source, 1, WITHIN).await;
    assert_eq!(events(&seen), vec![("removed".to_owned(), "{}".to_owned())]);
    assert!(matches!(seen.last(), Some(Seen::Commit(_))), "{seen:?}");

    fixture.insert("kept", "{}").await;
    let _ = read_events(&mut source, 1, WITHIN).await;
    fixture
        .exec(&format!("UPDATE `{}` SET type = 'Changed'", fixture.name))
        .await;
    fixture
        .exec(&format!("DELETE FROM `{}`", fixture.name))
        .await;
    fixture
        .exec(&format!("INSERT INTO `{other}` VALUES (1, 'x')"))
        .await;
    let quiet = read_for(&mut source, Duration::from_secs(2)).await;
    assert!(events(&quiet).is_empty(), "nothing shipped: {quiet:?}");
    assert!(
        quiet.iter().any(|s| matches!(s, Seen::KeepAlive(_))),
        "the position moves on: {quiet:?}"
    );
    assert!(
        quiet.iter().all(|s| matches!(s, Seen::KeepAlive(_))),
        "only KeepAlives: {quiet:?}"
    );
    source.close().await;
    fixture.exec(&format!("DROP TABLE `{other}`")).await;
}

/// A session acknowledges the first transaction only and closes; the next session (a new
/// connector, as after a restart) resumes from the stored position: the second transaction
/// again, then the ones written while no session ran; never the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_from_the_stored_position_after_close() {
    let fixture = BinlogFixture::new("binlog_resume").await;
    let mut connector = connector(&fixture).await;
    let mut source = connector.open(None).await.expect("open");
    fixture.insert("a", "{\"n\": 1}").await;
    fixture.insert("a", "{\"n\": 2}").await;
    let seen = read_events(&mut source, 2, WITHIN).await;
    let first_commit = seen
        .iter()
        .find_map(|s| match s {
            Seen::Commit(end) => Some(end.clone()),
            _ => None,
        })
        .expect("a Commit");
    source.acknowledge(&first_commit);
    source.close().await;
    let (file, offset, gtid) = fixture.stored().await.expect("a stored position");
    assert_eq!(
        (file.as_str(), offset),
        (first_commit.file.as_str(), first_commit.offset)
    );
    assert!(
        gtid.as_deref().is_some_and(|g| !g.is_empty()),
        "MariaDB's GTID state is stored too"
    );

    fixture.insert("a", "{\"n\": 3}").await;
    let mut connector = BinlogConnector::new(&fixture.config).expect("connector");
    connector.preflight().await.expect("preflight");
    let mut source = connector.open(None).await.expect("open again");
    let seen = read_events(&mut source, 2, WITHIN).await;
    assert_eq!(
        events(&seen),
        vec![
            ("a".to_owned(), "{\"n\": 2}".to_owned()),
            ("a".to_owned(), "{\"n\": 3}".to_owned())
        ],
        "resumed after the acknowledged transaction: {seen:?}"
    );
    // An idle outbox still moves the stored position (KeepAlive on heartbeats).
    let last = seen
        .iter()
        .rev()
        .find_map(|s| match s {
            Seen::Commit(end) => Some(end.clone()),
            _ => None,
        })
        .expect("a Commit");
    source.acknowledge(&last);
    let quiet = read_for(&mut source, Duration::from_secs(1)).await;
    assert!(events(&quiet).is_empty(), "{quiet:?}");
    source.close().await;
    let (file, offset, _) = fixture.stored().await.expect("a stored position");
    assert_eq!((file.as_str(), offset), (last.file.as_str(), last.offset));

    // Resuming from a position this process acknowledged (`open(Some(..))`) wins over the table.
    let mut source = connector.open(Some(first_commit)).await.expect("open at");
    let seen = read_events(&mut source, 2, WITHIN).await;
    assert_eq!(events(&seen)[0], ("a".to_owned(), "{\"n\": 2}".to_owned()));
    source.close().await;
}

/// Debezium's MySQL outbox DDL (varchar id, longtext payload, mixed-case columns) and binary
/// payloads: values arrive as the table holds them.
/// The lag: outbox rows written and not yet read are reported as at least their bytes of binlog
/// behind (from the server's sampled binlog end); once the session read them and their positions
/// were acknowledged, the lag drops to about 0 (other tests of this binary may still write).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_counts_the_binlog_behind_and_drops_once_acknowledged() {
    const ROWS: usize = 50;
    const PAD: usize = 2_000;
    let fixture = BinlogFixture::new("binlog_lag").await;
    let mut connector = connector(&fixture).await;
    let mut source = connector.open(None).await.expect("open");
    let pad = "x".repeat(PAD);
    for i in 0..ROWS {
        fixture
            .insert(&format!("a{}", i % 3), &format!("{{\"pad\": \"{pad}\"}}"))
            .await;
    }
    // The binlog end is sampled each second; nothing was read yet.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut behind = source.lag_bytes();
    while behind.is_none_or(|b| b < (ROWS * PAD) as u64) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lag never counted the {ROWS} rows of {PAD} bytes written: {behind:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        behind = source.lag_bytes();
    }

    let seen = read_events(&mut source, ROWS, WITHIN).await;
    assert_eq!(events(&seen).len(), ROWS);
    let acknowledge = |source: &mut outbox_relay::source::binlog::BinlogSource, seen: &[Seen]| {
        for s in seen {
            if let Seen::Commit(end) | Seen::KeepAlive(end) = s {
                source.acknowledge(end);
            }
        }
    };
    acknowledge(&mut source, &seen);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut lag = source.lag_bytes();
    while lag.is_none_or(|l| l >= 4_096) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lag did not drop once everything was read and acknowledged: {lag:?} (it was \
             {behind:?})"
        );
        let more = read_for(&mut source, Duration::from_millis(500)).await;
        acknowledge(&mut source, &more);
        lag = source.lag_bytes();
    }
    println!("lag: {behind:?} bytes behind, then {lag:?} once caught up");
    source.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debezium_ddl_and_binary_payloads() {
    let fixture = BinlogFixture::bare("binlog_dbz").await;
    fixture
        .exec(&format!(
            "CREATE TABLE `{}` (id varchar(255) NOT NULL PRIMARY KEY, \
             AggregateType varchar(255) NOT NULL, AggregateId varchar(255) NOT NULL, \
             type varchar(255) NOT NULL, payload longtext, extra blob)",
            fixture.name
        ))
        .await;
    let mut connector = connector(&fixture).await;
    let mut source = connector.open(None).await.expect("open");
    fixture
        .exec(&format!(
            "INSERT INTO `{}` VALUES ('id-1', 'Order', 'o-1', 'Created', '{{\"é\": 1}}', X'00FF')",
            fixture.name
        ))
        .await;
    let mut got = None;
    let deadline = tokio::time::Instant::now() + WITHIN;
    while got.is_none() {
        let event = tokio::time::timeout_at(deadline, source.next())
            .await
            .expect("an event in time")
            .expect("next");
        if let outbox_relay::source::binlog::SourceEvent::Event(record) = event {
            got = Some(record);
        }
    }
    let record = got.expect("record");
    let names: Vec<&str> = record.columns.iter().map(|(n, _)| &**n).collect();
    assert_eq!(
        names,
        [
            "id",
            "aggregatetype",
            "aggregateid",
            "type",
            "payload",
            "extra"
        ],
        "outbox columns in the configured spelling, table order"
    );
    use outbox_relay::source::ColumnValue;
    assert_eq!(record.columns[0].1, Some(ColumnValue::Text("id-1".into())));
    assert_eq!(
        record.columns[4].1,
        Some(ColumnValue::Text("{\"é\": 1}".into()))
    );
    assert_eq!(record.columns[5].1, Some(ColumnValue::Bytes(vec![0, 0xff])));
    assert_eq!(record.origin.header, "dlq.source.binlog");
    assert!(
        record.origin.value.to_string().contains(':'),
        "{}",
        record.origin.value
    );
    source.close().await;
}

/// What the binlog source shipped and what the server shows (`CAST(... AS CHAR)`), by aggregate
/// id, for the columns `checked` of a table of `columns` (with `aggregateid` among them) after
/// one INSERT of each of `rows` (its `VALUES`); and the records, by aggregate id. A row the
/// source cannot read fails the test.
struct ShippedAndShown {
    shipped: HashMap<String, Vec<Option<String>>>,
    shown: HashMap<String, Vec<Option<String>>>,
    records: HashMap<String, outbox_relay::source::OutboxRecord>,
}

async fn shipped_and_shown(
    prefix: &str,
    columns: &str,
    rows: &[String],
    checked: &[&str],
) -> ShippedAndShown {
    use outbox_relay::source::ColumnValue;
    use outbox_relay::source::binlog::SourceEvent;
    let fixture = BinlogFixture::bare(prefix).await;
    fixture
        .exec(&format!("CREATE TABLE `{}` ({columns})", fixture.name))
        .await;
    let mut connector = connector(&fixture).await;
    let mut source = connector.open(None).await.expect("open");
    for row in rows {
        fixture
            .exec(&format!("INSERT INTO `{}` VALUES ({row})", fixture.name))
            .await;
    }
    let casts: Vec<String> = checked
        .iter()
        .map(|c| format!("CAST(`{c}` AS CHAR)"))
        .collect();
    let shown = fixture
        .db
        .query_all_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::MySql,
            format!(
                "SELECT aggregateid, {} FROM `{}`",
                casts.join(", "),
                fixture.name
            ),
        ))
        .await
        .expect("reading the rows back")
        .iter()
        .map(|row| {
            let text = |i: usize| row.try_get_by_index::<Option<String>>(i).expect("a column");
            let aggregate = text(0).expect("aggregateid");
            (aggregate, (1..=checked.len()).map(text).collect())
        })
        .collect();
    let mut records = HashMap::new();
    let deadline = tokio::time::Instant::now() + WITHIN;
    while records.len() < rows.len() {
        let event = tokio::time::timeout_at(deadline, source.next())
            .await
            .expect("an event in time")
            .expect("next");
        match event {
            SourceEvent::Event(record) => {
                let aggregate = match record.get("aggregateid") {
                    Some(aggregate) => aggregate.to_owned(),
                    None => panic!("no aggregateid: {:?}", record.columns),
                };
                records.insert(aggregate, record);
            }
            SourceEvent::Unreadable { record, reason } => {
                panic!("a row was not readable: {reason}: {:?}", record.columns)
            }
            _ => {}
        }
    }
    source.close().await;
    let shipped = records
        .iter()
        .map(|(aggregate, record)| {
            let texts = checked
                .iter()
                .map(|name| {
                    let value = record.columns.iter().find(|(n, _)| &**n == *name);
                    match value.map(|(_, v)| v) {
                        Some(Some(ColumnValue::Text(t))) => Some(t.clone()),
                        Some(None) => None,
                        other => panic!("`{name}` was not shipped as text: {other:?}"),
                    }
                })
                .collect();
            (aggregate.clone(), texts)
        })
        .collect();
    ShippedAndShown {
        shipped,
        shown,
        records,
    }
}

/// MariaDB 10.7+'s own `UUID` type (Hibernate 6's mapping of a `java.util.UUID` id there)
/// travels in the binlog as its 16 bytes, without trailing zero bytes; every kind of id is
/// shipped as the text the server shows for it (`SELECT id`), as the `poll` source ships it. A
/// `binary(n)` value gets its trailing zeros back too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mariadb_uuid_id_arrives_as_the_text_the_server_shows() {
    // The server's own (time-based, version 1), versions 4 and 7, a version 1 literal, the nil
    // UUID, and one outside RFC 4122's variant.
    let ids = [
        "UUID()",
        "'6ccd780c-baba-4026-9564-5b8c656024db'",
        "'0192f1c4-7b3a-7def-8a11-223344556677'",
        "'6ccd780c-baba-1026-9564-5b8c656024db'",
        "'00000000-0000-0000-0000-000000000000'",
        "'6ccd780c-baba-4026-1564-5b8c656024db'",
    ];
    let rows: Vec<String> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| format!("{id}, 'Order', 'o-{n}', 'Created', '{{}}', X'0102000000000000'"))
        .collect();
    let seen = shipped_and_shown(
        "binlog_uuid",
        "id uuid NOT NULL PRIMARY KEY, aggregatetype varchar(255) NOT NULL, \
         aggregateid varchar(255) NOT NULL, type varchar(255) NOT NULL, payload json, \
         tag binary(8)",
        &rows,
        &["id"],
    )
    .await;
    assert_eq!(seen.shipped, seen.shown, "each id as the server shows it");
    for record in seen.records.values() {
        assert_eq!(
            record.columns[5].1,
            Some(outbox_relay::source::ColumnValue::Bytes(vec![
                1, 2, 0, 0, 0, 0, 0, 0
            ])),
            "binary(8) whole"
        );
    }
}

/// MariaDB's `INET6` and `INET4` columns (a user's own, beside the outbox's) arrive as the
/// address's bytes; each is shipped as the text the server shows, not as unreadable bytes that
/// would send the whole event to the dead letters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_address_columns_arrive_as_the_text_the_server_shows() {
    let addresses = [
        ("2001:db8::1", "192.0.2.1"),
        ("::ffff:192.0.2.1", "0.0.0.0"),
        ("::", "255.255.255.255"),
        ("fe80::1:0:0:0", "10.0.0.0"),
        ("2001:db8:0:0:1::", "0.0.0.1"),
    ];
    let rows: Vec<String> = addresses
        .iter()
        .enumerate()
        .map(|(n, (v6, v4))| format!("'e{n}', 'Order', 'o-{n}', 'Created', '{{}}', '{v6}', '{v4}'"))
        .collect();
    let seen = shipped_and_shown(
        "binlog_inet",
        "id varchar(36) NOT NULL PRIMARY KEY, aggregatetype varchar(255) NOT NULL, \
         aggregateid varchar(255) NOT NULL, type varchar(255) NOT NULL, payload json, \
         client inet6, client4 inet4",
        &rows,
        &["client", "client4"],
    )
    .await;
    assert_eq!(
        seen.shipped, seen.shown,
        "each address as the server shows it"
    );
}

/// `ENUM` and `SET` columns (an `aggregatetype` or `type` kept as an `ENUM`, a user's own `SET`)
/// travel in the binlog as their index and bit mask; each is shipped as the text the server
/// shows, so an event is routed by its label, not by a number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enum_and_set_columns_arrive_as_the_text_the_server_shows() {
    let values = [
        ("Order", "NULL"),
        ("Customer", "''"),
        ("Invoice", "'a,c'"),
        ("Order", "'b,i'"),
    ];
    let rows: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(n, (kind, flags))| format!("'e{n}', '{kind}', 'o-{n}', 'Created', '{{}}', {flags}"))
        .collect();
    let seen = shipped_and_shown(
        "binlog_enum",
        "id varchar(36) NOT NULL PRIMARY KEY, \
         aggregatetype enum('Order','Customer','Invoice') NOT NULL, \
         aggregateid varchar(255) NOT NULL, type varchar(255) NOT NULL, payload json, \
         flags set('a','b','c','d','e','f','g','h','i') NULL",
        &rows,
        &["aggregatetype", "flags"],
    )
    .await;
    assert_eq!(
        seen.shipped, seen.shown,
        "each label as the server shows it"
    );
}

/// Text columns in other character sets than UTF-8 travel in the binlog unconverted; each is
/// shipped as the text the server shows through a `utf8mb4` connection. `latin1` (the old
/// default) is Windows-1252 there: its `€` and curly quotes are the bytes 0x80 to 0x9f, which
/// ISO 8859-1 would make control characters. Two-byte, four-byte and multi-byte sets too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_in_other_character_sets_arrives_as_the_server_shows_it() {
    let sets = [
        ("latin1", "€ “quoted” é Œ ™ ‰"),
        ("latin2", "Zażółć gęślą"),
        ("cp1251", "Привет, мир"),
        ("koi8r", "Привет"),
        ("greek", "Καλημέρα"),
        ("ucs2", "h€llo ü"),
        ("utf16", "emoji 😀 ü"),
        ("utf16le", "😀 ü"),
        ("utf32", "😀 ü"),
        ("sjis", "日本語"),
        ("ujis", "日本語"),
        ("euckr", "한국어"),
        ("gbk", "中文"),
        ("big5", "中文"),
    ];
    let columns: Vec<String> = sets
        .iter()
        .map(|(set, _)| format!("c_{set} varchar(64) CHARACTER SET {set} NULL"))
        .collect();
    let row = |n: usize, value: &dyn Fn(&str) -> String| {
        let values: Vec<String> = sets.iter().map(|(_, text)| value(text)).collect();
        format!(
            "'t{n}', 'Order', 't-{n}', 'Created', '{{}}', {}",
            values.join(", ")
        )
    };
    let rows = [
        row(0, &|text| format!("'{text}'")),
        row(1, &|_| "''".into()),
        row(2, &|_| "NULL".into()),
        row(3, &|_| "'plain ascii'".into()),
    ];
    let checked: Vec<String> = sets.iter().map(|(set, _)| format!("c_{set}")).collect();
    let checked: Vec<&str> = checked.iter().map(String::as_str).collect();
    let seen = shipped_and_shown(
        "binlog_charset",
        &format!(
            "id varchar(36) NOT NULL PRIMARY KEY, aggregatetype varchar(255) NOT NULL, \
             aggregateid varchar(255) NOT NULL, type varchar(255) NOT NULL, payload json, {}",
            columns.join(", ")
        ),
        &rows,
        &checked,
    )
    .await;
    // The rows hold the texts themselves (the server converted each on INSERT, none to `?`).
    let written: Vec<Option<String>> = sets.iter().map(|(_, t)| Some((*t).to_owned())).collect();
    assert_eq!(seen.shown["t-0"], written);
    assert_eq!(seen.shipped, seen.shown, "each text as the server shows it");
}

/// The preflight names each missing piece, as Fatal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_names_what_is_missing() {
    async fn refusal(config: &outbox_relay::Config) -> String {
        let mut connector = BinlogConnector::new(config).expect("connector");
        let error = connector
            .preflight()
            .await
            .expect_err("the preflight refuses");
        assert_eq!(error.fault(), Fault::Fatal, "{error}");
        error.to_string()
    }

    // No outbox table.
    let fixture = BinlogFixture::bare("binlog_pre").await;
    setup(&{
        let mut c = fixture.config.clone();
        c.source.table = "outbox_relay_binlog_position".into();
        c.kafka.route_by_field = "name".into();
        c
    })
    .await
    .err();
    let message = refusal(&fixture.config).await;
    assert!(
        message.contains(&format!("`{}` does not exist", fixture.name)),
        "{message}"
    );

    // A table without `payload`.
    fixture
        .exec(&format!(
            "CREATE TABLE `{}` (id varchar(36) PRIMARY KEY, aggregatetype varchar(255), \
             aggregateid varchar(255))",
            fixture.name
        ))
        .await;
    let message = refusal(&fixture.config).await;
    assert!(message.contains("has no column `payload`"), "{message}");
    fixture
        .exec(&format!("ALTER TABLE `{}` ADD payload json", fixture.name))
        .await;

    // A shipped column in a character set the relay cannot decode; an unshipped one is fine.
    fixture
        .exec(&format!(
            "ALTER TABLE `{}` MODIFY aggregateid varchar(255) CHARACTER SET armscii8, \
             ADD note varchar(64) CHARACTER SET armscii8",
            fixture.name
        ))
        .await;
    let message = refusal(&fixture.config).await;
    assert!(
        message.contains("column `aggregateid` in the character set `armscii8`"),
        "{message}"
    );
    fixture
        .exec(&format!(
            "ALTER TABLE `{}` MODIFY aggregateid varchar(255) CHARACTER SET utf8mb4",
            fixture.name
        ))
        .await;

    // No position table (another name than `setup` made).
    let mut config = fixture.config.clone();
    config.source.binlog.position_table = unique("no_such_position");
    let message = refusal(&config).await;
    assert!(
        message.contains("run `outbox-relay setup --source binlog`"),
        "{message}"
    );

    // A user without the replication privileges, then without SELECT on the outbox.
    let user = unique("norepl");
    fixture
        .exec(&format!("CREATE USER '{user}'@'%' IDENTIFIED BY 'pw'"))
        .await;
    fixture
        .exec(&format!(
            "GRANT SELECT, INSERT, UPDATE ON outbox_test.* TO '{user}'@'%'"
        ))
        .await;
    let mut config = fixture.config.clone();
    let port = relay_url()
        .rsplit_once(':')
        .map(|(_, rest)| rest.split('/').next().unwrap_or_default().to_owned())
        .expect("port");
    config.database_url = Some(format!("mysql://{user}:pw@127.0.0.1:{port}/outbox_test"));
    let message = refusal(&config).await;
    assert!(
        message.contains("REPLICATION SLAVE, REPLICATION CLIENT"),
        "{message}"
    );
    fixture
        .exec(&format!(
            "GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '{user}'@'%'"
        ))
        .await;
    fixture
        .exec(&format!("REVOKE SELECT ON outbox_test.* FROM '{user}'@'%'"))
        .await;
    let message = refusal(&config).await;
    assert!(
        message.contains(&format!("GRANT SELECT ON `outbox_test`.`{}`", fixture.name)),
        "{message}"
    );
    fixture.exec(&format!("DROP USER '{user}'@'%'")).await;

    // All there: the preflight passes (the least-privilege user of `scripts/services`).
    let mut connector = BinlogConnector::new(&fixture.config).expect("connector");
    connector.preflight().await.expect("preflight passes");
}

/// A server that does not answer is Transient (the pipeline waits and tries again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_is_transient() {
    let fixture = BinlogFixture::bare("binlog_down").await;
    let mut config = fixture.config.clone();
    config.database_url = Some("mysql://outbox_relay:outbox_relay@127.0.0.1:1/outbox_test".into());
    let mut connector = BinlogConnector::new(&config).expect("connector");
    let error = connector.preflight().await.expect_err("refused");
    assert_eq!(error.fault(), Fault::Transient, "{error}");
}
