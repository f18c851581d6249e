//! The relay's configuration: a TOML file, overridden by environment variables, overridden by
//! command-line flags (CLI > env > TOML > defaults).
//!
//! The file is parsed with `deny_unknown_fields`, so a misspelt key is an error that names it.
//! Secrets (the database password in any form a URL carries it, any librdkafka property whose
//! name says `password`, `secret` or `key`) never reach a log line: `Debug` redacts them. They
//! can come from files (`database_url_file`, `kafka.sasl_password_file`, or the `*_FILE`
//! environment variables), so that they never appear on a command line.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A configuration problem, always naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("`{key}`: {message}")]
    Invalid { key: &'static str, message: String },
    /// A Debezium connector configuration the relay cannot take (see [`crate::debezium`]).
    #[error("--debezium-config: {0}")]
    Debezium(#[source] Box<dyn std::error::Error + Send + Sync>),
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// The whole relay configuration.
#[derive(Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// PostgreSQL connection URL, `postgres://user:password@host:port/database`. The role needs
    /// the `REPLICATION` attribute (and ownership of the table for `setup`). Env: `DATABASE_URL`.
    #[serde(default)]
    pub database_url: Option<String>,
    /// A file holding `database_url` (a mounted secret, say); read by [`crate::load::load`].
    /// Env: `DATABASE_URL_FILE`.
    #[serde(default)]
    pub database_url_file: Option<PathBuf>,
    /// Where events are read from.
    #[serde(default)]
    pub source: SourceConfig,
    /// Where events go.
    #[serde(default)]
    pub kafka: KafkaConfig,
    /// Reconnection after transient failures.
    #[serde(default)]
    pub retry: RetryConfig,
    /// The HTTP listener: Prometheus `/metrics`, the probes and the dashboard.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// `at-least-once` (the default) or `exactly-once` (Kafka transactions, for
    /// `read_committed` consumers). Env: `OUTBOX_RELAY_DELIVERY`.
    #[serde(default)]
    pub delivery: Delivery,
}

/// What a consumer may rely on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// Every committed event arrives, in order per aggregate; a restart can send some again
    /// (consumers drop them by the `id` header).
    #[default]
    AtLeastOnce,
    /// Every committed event is seen once by a `read_committed` consumer: events and the source
    /// position are written in one Kafka transaction (see [`crate::exactly_once`]).
    ExactlyOnce,
}

impl fmt::Display for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Delivery::AtLeastOnce => "at-least-once",
            Delivery::ExactlyOnce => "exactly-once",
        })
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field(
                "database_url",
                &self.database_url.as_deref().map(redact_url),
            )
            .field("database_url_file", &self.database_url_file)
            .field("source", &self.source)
            .field("kafka", &self.kafka)
            .field("retry", &self.retry)
            .field("metrics", &self.metrics)
            .field("delivery", &self.delivery)
            .finish()
    }
}

/// Which log the relay tails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// Rows inserted into the outbox table (pgoutput `Insert` messages). DELETEs are ignored.
    #[default]
    Wal,
    /// Transactional `pg_logical_emit_message` messages with the configured prefix (tableless).
    Message,
    /// Polling the outbox table (PostgreSQL, MariaDB/MySQL, SQLite); see `[source.poll]`.
    Poll,
    /// The MariaDB/MySQL row-based binlog: the outbox table's INSERTs; see `[source.binlog]`.
    Binlog,
}

/// The replication source.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// `wal` (the outbox table) or `message` (tableless logical messages).
    #[serde(default)]
    pub kind: SourceKind,
    /// The logical replication slot (pgoutput). One relay holds it at a time.
    #[serde(default = "default_slot")]
    pub slot: String,
    /// The publication the slot streams.
    #[serde(default = "default_publication")]
    pub publication: String,
    /// The outbox table's schema. Default: the connection's `search_path` (normally `public`).
    #[serde(default)]
    pub schema: Option<String>,
    /// The outbox table's name.
    #[serde(default = "default_table")]
    pub table: String,
    /// The logical-message prefix the `message` source keeps; others are skipped.
    #[serde(default = "default_prefix")]
    pub message_prefix: String,
    /// How often a standby status update (the acknowledged LSN) is sent at most; an idle stream
    /// is acknowledged on the server's keepalives, so an idle outbox holds no WAL.
    #[serde(default = "default_status_interval", with = "humantime_serde")]
    pub status_interval: Duration,
    /// How often the relay writes a heartbeat into the slot's database (a transactional
    /// `pg_logical_emit_message` with the prefix [`HEARTBEAT_PREFIX`], as Debezium's
    /// `heartbeat.action.query`), which it reads back and confirms, never shipping it: the slot
    /// then advances while the outbox is idle and other databases of the cluster write WAL.
    /// `0s` turns it off. Default 10 s.
    #[serde(default = "default_heartbeat_interval", with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// WAL retained by the slot (bytes, the server's WAL position minus the slot's
    /// `restart_lsn`) above which the relay logs a warning; the figure is the metric
    /// `outbox_relay_slot_retained_wal_bytes`. Default 1 GiB.
    #[serde(default = "default_max_retained_wal")]
    pub max_retained_wal: u64,
    /// How long a stop (or a failed session) waits for the events in flight to be acknowledged
    /// by Kafka before it gives up on them (they are sent again from the acknowledged position,
    /// after a restart). Default 30 s.
    #[serde(default = "default_drain_timeout", with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// The `poll` source's settings.
    #[serde(default)]
    pub poll: PollConfig,
    /// The `binlog` source's settings.
    #[serde(default)]
    pub binlog: BinlogConfig,
}

/// The logical-message prefix of the relay's heartbeats; distinct from any outbox prefix, so a
/// heartbeat is never taken for an event.
pub const HEARTBEAT_PREFIX: &str = "outbox-relay.heartbeat";

fn default_slot() -> String {
    "outbox_relay".into()
}
fn default_publication() -> String {
    "outbox_relay".into()
}
fn default_table() -> String {
    "outbox".into()
}
fn default_prefix() -> String {
    "outbox".into()
}
fn default_status_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_heartbeat_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_max_retained_wal() -> u64 {
    1 << 30
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            kind: SourceKind::default(),
            slot: default_slot(),
            publication: default_publication(),
            schema: None,
            table: default_table(),
            message_prefix: default_prefix(),
            status_interval: default_status_interval(),
            heartbeat_interval: default_heartbeat_interval(),
            max_retained_wal: default_max_retained_wal(),
            drain_timeout: default_drain_timeout(),
            poll: PollConfig::default(),
            binlog: BinlogConfig::default(),
        }
    }
}

