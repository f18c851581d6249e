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

/// The `traceparent` and `tracestate` in a stored column value: the properties form, as written
/// here or by Java's `Properties.store` (Debezium's Quarkus extension), read as
/// [`java.util.Properties.load`](parse_properties) reads it; or a bare W3C value with an optional
/// `, tracestate`, as other writers store it. A column Java could not load either (a malformed
/// `\uXXXX`) yields neither: the event still ships, without trace headers.
pub fn parse_span_context(column: &str) -> (Option<String>, Option<String>) {
    fn non_empty(v: &str) -> Option<String> {
        Some(v.trim()).filter(|v| !v.is_empty()).map(str::to_owned)
    }
    let bare = column.trim();
    if bare.starts_with("00-") && !bare.contains(['\n', '\r']) {
        return match bare.split_once(',') {
            Some((parent, state)) => (non_empty(parent), non_empty(state)),
            None => (non_empty(bare), None),
        };
    }
    let Ok(properties) = parse_properties(column) else {
        return (None, None);
    };
    // As `Properties.load`, a later line with the same key wins.
    let property = |name: &str| {
        properties
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .and_then(|(_, value)| non_empty(value))
    };
    (property("traceparent"), property("tracestate"))
}

/// The `traceparent` in a stored column value (see [`parse_span_context`]).
pub fn traceparent_of(column: &str) -> Option<String> {
    parse_span_context(column).0
}

/// A properties text that `java.util.Properties.load` would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed \\uXXXX escape in properties text at line {line}")]
pub struct PropertiesError {
    /// The 1-based natural line where the escape starts.
    pub line: usize,
}

/// The key/value pairs of a properties text, in order, read by the rules of
/// `java.util.Properties.load(Reader)`: natural lines end at `\n`, `\r` or `\r\n`; a line ending
/// in an odd number of backslashes continues on the next, whose leading whitespace is dropped;
/// blank lines and lines whose first non-blank character is `#` or `!` are comments; the key
/// ends at the first unescaped `=`, `:` or whitespace, which (with the whitespace around one `=`
/// or `:`) separates it from the value; `\t` `\n` `\r` `\f` and `\uXXXX` are escapes, and a
/// backslash before any other character stands for that character.
pub fn parse_properties(text: &str) -> Result<Vec<(String, String)>, PropertiesError> {
    const BLANK: [char; 3] = [' ', '\t', '\u{c}'];
    let mut pairs = Vec::new();
    let mut lines = natural_lines(text).enumerate().peekable();
    while let Some((number, first)) = lines.next() {
        let first = first.trim_start_matches(BLANK);
        if first.is_empty() || first.starts_with(['#', '!']) {
            continue;
        }
        // Join the continuation lines into one logical line, escapes still in place.
        let mut logical = first.to_owned();
        while ends_in_odd_backslashes(&logical) {
            logical.pop();
            match lines.next() {
                Some((_, next)) => logical.push_str(next.trim_start_matches(BLANK)),
                None => break,
            }
        }
        let (key, value) = split_key_value(&logical);
        let line = number + 1;
        pairs.push((unescape(key, line)?, unescape(value, line)?));
    }
    Ok(pairs)
}

/// Lines ended by `\n`, `\r` or `\r\n`, as Java's `LineReader` splits them.
fn natural_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let current = rest?;
        match current.find(['\n', '\r']) {
            Some(end) => {
                let skip = if current[end..].starts_with("\r\n") {
                    2
                } else {
                    1
                };
                rest = Some(&current[end + skip..]);
                Some(&current[..end])
            }
            None => {
                rest = None;
                Some(current).filter(|line| !line.is_empty())
            }
        }
    })
}

fn ends_in_odd_backslashes(line: &str) -> bool {
    line.bytes().rev().take_while(|&b| b == b'\\').count() % 2 == 1
}

/// The raw key and value of a logical line (see [`parse_properties`]).
fn split_key_value(line: &str) -> (&str, &str) {
    let is_blank = |c: char| matches!(c, ' ' | '\t' | '\u{c}');
    let mut escaped = false;
    let mut key_end = line.len();
    for (i, c) in line.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '=' || c == ':' || is_blank(c) {
            key_end = i;
            break;
        }
    }
    let key = &line[..key_end];
    let mut rest = line[key_end..].trim_start_matches(is_blank);
    if let Some(after) = rest.strip_prefix(['=', ':']) {
        rest = after.trim_start_matches(is_blank);
    }
    (key, rest)
}

