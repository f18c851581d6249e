//! A decoder for the two pgoutput (protocol 1) messages the outbox needs: `Relation`, which
//! names a table's columns and their types, and `Insert`, a new row in text format. Every other
//! change message (`Update`, `Delete`, `Truncate`, `Type`, `Origin`) is recognised and ignored,
//! which is what makes remove-after-insert work. `Begin`, `Commit` and `Message` are parsed by the
//! transport.
//!
//! Decoding is in two steps, so that a row is attributed to its table before any value is read:
//! [`Decoder::decode`] names the relation of an `Insert` and keeps its tuple raw; only a row of the
//! outbox is then read with [`Decoder::row`] and its values converted with [`column_value`]. Rows
//! of other tables are never decoded past their relation id (their text may not even be UTF-8).
//!
//! The input comes from the network: malformed bytes are an error, never a panic (see the
//! property tests below, which feed it arbitrary bytes).

use std::collections::HashMap;

use super::ColumnValue;
use crate::record::ColumnName;

pub use crate::format::pg_type::{
    BOOL as BOOL_OID, BYTEA as BYTEA_OID, DATE as DATE_OID, NUMERIC as NUMERIC_OID,
    TIMESTAMP as TIMESTAMP_OID, TIMESTAMPTZ as TIMESTAMPTZ_OID,
};

/// A pgoutput payload the decoder could not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed pgoutput {message}: {problem}")]
pub struct DecodeError {
    message: &'static str,
    problem: &'static str,
}

/// One column as a `Relation` message describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Shared by every record of the relation's rows.
    pub name: ColumnName,
    /// The column's type OID (`bytea` is [`BYTEA_OID`]); its text form depends on it.
    pub type_oid: u32,
    /// The type modifier (`atttypmod`): a timestamp's fractional digits, -1 when unconstrained.
    pub type_modifier: i32,
}

/// A table the server described with a `Relation` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub schema: String,
    pub name: String,
    pub columns: Vec<Column>,
}

/// What one pgoutput change message means to the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change<'a> {
    /// The server (re)described `relation`: what was decided about it may no longer hold.
    Relation(u32),
    /// A row inserted into `relation`, its tuple still undecoded (see [`Decoder::row`]).
    Insert { relation: u32, tuple: &'a [u8] },
    /// Anything the outbox ignores.
    Ignored,
}

/// A row's columns with their raw text values, in table order (None = NULL).
pub type RawRow<'r, 'a> = Vec<(&'r Column, Option<&'a [u8]>)>;

/// Decodes a stream of pgoutput messages, remembering the relations announced so far.
#[derive(Debug, Default)]
pub struct Decoder {
    relations: HashMap<u32, Relation>,
}

struct Reader<'a> {
    buf: &'a [u8],
    message: &'static str,
}

impl<'a> Reader<'a> {
    fn err(&self, problem: &'static str) -> DecodeError {
        DecodeError {
            message: self.message,
            problem,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(self.err("truncated"));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A name from the catalog (schema, table, column). Names are UTF-8 in any database whose
    /// encoding is UTF-8; in a `SQL_ASCII` database they may not be, and are shown lossily.
    fn cstr(&mut self) -> Result<String, DecodeError> {
        let end = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| self.err("string without terminator"))?;
        let s = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf = &self.buf[end + 1..];
        Ok(s)
    }
}

impl Decoder {
    /// The relation announced under `oid`, if any.
    pub fn relation(&self, oid: u32) -> Option<&Relation> {
        self.relations.get(&oid)
    }

