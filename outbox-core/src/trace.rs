//! The W3C trace context of the writing span, stored with each row so the relay can propagate
//! `traceparent` to Kafka.
//!
//! Format: Java-properties lines, `traceparent=00-<trace>-<span>-<flags>` and, when it fits the
//! column's 256 characters, `tracestate=...` — what Debezium's tracing integration reads from
//! `tracingspancontext`, so a table written here stays traceable under Debezium too.

/// The column's width in DESIGN.md (`varchar(256)`).
const COLUMN_WIDTH: usize = 256;

/// The stored form of a trace context: always the `traceparent`, and the `tracestate` when the
/// whole still fits the column.
pub fn span_context_column(traceparent: &str, tracestate: &str) -> String {
    let parent = format!("traceparent={traceparent}");
    let with_state = format!("{parent}\ntracestate={tracestate}");
    if tracestate.is_empty() || with_state.len() > COLUMN_WIDTH {
        parent
    } else {
        with_state
    }
}

/// The `traceparent` and `tracestate` in a stored column value: the properties form written here
/// (and by Debezium's tracing), or a bare W3C value with an optional `, tracestate`, as other
/// writers store it.
pub fn parse_span_context(column: &str) -> (Option<&str>, Option<&str>) {
    fn non_empty(v: &str) -> Option<&str> {
        Some(v.trim()).filter(|v| !v.is_empty())
    }
    let column = column.trim();
    if column.starts_with("00-") && !column.contains('\n') {
        return match column.split_once(',') {
            Some((parent, state)) => (non_empty(parent), non_empty(state)),
            None => (non_empty(column), None),
        };
    }
    let property = |name: &str| {
        column
            .lines()
            .filter_map(|line| line.trim().split_once('='))
            .find(|(key, _)| key.trim() == name)
            .and_then(|(_, value)| non_empty(value))
    };
    (property("traceparent"), property("tracestate"))
}

/// The `traceparent` in a stored column value (see [`parse_span_context`]).
pub fn traceparent_of(column: &str) -> Option<&str> {
    parse_span_context(column).0
}

/// The current OpenTelemetry span's context, if any.
#[cfg(feature = "tracing")]
pub(crate) fn current_span_context() -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    let context = tracing::Span::current().context();
    let span = context.span();
    let sc = span.span_context();
    if !sc.is_valid() {
        return None;
    }
    let parent = format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    );
    Some(span_context_column(&parent, &sc.trace_state().header()))
}

#[cfg(not(feature = "tracing"))]
pub(crate) fn current_span_context() -> Option<String> {
    None
}

#[cfg(test)]
mod tests {
    use super::span_context_column;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn stores_traceparent_and_tracestate_as_properties() {
        assert_eq!(
            span_context_column(PARENT, "congo=t61rcWkgMzE"),
            format!("traceparent={PARENT}\ntracestate=congo=t61rcWkgMzE")
        );
        assert_eq!(
            span_context_column(PARENT, ""),
            format!("traceparent={PARENT}")
        );
    }

    #[test]
    fn reads_traceparent_from_properties_or_a_bare_value() {
        let stored = span_context_column(PARENT, "congo=t61rcWkgMzE");
        assert_eq!(super::traceparent_of(&stored), Some(PARENT));
        assert_eq!(super::traceparent_of(PARENT), Some(PARENT));
        assert_eq!(
            super::traceparent_of(&format!("#Thu Nov 26 2026\ntraceparent={PARENT}\n")),
            Some(PARENT)
        );
        assert_eq!(super::traceparent_of("tracestate=a=b"), None);
    }

    #[test]
    fn reads_tracestate_from_either_form() {
        let stored = span_context_column(PARENT, "congo=t61rcWkgMzE");
        assert_eq!(
            super::parse_span_context(&stored),
            (Some(PARENT), Some("congo=t61rcWkgMzE"))
        );
        assert_eq!(
            super::parse_span_context(&format!("{PARENT}, congo=t61rcWkgMzE")),
            (Some(PARENT), Some("congo=t61rcWkgMzE"))
        );
        assert_eq!(super::parse_span_context(""), (None, None));
    }

    #[test]
    fn drops_a_tracestate_that_would_overflow_the_column() {
        let long = "a=".to_owned() + &"x".repeat(250);
        let stored = span_context_column(PARENT, &long);
        assert_eq!(stored, format!("traceparent={PARENT}"));
        assert!(stored.len() <= 256);
    }
}
