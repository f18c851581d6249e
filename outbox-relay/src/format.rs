//! What Debezium's Outbox Event Router and Kafka Connect do to an outbox row beyond copying
//! bytes, reproduced byte for byte where a consumer can see it:
//!
//! - [`TopicRoute`]: `route.topic.regex` + `route.topic.replacement`, as Kafka Connect's
//!   `RegexRouter` applies them to the routing column (Java's `Matcher.matches`, then
//!   `replaceFirst` with Java's replacement syntax);
//! - [`json_value`] and [`json_envelope`]: the message value as Kafka Connect's `JsonConverter`
//!   (`schemas.enable=false`) renders the payload, expanded as `table.expand.json.payload`
//!   expands it (Debezium's `JsonSchemaData`: a schema inferred from the document, and the
//!   document kept as a string when that inference or the conversion fails);
//! - [`timestamp_millis`]: the Kafka record timestamp from `table.field.event.timestamp`;
//! - [`postgres_value`]: a PostgreSQL column as Debezium's connector types it, which decides
//!   both its header text and its JSON in an envelope, for every source that reads PostgreSQL.

use std::fmt::Write as _;

use regex::Regex;

/// `route.topic.regex` + `route.topic.replacement`: the topic of a routing value.
#[derive(Debug, Clone)]
pub struct TopicRoute {
    /// The regex anchored at both ends: Java's `Matcher.matches()`.
    whole: Regex,
    /// The regex as written: Java's `replaceFirst` replaces its first match.
    first: Regex,
    replacement: Vec<Piece>,
}

/// One part of a parsed Java replacement string.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    /// `$n`.
    Group(usize),
    /// `${name}`.
    Named(String),
}

/// Why a `route.topic.regex` / `route.topic.replacement` pair cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error(
        "`{regex}` is not a regular expression the relay can run ({reason}); Java's regex accepts \
         more (lookaround, backreferences, possessive quantifiers, atomic groups, `\\Z`, `\\h`, \
         `\\R`, `\\v` as a class): rewrite it without them"
    )]
    Regex { regex: String, reason: String },
    #[error("`{replacement}`: {problem}")]
    Replacement {
        replacement: String,
        problem: String,
    },
}

impl TopicRoute {
    /// Debezium's default regex, under which the replacement's `${routedByValue}` is the
    /// routing value.
    pub const DEFAULT_REGEX: &'static str = "(?<routedByValue>.*)";

    /// Compiles `regex` and parses `replacement` in Java's syntax (`$n`, `${name}`, `\` escapes
    /// the next character), refusing what Java would refuse at the first event: a reference to
    /// a group the regex does not have.
    pub fn new(regex: &str, replacement: &str) -> Result<TopicRoute, RouteError> {
        // Java's `\v` is the class of vertical whitespace; Rust's is the one character U+000B.
        if has_escape(regex, 'v') {
            return Err(RouteError::Regex {
                regex: regex.to_owned(),
                reason: "`\\v` means a class of characters in Java and one character here"
                    .to_owned(),
            });
        }
        let compile = |pattern: &str| {
            Regex::new(pattern).map_err(|e| RouteError::Regex {
                regex: regex.to_owned(),
                reason: e
                    .to_string()
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
            })
        };
        let first = compile(regex)?;
        let whole = compile(&format!(r"\A(?:{regex})\z"))?;
        let replacement = parse_replacement(replacement, &first)?;
        Ok(TopicRoute {
            whole,
            first,
            replacement,
        })
    }

    /// The topic for `routed`: the replacement when the regex matches all of it, else `routed`
    /// itself (as `RegexRouter` leaves a record it does not match).
    pub fn topic(&self, routed: &str) -> String {
        if !self.whole.is_match(routed) {
            return routed.to_owned();
        }
        let Some(captures) = self.first.captures(routed) else {
            return routed.to_owned();
        };
        let Some(matched) = captures.get(0) else {
            return routed.to_owned();
        };
        let mut topic = String::with_capacity(routed.len() + 32);
        topic.push_str(&routed[..matched.start()]);
        for piece in &self.replacement {
            match piece {
                Piece::Literal(text) => topic.push_str(text),
                // A group that did not take part appends nothing, as in Java.
                Piece::Group(n) => topic.push_str(captures.get(*n).map_or("", |m| m.as_str())),
                Piece::Named(name) => {
                    topic.push_str(captures.name(name).map_or("", |m| m.as_str()))
                }
            }
        }
        topic.push_str(&routed[matched.end()..]);
        topic
    }

    /// The replacement with each group reference as `x`: what must be a legal topic name on
    /// its own, whatever the groups capture.
    pub fn fixed_part(&self) -> String {
        self.replacement
            .iter()
            .map(|piece| match piece {
                Piece::Literal(text) => text.as_str(),
                Piece::Group(_) | Piece::Named(_) => "x",
            })
            .collect()
    }
}

/// Whether `regex` has the escape `\c` (an unescaped backslash before `c`).
fn has_escape(regex: &str, c: char) -> bool {
    let mut chars = regex.chars();
    while let Some(ch) = chars.next() {
        if ch == '\\' && chars.next() == Some(c) {
            return true;
        }
    }
    false
}

