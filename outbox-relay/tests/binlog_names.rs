//! The `binlog` source on a server that names the columns in its binlog
//! (`binlog_row_metadata = FULL`, MariaDB 10.5+ and MySQL 8.0+): values take the names the
//! binlog gives them, so events written before the outbox table changed ship whole after it.
//!
//! A binary of its own: the setting is global on the server, and `binlog_relay.rs` checks the
//! server without it. `cargo test` runs test binaries one after another.

mod binlog_support;
mod common;

use std::collections::HashSet;
use std::time::Duration;

use binlog_support::{BinlogFixture, config_file, relay, setup};
use common::{Reader, RelayProcess, create_topics, has_all};
use sea_orm::ConnectionTrait;

const WAIT: Duration = Duration::from_secs(90);

/// `binlog_row_metadata = FULL` while it lives; the server's own setting back when dropped
/// (a failed test too).
struct FullRowMetadata {
    db: sea_orm::DatabaseConnection,
    before: String,
}

impl FullRowMetadata {
    async fn set(db: &sea_orm::DatabaseConnection) -> FullRowMetadata {
        let row = db
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::MySql,
                "SELECT CAST(@@GLOBAL.binlog_row_metadata AS CHAR)",
            ))
            .await
            .expect("reading binlog_row_metadata")
            .expect("a row");
        let before: String = row.try_get_by_index(0).expect("the setting");
        db.execute_unprepared("SET GLOBAL binlog_row_metadata = FULL")
            .await
            .expect("SET GLOBAL binlog_row_metadata = FULL");
        FullRowMetadata {
            db: db.clone(),
            before,
        }
    }
}

impl Drop for FullRowMetadata {
    fn drop(&mut self) {
        let (db, sql) = (
            self.db.clone(),
            format!("SET GLOBAL binlog_row_metadata = {}", self.before),
        );
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let _ = std::thread::spawn(move || {
            handle.block_on(async move {
                let _ = db.execute_unprepared(&sql).await;
            })
        })
        .join();
    }
}

/// One event per id, each in a transaction of its own, with the payload `{"id": <id>}`.
async fn write(fixture: &BinlogFixture, ids: &[String]) {
    for id in ids {
        fixture
            .exec(&format!(
                "INSERT INTO `{}` (id, aggregatetype, aggregateid, type, payload, `timestamp`) \
                 VALUES ('{id}', 'Order', 'agg', 'T', '{{\"id\": \"{id}\"}}', NOW(6))",
                fixture.name
            ))
            .await;
    }
}

/// The relay was stopped while the table lost a column and gained one before the end (same
/// column count, so neither the count nor, at the added column, the class of type tells): the
/// events written before the change still ship whole, by the names the binlog gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_written_before_the_table_changed_ship_by_their_names() {
    let fixture = BinlogFixture::new("binlog_names").await;
    let _full = FullRowMetadata::set(&fixture.db).await;
    let topic = format!("{}.Order", fixture.name);
    create_topics(&[&topic, &format!("{}.dlq", fixture.name)]).await;
    let config = config_file(&fixture, "");
    setup(&config);
    let older: Vec<String> = (0..3).map(|n| format!("old-{n}")).collect();
    write(&fixture, &older).await;
    fixture
        .exec(&format!(
            "ALTER TABLE `{}` DROP COLUMN schemaversion, \
             ADD COLUMN tenant varchar(64) NULL AFTER aggregateid",
            fixture.name
        ))
        .await;
    let newer: Vec<String> = (0..3).map(|n| format!("new-{n}")).collect();
    write(&fixture, &newer).await;

    let mut relay = RelayProcess::spawn(relay(&config, "run"), &fixture.name);
    let mut reader = Reader::new(&[&topic]);
    let ids: HashSet<String> = older.iter().chain(&newer).cloned().collect();
    reader
        .read_until(WAIT, has_all(&ids), || relay.log_text())
        .await;
    for id in &ids {
        let message = reader
            .messages
            .iter()
            .find(|m| &m.id() == id)
            .expect("arrived");
        assert_eq!(
            message.json(),
            serde_json::json!({ "id": id }),
            "value of {id}"
        );
        assert_eq!(message.key.as_deref(), Some("agg"), "key of {id}");
    }
    relay.stop_gracefully(Duration::from_secs(30));
}
