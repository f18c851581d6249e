//! `--debezium-config FILE`: a Debezium PostgreSQL connector configuration, as a `.properties`
//! file or the Kafka Connect REST JSON (`{"name": .., "config": {..}}`, or the bare `config`
//! map of `PUT /connectors/<name>/config`), read into the relay's configuration.
//!
//! Contract: every key is either translated (the database connection, slot, publication, table,
//! every option of the `io.debezium.transforms.outbox.EventRouter` transform, the converters), or
//! known to leave the outbox messages unchanged (ignored, or named in a warning when it changes
//! something else, such as the relay's behaviour on `UPDATE`s), or refused: a key whose value
//! would make Debezium's messages differ from the relay's is an error at start that names it. A
//! configuration copied from Debezium's outbox documentation runs unchanged.
//!
//! Values may use Kafka Connect's `${file:PATH:KEY}` and `${env:NAME}` config providers; any other
//! provider is refused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::{Config, ConfigError, ValueConverter};

/// The transform class the relay stands in for.
pub const EVENT_ROUTER: &str = "io.debezium.transforms.outbox.EventRouter";

/// A Debezium configuration the relay cannot take, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum DebeziumError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is neither Java properties nor Kafka Connect JSON: {reason}")]
    Syntax { path: PathBuf, reason: String },
    #[error("{path}: `{key}`: {problem}")]
    Refused {
        path: PathBuf,
        key: String,
        problem: String,
    },
}

impl From<DebeziumError> for ConfigError {
    fn from(error: DebeziumError) -> Self {
        ConfigError::Debezium(Box::new(error))
    }
}

/// What the translation did besides setting the configuration: keys named to the user.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Translation {
    /// Keys the relay does not support, each with what that means; logged as warnings.
    pub warnings: Vec<String>,
}

/// Reads the connector configuration at `path` into `config` (see the module's contract).
pub fn apply_file(path: &Path, config: &mut Config) -> Result<Translation, DebeziumError> {
    let text = std::fs::read_to_string(path).map_err(|source| DebeziumError::Read {
        path: path.to_owned(),
        source,
    })?;
    let syntax = |reason: String| DebeziumError::Syntax {
        path: path.to_owned(),
        reason,
    };
    let properties = parse(&text).map_err(syntax)?;
    apply(&properties, config).map_err(|(key, problem)| DebeziumError::Refused {
        path: path.to_owned(),
        key,
        problem,
    })
}

/// The key/value pairs of a configuration text: JSON when it starts with `{`, else Java
/// properties. A later duplicate wins, as in both.
pub fn parse(text: &str) -> Result<BTreeMap<String, String>, String> {
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    if trimmed.starts_with('{') {
        let json: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(trimmed).map_err(|e| e.to_string())?;
        let map = match json.get("config") {
            Some(serde_json::Value::Object(config)) => config.clone(),
            Some(_) => return Err("`config` is not an object".to_owned()),
            None => json,
        };
        map.into_iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => Ok((k, s)),
                serde_json::Value::Number(n) => Ok((k, n.to_string())),
                serde_json::Value::Bool(b) => Ok((k, b.to_string())),
                other => Err(format!("`{k}` is {other}, not a string, number or boolean")),
            })
            .collect()
    } else {
        let pairs = outbox_core::trace::parse_properties(text).map_err(|e| e.to_string())?;
        Ok(pairs.into_iter().collect())
    }
}

/// A refusal: the key, and why.
type Refusal = (String, String);

fn refuse(key: &str, problem: impl Into<String>) -> Refusal {
    (key.to_owned(), problem.into())
}

/// Connector keys that bear on nothing the relay sends, so they are dropped quietly: naming,
/// task, snapshot, offset and topic-creation settings of Kafka Connect and the connector.
const NO_EFFECT: &[&str] = &[
    "name",
    "tasks.max",
    "topic.prefix",
    "database.server.name",
    "tombstones.on.delete",
    "schema.include.list",
    "schema.whitelist",
    "heartbeat.action.query",
    "heartbeat.topics.prefix",
    "topic.heartbeat.prefix",
    "snapshot.mode",
    "publication.autocreate.mode",
    "key.converter.schemas.enable",
    "database.tcpKeepAlive",
    "database.initial.statements",
    "status.update.interval.ms",
    "max.batch.size",
    "max.queue.size",
    "max.queue.size.in.bytes",
    "poll.interval.ms",
    "retriable.restart.connector.wait.ms",
    "errors.max.retries",
    "errors.retry.timeout",
    "errors.retry.delay.max.ms",
    "errors.log.enable",
    "errors.log.include.messages",
    "signal.data.collection",
    "signal.enabled.channels",
    "incremental.snapshot.chunk.size",
    "skipped.operations",
    "flush.lsn.source",
    "lsn.flush.timeout.ms",
];