/// The `binlog` source (`[source.binlog]`): the relay reads the MariaDB/MySQL binlog as a
/// replica does, and keeps its position in a table of its own in the outbox's database.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinlogConfig {
    /// The relay's replica id on the server (`COM_REGISTER_SLAVE`): unique among the server's
    /// replicas, other relays and Debezium connectors included, or the server drops one of the
    /// two connections. Default 48_879.
    #[serde(default = "default_binlog_server_id")]
    pub server_id: u32,
    /// The table (in the outbox's database) where the relay keeps its acknowledged position;
    /// `outbox-relay setup --source binlog` creates it.
    #[serde(default = "default_binlog_position_table")]
    pub position_table: String,
    /// The key of this relay's row in `position_table`. Default: `<database>.<table>` of the
    /// outbox, so relays of several outboxes may share the table.
    #[serde(default)]
    pub position_key: Option<String>,
    /// How often the server sends a heartbeat on an idle binlog; each one lets an idle outbox
    /// advance the stored position. Default 1 s.
    #[serde(default = "default_binlog_heartbeat", with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// At most one position write per interval (the latest acknowledged wins). Default 500 ms.
    #[serde(default = "default_binlog_flush", with = "humantime_serde")]
    pub flush_interval: Duration,
}

fn default_binlog_server_id() -> u32 {
    48_879
}
fn default_binlog_position_table() -> String {
    "outbox_relay_binlog_position".into()
}
fn default_binlog_heartbeat() -> Duration {
    Duration::from_secs(1)
}
fn default_binlog_flush() -> Duration {
    Duration::from_millis(500)
}

impl Default for BinlogConfig {
    fn default() -> Self {
        BinlogConfig {
            server_id: default_binlog_server_id(),
            position_table: default_binlog_position_table(),
            position_key: None,
            heartbeat_interval: default_binlog_heartbeat(),
            flush_interval: default_binlog_flush(),
        }
    }
}

/// The Kafka sink, in Debezium Outbox Event Router terms.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `bootstrap.servers`. Env: `KAFKA_BROKERS`.
    #[serde(default)]
    pub brokers: Option<String>,
    /// The topic: Debezium's `route.topic.replacement`, in Java's replacement syntax (`$1`,
    /// `${name}`; `\` escapes) over the groups of `topic_regex`. Under the default regex,
    /// `${routedByValue}` is the routing column's value.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// Debezium's `route.topic.regex`: when it matches the whole routing value, the topic is
    /// `topic` with its groups; otherwise the routing value itself is the topic (as Kafka
    /// Connect's `RegexRouter`). Java's regex syntax, less what the `regex` crate lacks
    /// (lookaround, backreferences), which is refused at start.
    #[serde(default = "default_topic_regex")]
    pub topic_regex: String,
    /// The column whose value routes the topic (Debezium's `route.by.field`).
    #[serde(default = "default_route_by")]
    pub route_by_field: String,
    /// The column of the event id, sent as header `id` (Debezium's `table.field.event.id`).
    #[serde(default = "default_event_id_field")]
    pub event_id_field: String,
    /// The column of the message key (Debezium's `table.field.event.key`).
    #[serde(default = "default_event_key_field")]
    pub event_key_field: String,
    /// The column of the message value (Debezium's `table.field.event.payload`).
    #[serde(default = "default_payload_field")]
    pub payload_field: String,
    /// The column of the Kafka record timestamp (Debezium's `table.field.event.timestamp`); a
    /// NULL leaves the producer's time. Unset: the producer's time (Debezium: its processing
    /// time).
    #[serde(default)]
    pub event_timestamp_field: Option<String>,
    /// Further columns placed on the message, as Debezium's `table.fields.additional.placement`:
    /// `column:header[:name]` (a header), `column:envelope[:name]` (a field of the value,
    /// which becomes the envelope `{"payload":..,"name":..}` rendered as Kafka Connect's
    /// `JsonConverter` without schemas renders it) or `column:partition` (the Kafka partition).
    #[serde(default)]
    pub additional_placement: Vec<String>,
    /// How the value is rendered, as Kafka Connect's value converter under Debezium: `string`
    /// (StringConverter, BinaryDataConverter: the payload column's bytes as stored) or `json`
    /// (JsonConverter with `schemas.enable=false`: the payload as a JSON string, or expanded
    /// with `expand_json_payload`). `envelope` placements and `expand_json_payload` need `json`.
    #[serde(default)]
    pub value_converter: ValueConverter,
    /// Expand a JSON payload into the value as Debezium's `table.expand.json.payload` with
    /// `JsonConverter` (`schemas.enable=false`) renders it: compact JSON, null members left
    /// out; a payload that is not a JSON object is sent as a JSON string.
    #[serde(default)]
    pub expand_json_payload: bool,
    /// Send a tombstone (null value) for an event whose payload is NULL or empty (Debezium's
    /// `route.tombstone.on.empty.payload`). A NULL payload is a null value either way, as under
    /// Debezium; when off, an empty payload is sent as an empty value.
    #[serde(default)]
    pub tombstone_on_empty_payload: bool,
    /// Add `traceparent`/`tracestate` headers from `tracingspancontext`, as Debezium does with
    /// OpenTelemetry enabled. Off: messages are byte-equal to a Debezium without tracing.
    #[serde(default = "default_trace_headers")]
    pub trace_headers: bool,
    /// The dead-letter topic for events Kafka refuses for good (too large, invalid topic).
    #[serde(default = "default_dlq")]
    pub dead_letter_topic: String,
    /// Most events awaiting a Kafka acknowledgement before the source pauses. Default 6,000:
    /// ~60 ms of work at full speed, far more than the producer's linger and the broker's ack
    /// need; a larger window only grows the heap, by ~0.6 KB per event (BENCHMARKS.md: 100,000
    /// was slower and used 84 MB instead of 33 MB; 10,000 drained no faster than 6,000 and
    /// peaked 2–3 MB higher; 4,000 drained slower).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// librdkafka properties, passed through as they are (TLS and SASL go here:
    /// `security.protocol`, `ssl.ca.location`, `sasl.mechanism`, `sasl.username`, ...). The relay
    /// forces `enable.idempotence=true` and `acks=all`, and sets no local delivery timeout
    /// (`message.timeout.ms=0`) unless one is given here: a finite one can reorder the events of
    /// a key after a longer outage.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// A file holding the SASL password (`sasl.password`), so that it is on no command line;
    /// read by [`crate::load::load`]. Env: `KAFKA_SASL_PASSWORD_FILE`.
    #[serde(default)]
    pub sasl_password_file: Option<PathBuf>,
    /// `delivery = "exactly-once"`: the producer's `transactional.id`, one per relay identity
    /// (a second relay with it fences the first). Default: derived from the source's identity
    /// (see [`Config::transactional_id`]).
    #[serde(default)]
    pub transactional_id: Option<String>,
    /// `delivery = "exactly-once"`: the compacted topic where each Kafka transaction also
    /// writes the source position it ends at; `setup --delivery exactly-once` creates it.
    #[serde(default = "default_offsets_topic")]
    pub offsets_topic: String,
    /// `delivery = "exactly-once"`: a Kafka transaction is committed at the first source commit
    /// at or past this many events (a larger source transaction stays whole). Default 5,000.
    #[serde(default = "default_transaction_max_events")]
    pub transaction_max_events: usize,
    /// `delivery = "exactly-once"`: ... or at the first source commit this long after the Kafka
    /// transaction began, or when the source is idle. Default 500 ms.
    #[serde(default = "default_transaction_interval", with = "humantime_serde")]
    pub transaction_interval: Duration,
}