    /// Decodes one pgoutput message; an `Insert`'s tuple is left for [`Decoder::row`].
    pub fn decode<'a>(&mut self, data: &'a [u8]) -> Result<Change<'a>, DecodeError> {
        let Some((&tag, rest)) = data.split_first() else {
            return Err(DecodeError {
                message: "message",
                problem: "empty",
            });
        };
        match tag {
            b'R' => {
                let mut r = Reader {
                    buf: rest,
                    message: "Relation",
                };
                let oid = r.u32()?;
                let schema = r.cstr()?;
                let name = r.cstr()?;
                let _replica_identity = r.u8()?;
                let count = r.u16()?;
                let mut columns = Vec::with_capacity(usize::from(count).min(1600));
                for _ in 0..count {
                    let _flags = r.u8()?;
                    let name = ColumnName::from(r.cstr()?);
                    let type_oid = r.u32()?;
                    let type_modifier = r.u32()? as i32;
                    columns.push(Column {
                        name,
                        type_oid,
                        type_modifier,
                    });
                }
                self.relations.insert(
                    oid,
                    Relation {
                        schema,
                        name,
                        columns,
                    },
                );
                Ok(Change::Relation(oid))
            }
            b'I' => {
                let mut r = Reader {
                    buf: rest,
                    message: "Insert",
                };
                let oid = r.u32()?;
                if r.u8()? != b'N' {
                    return Err(r.err("expected a new tuple"));
                }
                if !self.relations.contains_key(&oid) {
                    return Err(r.err("row of a relation never announced"));
                }
                Ok(Change::Insert {
                    relation: oid,
                    tuple: r.buf,
                })
            }
            // Update, Delete, Truncate, Type, Origin: not outbox events.
            b'U' | b'D' | b'T' | b'Y' | b'O' => Ok(Change::Ignored),
            _ => Err(DecodeError {
                message: "message",
                problem: "unknown tag",
            }),
        }
    }

    /// The columns of an `Insert`'s `tuple` with their raw text values (None = NULL or an
    /// unchanged TOAST value, which an INSERT never has).
    pub fn row<'a>(&self, relation: u32, tuple: &'a [u8]) -> Result<RawRow<'_, 'a>, DecodeError> {
        self.row_with(relation, tuple, |column, value| (column, value))
    }

    /// [`Decoder::row`], each column and its raw value mapped by `each` as it is read: the
    /// row's values without a list of them in between.
    pub fn row_with<'r, 'a, T>(
        &'r self,
        relation: u32,
        tuple: &'a [u8],
        mut each: impl FnMut(&'r Column, Option<&'a [u8]>) -> T,
    ) -> Result<Vec<T>, DecodeError> {
        let mut r = Reader {
            buf: tuple,
            message: "Insert",
        };
        let relation = self
            .relations
            .get(&relation)
            .ok_or_else(|| r.err("row of a relation never announced"))?;
        let count = usize::from(r.u16()?);
        if count != relation.columns.len() {
            return Err(r.err("column count differs from its Relation"));
        }
        let mut values = Vec::with_capacity(count);
        for column in &relation.columns {
            let value = match r.u8()? {
                b'n' | b'u' => None,
                b't' => {
                    let len = r.u32()? as usize;
                    Some(r.take(len)?)
                }
                b'b' => {
                    return Err(r.err("binary values are not supported (leave `binary` off)"));
                }
                _ => return Err(r.err("unknown column kind")),
            };
            values.push(each(column, value));
        }
        if !r.buf.is_empty() {
            return Err(r.err("bytes after the last column"));
        }
        Ok(values)
    }
}

/// A column's value from its text form: the bytes of a `bytea` (in either `bytea_output`
/// format, as Debezium ships them), anything else typed as Debezium types it
/// ([`crate::format::postgres_value`]). Err says why it cannot be read.
pub fn column_value(column: &Column, text: &[u8]) -> Result<ColumnValue, String> {
    if column.type_oid == BYTEA_OID {
        return decode_bytea(text).map(ColumnValue::Bytes);
    }
    match std::str::from_utf8(text) {
        Ok(text) => Ok(crate::format::postgres_value(
            column.type_oid,
            column.type_modifier,
            text.to_owned(),
        )),
        Err(e) => Err(format!(
            "is not valid UTF-8 (byte {:#04x} at offset {}; is the database encoding SQL_ASCII?)",
            text[e.valid_up_to()],
            e.valid_up_to()
        )),
    }
}