/// Connector keys whose non-default value changes how a column's value is rendered (in a header
/// or an envelope), with that default.
const RENDERING: &[(&str, &str)] = &[
    ("time.precision.mode", "adaptive"),
    ("decimal.handling.mode", "precise"),
    ("binary.handling.mode", "bytes"),
    ("hstore.handling.mode", "json"),
    ("interval.handling.mode", "numeric"),
    ("field.name.adjustment.mode", "none"),
    ("schema.name.adjustment.mode", "none"),
    ("include.unknown.datatypes", "false"),
];

/// Translates `properties` into `config`; Err names a key the relay must refuse.
pub fn apply(
    properties: &BTreeMap<String, String>,
    config: &mut Config,
) -> Result<Translation, Refusal> {
    let mut resolved = BTreeMap::new();
    for (key, value) in properties {
        resolved.insert(key.clone(), resolve_providers(key, value)?);
    }
    let properties = &resolved;
    let mut out = Translation::default();
    let get = |key: &str| properties.get(key).map(String::as_str);

    match get("connector.class") {
        Some("io.debezium.connector.postgresql.PostgresConnector") => {}
        Some(other) => {
            return Err(refuse(
                "connector.class",
                format!(
                    "`{other}`: the relay translates the PostgreSQL connector's configuration \
                     (io.debezium.connector.postgresql.PostgresConnector)"
                ),
            ));
        }
        None => out.warnings.push(
            "`connector.class` is not set; read as Debezium's PostgreSQL connector".to_owned(),
        ),
    }
    match get("plugin.name") {
        Some("pgoutput") => {}
        Some(other) => {
            return Err(refuse(
                "plugin.name",
                format!(
                    "`{other}`: the relay decodes pgoutput; a slot of another plugin cannot be \
                     read: set plugin.name=pgoutput (Debezium then needs a new slot too)"
                ),
            ));
        }
        None => out.warnings.push(
            "`plugin.name` is not set (Debezium's default is decoderbufs); the relay reads \
             pgoutput, so the slot must be a pgoutput slot"
                .to_owned(),
        ),
    }

    database_url(properties, config)?;
    if let Some(slot) = get("slot.name") {
        config.source.slot = slot.to_owned();
    }
    if let Some(publication) = get("publication.name") {
        config.source.publication = publication.to_owned();
    }
    let tables = match (get("table.include.list"), get("table.whitelist")) {
        (Some(list), _) => Some(("table.include.list", list)),
        (None, Some(list)) => Some(("table.whitelist", list)),
        (None, None) => None,
    };
    match tables {
        Some((key, list)) => {
            let (schema, table) = one_table(key, list)?;
            config.source.schema = schema;
            config.source.table = table;
        }
        None => out.warnings.push(
            "`table.include.list` is not set: the relay reads its configured table \
             (`source.table`), Debezium every table of the publication"
                .to_owned(),
        ),
    }
    if let Some(ms) = get("heartbeat.interval.ms") {
        let ms: u64 = ms
            .parse()
            .map_err(|_| refuse("heartbeat.interval.ms", format!("`{ms}` is not a number")))?;
        config.source.heartbeat_interval = std::time::Duration::from_millis(ms);
    }

    converters(properties, config, &mut out)?;
    let routers = event_routers(properties)?;
    let Some(router) = routers else {
        return Err(refuse(
            "transforms",
            format!("no transform of type {EVENT_ROUTER}: the relay sends what it sends"),
        ));
    };
    event_router(properties, &router, config, &mut out)?;
    // Debezium adds trace headers only with OpenTelemetry installed in Kafka Connect.
    config.kafka.trace_headers = false;
    check_value_rendering(config)?;

    for (key, value) in properties {
        let handled = matches!(
            key.as_str(),
            "connector.class"
                | "plugin.name"
                | "slot.name"
                | "publication.name"
                | "table.include.list"
                | "table.whitelist"
                | "heartbeat.interval.ms"
                | "transforms"
                | "header.converter"
        ) || key.starts_with("database.")
            || key.starts_with("transforms.")
            || key.starts_with("predicates")
            || key.starts_with("key.converter")
            || key.starts_with("value.converter")
            || NO_EFFECT.contains(&key.as_str());
        if handled {
            continue;
        }
        if let Some((_, default)) = RENDERING.iter().find(|(k, _)| k == key) {
            if !value.eq_ignore_ascii_case(default) {
                return Err(refuse(
                    key,
                    format!(
                        "`{value}` changes how column values render; the relay renders \
                         Debezium's default ({default})"
                    ),
                ));
            }
            continue;
        }
        if key.starts_with("column.")
            || key.starts_with("converters")
            || key == "message.key.columns"
            || key == "datatype.propagate.source.type"
        {
            return Err(refuse(
                key,
                "changes the rows' values or keys, which the relay does not reproduce",
            ));
        }
        out.warnings.push(format!(
            "`{key}` is not supported and is ignored (it does not change the outbox messages)"
        ));
    }
    Ok(out)
}