fn default_offsets_topic() -> String {
    "outbox.relay.offsets".into()
}
fn default_transaction_max_events() -> usize {
    5_000
}
fn default_transaction_interval() -> Duration {
    Duration::from_millis(500)
}

fn default_topic() -> String {
    outbox_limits::DEFAULT_TOPIC_TEMPLATE.into()
}
fn default_topic_regex() -> String {
    crate::format::TopicRoute::DEFAULT_REGEX.into()
}
fn default_route_by() -> String {
    "aggregatetype".into()
}
fn default_event_id_field() -> String {
    "id".into()
}
fn default_event_key_field() -> String {
    "aggregateid".into()
}
fn default_payload_field() -> String {
    "payload".into()
}
fn default_trace_headers() -> bool {
    true
}
fn default_dlq() -> String {
    "outbox.dlq".into()
}
fn default_max_in_flight() -> usize {
    6_000
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: None,
            topic: default_topic(),
            topic_regex: default_topic_regex(),
            route_by_field: default_route_by(),
            event_id_field: default_event_id_field(),
            event_key_field: default_event_key_field(),
            payload_field: default_payload_field(),
            event_timestamp_field: None,
            additional_placement: Vec::new(),
            value_converter: ValueConverter::default(),
            expand_json_payload: false,
            tombstone_on_empty_payload: false,
            trace_headers: default_trace_headers(),
            dead_letter_topic: default_dlq(),
            max_in_flight: default_max_in_flight(),
            properties: BTreeMap::new(),
            sasl_password_file: None,
            transactional_id: None,
            offsets_topic: default_offsets_topic(),
            transaction_max_events: default_transaction_max_events(),
            transaction_interval: default_transaction_interval(),
        }
    }
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let properties: BTreeMap<&str, &str> = self
            .properties
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str(),
                    if is_secret(k) {
                        "<redacted>"
                    } else {
                        v.as_str()
                    },
                )
            })
            .collect();
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("topic_regex", &self.topic_regex)
            .field("route_by_field", &self.route_by_field)
            .field("event_id_field", &self.event_id_field)
            .field("event_key_field", &self.event_key_field)
            .field("payload_field", &self.payload_field)
            .field("event_timestamp_field", &self.event_timestamp_field)
            .field("additional_placement", &self.additional_placement)
            .field("value_converter", &self.value_converter)
            .field("expand_json_payload", &self.expand_json_payload)
            .field(
                "tombstone_on_empty_payload",
                &self.tombstone_on_empty_payload,
            )
            .field("trace_headers", &self.trace_headers)
            .field("dead_letter_topic", &self.dead_letter_topic)
            .field("max_in_flight", &self.max_in_flight)
            .field("properties", &properties)
            .field("sasl_password_file", &self.sasl_password_file)
            .field("transactional_id", &self.transactional_id)
            .field("offsets_topic", &self.offsets_topic)
            .field("transaction_max_events", &self.transaction_max_events)
            .field("transaction_interval", &self.transaction_interval)
            .finish()
    }
}

/// The rendering of the message value (see [`KafkaConfig::value_converter`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ValueConverter {
    /// The payload column's bytes as stored.
    #[default]
    String,
    /// As Kafka Connect's JsonConverter with `schemas.enable=false`.
    Json,
}

/// Whether a librdkafka property holds a secret (`sasl.password`, `ssl.key.password`,
/// `sasl.oauthbearer.client.secret`, `ssl.key.pem`, ...).
pub fn is_secret(property: &str) -> bool {
    [
        "password",
        "secret",
        "key.pem",
        "keystore",
        "sasl.oauthbearer.config",
    ]
    .iter()
    .any(|s| property.contains(s))
}

impl From<crate::connection::UrlError> for ConfigError {
    fn from(error: crate::connection::UrlError) -> Self {
        ConfigError::Invalid {
            key: "database_url",
            message: error.0,
        }
    }
}

/// The URL with every secret it carries replaced by `<redacted>`, for logs (see
/// [`crate::connection::redact`]).
pub fn redact_url(url: &str) -> String {
    crate::connection::redact(url)
}

/// Capped exponential backoff for reconnects; it resets once a session makes progress.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// The first wait after a failure.
    #[serde(default = "default_initial_backoff", with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// The longest wait.
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
}

fn default_initial_backoff() -> Duration {
    Duration::from_millis(200)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(10)
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial_backoff: default_initial_backoff(),
            max_backoff: default_max_backoff(),
        }
    }
}