/// Java's `Matcher.appendExpandedReplacement`, parsed once.
fn parse_replacement(replacement: &str, regex: &Regex) -> Result<Vec<Piece>, RouteError> {
    let fail = |problem: String| RouteError::Replacement {
        replacement: replacement.to_owned(),
        problem,
    };
    let groups = regex.captures_len() - 1;
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut chars = replacement.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped) => literal.push(escaped),
                None => {
                    return Err(fail(
                        "the character to be escaped after `\\` is missing".into(),
                    ));
                }
            },
            '$' => {
                let piece = match chars.peek() {
                    None => return Err(fail("`$` at the end names no group".into())),
                    Some('{') => {
                        chars.next();
                        let mut name = String::new();
                        loop {
                            match chars.next() {
                                Some('}') => break,
                                Some(c) if c.is_ascii_alphanumeric() => name.push(c),
                                _ => {
                                    return Err(fail(
                                        "a named group reference is `${name}`, the name of ASCII \
                                         letters and digits"
                                            .into(),
                                    ));
                                }
                            }
                        }
                        if !regex.capture_names().flatten().any(|n| n == name) {
                            return Err(fail(format!("the regex has no group named `{name}`")));
                        }
                        Piece::Named(name)
                    }
                    Some(d) if d.is_ascii_digit() => {
                        // Java reads the first digit, then more while the number stays a group.
                        let mut number = 0usize;
                        let mut first = true;
                        while let Some(d) = chars.peek().and_then(|d| d.to_digit(10)) {
                            let next = number * 10 + d as usize;
                            if !first && next > groups {
                                break;
                            }
                            number = next;
                            first = false;
                            chars.next();
                        }
                        if number > groups {
                            return Err(fail(format!(
                                "`${number}`: the regex has {groups} group(s)"
                            )));
                        }
                        Piece::Group(number)
                    }
                    Some(_) => {
                        return Err(fail(
                            "`$` must be followed by a group number or `{name}`; write `\\$` for \
                             a dollar sign"
                                .into(),
                        ));
                    }
                };
                if !literal.is_empty() {
                    pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                }
                pieces.push(piece);
            }
            c => literal.push(c),
        }
    }
    if !literal.is_empty() {
        pieces.push(Piece::Literal(literal));
    }
    Ok(pieces)
}

/// The Kafka record timestamp (milliseconds since the epoch) of a `table.field.event.timestamp`
/// column, from the text the source gives it; None when it is not a timestamp.
///
/// Debezium takes it from a `timestamp` column, which its PostgreSQL connector (and so the wal
/// source) renders as epoch milliseconds (`timestamp(0..3)`) or microseconds (`timestamp(4..6)`),
/// truncating microseconds toward zero. An integer is read as microseconds when its magnitude
/// is 10^14 or more (after 1973-03-03 in microseconds; milliseconds that large would be past the
/// year 5000). Text forms (ISO-8601, PostgreSQL's, MySQL's, SQLite's) are read too, a form
/// without an offset as UTC, as Debezium reads `timestamp`; Debezium itself refuses a
/// `timestamptz` column here, the relay takes its instant.
pub fn timestamp_millis(text: &str) -> Option<i64> {
    use chrono::{DateTime, NaiveDateTime};
    let text = text.trim();
    if let Ok(n) = text.parse::<i64>() {
        return Some(if n.unsigned_abs() >= 100_000_000_000_000 {
            n / 1_000
        } else {
            n
        });
    }
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Some(at.timestamp_millis());
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%#z"] {
        if let Ok(at) = DateTime::parse_from_str(text, format) {
            return Some(at.timestamp_millis());
        }
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(at) = NaiveDateTime::parse_from_str(text, format) {
            return Some(at.and_utc().timestamp_millis());
        }
    }
    None
}

/// PostgreSQL type OIDs whose Debezium rendering differs from PostgreSQL's text (or from a JSON
/// string).
pub mod pg_type {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const DATE: u32 = 1082;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const NUMERIC: u32 = 1700;
}