/// `${file:PATH:KEY}` (a properties file's key, Kafka's FileConfigProvider) and `${env:NAME}`
/// (EnvVarConfigProvider) in `value`, replaced; other providers refused. `${name}` without a
/// provider (`${routedByValue}`) is no reference.
fn resolve_providers(key: &str, value: &str) -> Result<String, Refusal> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let reference = &after[..end];
        match reference.split_once(':') {
            None => out.push_str(&rest[start..start + 2 + end + 1]),
            Some(("env", name)) => {
                let v = std::env::var(name).map_err(|_| {
                    refuse(
                        key,
                        format!("`${{env:{name}}}`: the environment has no {name}"),
                    )
                })?;
                out.push_str(&v);
            }
            Some(("file", path_key)) => {
                let (path, wanted) = path_key
                    .rsplit_once(':')
                    .ok_or_else(|| refuse(key, "`${file:...}` is `${file:PATH:KEY}`".to_owned()))?;
                let text = std::fs::read_to_string(path)
                    .map_err(|e| refuse(key, format!("`${{file:{path}:..}}`: {e}")))?;
                let pairs = outbox_core::trace::parse_properties(&text)
                    .map_err(|e| refuse(key, format!("`${{file:{path}:..}}`: {e}")))?;
                let v = pairs
                    .into_iter()
                    .rev()
                    .find(|(k, _)| k == wanted)
                    .map(|(_, v)| v)
                    .ok_or_else(|| refuse(key, format!("{path} has no key `{wanted}`")))?;
                out.push_str(&v);
            }
            Some((provider, _)) => {
                return Err(refuse(
                    key,
                    format!(
                        "the config provider `{provider}` is not one the relay resolves (file, \
                         env): give the value itself, or through DATABASE_URL_FILE"
                    ),
                ));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `database_url` from `database.*`, when `database.hostname` is set.
fn database_url(properties: &BTreeMap<String, String>, config: &mut Config) -> Result<(), Refusal> {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    let get = |key: &str| properties.get(key).map(String::as_str);
    let Some(host) = get("database.hostname") else {
        return Ok(());
    };
    let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
    let port = get("database.port").unwrap_or("5432");
    if port.parse::<u16>().is_err() {
        return Err(refuse("database.port", format!("`{port}` is not a port")));
    }
    let user = get("database.user")
        .ok_or_else(|| refuse("database.user", "is required with database.hostname"))?;
    let dbname = get("database.dbname")
        .ok_or_else(|| refuse("database.dbname", "is required with database.hostname"))?;
    let password = get("database.password")
        .map(|p| format!(":{}", enc(p)))
        .unwrap_or_default();
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let mut params = Vec::new();
    if let Some(mode) = get("database.sslmode") {
        params.push(format!("sslmode={}", enc(mode)));
    }
    for (key, param) in [
        ("database.sslrootcert", "sslrootcert"),
        ("database.sslcert", "sslcert"),
        ("database.sslkey", "sslkey"),
    ] {
        if let Some(v) = get(key) {
            params.push(format!("{param}={}", enc(v)));
        }
    }
    if get("database.sslpassword").is_some() {
        return Err(refuse(
            "database.sslpassword",
            "an encrypted client key is not supported: give the relay an unencrypted key file",
        ));
    }
    let query = if params.is_empty() {
        String::new()
    } else {
        format!("?{}", params.join("&"))
    };
    config.database_url = Some(format!(
        "postgres://{}{password}@{host}:{port}/{}{query}",
        enc(user),
        enc(dbname)
    ));
    config.database_url_file = None;
    Ok(())
}

/// The one table of a `table.include.list` (regexes of `schema.table`), read literally: a
/// regex that matches more than one name cannot be one outbox table.
fn one_table(key: &str, list: &str) -> Result<(Option<String>, String), Refusal> {
    let entries: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    let [entry] = entries.as_slice() else {
        return Err(refuse(
            key,
            format!(
                "`{list}` names {} tables; the relay reads one outbox table",
                entries.len()
            ),
        ));
    };
    // `.` (any character) and `\.` (a dot) both separate the schema from the table here.
    let literal = entry.replace("\\.", ".");
    if literal.contains(|c: char| "[](){}*+?|^$\\".contains(c)) {
        return Err(refuse(
            key,
            format!("`{entry}` is a pattern; the relay reads one table: name it as schema.table"),
        ));
    }
    match literal.split('.').collect::<Vec<_>>().as_slice() {
        [table] => Ok((None, (*table).to_owned())),
        [schema, table] => Ok((Some((*schema).to_owned()), (*table).to_owned())),
        _ => Err(refuse(key, format!("`{entry}` is not schema.table"))),
    }
}

/// `key.converter` and `value.converter`.
fn converters(
    properties: &BTreeMap<String, String>,
    config: &mut Config,
    out: &mut Translation,
) -> Result<(), Refusal> {
    const STRING: &str = "org.apache.kafka.connect.storage.StringConverter";
    const JSON: &str = "org.apache.kafka.connect.json.JsonConverter";
    let get = |key: &str| properties.get(key).map(String::as_str);
    match get("key.converter") {
        Some(STRING) => {}
        Some(other) => {
            return Err(refuse(
                "key.converter",
                format!("`{other}`: the relay sends the key column's text, as StringConverter"),
            ));
        }
        None => out.warnings.push(
            "`key.converter` is not set (Kafka Connect's worker decides); the relay sends the \
             key as StringConverter does"
                .to_owned(),
        ),
    }
    match get("header.converter") {
        None | Some("org.apache.kafka.connect.storage.SimpleHeaderConverter") => {}
        Some(other) => {
            return Err(refuse(
                "header.converter",
                format!("`{other}`: the relay renders headers as SimpleHeaderConverter"),
            ));
        }
    }
    config.kafka.value_converter = match get("value.converter") {
        Some(STRING | "io.debezium.converters.BinaryDataConverter") => ValueConverter::String,
        Some(JSON) => {
            if get("value.converter.schemas.enable").is_none_or(|v| v != "false") {
                return Err(refuse(
                    "value.converter.schemas.enable",
                    "JsonConverter with schemas wraps every value in {\"schema\":..,\"payload\":..}, \
                     which the relay does not send: set value.converter.schemas.enable=false",
                ));
            }
            ValueConverter::Json
        }
        Some(other) => {
            return Err(refuse(
                "value.converter",
                format!(
                    "`{other}`: the relay renders values as StringConverter (or \
                     BinaryDataConverter) or JsonConverter without schemas"
                ),
            ));
        }
        None => {
            out.warnings.push(
                "`value.converter` is not set (Kafka Connect's worker decides); the relay sends \
                 the payload as StringConverter does"
                    .to_owned(),
            );
            ValueConverter::String
        }
    };
    for (key, value) in properties {
        if let Some(option) = key.strip_prefix("value.converter.")
            && !matches!(option, "schemas.enable" | "delegate.converter.type")
            && !(option == "replace.null.with.default" && value == "true")
        {
            out.warnings
                .push(format!("`{key}` is not supported and is ignored"));
        }
    }
    Ok(())
}

/// The name of the one Event Router transform; other transforms are refused (they would change
/// the messages).
fn event_routers(properties: &BTreeMap<String, String>) -> Result<Option<String>, Refusal> {
    let Some(list) = properties.get("transforms") else {
        return Ok(None);
    };
    let mut router = None;
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let key = format!("transforms.{name}.type");
        match properties.get(&key).map(String::as_str) {
            Some(EVENT_ROUTER) if router.is_none() => router = Some(name.to_owned()),
            Some(EVENT_ROUTER) => {
                return Err(refuse(&key, "a second Event Router: the relay runs one"));
            }
            Some(other) => {
                return Err(refuse(
                    &key,
                    format!(
                        "`{other}` would change the messages; the relay runs only {EVENT_ROUTER}"
                    ),
                ));
            }
            None => return Err(refuse(&key, "is missing")),
        }
    }
    Ok(router)
}

/// Every `transforms.<name>.*` key of the Event Router.
fn event_router(
    properties: &BTreeMap<String, String>,
    name: &str,
    config: &mut Config,
    out: &mut Translation,
) -> Result<(), Refusal> {
    let prefix = format!("transforms.{name}.");
    let kafka = &mut config.kafka;
    for (key, value) in properties {
        let Some(option) = key.strip_prefix(&prefix) else {
            continue;
        };
        let flag = |value: &str| match value.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(refuse(key, format!("`{value}` is not true or false"))),
        };
        match option {
            "type" => {}
            "table.field.event.id" => kafka.event_id_field = value.clone(),
            "table.field.event.key" => kafka.event_key_field = value.clone(),
            "table.field.event.payload" => kafka.payload_field = value.clone(),
            "table.field.event.timestamp" => kafka.event_timestamp_field = Some(value.clone()),
            "table.fields.additional.placement" => {
                kafka.additional_placement = value
                    .split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect();
            }
            "table.expand.json.payload" => kafka.expand_json_payload = flag(value)?,
            "route.by.field" => kafka.route_by_field = value.clone(),
            "route.topic.regex" => kafka.topic_regex = value.clone(),
            "route.topic.replacement" => kafka.topic = value.clone(),
            "route.tombstone.on.empty.payload" => kafka.tombstone_on_empty_payload = flag(value)?,
            "table.json.payload.null.behavior" if value.eq_ignore_ascii_case("ignore") => {}
            "table.json.payload.null.behavior" => {
                return Err(refuse(
                    key,
                    format!("`{value}`: the relay leaves null members out (`ignore`)"),
                ));
            }
            "table.field.event.payload.id" => {
                return Err(refuse(key, "the payload-id key fallback is not supported"));
            }
            // Invisible without schemas in the value (StringConverter, or JsonConverter without
            // schemas, the only converters the relay renders).
            "table.field.event.schema.version" => {}
            "table.op.invalid.behavior" => {
                if !value.eq_ignore_ascii_case("warn") {
                    out.warnings.push(format!(
                        "`{key}={value}`: the relay ignores UPDATEs of outbox rows (as `warn`)"
                    ));
                }
            }
            "table.fields.additional.error.on.missing" => {}
            "tracing.span.context.field" if value == "tracingspancontext" => {}
            "tracing.span.context.field" => {
                return Err(refuse(
                    key,
                    format!(
                        "`{value}`: the relay reads the trace context from `tracingspancontext`"
                    ),
                ));
            }
            "tracing.operation.name" | "tracing.with.context.field.only" => out.warnings.push(
                format!("`{key}` is ignored: the relay starts no span (trace headers are off)"),
            ),
            "predicate" | "negate" => out.warnings.push(format!(
                "`{key}` is ignored: the relay reads only the outbox table"
            )),
            _ => {
                return Err(refuse(
                    key,
                    "is not an Event Router option the relay knows, so it cannot tell whether it \
                     changes the messages",
                ));
            }
        }
    }
    Ok(())
}