/// The HTTP listener for Prometheus, the health checks and the dashboard.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of `/metrics`, the probes and the dashboard (`/`), such as `127.0.0.1:9187`: a
    /// loopback address keeps them on this host. An address other hosts reach (`0.0.0.0:9187`,
    /// for a Prometheus elsewhere) should go with `token`. None: no listener.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// A bearer token that every path but the probes (`/livez`, `/healthz`, `/readyz`) requires:
    /// `Authorization: Bearer <token>` (Prometheus: `authorization: {credentials: ...}`).
    /// Visible ASCII, no spaces. None: no token.
    #[serde(default)]
    pub token: Option<String>,
    /// A file holding `token`, so that it is on no command line; read by [`crate::load::load`].
    /// Env: `OUTBOX_RELAY_METRICS_TOKEN_FILE`.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

impl fmt::Debug for MetricsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .finish()
    }
}

/// Overrides from the command line and the environment (clap reads both; CLI wins).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Overrides {
    /// TOML configuration file.
    #[arg(long, short = 'c', env = "OUTBOX_RELAY_CONFIG")]
    pub config: Option<PathBuf>,
    /// PostgreSQL URL (`database_url`). Prefer `DATABASE_URL_FILE`: a URL given here with its
    /// password shows on `ps`.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// A file holding the database URL (`database_url_file`).
    #[arg(long, env = "DATABASE_URL_FILE")]
    pub database_url_file: Option<PathBuf>,
    /// A file holding the SASL password (`kafka.sasl_password_file`).
    #[arg(long, env = "KAFKA_SASL_PASSWORD_FILE")]
    pub kafka_sasl_password_file: Option<PathBuf>,
    /// Kafka bootstrap servers (`kafka.brokers`).
    #[arg(long, env = "KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,
    /// A Debezium PostgreSQL connector configuration (`.properties`, or Kafka Connect's REST
    /// JSON) to take the database, slot, publication, table and Event Router options from;
    /// applied over the TOML file, under the environment and flags. Keys the relay does not
    /// support are named in warnings; keys that would change the messages stop it.
    #[arg(long, env = "OUTBOX_RELAY_DEBEZIUM_CONFIG", value_name = "FILE")]
    pub debezium_config: Option<PathBuf>,
    /// Source kind (`source.kind`).
    #[arg(long, env = "OUTBOX_RELAY_SOURCE")]
    pub source: Option<SourceKind>,
    /// Replication slot (`source.slot`).
    #[arg(long, env = "OUTBOX_RELAY_SLOT")]
    pub slot: Option<String>,
    /// Publication (`source.publication`).
    #[arg(long, env = "OUTBOX_RELAY_PUBLICATION")]
    pub publication: Option<String>,
    /// Outbox table schema (`source.schema`).
    #[arg(long, env = "OUTBOX_RELAY_SCHEMA")]
    pub schema: Option<String>,
    /// Outbox table (`source.table`).
    #[arg(long, env = "OUTBOX_RELAY_TABLE")]
    pub table: Option<String>,
    /// Logical message prefix (`source.message_prefix`).
    #[arg(long, env = "OUTBOX_RELAY_MESSAGE_PREFIX")]
    pub message_prefix: Option<String>,
    /// Topic template (`kafka.topic`).
    #[arg(long, env = "OUTBOX_RELAY_TOPIC")]
    pub topic: Option<String>,
    /// Topic regex over the routing value (`kafka.topic_regex`, Debezium's `route.topic.regex`).
    #[arg(long, env = "OUTBOX_RELAY_TOPIC_REGEX")]
    pub topic_regex: Option<String>,
    /// Column of the Kafka record timestamp (`kafka.event_timestamp_field`).
    #[arg(long, env = "OUTBOX_RELAY_EVENT_TIMESTAMP_FIELD")]
    pub event_timestamp_field: Option<String>,
    /// Value rendering (`kafka.value_converter`): `string` (as stored) or `json` (JsonConverter).
    #[arg(long, env = "OUTBOX_RELAY_VALUE_CONVERTER")]
    pub value_converter: Option<ValueConverter>,
    /// Expand a JSON payload (`kafka.expand_json_payload`; needs `--value-converter json`).
    #[arg(
        long,
        env = "OUTBOX_RELAY_EXPAND_JSON_PAYLOAD",
        value_name = "true|false"
    )]
    pub expand_json_payload: Option<bool>,
    /// Dead-letter topic (`kafka.dead_letter_topic`).
    #[arg(long, env = "OUTBOX_RELAY_DEAD_LETTER_TOPIC")]
    pub dead_letter_topic: Option<String>,
    /// Whether to add `traceparent`/`tracestate` headers from `tracingspancontext`
    /// (`kafka.trace_headers`, default true; false = as a Debezium without tracing).
    #[arg(long, env = "OUTBOX_RELAY_TRACE_HEADERS", value_name = "true|false")]
    pub trace_headers: Option<bool>,
    /// Additional placement `column:header|envelope|partition[:alias]`, repeatable
    /// (`kafka.additional_placement`).
    #[arg(long = "placement")]
    pub additional_placement: Vec<String>,
    /// A librdkafka property `name=value`, repeatable (`kafka.properties`).
    #[arg(long = "kafka-property", short = 'X')]
    pub kafka_properties: Vec<String>,
    /// Heartbeat interval, such as `10s`; `0s` = off (`source.heartbeat_interval`).
    #[arg(long, env = "OUTBOX_RELAY_HEARTBEAT_INTERVAL", value_parser = humantime_serde::re::humantime::parse_duration)]
    pub heartbeat_interval: Option<Duration>,
    /// Retained-WAL warning threshold in bytes (`source.max_retained_wal`).
    #[arg(long, env = "OUTBOX_RELAY_MAX_RETAINED_WAL")]
    pub max_retained_wal: Option<u64>,
    /// Metrics listen address (`metrics.listen`), such as `127.0.0.1:9187`.
    #[arg(long, env = "OUTBOX_RELAY_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// A file holding the metrics listener's bearer token (`metrics.token_file`).
    #[arg(long, env = "OUTBOX_RELAY_METRICS_TOKEN_FILE")]
    pub metrics_token_file: Option<PathBuf>,
    /// `at-least-once` (default) or `exactly-once` (`delivery`).
    #[arg(long, env = "OUTBOX_RELAY_DELIVERY")]
    pub delivery: Option<Delivery>,
    /// The exactly-once producer's `transactional.id` (`kafka.transactional_id`).
    #[arg(long, env = "OUTBOX_RELAY_TRANSACTIONAL_ID")]
    pub transactional_id: Option<String>,
    /// The exactly-once offsets topic (`kafka.offsets_topic`).
    #[arg(long, env = "OUTBOX_RELAY_OFFSETS_TOPIC")]
    pub offsets_topic: Option<String>,
}