/// A PostgreSQL column's value from its text output (`type_oid`, `type_modifier` as the
/// catalog or a pgoutput `Relation` gives them), as Debezium 3.6 (PostgreSQL connector,
/// default `time.precision.mode=adaptive` and `decimal.handling.mode=precise`) types it; the
/// text is what SimpleHeaderConverter and StringConverter print, the JSON what JsonConverter
/// (schemas off) writes. Measured against Debezium 3.6.1 (README, "Compatibility"):
/// - `timestamptz(p)`: a string, ISO-8601 in UTC with `Z`, the fraction padded to p digits (6
///   when unconstrained): `2026-11-28T20:19:21.773017Z`;
/// - `timestamp(p)`: milliseconds since the epoch for p <= 3, microseconds otherwise;
/// - `date`: days since the epoch;
/// - `smallint`, `integer`, `bigint`: the number;
/// - `real`, `double precision`: the number as Java's `Float`/`Double.toString` prints it
///   (`3.0`, `1.0E20`; PostgreSQL prints `3`, `1e+20`);
/// - `boolean`: `true`/`false` (PostgreSQL's output is `t`/`f`, its cast to text `true`/`false`);
/// - unconstrained `numeric`: `{"scale":s,"value":"<base64>"}` (Debezium's
///   `VariableScaleDecimal`), the unscaled value's two's-complement big-endian bytes, trailing
///   fractional zeros dropped;
/// - `numeric(p,s)`: PostgreSQL's text (Java's `BigDecimal` prints it alike); in JSON the
///   unscaled value's bytes in base64, as a string (JsonConverter's `decimal.format=BASE64`);
/// - anything else, and values such as `infinity`, `NaN` or BC dates: the text, a JSON string.
pub fn postgres_value(
    type_oid: u32,
    type_modifier: i32,
    text: String,
) -> crate::record::ColumnValue {
    use crate::record::ColumnValue;
    use chrono::{NaiveDate, NaiveDateTime};
    let precision = |default: u32| u32::try_from(type_modifier).unwrap_or(default);
    let number = |text: String| ColumnValue::Typed {
        json: text.clone(),
        text,
    };
    let typed = match type_oid {
        pg_type::TIMESTAMPTZ => {
            let digits = precision(6).min(9);
            utc_timestamp(&text, digits)
                .or_else(|| chrono_utc_timestamp(&text, digits))
                .map(ColumnValue::Text)
        }
        pg_type::TIMESTAMP => NaiveDateTime::parse_from_str(&text, "%Y-%m-%d %H:%M:%S%.f")
            .ok()
            .map(|at| {
                let at = at.and_utc();
                number(if precision(6) <= 3 {
                    at.timestamp_millis().to_string()
                } else {
                    at.timestamp_micros().to_string()
                })
            }),
        pg_type::DATE => NaiveDate::parse_from_str(&text, "%Y-%m-%d")
            .ok()
            .map(|date| number((date - NaiveDate::default()).num_days().to_string())),
        pg_type::INT2 | pg_type::INT4 | pg_type::INT8 if text.parse::<i64>().is_ok() => {
            return number(text);
        }
        pg_type::FLOAT8 => text
            .parse::<f64>()
            .ok()
            .filter(|d| d.is_finite())
            .map(|d| number(java_double(d))),
        pg_type::FLOAT4 => text
            .parse::<f32>()
            .ok()
            .filter(|f| f.is_finite())
            .map(|f| number(java_float(f))),
        pg_type::NUMERIC if type_modifier < 0 => decimal(&text, true).map(|(scale, unscaled)| {
            number(format!(
                r#"{{"scale":{scale},"value":"{}"}}"#,
                base64(&unscaled)
            ))
        }),
        pg_type::NUMERIC => decimal(&text, false).map(|(_, unscaled)| ColumnValue::Typed {
            json: format!("\"{}\"", base64(&unscaled)),
            text: text.clone(),
        }),
        pg_type::BOOL => match text.as_str() {
            "t" | "true" => Some(number("true".to_owned())),
            "f" | "false" => Some(number("false".to_owned())),
            _ => None,
        },
        _ => None,
    };
    typed.unwrap_or(ColumnValue::Text(text))
}

/// `timestamptz` text in any shape chrono parses, in UTC as Debezium renders it: the general
/// path behind [`utc_timestamp`], for the shapes that one declines.
fn chrono_utc_timestamp(text: &str, digits: u32) -> Option<String> {
    use chrono::{DateTime, Utc};
    let at = DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%#z")
        .ok()?
        .with_timezone(&Utc);
    let mut out = at.format("%Y-%m-%dT%H:%M:%S").to_string();
    push_fraction(&mut out, at.timestamp_subsec_nanos(), digits);
    out.push('Z');
    Some(out)
}

