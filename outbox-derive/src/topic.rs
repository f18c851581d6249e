//! The aggregate type becomes part of a Kafka topic name, `outbox.event.<aggregate>`, so it is
//! checked here against Kafka's rules for topic names rather than failing at the relay.

use syn::LitStr;

use crate::ctxt::Ctxt;

use outbox_limits::{
    AGGREGATE_TYPE_MAX_LEN as AGGREGATE_MAX, DEFAULT_TOPIC_PREFIX as TOPIC_PREFIX, is_topic_char,
};

/// Why `aggregate` cannot be part of a topic name, or `None` if it can.
pub fn aggregate_problem(aggregate: &str) -> Option<String> {
    if aggregate.is_empty() {
        return Some(format!(
            "`aggregate` is empty; name the aggregate type, such as `aggregate = \"Order\"` (topic `{TOPIC_PREFIX}Order`)"
        ));
    }
    if let Some((at, bad)) = aggregate.char_indices().find(|&(_, c)| !is_topic_char(c)) {
        return Some(format!(
            "`aggregate` names the Kafka topic `{TOPIC_PREFIX}{aggregate}`, and topic names allow only \
             ASCII letters, digits, `.`, `_` and `-`; found {bad:?} at byte {at}"
        ));
    }
    let len = aggregate.len();
    if len > AGGREGATE_MAX {
        return Some(format!(
            "`aggregate` is {len} characters long, but the Kafka topic `{TOPIC_PREFIX}<aggregate>` \
             allows at most {AGGREGATE_MAX}"
        ));
    }
    None
}

/// Reports a bad aggregate type at its literal.
pub fn check_aggregate(ctxt: &Ctxt, aggregate: &LitStr) {
    if let Some(problem) = aggregate_problem(&aggregate.value()) {
        ctxt.error_spanned_by(aggregate, problem);
    }
}

#[cfg(test)]
mod tests {
    use super::{AGGREGATE_MAX, aggregate_problem};

    #[test]
    fn accepts_kafka_topic_characters() {
        for ok in ["Order", "order-line", "billing.Invoice_v2", "A", "0"] {
            assert_eq!(aggregate_problem(ok), None, "{ok}");
        }
    }

    #[test]
    fn names_the_first_illegal_character() {
        let problem = aggregate_problem("Order Line").unwrap();
        assert!(problem.contains("' ' at byte 5"), "{problem}");
        let problem = aggregate_problem("Bestellung/ü").unwrap();
        assert!(problem.contains("'/' at byte 10"), "{problem}");
        assert!(aggregate_problem("Ordnung:ü").unwrap().contains("':'"));
        assert!(aggregate_problem("Straße").unwrap().contains("'ß'"));
    }

    #[test]
    fn refuses_empty() {
        assert!(aggregate_problem("").unwrap().contains("empty"));
    }

    #[test]
    fn length_limit_leaves_room_for_the_prefix() {
        assert_eq!(AGGREGATE_MAX, 236);
        assert_eq!(aggregate_problem(&"a".repeat(236)), None);
        assert!(
            aggregate_problem(&"a".repeat(237))
                .unwrap()
                .contains("at most 236")
        );
    }
}