/// What only JsonConverter renders as the relay does: an expanded payload, an envelope.
fn check_value_rendering(config: &Config) -> Result<(), Refusal> {
    if config.kafka.value_converter == ValueConverter::Json {
        return Ok(());
    }
    if config.kafka.expand_json_payload {
        return Err(refuse(
            "value.converter",
            "table.expand.json.payload=true needs value.converter=JsonConverter (with \
             schemas.enable=false): under StringConverter Debezium sends the text of a Struct",
        ));
    }
    if config
        .kafka
        .additional_placement
        .iter()
        .any(|p| p.split(':').nth(1).map(str::trim) == Some("envelope"))
    {
        return Err(refuse(
            "value.converter",
            "an `envelope` placement needs value.converter=JsonConverter (with \
             schemas.enable=false): under StringConverter Debezium sends the text of a Struct",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translate(text: &str) -> Result<(Config, Translation), Refusal> {
        let properties = parse(text).map_err(|e| refuse("<syntax>", e))?;
        let mut config = Config::default();
        let translation = apply(&properties, &mut config)?;
        Ok((config, translation))
    }

    /// Debezium's outbox example (debezium-examples `outbox/register-postgres.json`, as Kafka
    /// Connect's REST API takes it) with the options of its documentation.
    const REST_JSON: &str = r#"{
        "name": "outbox-connector",
        "config": {
            "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
            "tasks.max": "1",
            "plugin.name": "pgoutput",
            "database.hostname": "order-db",
            "database.port": "5432",
            "database.user": "postgresuser",
            "database.password": "post gres@pw",
            "database.dbname" : "orderdb",
            "topic.prefix": "dbserver1",
            "schema.include.list": "inventory",
            "table.include.list" : "inventory.outboxevent",
            "tombstones.on.delete" : "false",
            "key.converter": "org.apache.kafka.connect.storage.StringConverter",
            "value.converter": "org.apache.kafka.connect.storage.StringConverter",
            "transforms" : "outbox",
            "transforms.outbox.type" : "io.debezium.transforms.outbox.EventRouter",
            "transforms.outbox.route.topic.replacement" : "${routedByValue}.events",
            "transforms.outbox.table.field.event.timestamp" : "timestamp",
            "transforms.outbox.table.fields.additional.placement" : "type:header:eventType"
        }
    }"#;

    #[test]
    fn the_documented_rest_config_translates() {
        let (c, t) = translate(REST_JSON).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            c.database_url.as_deref(),
            Some("postgres://postgresuser:post%20gres%40pw@order-db:5432/orderdb")
        );
        assert_eq!(c.source.schema.as_deref(), Some("inventory"));
        assert_eq!(c.source.table, "outboxevent");
        assert_eq!(c.kafka.topic, "${routedByValue}.events");
        assert_eq!(c.kafka.event_timestamp_field.as_deref(), Some("timestamp"));
        assert_eq!(c.kafka.additional_placement, vec!["type:header:eventType"]);
        assert!(!c.kafka.trace_headers);
        assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    }

    #[test]
    fn properties_with_every_event_router_option() {
        let text = "\
# Debezium connector
connector.class=io.debezium.connector.postgresql.PostgresConnector
plugin.name=pgoutput
database.hostname=db
database.user=u
database.dbname=app
database.sslmode=verify-full
database.sslrootcert=/etc/ca.pem
slot.name=dbz_slot
publication.name=dbz_pub
table.include.list=public\\\\.outbox
value.converter=org.apache.kafka.connect.json.JsonConverter
value.converter.schemas.enable=false
key.converter=org.apache.kafka.connect.storage.StringConverter
transforms=outbox
transforms.outbox.type=io.debezium.transforms.outbox.EventRouter
transforms.outbox.table.field.event.id=event_id
transforms.outbox.table.field.event.key=key
transforms.outbox.table.field.event.payload=body
transforms.outbox.table.field.event.timestamp=created
transforms.outbox.table.fields.additional.placement=type:header:eventType, type:envelope, part:partition
transforms.outbox.table.expand.json.payload=true
transforms.outbox.route.by.field=kind
transforms.outbox.route.topic.regex=(?<kind>[a-z]+)
transforms.outbox.route.topic.replacement=events.${kind}
transforms.outbox.route.tombstone.on.empty.payload=true
transforms.outbox.table.op.invalid.behavior=fatal
some.future.option=1
";
        let (c, t) = translate(text).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            c.database_url.as_deref(),
            Some("postgres://u@db:5432/app?sslmode=verify%2Dfull&sslrootcert=%2Fetc%2Fca%2Epem")
        );
        assert_eq!(
            (c.source.slot.as_str(), c.source.publication.as_str()),
            ("dbz_slot", "dbz_pub")
        );
        assert_eq!(
            (c.source.schema.as_deref(), c.source.table.as_str()),
            (Some("public"), "outbox")
        );
        let k = &c.kafka;
        assert_eq!(
            (
                k.event_id_field.as_str(),
                k.event_key_field.as_str(),
                k.payload_field.as_str()
            ),
            ("event_id", "key", "body")
        );
        assert_eq!(k.event_timestamp_field.as_deref(), Some("created"));
        assert_eq!(k.additional_placement.len(), 3);
        assert!(k.expand_json_payload && k.tombstone_on_empty_payload);
        assert_eq!(k.value_converter, ValueConverter::Json);
        assert_eq!(
            (k.route_by_field.as_str(), k.topic.as_str()),
            ("kind", "events.${kind}")
        );
        assert_eq!(k.topic_regex, "(?<kind>[a-z]+)");
        assert_eq!(t.warnings.len(), 2, "{:?}", t.warnings);
        assert!(
            t.warnings
                .iter()
                .any(|w| w.contains("table.op.invalid.behavior"))
        );
        assert!(t.warnings.iter().any(|w| w.contains("some.future.option")));
    }

    #[test]
    fn what_would_change_the_messages_is_refused_by_name() {
        let base = "connector.class=io.debezium.connector.postgresql.PostgresConnector\n\
                    plugin.name=pgoutput\n\
                    key.converter=org.apache.kafka.connect.storage.StringConverter\n\
                    value.converter=org.apache.kafka.connect.storage.StringConverter\n\
                    transforms=outbox\n\
                    transforms.outbox.type=io.debezium.transforms.outbox.EventRouter\n";
        for (extra, key) in [
            ("plugin.name=decoderbufs\n", "plugin.name"),
            (
                "key.converter=org.apache.kafka.connect.json.JsonConverter\n",
                "key.converter",
            ),
            (
                "value.converter=org.apache.kafka.connect.json.JsonConverter\n",
                "value.converter.schemas.enable",
            ),
            (
                "transforms.outbox.table.expand.json.payload=true\n",
                "value.converter",
            ),
            (
                "transforms.outbox.table.fields.additional.placement=a:envelope\n",
                "value.converter",
            ),
            (
                "transforms=outbox,unwrap\ntransforms.unwrap.type=io.debezium.transforms.ExtractNewRecordState\n",
                "transforms.unwrap.type",
            ),
            (
                "transforms.outbox.table.field.event.payload.id=x\n",
                "transforms.outbox.table.field.event.payload.id",
            ),
            (
                "transforms.outbox.tracing.span.context.field=ctx\n",
                "transforms.outbox.tracing.span.context.field",
            ),
            ("transforms.outbox.made.up=1\n", "transforms.outbox.made.up"),
            ("decimal.handling.mode=string\n", "decimal.handling.mode"),
            (
                "column.mask.with.5.chars=public.outbox.payload\n",
                "column.mask.with.5.chars",
            ),
            (
                "table.include.list=public.outbox,public.other\n",
                "table.include.list",
            ),
            (
                "table.include.list=public.outbox_.*\n",
                "table.include.list",
            ),
            (
                "database.password=${vault:secret/db:password}\n",
                "database.password",
            ),
            (
                "connector.class=io.debezium.connector.mysql.MySqlConnector\n",
                "connector.class",
            ),
        ] {
            let refused = translate(&format!("{base}{extra}")).err().map(|(k, _)| k);
            assert_eq!(refused.as_deref(), Some(key), "{extra}");
        }
        assert!(translate(base).is_ok());
    }

    #[test]
    fn config_providers_file_and_env() {
        let dir = std::env::temp_dir().join(format!("dbz-provider-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let secrets = dir.join("secrets.properties");
        std::fs::write(&secrets, "password = s3cret\n").unwrap_or_else(|e| panic!("{e}"));
        let value = format!("${{file:{}:password}}", secrets.display());
        assert_eq!(resolve_providers("k", &value), Ok("s3cret".to_owned()));
        assert_eq!(
            resolve_providers("k", "outbox.${routedByValue}"),
            Ok("outbox.${routedByValue}".to_owned())
        );
        assert!(resolve_providers("k", "${env:OUTBOX_NO_SUCH_VARIABLE_X}").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