/// `timestamptz` text as PostgreSQL prints it with `DateStyle` ISO (`2026-11-28 20:19:21.5+02`,
/// `+05:30`), in UTC as Debezium renders it (`2026-11-28T18:19:21.500Z`, `digits` fraction
/// digits); None for any other shape (BC dates, `infinity`, offsets with seconds, years past
/// 9999), which the caller hands to chrono's general parser.
///
/// The reason it exists: every event of the Debezium-shaped table carries a `timestamptz`, and
/// chrono's `parse_from_str`/`format` interpret their format strings on every call (7.7 % of
/// the relay's CPU in a `wal` drain). A unit test holds it equal to chrono's rendering.
fn utc_timestamp(text: &str, digits: u32) -> Option<String> {
    use chrono::{Datelike as _, NaiveDate, TimeDelta, Timelike as _};
    let b = text.as_bytes();
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        let digits = b.get(range)?;
        digits.iter().try_fold(0u32, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    let separators = [(4, b'-'), (7, b'-'), (10, b' '), (13, b':'), (16, b':')];
    if separators
        .iter()
        .any(|&(at, want)| b.get(at) != Some(&want))
    {
        return None;
    }
    let mut at = 19;
    let mut nanos = 0;
    if b.get(at) == Some(&b'.') {
        let start = at + 1;
        at = start;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        let places = u32::try_from(at - start)
            .ok()
            .filter(|p| (1..=9).contains(p))?;
        nanos = number(start..at)? * 10u32.pow(9 - places);
    }
    let sign: i64 = match b.get(at)? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let offset_hours = number(at + 1..at + 3)?;
    let offset_minutes = match b.len() - (at + 3) {
        0 => 0,
        3 if b[at + 3] == b':' => number(at + 4..at + 6)?,
        _ => return None,
    };
    let local = NaiveDate::from_ymd_opt(
        i32::try_from(number(0..4)?).ok()?,
        number(5..7)?,
        number(8..10)?,
    )?
    .and_hms_nano_opt(number(11..13)?, number(14..16)?, number(17..19)?, nanos)?;
    let offset = sign * i64::from(offset_hours * 3600 + offset_minutes * 60);
    let utc = local.checked_sub_signed(TimeDelta::try_seconds(offset)?)?;
    if !(1..=9999).contains(&utc.year()) {
        return None;
    }
    // Digit by digit: `write!` with padded fields cost 5 % of a `wal` drain's relay CPU.
    let mut out = String::with_capacity(31);
    push_padded(&mut out, utc.year().unsigned_abs(), 4);
    for (separator, part) in [
        ('-', utc.month()),
        ('-', utc.day()),
        ('T', utc.hour()),
        (':', utc.minute()),
        (':', utc.second()),
    ] {
        out.push(separator);
        push_padded(&mut out, part, 2);
    }
    push_fraction(&mut out, utc.nanosecond(), digits);
    out.push('Z');
    Some(out)
}

/// `.` and the first `digits` of the nanoseconds (nothing for 0 digits).
fn push_fraction(out: &mut String, nanos: u32, digits: u32) {
    if digits > 0 {
        out.push('.');
        push_padded(out, nanos / 10u32.pow(9 - digits), digits);
    }
}

/// `value` in decimal, zero-padded to `width` digits (a wider value in full).
fn push_padded(out: &mut String, value: u32, width: u32) {
    let len = value.checked_ilog10().map_or(1, |log| log + 1);
    for _ in len..width {
        out.push('0');
    }
    let mut unit = 10u32.pow(len - 1);
    while unit > 0 {
        out.push(char::from(b'0' + (value / unit % 10) as u8));
        unit /= 10;
    }
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A decimal's text as Java's `BigDecimal` holds it: its scale and its unscaled value as
/// `BigInteger.toByteArray` gives it (two's complement, big-endian, the fewest bytes that hold
/// the sign bit). `trim` drops trailing fractional zeros first (Debezium's
/// `VariableScaleDecimal`); a fixed-scale `numeric(p,s)` keeps its s digits. None for `NaN` and
/// the infinities.
fn decimal(text: &str, trim: bool) -> Option<(usize, Vec<u8>)> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let fraction = if trim {
        fraction.trim_end_matches('0')
    } else {
        fraction
    };
    if !(whole.bytes().chain(fraction.bytes())).all(|b| b.is_ascii_digit()) || whole.is_empty() {
        return None;
    }
    // The unscaled magnitude in base 256, big-endian, by schoolbook multiply-and-add.
    let mut magnitude: Vec<u8> = Vec::new();
    for digit in whole.bytes().chain(fraction.bytes()) {
        let mut carry = u32::from(digit - b'0');
        for byte in magnitude.iter_mut().rev() {
            let value = u32::from(*byte) * 10 + carry;
            *byte = (value & 0xff) as u8;
            carry = value >> 8;
        }
        while carry > 0 {
            magnitude.insert(0, (carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    let first_nonzero = magnitude.iter().position(|&b| b != 0);
    let mut bytes = match first_nonzero {
        Some(i) => magnitude.split_off(i),
        None => vec![0],
    };
    if bytes[0] & 0x80 != 0 {
        bytes.insert(0, 0);
    }
    if negative && first_nonzero.is_some() {
        for byte in bytes.iter_mut() {
            *byte = !*byte;
        }
        for byte in bytes.iter_mut().rev() {
            let (sum, overflow) = byte.overflowing_add(1);
            *byte = sum;
            if !overflow {
                break;
            }
        }
        if bytes.len() > 1 && bytes[0] == 0xff && bytes[1] & 0x80 != 0 {
            bytes.remove(0);
        }
    }
    Some((fraction.len(), bytes))
}

/// A JSON document as Jackson's `readTree` holds it: object members in document order (a
/// repeated name keeps its first place and its last value), numbers by the kind Jackson gives
/// them.
#[derive(Debug, Clone, PartialEq)]
enum Node {
    Null,
    Bool(bool),
    /// Fits `int` (Jackson's `IntNode`).
    Int(i32),
    /// Fits `long` (`LongNode`).
    Long(i64),
    /// An integer beyond `long` (`BigIntegerNode`).
    Big,
    /// A number with a fraction or exponent (`DoubleNode`).
    Double(f64),
    String(String),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

impl<'de> serde::Deserialize<'de> for Node {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Node, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Node;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
                Ok(Node::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
                Ok(i32::try_from(v).map_or(Node::Long(v), Node::Int))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
                Ok(match (i32::try_from(v), i64::try_from(v)) {
                    (Ok(v), _) => Node::Int(v),
                    (_, Ok(v)) => Node::Long(v),
                    _ => Node::Big,
                })
            }
            fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
                Ok(Node::Double(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Node, E> {
                Ok(Node::String(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Node, E> {
                Ok(Node::String(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Node::Array(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut members: Vec<(String, Node)> = Vec::new();
                while let Some((name, value)) = map.next_entry::<String, Node>()? {
                    match members.iter_mut().find(|(n, _)| *n == name) {
                        Some(member) => member.1 = value,
                        None => members.push((name, value)),
                    }
                }
                Ok(Node::Object(members))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl Node {
    /// Jackson's `JsonNodeType`, which Debezium compares across an array's members.
    fn kind(&self) -> u8 {
        match self {
            Node::Null => 0,
            Node::Bool(_) => 1,
            Node::Int(_) | Node::Long(_) | Node::Big | Node::Double(_) => 2,
            Node::String(_) => 3,
            Node::Array(_) => 4,
            Node::Object(_) => 5,
        }
    }
}

/// A Kafka Connect schema as Debezium's `JsonSchemaData` infers it (every one optional).
#[derive(Debug, Clone, PartialEq)]
enum Schema {
    String,
    Boolean,
    Int32,
    Int64,
    Float64,
    Array(Box<Schema>),
    Struct(Vec<(String, Schema)>),
}

/// The expansion failed: Debezium keeps the payload as a string.
struct NotExpanded;

/// `JsonSchemaData.toConnectSchema`: None where Debezium infers no schema (null, an empty
/// array), which leaves the member out.
fn infer(node: &Node) -> Result<Option<Schema>, NotExpanded> {
    Ok(match node {
        Node::Null => None,
        Node::Bool(_) => Some(Schema::Boolean),
        Node::String(_) => Some(Schema::String),
        Node::Int(_) => Some(Schema::Int32),
        Node::Long(_) => Some(Schema::Int64),
        Node::Big | Node::Double(_) => Some(Schema::Float64),
        Node::Array(items) if items.is_empty() => None,
        Node::Array(items) => Some(Schema::Array(Box::new(member_schema(items)?))),
        Node::Object(members) => {
            let mut fields: Vec<(String, Schema)> = Vec::new();
            for (name, value) in members {
                if let Some(schema) = infer(value)?
                    && !fields.iter().any(|(n, _)| n == name)
                {
                    fields.push((name.clone(), schema));
                }
            }
            Some(Schema::Struct(fields))
        }
    })
}

/// The schema of an array's members: every non-null member of one JSON type (and numbers of
/// one schema); members that are objects merged field by field, in order of appearance.
/// Debezium merges distinct object shapes in a hash set's order, which no other program can
/// reproduce; for arrays of one shape (the common case) the result is the same.
fn member_schema(items: &[Node]) -> Result<Schema, NotExpanded> {
    let mut sample: Option<&Node> = None;
    let mut number: Option<Option<Schema>> = None;
    for item in items.iter().filter(|i| **i != Node::Null) {
        let first = *sample.get_or_insert(item);
        if item.kind() != first.kind() {
            return Err(NotExpanded);
        }
        if first.kind() == 2 {
            let reference = number.get_or_insert_with(|| infer(first).ok().flatten());
            if infer(item)?.as_ref() != reference.as_ref() {
                return Err(NotExpanded);
            }
        }
    }
    match sample {
        Some(Node::Object(_)) => {
            let mut merged: Vec<(String, Schema)> = Vec::new();
            let mut seen: Vec<Schema> = Vec::new();
            for item in items.iter().filter(|i| matches!(i, Node::Object(_))) {
                let Some(schema) = infer(item)? else { continue };
                if seen.contains(&schema) {
                    continue;
                }
                if let Schema::Struct(fields) = &schema {
                    for (name, field) in fields {
                        if !merged.iter().any(|(n, _)| n == name) {
                            merged.push((name.clone(), field.clone()));
                        }
                    }
                }
                seen.push(schema);
            }
            Ok(Schema::Struct(merged))
        }
        Some(node) => infer(node)?.ok_or(NotExpanded),
        None => Err(NotExpanded),
    }
}

/// The document converted to the schema (Kafka Connect validates each value against its
/// field's schema as it is put) and rendered by `JsonConverter`.
fn render(node: &Node, schema: &Schema, out: &mut String) -> Result<(), NotExpanded> {
    match (node, schema) {
        (Node::Null, _) => out.push_str("null"),
        (Node::Bool(b), Schema::Boolean) => out.push_str(if *b { "true" } else { "false" }),
        (Node::String(s), Schema::String) => json_string(s, out),
        (Node::Int(n), Schema::Int32) => {
            let _ = write!(out, "{n}");
        }
        (Node::Long(n), Schema::Int64) => {
            let _ = write!(out, "{n}");
        }
        (Node::Double(d), Schema::Float64) => out.push_str(&java_double(*d)),
        (Node::Array(items), Schema::Array(member)) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                render(item, member, out)?;
            }
            out.push(']');
        }
        (Node::Object(members), Schema::Struct(fields)) => render_struct(members, fields, out)?,
        _ => return Err(NotExpanded),
    }
    Ok(())
}

/// A struct: every field of the schema, in its order; a field the document lacks is null.
fn render_struct(
    members: &[(String, Node)],
    fields: &[(String, Schema)],
    out: &mut String,
) -> Result<(), NotExpanded> {
    out.push('{');
    for (i, (name, schema)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_string(name, out);
        out.push(':');
        match members.iter().find(|(n, _)| n == name) {
            Some((_, value)) => render(value, schema, out)?,
            None => out.push_str("null"),
        }
    }
    out.push('}');
    Ok(())
}

/// The expanded payload as `JsonConverter` renders it, or None when Debezium keeps it a
/// string: it does not start with `{` or `[`, does not parse, or its inferred schema does not
/// fit it (mixed arrays, a top-level array).
fn expand(payload: &str) -> Option<String> {
    if !(payload.starts_with('{') || payload.starts_with('[')) {
        return None;
    }
    // Jackson reads such an integer as a BigInteger, for which Debezium's conversion fails;
    // serde_json would read it as a double.
    if has_integer_beyond_long(payload) {
        return None;
    }
    let node: Node = serde_json::from_str(payload).ok()?;
    let Node::Object(members) = &node else {
        return None;
    };
    let Some(Schema::Struct(fields)) = infer(&node).ok()? else {
        return None;
    };
    let mut out = String::with_capacity(payload.len());
    render_struct(members, &fields, &mut out).ok()?;
    Some(out)
}

/// Whether the JSON text holds an integer literal (no fraction, no exponent) outside `long`.
fn has_integer_beyond_long(json: &str) -> bool {
    let bytes = json.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < bytes.len()
                    && matches!(bytes[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    i += 1;
                }
                let token = &json[start..i];
                if !token.contains(['.', 'e', 'E']) && token.parse::<i64>().is_err() {
                    return true;
                }
            }
            _ => i += 1,
        }
    }
    false
}

/// A payload as `JsonConverter` renders it, text expanded first when `expand` is set.
fn payload_json(payload: &crate::record::ColumnValue, expand_json: bool, out: &mut String) {
    use crate::record::ColumnValue;
    match payload {
        ColumnValue::Text(text) if expand_json => match expand(text) {
            Some(expanded) => out.push_str(&expanded),
            None => json_string(text, out),
        },
        other => column_json(Some(other), out),
    }
}

/// A column's value as `JsonConverter` (schemas off) renders it by its Kafka Connect schema:
/// text as a JSON string, binary (`BYTES`) as base64 in a JSON string, a typed value as its
/// JSON (a number, `true`/`false`, a struct), NULL as `null`.
fn column_json(value: Option<&crate::record::ColumnValue>, out: &mut String) {
    use crate::record::ColumnValue;
    match value {
        None => out.push_str("null"),
        Some(ColumnValue::Text(text)) => json_string(text, out),
        Some(ColumnValue::Bytes(bytes)) => {
            out.push('"');
            out.push_str(&base64(bytes));
            out.push('"');
        }
        Some(ColumnValue::Typed { json, .. }) => out.push_str(json),
    }
}

/// The message value as `JsonConverter` (schemas off) renders the payload alone: a NULL
/// payload is the four bytes `null` (the converter writes a JSON null for a null value with a
/// schema; only a tombstone, which has none, is a null value).
pub fn json_value(payload: Option<&crate::record::ColumnValue>, expand: bool) -> Vec<u8> {
    let mut out = String::new();
    match payload {
        Some(payload) => payload_json(payload, expand, &mut out),
        None => out.push_str("null"),
    }
    out.into_bytes()
}

/// The message value as `JsonConverter` (schemas off) renders the Event Router's envelope:
/// `payload`, then each `envelope` placement by its alias, a column's value rendered by its
/// type as `column_json` renders it.
pub fn json_envelope(
    payload: Option<&crate::record::ColumnValue>,
    expand: bool,
    fields: &[(&str, Option<&crate::record::ColumnValue>)],
) -> Vec<u8> {
    let mut out = String::from("{\"payload\":");
    match payload {
        Some(payload) => payload_json(payload, expand, &mut out),
        None => out.push_str("null"),
    }
    for (name, value) in fields {
        out.push(',');
        json_string(name, &mut out);
        out.push(':');
        column_json(*value, &mut out);
    }
    out.push('}');
    out.into_bytes()
}

/// A JSON string as Jackson writes it: `"` and `\` escaped, control characters as `\b`, `\t`,
/// `\n`, `\f`, `\r` or `\u00XX` (upper-case hex), everything else as it is.
fn json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Java's `Double.toString`: plain notation with at least one fractional digit for magnitudes
/// in [10^-3, 10^7), else `d.dddE±n`; the shortest digits that read back as the same double.
fn java_double(d: f64) -> String {
    // `{:e}` gives the shortest round-trip digits: `-3.998e1`.
    java_floating(d == 0.0, d.is_sign_negative(), d.abs(), &format!("{d:e}"))
}

/// Java's `Float.toString`: as [`java_double`], with the shortest digits that read back as the
/// same float.
fn java_float(f: f32) -> String {
    java_floating(
        f == 0.0,
        f.is_sign_negative(),
        f64::from(f.abs()),
        &format!("{f:e}"),
    )
}

/// Java's rendering of a finite floating-point value from its shortest digits in Rust's `{:e}`
/// form and its magnitude.
fn java_floating(zero: bool, negative: bool, magnitude: f64, scientific: &str) -> String {
    if zero {
        return if negative { "-0.0" } else { "0.0" }.to_owned();
    }
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if (1e-3..1e7).contains(&magnitude) {
        let point = exponent + 1; // digits before the decimal point
        let (whole, fraction) = if point <= 0 {
            (
                "0".to_owned(),
                format!("{}{digits}", "0".repeat(point.unsigned_abs() as usize)),
            )
        } else {
            let point = point as usize;
            if digits.len() <= point {
                (
                    format!("{digits}{}", "0".repeat(point - digits.len())),
                    String::new(),
                )
            } else {
                (digits[..point].to_owned(), digits[point..].to_owned())
            }
        };
        let fraction = if fraction.is_empty() {
            "0".to_owned()
        } else {
            fraction
        };
        format!("{sign}{whole}.{fraction}")
    } else {
        let (first, rest) = digits.split_at(1);
        let rest = if rest.is_empty() { "0" } else { rest };
        format!("{sign}{first}.{rest}E{exponent}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::ColumnValue;

    fn route(regex: &str, replacement: &str) -> TopicRoute {
        TopicRoute::new(regex, replacement).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn debezium_default_route() {
        let r = route(TopicRoute::DEFAULT_REGEX, "outbox.event.${routedByValue}");
        assert_eq!(r.topic("Order"), "outbox.event.Order");
        assert_eq!(r.fixed_part(), "outbox.event.x");
    }

    #[test]
    fn java_regex_router_semantics() {
        // Whole match required; otherwise the routing value is the topic.
        let r = route("(?<kind>[a-z]+)_(\\d+)", "events.${kind}.v$2");
        assert_eq!(r.topic("order_12"), "events.order.v12");
        assert_eq!(r.topic("Order_12"), "Order_12");
        // `$12` with one group... here two groups: `$2` then the literal `1`.
        assert_eq!(route("(a)(b)", "$21").topic("ab"), "b1");
        // A group that did not take part appends nothing.
        assert_eq!(route("(x)?(y)", "[$1$2]").topic("y"), "[y]");
        // Escapes: `\$` is a dollar sign.
        assert_eq!(route(".*", "\\$x").topic("q"), "$x");
        // replaceFirst replaces the first match, which need not be all of the input.
        assert_eq!(route("a*?", "X").topic("aa"), "Xaa");
    }

    #[test]
    fn what_java_would_refuse_or_we_cannot_run_is_named() {
        for (regex, replacement, needle) in [
            ("(.*)", "$2", "1 group"),
            ("(.*)", "${nope}", "no group named `nope`"),
            ("(.*)", "x$", "at the end"),
            ("(.*)", "x\\", "escaped"),
            ("(?=a).*", "x", "lookaround"),
            ("(a)\\1", "x", "backreferences"),
            ("a\\v", "x", "`\\v`"),
        ] {
            let e = TopicRoute::new(regex, replacement)
                .err()
                .map(|e| e.to_string());
            assert!(
                e.as_deref().is_some_and(|e| e.contains(needle)),
                "{regex} {replacement}: {e:?}"
            );
        }
    }

    #[test]
    fn timestamps_as_debezium_reads_them() {
        assert_eq!(timestamp_millis("1764361161773"), Some(1_764_361_161_773));
        assert_eq!(
            timestamp_millis("1764361161773017"),
            Some(1_764_361_161_773)
        );
        assert_eq!(timestamp_millis("-315619199999999"), Some(-315_619_199_999));
        assert_eq!(
            timestamp_millis("2026-11-28T20:19:21.773017Z"),
            Some(1_795_897_161_773)
        );
        assert_eq!(
            timestamp_millis("2026-11-28 22:19:21.773+02"),
            Some(1_795_897_161_773)
        );
        assert_eq!(
            timestamp_millis("2026-11-28 20:19:21.773"),
            Some(1_795_897_161_773)
        );
        assert_eq!(timestamp_millis("yesterday"), None);
    }

    fn expanded(payload: &str) -> String {
        let v = json_value(Some(&ColumnValue::Text(payload.to_owned())), true);
        String::from_utf8(v).unwrap_or_default()
    }

    #[test]
    fn payload_expansion_as_json_schema_data_and_json_converter() {
        assert_eq!(
            expanded(r#"{"b": [1, 2], "a": null, "c": {"d": 2.50, "e": "x\"y"}, "f": []}"#),
            r#"{"b":[1,2],"c":{"d":2.5,"e":"x\"y"}}"#
        );
        // Objects in an array: fields merged, a missing one null.
        assert_eq!(
            expanded(r#"{"l": [{"id": 1}, {"id": 2, "q": true}]}"#),
            r#"{"l":[{"id":1,"q":null},{"id":2,"q":true}]}"#
        );
        // Not expandable: kept as a JSON string. Debezium 3.6.1 stops its task on the first
        // three (it keeps the inferred schema for the payload it keeps as a string).
        for kept in [
            r#"[1, 2]"#,
            r#"{"huge": 100000000000000000000}"#,
            r#"{"x": [{"a": 1}, 2]}"#,
            r#"{"m": [1, 2.5]}"#,
            r#"{"m": [1, "a"]}"#,
            "\"text\"",
            "null",
        ] {
            let mut want = String::new();
            json_string(kept, &mut want);
            assert_eq!(expanded(kept), want, "{kept}");
        }
        assert_eq!(expanded("{\"big\": 3000000000}"), "{\"big\":3000000000}");
    }

    #[test]
    fn java_double_to_string() {
        for (d, s) in [
            (2.5, "2.5"),
            (1.0, "1.0"),
            (100.0, "100.0"),
            (0.001, "0.001"),
            (0.0001, "1.0E-4"),
            (1e7, "1.0E7"),
            (1234567.5, "1234567.5"),
            (-39.98, "-39.98"),
            (1.5e300, "1.5E300"),
            (-0.0, "-0.0"),
        ] {
            assert_eq!(java_double(d), s);
        }
    }

    /// Each type's JSON in an envelope, as Debezium 3.6.1 sent it through JsonConverter
    /// (`typed_envelope_fields_match_debezium` in tests/debezium_parity.rs).
    #[test]
    fn typed_values_in_json_as_debezium_sent_them() {
        let json = |oid: u32, modifier: i32, text: &str| {
            let mut out = String::new();
            column_json(
                Some(&postgres_value(oid, modifier, text.to_owned())),
                &mut out,
            );
            out
        };
        let numeric2 = 0x000a_0006; // numeric(10,2)
        for (oid, modifier, text, want) in [
            (pg_type::NUMERIC, numeric2, "3.10", r#""ATY=""#),
            (pg_type::NUMERIC, numeric2, "-1.00", r#""nA==""#),
            (
                pg_type::NUMERIC,
                -1,
                "-0.0012300",
                r#"{"scale":5,"value":"hQ=="}"#,
            ),
            (
                pg_type::TIMESTAMP,
                -1,
                "1960-01-01 00:00:00.000001",
                "-315619199999999",
            ),
            (
                pg_type::TIMESTAMP,
                3,
                "2026-01-01 00:00:00",
                "1767225600000",
            ),
            (pg_type::DATE, -1, "2026-11-28", "20785"),
            (pg_type::INT8, -1, "9007199254740993", "9007199254740993"),
            (pg_type::BOOL, -1, "f", "false"),
            (
                pg_type::TIMESTAMPTZ,
                3,
                "2026-11-28 20:19:21.5+02",
                r#""2026-11-28T18:19:21.500Z""#,
            ),
            (
                2950,
                -1,
                "00000000-0000-0000-0000-000000000000",
                r#""00000000-0000-0000-0000-000000000000""#,
            ),
            (3802, -1, "{}", r#""{}""#),
            (pg_type::NUMERIC, -1, "NaN", r#""NaN""#),
            (pg_type::FLOAT8, -1, "1e+20", "1.0E20"),
            (pg_type::FLOAT8, -1, "-0.1", "-0.1"),
            (pg_type::FLOAT4, -1, "3", "3.0"),
            (pg_type::FLOAT4, -1, "1.1", "1.1"),
            (pg_type::FLOAT4, -1, "1e-05", "1.0E-5"),
            (pg_type::FLOAT8, -1, "NaN", r#""NaN""#),
        ] {
            assert_eq!(json(oid, modifier, text), want, "{oid} {modifier} {text}");
        }
    }

    /// The hand-written `timestamptz` path renders every PostgreSQL-shaped text exactly as
    /// chrono's general parser and formatter do, and declines what it does not know.
    #[test]
    fn timestamptz_fast_path_equals_chrono() {
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = |bound: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % bound
        };
        let mut compared = 0;
        for _ in 0..20_000 {
            let fraction = match next(10) {
                0 => String::new(),
                places => format!(
                    ".{:0w$}",
                    next(10u64.pow(places as u32)),
                    w = places as usize
                ),
            };
            let offset = match next(3) {
                0 => format!("{}{:02}", ["+", "-"][next(2) as usize], next(15)),
                1 => format!(
                    "{}{:02}:{:02}",
                    ["+", "-"][next(2) as usize],
                    next(15),
                    next(60)
                ),
                _ => "+00".to_owned(),
            };
            let text = format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02}{fraction}{offset}",
                [1, 1970, 2026, 9999, next(10_000)][next(5) as usize],
                1 + next(12),
                1 + next(31),
                next(24),
                next(60),
                next(60)
            );
            let digits = next(10) as u32;
            let fast = utc_timestamp(&text, digits);
            if let Some(fast) = &fast {
                compared += 1;
                assert_eq!(
                    Some(fast.clone()),
                    chrono_utc_timestamp(&text, digits),
                    "{text} ({digits})"
                );
            } else if let Some(slow) = chrono_utc_timestamp(&text, digits) {
                // Declined: only where the year leaves 1..=9999 in UTC.
                assert!(
                    ["0000", "+", "-"].iter().any(|year| slow.starts_with(year)),
                    "{text}: declined, but chrono gives {slow}"
                );
            }
        }
        assert!(
            compared > 15_000,
            "only {compared} texts took the fast path"
        );
        for declined in [
            "infinity",
            "2026-11-28 20:19:21+00:53:28",
            "0001-01-01 00:00:00+00 BC",
            "2026-11-28 20:19:21.1234567891+00",
            "2026-11-28T20:19:21+00",
            "2026-02-30 00:00:00+00",
        ] {
            assert_eq!(utc_timestamp(declined, 6), None, "{declined}");
        }
    }

    #[test]
    fn envelope_and_strings() {
        let v = json_envelope(
            Some(&ColumnValue::Text("{\"a\": 1}".to_owned())),
            false,
            &[
                ("type", Some(&ColumnValue::Text("Placed\n".to_owned()))),
                ("n", None),
                (
                    "at",
                    Some(&postgres_value(pg_type::DATE, -1, "1970-01-02".into())),
                ),
                ("on", Some(&postgres_value(pg_type::BOOL, -1, "t".into()))),
                ("blob", Some(&ColumnValue::Bytes(vec![0, 0xff]))),
            ],
        );
        assert_eq!(
            String::from_utf8(v).unwrap_or_default(),
            r#"{"payload":"{\"a\": 1}","type":"Placed\n","n":null,"at":1,"on":true,"blob":"AP8="}"#
        );
        let mut s = String::new();
        json_string("\u{1}é", &mut s);
        assert_eq!(s, "\"\\u0001é\"");
    }
}