impl Config {
    /// Reads the TOML file at `path`.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }

    /// The file named by `overrides.config`, or the defaults: the first layer of
    /// [`crate::load::load`].
    pub fn base(overrides: &Overrides) -> Result<Config, ConfigError> {
        match &overrides.config {
            Some(path) => Config::from_file(path),
            None => Ok(Config::default()),
        }
    }

    /// The last layers of [`crate::load::load`]: the command line and environment over this
    /// configuration, then the secret files; checked.
    pub fn with_overrides(mut self, overrides: &Overrides) -> Result<Config, ConfigError> {
        self.apply(overrides)?;
        self.read_secret_files()?;
        self.validate()?;
        Ok(self)
    }

    /// Replaces `database_url_file` and `kafka.sasl_password_file` by what the files hold. A
    /// secret given both ways is an error: which one wins would be a guess.
    pub fn read_secret_files(&mut self) -> Result<(), ConfigError> {
        if let Some(path) = self.database_url_file.take() {
            if self.database_url.as_deref().is_some_and(|u| !u.is_empty()) {
                return Err(invalid(
                    "database_url_file",
                    "is set together with `database_url` (DATABASE_URL); keep one",
                ));
            }
            self.database_url = Some(read_secret("database_url_file", &path)?);
        }
        if let Some(path) = self.kafka.sasl_password_file.take() {
            if self.kafka.properties.contains_key("sasl.password") {
                return Err(invalid(
                    "kafka.sasl_password_file",
                    "is set together with the property `sasl.password`; keep one",
                ));
            }
            let password = read_secret("kafka.sasl_password_file", &path)?;
            self.kafka
                .properties
                .insert("sasl.password".to_owned(), password);
        }
        if let Some(path) = self.metrics.token_file.take() {
            if self.metrics.token.is_some() {
                return Err(invalid(
                    "metrics.token_file",
                    "is set together with `metrics.token`; keep one",
                ));
            }
            self.metrics.token = Some(read_secret("metrics.token_file", &path)?);
        }
        Ok(())
    }

    fn apply(&mut self, o: &Overrides) -> Result<(), ConfigError> {
        fn set<T: Clone>(target: &mut T, value: &Option<T>) {
            if let Some(v) = value {
                *target = v.clone();
            }
        }
        if o.database_url.is_some() {
            self.database_url = o.database_url.clone();
        }
        if o.database_url_file.is_some() {
            self.database_url_file = o.database_url_file.clone();
        }
        if o.kafka_sasl_password_file.is_some() {
            self.kafka.sasl_password_file = o.kafka_sasl_password_file.clone();
        }
        if o.kafka_brokers.is_some() {
            self.kafka.brokers = o.kafka_brokers.clone();
        }
        if o.schema.is_some() {
            self.source.schema = o.schema.clone();
        }
        if o.metrics_listen.is_some() {
            self.metrics.listen = o.metrics_listen;
        }
        if o.metrics_token_file.is_some() {
            self.metrics.token_file = o.metrics_token_file.clone();
        }
        set(&mut self.source.kind, &o.source);
        set(&mut self.delivery, &o.delivery);
        set(&mut self.kafka.offsets_topic, &o.offsets_topic);
        if o.transactional_id.is_some() {
            self.kafka.transactional_id = o.transactional_id.clone();
        }
        set(&mut self.source.slot, &o.slot);
        set(&mut self.source.publication, &o.publication);
        set(&mut self.source.table, &o.table);
        set(&mut self.source.message_prefix, &o.message_prefix);
        set(&mut self.source.heartbeat_interval, &o.heartbeat_interval);
        set(&mut self.source.max_retained_wal, &o.max_retained_wal);
        set(&mut self.kafka.topic, &o.topic);
        set(&mut self.kafka.dead_letter_topic, &o.dead_letter_topic);
        set(&mut self.kafka.trace_headers, &o.trace_headers);
        set(&mut self.kafka.topic_regex, &o.topic_regex);
        set(&mut self.kafka.value_converter, &o.value_converter);
        set(&mut self.kafka.expand_json_payload, &o.expand_json_payload);
        if o.event_timestamp_field.is_some() {
            self.kafka.event_timestamp_field = o.event_timestamp_field.clone();
        }
        if !o.additional_placement.is_empty() {
            self.kafka.additional_placement = o.additional_placement.clone();
        }
        for property in &o.kafka_properties {
            let (k, v) = property.split_once('=').ok_or_else(|| {
                invalid(
                    "kafka.properties",
                    format!("`{property}` is not `name=value`"),
                )
            })?;
            self.kafka
                .properties
                .insert(k.trim().to_owned(), v.trim().to_owned());
        }
        Ok(())
    }