/// `bytea`'s text output: `\x` and two hex digits per byte (`bytea_output = hex`, the default),
/// or the escape format (`\\` for a backslash, `\nnn` octal for any other byte it escapes).
fn decode_bytea(text: &[u8]) -> Result<Vec<u8>, String> {
    let bad = |what: &str| format!("is not bytea text output: {what}");
    let digit = |b: u8, radix: u32| char::from(b).to_digit(radix).map(|d| d as u8);
    if let Some(hex) = text.strip_prefix(b"\\x") {
        if hex.len() % 2 != 0 {
            return Err(bad("an odd number of hex digits"));
        }
        return hex
            .chunks_exact(2)
            .map(|pair| Some(digit(pair[0], 16)? << 4 | digit(pair[1], 16)?))
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| bad("a character that is not a hex digit"));
    }
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text;
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        if b != b'\\' {
            bytes.push(b);
        } else if let Some(tail) = rest.strip_prefix(b"\\") {
            bytes.push(b'\\');
            rest = tail;
        } else {
            // Three octal digits, at most 0o377.
            let octal = match rest {
                [a @ b'0'..=b'3', b @ b'0'..=b'7', c @ b'0'..=b'7', ..] => {
                    (a - b'0') << 6 | (b - b'0') << 3 | (c - b'0')
                }
                _ => return Err(bad("a backslash not followed by three octal digits")),
            };
            bytes.push(octal);
            rest = &rest[3..];
        }
    }
    Ok(bytes)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A `Relation` message; every column is `text` unless `typed` names its type OID.
    pub(crate) fn relation_msg(oid: u32, schema: &str, name: &str, columns: &[&str]) -> Vec<u8> {
        let typed: Vec<(&str, u32)> = columns.iter().map(|c| (*c, 25)).collect();
        typed_relation_msg(oid, schema, name, &typed)
    }

    /// Each value as Debezium 3.6.1 placed it in a header (measured through Kafka Connect on
    /// the same rows; README "Compatibility").
    #[test]
    fn columns_read_as_debezium_renders_them() {
        let render = |type_oid: u32, type_modifier: i32, text: &str| {
            let column = Column {
                name: "c".into(),
                type_oid,
                type_modifier,
            };
            match column_value(&column, text.as_bytes()) {
                Ok(ColumnValue::Text(t) | ColumnValue::Typed { text: t, .. }) => t,
                other => panic!("{other:?}"),
            }
        };
        let cases: &[(u32, i32, &str, &str)] = &[
            (
                TIMESTAMPTZ_OID,
                -1,
                "2026-11-28 20:19:21.773017+00",
                "2026-11-28T20:19:21.773017Z",
            ),
            (
                TIMESTAMPTZ_OID,
                -1,
                "2026-01-01 00:00:00+00",
                "2026-01-01T00:00:00.000000Z",
            ),
            (
                TIMESTAMPTZ_OID,
                -1,
                "2026-01-01 00:00:00.5+05",
                "2025-12-31T19:00:00.500000Z",
            ),
            (
                TIMESTAMPTZ_OID,
                3,
                "2026-11-28 20:19:21.5+02",
                "2026-11-28T18:19:21.500Z",
            ),
            (
                TIMESTAMPTZ_OID,
                3,
                "2026-01-01 00:00:00.1+00",
                "2026-01-01T00:00:00.100Z",
            ),
            (
                TIMESTAMP_OID,
                -1,
                "2026-11-28 20:19:21.773017",
                "1795897161773017",
            ),
            (
                TIMESTAMP_OID,
                -1,
                "1960-01-01 00:00:00.000001",
                "-315619199999999",
            ),
            (TIMESTAMP_OID, 3, "2026-11-28 20:19:21.5", "1795897161500"),
            (DATE_OID, -1, "2026-11-28", "20785"),
            (DATE_OID, -1, "1970-01-01", "0"),
            (
                NUMERIC_OID,
                -1,
                "12345.678900",
                r#"{"scale":4,"value":"B1vNFQ=="}"#,
            ),
            (NUMERIC_OID, -1, "100", r#"{"scale":0,"value":"ZA=="}"#),
            (NUMERIC_OID, -1, "0", r#"{"scale":0,"value":"AA=="}"#),
            (
                NUMERIC_OID,
                -1,
                "-0.0012300",
                r#"{"scale":5,"value":"hQ=="}"#,
            ),
            (NUMERIC_OID, 0x000a_0006, "3.10", "3.10"),
            (23, -1, "42", "42"),
            (20, -1, "9007199254740993", "9007199254740993"),
            (BOOL_OID, -1, "t", "true"),
            (BOOL_OID, -1, "f", "false"),
            (
                2950,
                -1,
                "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
                "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            ),
            (25, -1, "h\u{e9}llo \"x\"", "h\u{e9}llo \"x\""),
            (
                3802,
                -1,
                r#"{"a": null, "b": [1, 2.50]}"#,
                r#"{"a": null, "b": [1, 2.50]}"#,
            ),
            (TIMESTAMPTZ_OID, -1, "infinity", "infinity"),
            (NUMERIC_OID, -1, "NaN", "NaN"),
        ];
        for (oid, typmod, text, debezium) in cases {
            assert_eq!(
                render(*oid, *typmod, text),
                *debezium,
                "{oid} {typmod} {text}"
            );
        }
    }

    pub(crate) fn typed_relation_msg(
        oid: u32,
        schema: &str,
        name: &str,
        columns: &[(&str, u32)],
    ) -> Vec<u8> {
        let mut m = vec![b'R'];
        m.extend(oid.to_be_bytes());
        for s in [schema, name] {
            m.extend(s.as_bytes());
            m.push(0);
        }
        m.push(b'd');
        m.extend((columns.len() as u16).to_be_bytes());
        for (c, type_oid) in columns {
            m.push(0);
            m.extend(c.as_bytes());
            m.push(0);
            m.extend(type_oid.to_be_bytes());
            m.extend((-1i32).to_be_bytes());
        }
        m
    }

    pub(crate) fn insert_msg(oid: u32, values: &[Option<&[u8]>]) -> Vec<u8> {
        let mut m = vec![b'I'];
        m.extend(oid.to_be_bytes());
        m.push(b'N');
        m.extend((values.len() as u16).to_be_bytes());
        for v in values {
            match v {
                None => m.push(b'n'),
                Some(v) => {
                    m.push(b't');
                    m.extend((v.len() as u32).to_be_bytes());
                    m.extend(*v);
                }
            }
        }
        m
    }

    /// The row of a whole `Insert` message, its values converted.
    fn decode_row(
        d: &mut Decoder,
        m: &[u8],
    ) -> Result<Vec<(ColumnName, Option<ColumnValue>)>, String> {
        let Change::Insert { relation, tuple } = d.decode(m).map_err(|e| e.to_string())? else {
            return Err("not an insert".into());
        };
        d.row(relation, tuple)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|(c, v)| Ok((c.name.clone(), v.map(|v| column_value(c, v)).transpose()?)))
            .collect()
    }

    fn text(s: &str) -> Option<ColumnValue> {
        Some(ColumnValue::Text(s.to_owned()))
    }

    #[test]
    fn relation_then_insert() {
        let mut d = Decoder::default();
        assert_eq!(
            d.decode(&relation_msg(7, "public", "outbox", &["id", "payload"])),
            Ok(Change::Relation(7))
        );
        assert_eq!(
            decode_row(&mut d, &insert_msg(7, &[Some(b"a"), None])),
            Ok(vec![("id".into(), text("a")), ("payload".into(), None)])
        );
        assert_eq!(d.relation(7).map(|r| r.name.as_str()), Some("outbox"));
    }

    #[test]
    fn an_insert_names_its_relation_before_any_value_is_read() {
        let mut d = Decoder::default();
        let _ = d.decode(&relation_msg(3, "public", "other", &["note"]));
        // Not UTF-8, and not even a well-formed tuple: attributing it reads none of it.
        let mut m = insert_msg(3, &[Some(b"\xff\xfe")]);
        m.truncate(m.len() - 1);
        assert!(matches!(
            d.decode(&m),
            Ok(Change::Insert { relation: 3, .. })
        ));
    }

    #[test]
    fn bytea_is_shipped_as_its_bytes_and_bad_text_is_named() {
        let mut d = Decoder::default();
        let _ = d.decode(&typed_relation_msg(
            5,
            "public",
            "outbox",
            &[("id", 2950), ("payload", BYTEA_OID)],
        ));
        assert_eq!(
            decode_row(&mut d, &insert_msg(5, &[Some(b"x"), Some(b"\\x00ff7f")])),
            Ok(vec![
                ("id".into(), text("x")),
                (
                    "payload".into(),
                    Some(ColumnValue::Bytes(vec![0, 0xff, 0x7f]))
                )
            ])
        );
        // bytea_output = escape.
        assert_eq!(
            decode_bytea(b"a\\\\b\\000\\377"),
            Ok(vec![b'a', b'\\', b'b', 0, 0xff])
        );
        for bad in [&b"\\x0"[..], b"\\xzz", b"\\9", b"\\40"] {
            assert!(decode_bytea(bad).is_err(), "{bad:?}");
        }
        let e = decode_row(&mut d, &insert_msg(5, &[Some(b"\xff"), None]));
        assert!(e.is_err_and(|e| e.contains("not valid UTF-8")));
    }

    #[test]
    fn deletes_are_ignored_and_unknown_relations_refused() {
        let mut d = Decoder::default();
        assert_eq!(d.decode(b"D\0\0\0\x07K"), Ok(Change::Ignored));
        assert!(d.decode(&insert_msg(9, &[Some(b"x")])).is_err());
        assert!(d.decode(b"").is_err());
        assert!(d.decode(b"Z").is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// Arbitrary bytes (after a known relation) never panic the decoder.
        #[test]
        fn arbitrary_input_never_panics(tag in prop::sample::select(vec![b'R', b'I', b'U', b'D', b'X']), body in prop::collection::vec(any::<u8>(), 0..64)) {
            let mut d = Decoder::default();
            let _ = d.decode(&typed_relation_msg(1, "s", "t", &[("a", 25), ("b", BYTEA_OID)]));
            let mut m = vec![tag];
            m.extend(body);
            let _ = decode_row(&mut d, &m);
        }

        /// Arbitrary bytea text never panics its decoder.
        #[test]
        fn arbitrary_bytea_text_never_panics(text in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_bytea(&text);
        }

        /// Every truncation of a valid Insert is an error, never a panic or a wrong row.
        #[test]
        fn truncated_inserts_fail(a in "[a-z]{0,8}", b in proptest::option::of("[ -~]{0,20}"), cut in 0usize..40) {
            let mut d = Decoder::default();
            let _ = d.decode(&relation_msg(1, "s", "t", &["a", "b"]));
            let full = insert_msg(1, &[Some(a.as_bytes()), b.as_deref().map(str::as_bytes)]);
            let decoded = decode_row(&mut d, &full[..cut.min(full.len())]);
            if cut >= full.len() {
                prop_assert_eq!(decoded, Ok(vec![("a".into(), text(&a)), ("b".into(), b.as_deref().and_then(text))]));
            } else {
                prop_assert!(decoded.is_err());
            }
        }
    }
}
