//! What the workspace's tests, benches and examples share (a private crate, never published):
//! the real services' addresses, names no other test uses, the programs under test as child
//! processes, a Kafka reader, and the drain benchmarks' event.
//!
//! Services are never optional here. A missing address or an unreachable server fails the test
//! with the service's name and the command that starts it; nothing is skipped.

mod bench;
mod process;
mod reader;

pub use bench::Bench;
pub use process::{Process, log_dir, run_successfully};
pub use reader::{Reader, Received, on};

use std::sync::atomic::{AtomicU32, Ordering};

use sea_orm::{Database, DatabaseConnection};

/// The value of `name` from the environment, or from the `.services/env` file that
/// `scripts/services up` writes at the workspace root. Panics naming `service` when neither has
/// it.
pub fn service_env(name: &str, service: &str) -> String {
    if let Ok(v) = std::env::var(name) {
        return v;
    }
    // This crate is a member of the workspace, whose root holds `.services/`.
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|dir| dir.join(".services/env"))
        .find(|file| file.exists());
    let text = file
        .as_ref()
        .and_then(|f| std::fs::read_to_string(f).ok())
        .unwrap_or_default();
    let prefix = format!("export {name}=");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim_matches(|c| c == '"' || c == '\'').to_owned())
        .unwrap_or_else(|| {
            panic!("{service} is not configured: {name} is not set and no .services/env above {} has it. Start it with `scripts/services up`.", env!("CARGO_MANIFEST_DIR"))
        })
}

pub fn database_url() -> String {
    service_env("DATABASE_URL", "PostgreSQL")
}

pub fn mysql_url() -> String {
    service_env("MYSQL_URL", "MariaDB")
}

pub fn kafka_brokers() -> String {
    service_env("KAFKA_BROKERS", "Kafka")
}

async fn connect(url: &str, service: &str) -> DatabaseConnection {
    Database::connect(url).await.unwrap_or_else(|e| {
        panic!("{service} at {url} is unreachable: {e}. Start it with `scripts/services up`.")
    })
}

pub async fn postgres() -> DatabaseConnection {
    connect(&database_url(), "PostgreSQL").await
}

pub async fn mariadb() -> DatabaseConnection {
    connect(&mysql_url(), "MariaDB").await
}

/// A fresh SQLite database in a file of its own (kept until the process ends).
pub async fn sqlite() -> DatabaseConnection {
    let path = std::env::temp_dir().join(format!("{}.sqlite", unique("outbox")));
    connect(&format!("sqlite://{}?mode=rwc", path.display()), "SQLite").await
}

/// A name (table, slot, topic) that no other test or run uses; lower case for PostgreSQL.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates `topics` with `partitions` each on the test Kafka (one that exists already is
/// fine); fails naming the service when the broker is unreachable or refuses one.
pub async fn create_topics(topics: &[&str], partitions: i32) {
    use rdkafka::ClientConfig;
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::types::RDKafkaErrorCode;

    let brokers = kafka_brokers();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .expect("Kafka admin client");
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    let created = admin
        .create_topics(
            &new,
            &AdminOptions::new().operation_timeout(Some(std::time::Duration::from_secs(30))),
        )
        .await
        .unwrap_or_else(|e| {
            panic!("Kafka at {brokers} did not create topics: {e}. Start it with `scripts/services up`.")
        });
    for result in created {
        if let Err((topic, code)) = result {
            assert_eq!(
                code,
                RDKafkaErrorCode::TopicAlreadyExists,
                "creating {topic}"
            );
        }
    }
}

/// Creates a one-partition topic with a name no other test uses (from `prefix`) on the test
/// Kafka, and returns its name.
pub async fn new_topic(prefix: &str) -> String {
    let topic = unique(prefix);
    create_topics(&[&topic], 1).await;
    topic
}

/// A message's headers as text (a header without a value reads as empty), by name.
pub fn text_headers<M: rdkafka::Message>(message: &M) -> std::collections::HashMap<String, String> {
    use rdkafka::message::Headers;
    message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|h| {
                    (
                        h.key.to_owned(),
                        String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A local address nothing listens on (yet): for a server under test to listen on.
pub fn free_local_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free local port");
    listener.local_addr().expect("its address").to_string()
}