/// Unescapes a raw key or value. Text is gathered as UTF-16, as Java holds it, so that a
/// surrogate pair written as two `\uXXXX` escapes becomes one character.
fn unescape(raw: &str, line: usize) -> Result<String, PropertiesError> {
    let mut units: Vec<u16> = Vec::with_capacity(raw.len());
    let push = |c: char, units: &mut Vec<u16>| {
        let mut buf = [0; 2];
        units.extend_from_slice(c.encode_utf16(&mut buf));
    };
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            push(c, &mut units);
            continue;
        }
        match chars.next() {
            Some('t') => push('\t', &mut units),
            Some('n') => push('\n', &mut units),
            Some('r') => push('\r', &mut units),
            Some('f') => push('\u{c}', &mut units),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                let unit = (hex.len() == 4 && hex.chars().all(|c| c.is_ascii_hexdigit()))
                    .then(|| u16::from_str_radix(&hex, 16).ok())
                    .flatten()
                    .ok_or(PropertiesError { line })?;
                units.push(unit);
            }
            Some(other) => push(other, &mut units),
            None => {}
        }
    }
    Ok(String::from_utf16_lossy(&units))
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
    use super::{parse_properties, parse_span_context, span_context_column, traceparent_of};

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn both(parent: &str, state: &str) -> (Option<String>, Option<String>) {
        (Some(parent.to_owned()), Some(state.to_owned()))
    }

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
        assert_eq!(traceparent_of(&stored).as_deref(), Some(PARENT));
        assert_eq!(traceparent_of(PARENT).as_deref(), Some(PARENT));
        assert_eq!(
            traceparent_of(&format!("#Thu Nov 26 2026\ntraceparent={PARENT}\n")).as_deref(),
            Some(PARENT)
        );
        assert_eq!(traceparent_of("tracestate=a=b"), None);
    }

    #[test]
    fn reads_tracestate_from_either_form() {
        let stored = span_context_column(PARENT, "congo=t61rcWkgMzE");
        assert_eq!(
            parse_span_context(&stored),
            both(PARENT, "congo=t61rcWkgMzE")
        );
        assert_eq!(
            parse_span_context(&format!("{PARENT}, congo=t61rcWkgMzE")),
            both(PARENT, "congo=t61rcWkgMzE")
        );
        assert_eq!(parse_span_context(""), (None, None));
    }

    #[test]
    fn drops_a_tracestate_that_would_overflow_the_column() {
        let long = "a=".to_owned() + &"x".repeat(250);
        let stored = span_context_column(PARENT, &long);
        assert_eq!(stored, format!("traceparent={PARENT}"));
        assert!(stored.len() <= 256);
    }

    /// A column as Java's `Properties.store(writer, null)` writes it (what Debezium's Quarkus
    /// extension stores): a `#<Date.toString()>` line, then `key=value` lines in hash order
    /// with `=`, `:`, `#` and `!` escaped by a backslash, each line ended by the platform's
    /// separator.
    fn java_store(pairs: &[(&str, &str)], eol: &str) -> String {
        let escape = |v: &str| {
            v.chars().fold(String::new(), |mut out, c| {
                if matches!(c, '=' | ':' | '#' | '!' | '\\') {
                    out.push('\\');
                }
                out.push(c);
                out
            })
        };
        let mut text = format!("#Sat Nov 28 20:19:21 UTC 2026{eol}");
        for (k, v) in pairs {
            text.push_str(&format!("{}={}{eol}", escape(k), escape(v)));
        }
        text
    }

    #[test]
    fn reads_the_column_java_properties_store_writes() {
        let state = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE";
        for eol in ["\n", "\r\n", "\r"] {
            let stored = java_store(&[("tracestate", state), ("traceparent", PARENT)], eol);
            assert!(stored.contains("rojo\\=00f0"), "{stored:?}");
            assert_eq!(
                parse_span_context(&stored),
                both(PARENT, state),
                "{stored:?}"
            );
        }
    }

    #[test]
    fn reads_every_form_of_java_properties() {
        let text = concat!(
            "! a comment\r\n",
            "   # another, indented\n",
            "\n",
            "colon: a value \n",
            "space  spaced value\n",
            "key\\=with\\:escapes = v\\=1\\:2\\#3\\!4\n",
            "unicode=caf\\u00e9 \\ud83d\\ude00 \\t\\n\n",
            "continued=first \\\n",
            "     second \\\r\n",
            "\tthird\n",
            "two\\\\=backslashes\\\\\n",
            "only_key\n",
            "\\ leading=\\  space",
        );
        let pairs = parse_properties(text).unwrap_or_else(|e| panic!("{e}"));
        let expected = [
            ("colon", "a value "),
            ("space", "spaced value"),
            ("key=with:escapes", "v=1:2#3!4"),
            ("unicode", "caf\u{e9} \u{1f600} \t\n"),
            ("continued", "first second third"),
            ("two\\", "backslashes\\"),
            ("only_key", ""),
            (" leading", "  space"),
        ];
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (&k[..], &v[..])).collect();
        assert_eq!(pairs, expected);
    }

    #[test]
    fn a_malformed_unicode_escape_is_refused_like_java_does() {
        assert_eq!(
            parse_properties("a=1\nb=\\u12g4").map_err(|e| e.line),
            Err(2)
        );
        assert_eq!(
            parse_span_context(&format!("traceparent={PARENT}\nx=\\u12")),
            (None, None)
        );
    }

    #[test]
    fn the_last_of_repeated_keys_wins() {
        let text = format!("traceparent=00-old\ntraceparent={PARENT}");
        assert_eq!(traceparent_of(&text).as_deref(), Some(PARENT));
    }
}
