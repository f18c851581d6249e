//! The outbox's limits, defined once. The macros check them at compile time (`aggregate`,
//! `event_type`), the migration writes them into the table's DDL, and the relay checks them at
//! start (the configured topics) and per event (the routed topic). One definition keeps the three
//! from drifting apart: an aggregate the macro accepts must route to a topic the relay accepts.

/// Kafka refuses topic names longer than this.
pub const TOPIC_MAX_LEN: usize = 249;

/// Debezium's default `route.topic.replacement`, which the relay uses too.
pub const DEFAULT_TOPIC_TEMPLATE: &str = "outbox.event.${routedByValue}";

/// The fixed part of [`DEFAULT_TOPIC_TEMPLATE`] before the aggregate type.
pub const DEFAULT_TOPIC_PREFIX: &str = "outbox.event.";

/// The longest aggregate type that still routes to a legal topic under the default template.
pub const AGGREGATE_TYPE_MAX_LEN: usize = TOPIC_MAX_LEN - DEFAULT_TOPIC_PREFIX.len();

/// The width of the outbox table's `aggregatetype`, `aggregateid` and `type` columns
/// (`varchar(255)`, as in Debezium's documented DDL).
pub const NAME_COLUMN_WIDTH: usize = 255;

/// The width of the `tracingspancontext` column (`varchar(256)`, as in Debezium's DDL).
pub const TRACE_CONTEXT_COLUMN_WIDTH: usize = 256;

/// Whether Kafka allows `c` in a topic name: ASCII letters, digits, `.`, `_` and `-`.
pub fn is_topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Why `topic` is not a legal Kafka topic name, if it is not: 1 to [`TOPIC_MAX_LEN`] characters
/// that pass [`is_topic_char`], and neither `.` nor `..`.
pub fn topic_problem(topic: &str) -> Option<String> {
    if topic.is_empty() {
        return Some("it is empty".to_owned());
    }
    if topic.len() > TOPIC_MAX_LEN {
        return Some(format!(
            "it has {} characters, more than {TOPIC_MAX_LEN}",
            topic.len()
        ));
    }
    if topic == "." || topic == ".." {
        return Some("`.` and `..` are reserved".to_owned());
    }
    topic
        .char_indices()
        .find(|&(_, c)| !is_topic_char(c))
        .map(|(at, c)| {
            format!("{c:?} at byte {at}; only ASCII letters, digits, `.`, `_` and `-` are allowed")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_rules() {
        assert_eq!(topic_problem("outbox.event.Order_v2-x"), None);
        assert_eq!(topic_problem(&"a".repeat(TOPIC_MAX_LEN)), None);
        assert!(topic_problem(&"a".repeat(TOPIC_MAX_LEN + 1)).is_some());
        assert!(topic_problem("..").is_some());
        assert!(topic_problem("").is_some());
        let problem = topic_problem("outbox.event.Order Line");
        assert!(problem.is_some_and(|p| p.contains("' ' at byte 18")));
    }

    #[test]
    fn the_longest_aggregate_type_routes_to_a_legal_topic() {
        assert_eq!(AGGREGATE_TYPE_MAX_LEN, 236);
        let topic =
            DEFAULT_TOPIC_TEMPLATE.replace("${routedByValue}", &"a".repeat(AGGREGATE_TYPE_MAX_LEN));
        assert_eq!(topic_problem(&topic), None);
        assert!(DEFAULT_TOPIC_TEMPLATE.starts_with(DEFAULT_TOPIC_PREFIX));
    }
}
