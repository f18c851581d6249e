//! Kafka's rules for topic names, checked before anything is sent: at start for the configured
//! topics (a bad dead-letter topic would otherwise stall the stream at its first dead letter),
//! and per event for the routed topic.

/// Why `topic` is not a legal Kafka topic name, if it is not: 1 to 249 characters of ASCII
/// letters, digits, `.`, `_` and `-`, and neither `.` nor `..`.
pub fn topic_problem(topic: &str) -> Option<String> {
    if topic.is_empty() {
        return Some("it is empty".to_owned());
    }
    if topic.len() > 249 {
        return Some(format!("it has {} characters, more than 249", topic.len()));
    }
    if topic == "." || topic == ".." {
        return Some("`.` and `..` are reserved".to_owned());
    }
    topic
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        .map(|(at, c)| {
            format!("{c:?} at byte {at}; only ASCII letters, digits, `.`, `_` and `-` are allowed")
        })
}

/// Why the topic template `template` (with `${routedByValue}`) cannot yield a legal topic name
/// for any routing value, if it cannot: the fixed part alone must be legal.
pub fn template_problem(template: &str) -> Option<String> {
    // The routing value is checked per event; a one-letter stand-in checks what is fixed.
    topic_problem(&template.replace("${routedByValue}", "x"))
}