    /// Checks what serde cannot: required keys, names, and the placement syntax.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.database_url.as_deref().is_none_or(str::is_empty) {
            return Err(invalid(
                "database_url",
                "is required (or set DATABASE_URL / --database-url)",
            ));
        }
        if self.kafka.brokers.as_deref().is_none_or(str::is_empty)
            && !self.kafka.properties.contains_key("bootstrap.servers")
        {
            return Err(invalid(
                "kafka.brokers",
                "is required (or set KAFKA_BROKERS / --kafka-brokers)",
            ));
        }
        for (key, value) in [
            ("source.slot", &self.source.slot),
            ("source.publication", &self.source.publication),
            ("source.table", &self.source.table),
            ("kafka.topic", &self.kafka.topic),
            ("kafka.dead_letter_topic", &self.kafka.dead_letter_topic),
        ] {
            if value.is_empty() {
                return Err(invalid(key, "must not be empty"));
            }
        }
        let route = self.kafka.topic_route()?;
        if let Some(problem) = crate::topic::topic_problem(&route.fixed_part()) {
            return Err(invalid(
                "kafka.topic",
                format!(
                    "`{}` cannot name a Kafka topic: {problem}",
                    self.kafka.topic
                ),
            ));
        }
        if let Some(problem) = crate::topic::topic_problem(&self.kafka.dead_letter_topic) {
            return Err(invalid(
                "kafka.dead_letter_topic",
                format!(
                    "`{}` is not a legal Kafka topic name: {problem}",
                    self.kafka.dead_letter_topic
                ),
            ));
        }
        // Slot names are restricted by PostgreSQL to lower-case letters, digits and `_`.
        if !self
            .source
            .slot
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(invalid(
                "source.slot",
                "may hold only lower-case letters, digits and `_`",
            ));
        }
        if self.kafka.max_in_flight == 0 {
            return Err(invalid("kafka.max_in_flight", "must be at least 1"));
        }
        if self.retry.initial_backoff.is_zero()
            || self.retry.max_backoff < self.retry.initial_backoff
        {
            return Err(invalid(
                "retry.max_backoff",
                "must be at least retry.initial_backoff, which must be above zero",
            ));
        }
        let placements = self.placements()?;
        if self.kafka.value_converter != ValueConverter::Json {
            let enveloped = placements
                .iter()
                .any(|p| matches!(p.target, PlacementTarget::Envelope(_)));
            if enveloped || self.kafka.expand_json_payload {
                return Err(invalid(
                    "kafka.value_converter",
                    "must be `json` for `envelope` placements and `expand_json_payload` (Debezium \
                     renders them through JsonConverter; under StringConverter it sends the text \
                     of a Struct)",
                ));
            }
        }
        if placements
            .iter()
            .filter(|p| p.target == PlacementTarget::Partition)
            .count()
            > 1
        {
            return Err(invalid(
                "kafka.additional_placement",
                "places more than one column as the partition",
            ));
        }
        // RFC 6750's token characters, less the few that no one puts in a token: it must fit an
        // HTTP header as it is.
        if let Some(token) = &self.metrics.token
            && (token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(invalid(
                "metrics.token",
                "must be visible ASCII characters without spaces, and not empty",
            ));
        }
        self.validate_delivery()?;
        for forced in ["enable.idempotence", "acks"] {
            if let Some(v) = self.kafka.properties.get(forced) {
                let ok = matches!(
                    (forced, v.as_str()),
                    ("enable.idempotence", "true") | ("acks", "all" | "-1")
                );
                if !ok {
                    return Err(invalid(
                        "kafka.properties",
                        format!("`{forced}={v}` would break the delivery guarantee"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The combinations of `delivery` and its keys that cannot work.
    fn validate_delivery(&self) -> Result<(), ConfigError> {
        if self.kafka.properties.contains_key("transactional.id") {
            return Err(invalid(
                "kafka.properties",
                "`transactional.id` is set by the relay: use `delivery = \"exactly-once\"` and \
                 `kafka.transactional_id`",
            ));
        }
        if self.delivery == Delivery::AtLeastOnce {
            if self.kafka.transactional_id.is_some() {
                return Err(invalid(
                    "kafka.transactional_id",
                    "is only used with `delivery = \"exactly-once\"`; the delivery is \
                     at-least-once",
                ));
            }
            return Ok(());
        }
        if let Some(problem) = crate::topic::topic_problem(&self.kafka.offsets_topic) {
            return Err(invalid(
                "kafka.offsets_topic",
                format!(
                    "`{}` is not a legal Kafka topic name: {problem}",
                    self.kafka.offsets_topic
                ),
            ));
        }
        if self.kafka.offsets_topic == self.kafka.dead_letter_topic {
            return Err(invalid(
                "kafka.offsets_topic",
                "must differ from `kafka.dead_letter_topic`",
            ));
        }
        if self.kafka.transactional_id.as_deref() == Some("") {
            return Err(invalid("kafka.transactional_id", "must not be empty"));
        }
        if self.kafka.transaction_max_events == 0 {
            return Err(invalid(
                "kafka.transaction_max_events",
                "must be at least 1",
            ));
        }
        if self.kafka.transaction_interval.is_zero() {
            return Err(invalid("kafka.transaction_interval", "must be above zero"));
        }
        Ok(())
    }

    /// The exactly-once producer's `transactional.id`: `kafka.transactional_id`, or one derived
    /// from what makes the relay one relay: its database and slot (`wal`, `message`), its
    /// database and table (`poll`), its stored-position key (`binlog`, which names the database).
    /// The database is in the default because a transactional id is global to the Kafka cluster:
    /// two services with the default slot or table name would otherwise fence each other.
    pub fn transactional_id(&self) -> String {
        if let Some(id) = &self.kafka.transactional_id {
            return id.clone();
        }
        let database = self
            .database_name()
            .map(|d| format!("{d}."))
            .unwrap_or_default();
        match self.source.kind {
            SourceKind::Wal | SourceKind::Message => {
                format!("outbox-relay.slot.{database}{}", self.source.slot)
            }
            SourceKind::Poll => format!(
                "outbox-relay.poll.{database}{}{}",
                self.source
                    .schema
                    .as_deref()
                    .map(|s| format!("{s}."))
                    .unwrap_or_default(),
                self.source.table
            ),
            SourceKind::Binlog => format!("outbox-relay.binlog.{}", self.binlog_position_key()),
        }
    }

    /// The database the URL names: PostgreSQL's and MySQL's database, SQLite's file name.
    fn database_name(&self) -> Option<String> {
        let url = self.database_url.as_deref()?;
        let name = if let Some(path) = url.strip_prefix("sqlite:") {
            let path = path.split('?').next().unwrap_or_default();
            path.rsplit('/').next().unwrap_or_default().to_owned()
        } else if url.starts_with("mysql:") || url.starts_with("mariadb:") {
            crate::connection::MySqlTarget::parse(url).ok()?.database
        } else {
            crate::connection::PgTarget::parse(url).ok()?.database
        };
        (!name.is_empty()).then_some(name)
    }

    /// The `binlog` source's row in its position table: `source.binlog.position_key`, else
    /// `<schema>.<table>`, the schema defaulting to the database of the URL.
    pub fn binlog_position_key(&self) -> String {
        if let Some(key) = &self.source.binlog.position_key {
            return key.clone();
        }
        let schema = self.source.schema.clone().unwrap_or_else(|| {
            crate::connection::MySqlTarget::parse(self.database_url.as_deref().unwrap_or_default())
                .map(|t| t.database)
                .unwrap_or_default()
        });
        format!("{schema}.{}", self.source.table)
    }

    /// How long a stop (or a failed session) waits for the events in flight to be acknowledged
    /// before it gives up on them: `source.drain_timeout`, or for the `poll` source
    /// `source.poll.drain_timeout` when set.
    pub fn drain_timeout(&self) -> Duration {
        match self.source.kind {
            SourceKind::Poll => self.source.poll.drain_timeout,
            _ => None,
        }
        .unwrap_or(self.source.drain_timeout)
    }

    /// The additional placements, parsed.
    pub fn placements(&self) -> Result<Vec<Placement>, ConfigError> {
        self.kafka
            .additional_placement
            .iter()
            .map(|p| Placement::parse(p))
            .collect()
    }
}

/// The secret in the file at `path`, without the line end an editor leaves.
fn read_secret(key: &'static str, path: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display())))?;
    let secret = text.trim_end_matches(['\n', '\r']);
    if secret.is_empty() {
        return Err(invalid(key, format!("{} is empty", path.display())));
    }
    Ok(secret.to_owned())
}

/// One entry of `kafka.additional_placement` (Debezium's `table.fields.additional.placement`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The outbox column.
    pub column: String,
    /// Where its value goes.
    pub target: PlacementTarget,
}

/// Where a placed column's value goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlacementTarget {
    /// A header of this name.
    Header(String),
    /// A field of the value's envelope, of this name.
    Envelope(String),
    /// The Kafka partition (an `int` column; the alias, if any, is ignored, as by Debezium).
    Partition,
}

impl Placement {
    /// Parses `column:placement[:alias]`, the alias defaulting to the column's name.
    pub fn parse(text: &str) -> Result<Placement, ConfigError> {
        let parts: Vec<&str> = text.split(':').map(str::trim).collect();
        let (column, place, alias) = match parts.as_slice() {
            [column, place] => (*column, *place, *column),
            [column, place, alias] if !alias.is_empty() => (*column, *place, *alias),
            _ => {
                return Err(invalid(
                    "kafka.additional_placement",
                    format!("`{text}` is not `column:placement[:alias]`"),
                ));
            }
        };
        if column.is_empty() {
            return Err(invalid(
                "kafka.additional_placement",
                format!("`{text}` names no column"),
            ));
        }
        let target = match place {
            "header" => PlacementTarget::Header(alias.to_owned()),
            "envelope" => PlacementTarget::Envelope(alias.to_owned()),
            "partition" => PlacementTarget::Partition,
            other => {
                return Err(invalid(
                    "kafka.additional_placement",
                    format!(
                        "`{text}`: the placement is `header`, `envelope` or `partition`, not \
                         `{other}`"
                    ),
                ));
            }
        };
        Ok(Placement {
            column: column.to_owned(),
            target,
        })
    }
}

impl KafkaConfig {
    /// `topic_regex` and `topic`, compiled.
    pub fn topic_route(&self) -> Result<crate::format::TopicRoute, ConfigError> {
        crate::format::TopicRoute::new(&self.topic_regex, &self.topic).map_err(|e| match e {
            crate::format::RouteError::Regex { .. } => invalid("kafka.topic_regex", e.to_string()),
            crate::format::RouteError::Replacement { .. } => invalid("kafka.topic", e.to_string()),
        })
    }
}

/// What happens to a row once Kafka acknowledged it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AfterAck {
    /// Delete it: the table holds only pending events.
    #[default]
    Delete,
    /// Set its `relayed_at` column (added by `setup`), and delete it after `retention`.
    Mark,
}

/// The `[source.poll]` settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollConfig {
    /// Most rows claimed (and shipped) per transaction, 1 to [`MAX_BATCH_SIZE`].
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// How long an idle relay waits before it looks again without a notification: the only
    /// wake-up on MariaDB and SQLite, the safety net for a lost NOTIFY on PostgreSQL.
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// `delete` (default) or `mark`.
    #[serde(default)]
    pub after_ack: AfterAck,
    /// With `after_ack = "mark"`: how long relayed rows are kept before they are purged.
    #[serde(default = "default_retention", with = "humantime_serde")]
    pub retention: Duration,
    /// PostgreSQL: the channel to `LISTEN` on, notified by the trigger that `setup` creates.
    /// Default: the table's name. Set `listen = false` to rely on the interval alone.
    #[serde(default)]
    pub channel: Option<String>,
    /// PostgreSQL: whether to `LISTEN` (and have `setup` create the trigger).
    #[serde(default = "default_true")]
    pub listen: bool,
    /// How often a standby relay tries to take the leadership over.
    #[serde(default = "default_standby_interval", with = "humantime_serde")]
    pub standby_interval: Duration,
    /// SQLite: how long a lease lasts without renewal (a dead leader is replaced after this).
    #[serde(default = "default_lease_ttl", with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// For this source, instead of `source.drain_timeout`: how long a stop waits for the batch
    /// in flight to be acknowledged before it gives up on it (the rows stay, and are shipped
    /// again after the restart).
    #[serde(default, with = "humantime_serde")]
    pub drain_timeout: Option<Duration>,
    /// The longest a claimed batch waits for Kafka's acknowledgements; then the claim is rolled
    /// back and retried after a backoff. It bounds how long the claiming transaction stays open
    /// during a Kafka outage (an open transaction holds back vacuum on PostgreSQL), whatever
    /// the producer's `message.timeout.ms`.
    #[serde(default = "default_claim_timeout", with = "humantime_serde")]
    pub claim_timeout: Duration,
}

/// 4,000, not 1,000 (BENCHMARKS.md, round 2, part 13): each batch costs a transaction's fixed
/// round trips and commit beside its rows, and with claims overlapping the hand-off the larger
/// batch drained 1.3–1.6× faster on PostgreSQL, 1.4× on MariaDB and 1.2–1.6× on SQLite, for
/// about 6 MB more memory while draining. Its cost is latency under a steady high rate: at
/// 10,000 events/s on PostgreSQL, p50 / p99 46–47 / 132–140 ms against 19–33 / 80–98 with
/// 1,000 (at 2,000 events/s no difference was seen); 1,000 suits where that matters more.
fn default_batch_size() -> usize {
    4000
}

/// The largest `source.poll.batch_size`.
pub const MAX_BATCH_SIZE: usize = 10_000;
// SQLite's connections make room for a whole batch (see `connection::SQLITE_ROW_BUFFER`).
const _: () = assert!(crate::connection::SQLITE_ROW_BUFFER >= MAX_BATCH_SIZE);
fn default_interval() -> Duration {
    Duration::from_millis(500)
}
fn default_retention() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_true() -> bool {
    true
}
fn default_standby_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_lease_ttl() -> Duration {
    Duration::from_secs(10)
}
fn default_drain_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_claim_timeout() -> Duration {
    Duration::from_secs(30)
}

impl Default for PollConfig {
    fn default() -> Self {
        PollConfig {
            batch_size: default_batch_size(),
            interval: default_interval(),
            after_ack: AfterAck::default(),
            retention: default_retention(),
            channel: None,
            listen: true,
            standby_interval: default_standby_interval(),
            lease_ttl: default_lease_ttl(),
            drain_timeout: None,
            claim_timeout: default_claim_timeout(),
        }
    }
}

impl PollConfig {
    /// Checks the ranges serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=MAX_BATCH_SIZE).contains(&self.batch_size) {
            return Err(invalid(
                "source.poll.batch_size",
                format!("must be between 1 and {MAX_BATCH_SIZE}"),
            ));
        }
        if self.claim_timeout.is_zero() {
            return Err(invalid("source.poll.claim_timeout", "must be above zero"));
        }
        if self.interval.is_zero() || self.standby_interval.is_zero() {
            return Err(invalid(
                "source.poll.interval",
                "intervals must be above zero",
            ));
        }
        if self.lease_ttl <= self.interval {
            return Err(invalid(
                "source.poll.lease_ttl",
                "must be longer than source.poll.interval",
            ));
        }
        if self.channel.as_deref() == Some("") {
            return Err(invalid("source.poll.channel", "must not be empty"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_toml("[kafka]\ntopik = \"x\"\n")
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(|e| e.contains("topik")),
            "{err:?}"
        );
    }

    #[test]
    fn durations_and_defaults() {
        let c = Config::from_toml(
            "[source]\nstatus_interval = \"250ms\"\n[retry]\nmax_backoff = \"3s\"\n",
        )
        .map_err(|e| e.to_string());
        let c = c.as_ref().map(|c| {
            (
                c.source.status_interval,
                c.retry.max_backoff,
                c.kafka.topic.clone(),
            )
        });
        assert_eq!(
            c,
            Ok((
                Duration::from_millis(250),
                Duration::from_secs(3),
                "outbox.event.${routedByValue}".to_owned()
            ))
        );
    }

    #[test]
    fn default_transactional_ids_name_the_database() {
        let id = |kind: SourceKind, url: &str| {
            let mut c = Config::default();
            c.source.kind = kind;
            c.source.table = "outbox".into();
            c.database_url = Some(url.into());
            c.transactional_id()
        };
        let slot = Config::default().source.slot;
        assert_eq!(
            id(SourceKind::Wal, "postgres://u:p@db:5432/orders"),
            format!("outbox-relay.slot.orders.{slot}")
        );
        assert_eq!(
            id(SourceKind::Poll, "postgres://u:p@db/shipping"),
            "outbox-relay.poll.shipping.outbox"
        );
        assert_eq!(
            id(SourceKind::Poll, "sqlite://data/shop.db?mode=rwc"),
            "outbox-relay.poll.shop.db.outbox"
        );
        assert_eq!(
            id(SourceKind::Binlog, "mysql://u:p@db/shop"),
            "outbox-relay.binlog.shop.outbox"
        );
        let mut c = Config::default();
        c.kafka.transactional_id = Some("mine".into());
        assert_eq!(c.transactional_id(), "mine");
    }

    #[test]
    fn placement_syntax() {
        let parsed = |t: &str| Placement::parse(t).ok().map(|p| (p.column, p.target));
        assert_eq!(
            parsed("type:header:eventType"),
            Some(("type".into(), PlacementTarget::Header("eventType".into())))
        );
        assert_eq!(
            parsed("type:envelope"),
            Some(("type".into(), PlacementTarget::Envelope("type".into())))
        );
        assert_eq!(
            parsed("part:partition:ignored"),
            Some(("part".into(), PlacementTarget::Partition))
        );
        for bad in ["type:body", "type", ":header", "a:header:"] {
            let e = Placement::parse(bad).err().map(|e| e.to_string());
            assert!(
                e.is_some_and(|e| e.contains("kafka.additional_placement")),
                "{bad}"
            );
        }
    }

    #[test]
    fn metrics_token_is_checked_and_never_shown() {
        let c = Config::from_toml("[metrics]\nlisten = \"127.0.0.1:9187\"\ntoken = \"hunter2\"\n")
            .map_err(|e| e.to_string());
        let shown = format!("{c:?}");
        assert!(c.is_ok(), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        let mut c = Config {
            database_url: Some("postgres://x".into()),
            ..Config::default()
        };
        c.kafka.brokers = Some("k".into());
        c.metrics.token = Some("two words".into());
        let e = c.validate().err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.starts_with("`metrics.token`")));
        c.metrics.token = Some("t".into());
        c.metrics.token_file = Some("/nonexistent".into());
        let e = c.read_secret_files().err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.starts_with("`metrics.token_file`")));
    }

    #[test]
    fn guarantee_properties_cannot_be_weakened() {
        let mut c = Config {
            database_url: Some("postgres://x".into()),
            ..Config::default()
        };
        c.kafka.brokers = Some("k".into());
        c.kafka.properties.insert("acks".into(), "1".into());
        let e = c.validate().err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.starts_with("`kafka.properties`")));
    }
}
