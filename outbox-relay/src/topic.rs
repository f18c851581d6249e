//! Kafka's rules for topic names, checked before anything is sent: at start for the configured
//! topics (a bad dead-letter topic would otherwise stall the stream at its first dead letter),
//! and per event for the routed topic.

pub use outbox_limits::topic_problem;

/// Why the topic template `template` (with `${routedByValue}`) cannot yield a legal topic name
/// for any routing value, if it cannot: the fixed part alone must be legal.
pub fn template_problem(template: &str) -> Option<String> {
    // The routing value is checked per event; a one-letter stand-in checks what is fixed.
    topic_problem(&template.replace("${routedByValue}", "x"))
}
