//! A decoder for the two pgoutput (protocol 1) messages the outbox needs: `Relation`, which
//! names a table's columns, and `Insert`, a new row in text format. Every other change message
//! (`Update`, `Delete`, `Truncate`, `Type`, `Origin`) is recognised and ignored, which is what
//! makes remove-after-insert work. `Begin`, `Commit` and `Message` are parsed by the transport.
//!
//! The input comes from the network: malformed bytes are an error, never a panic (see the
//! property test below, which feeds it arbitrary bytes).

use std::collections::HashMap;

/// A pgoutput payload the decoder could not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed pgoutput {message}: {problem}")]
pub struct DecodeError {
    message: &'static str,
    problem: &'static str,
}

/// A table the server described with a `Relation` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub schema: String,
    pub name: String,
    pub columns: Vec<String>,
}

/// What one pgoutput change message means to the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A row inserted into `relation`: the column names with their text values (None = NULL or
    /// an unchanged TOAST value, which an INSERT never has).
    Insert {
        relation: u32,
        values: Vec<(String, Option<String>)>,
    },
    /// Anything the outbox ignores (relation metadata included: it is remembered, not returned).
    Ignored,
}

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

    fn cstr(&mut self) -> Result<String, DecodeError> {
        let end = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| self.err("string without terminator"))?;
        let s =
            std::str::from_utf8(&self.buf[..end]).map_err(|_| self.err("string is not UTF-8"))?;
        self.buf = &self.buf[end + 1..];
        Ok(s.to_owned())
    }
}

impl Decoder {
    /// The relation announced under `oid`, if any.
    pub fn relation(&self, oid: u32) -> Option<&Relation> {
        self.relations.get(&oid)
    }

    /// Decodes one pgoutput message.
    pub fn decode(&mut self, data: &[u8]) -> Result<Change, DecodeError> {
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
                    columns.push(r.cstr()?);
                    let _type_oid = r.u32()?;
                    let _type_modifier = r.u32()?;
                }
                self.relations.insert(
                    oid,
                    Relation {
                        schema,
                        name,
                        columns,
                    },
                );
                Ok(Change::Ignored)
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
                let count = usize::from(r.u16()?);
                let relation = self
                    .relations
                    .get(&oid)
                    .ok_or_else(|| r.err("row of a relation never announced"))?;
                if count != relation.columns.len() {
                    return Err(r.err("column count differs from its Relation"));
                }
                let mut values = Vec::with_capacity(count);
                for column in &relation.columns {
                    let value = match r.u8()? {
                        b'n' | b'u' => None,
                        b't' => {
                            let len = r.u32()? as usize;
                            let bytes = r.take(len)?;
                            Some(
                                String::from_utf8(bytes.to_vec())
                                    .map_err(|_| r.err("text value is not UTF-8"))?,
                            )
                        }
                        b'b' => {
                            return Err(
                                r.err("binary values are not supported (leave `binary` off)")
                            );
                        }
                        _ => return Err(r.err("unknown column kind")),
                    };
                    values.push((column.clone(), value));
                }
                Ok(Change::Insert {
                    relation: oid,
                    values,
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
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn relation_msg(oid: u32, schema: &str, name: &str, columns: &[&str]) -> Vec<u8> {
        let mut m = vec![b'R'];
        m.extend(oid.to_be_bytes());
        for s in [schema, name] {
            m.extend(s.as_bytes());
            m.push(0);
        }
        m.push(b'd');
        m.extend((columns.len() as u16).to_be_bytes());
        for c in columns {
            m.push(0);
            m.extend(c.as_bytes());
            m.push(0);
            m.extend(25u32.to_be_bytes());
            m.extend((-1i32).to_be_bytes());
        }
        m
    }

    pub(crate) fn insert_msg(oid: u32, values: &[Option<&str>]) -> Vec<u8> {
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
                    m.extend(v.as_bytes());
                }
            }
        }
        m
    }

    #[test]
    fn relation_then_insert() {
        let mut d = Decoder::default();
        assert_eq!(
            d.decode(&relation_msg(7, "public", "outbox", &["id", "payload"])),
            Ok(Change::Ignored)
        );
        assert_eq!(
            d.decode(&insert_msg(7, &[Some("a"), None])),
            Ok(Change::Insert {
                relation: 7,
                values: vec![("id".into(), Some("a".into())), ("payload".into(), None)]
            })
        );
        assert_eq!(d.relation(7).map(|r| r.name.as_str()), Some("outbox"));
    }

    #[test]
    fn deletes_are_ignored_and_unknown_relations_refused() {
        let mut d = Decoder::default();
        assert_eq!(d.decode(b"D\0\0\0\x07K"), Ok(Change::Ignored));
        assert!(d.decode(&insert_msg(9, &[Some("x")])).is_err());
        assert!(d.decode(b"").is_err());
        assert!(d.decode(b"Z").is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// Arbitrary bytes (after a known relation) never panic the decoder.
        #[test]
        fn arbitrary_input_never_panics(tag in prop::sample::select(vec![b'R', b'I', b'U', b'D', b'X']), body in prop::collection::vec(any::<u8>(), 0..64)) {
            let mut d = Decoder::default();
            let _ = d.decode(&relation_msg(1, "s", "t", &["a", "b"]));
            let mut m = vec![tag];
            m.extend(body);
            let _ = d.decode(&m);
        }

        /// Every truncation of a valid Insert is an error, never a panic or a wrong row.
        #[test]
        fn truncated_inserts_fail(a in "[a-z]{0,8}", b in proptest::option::of("[ -~]{0,20}"), cut in 0usize..40) {
            let mut d = Decoder::default();
            let _ = d.decode(&relation_msg(1, "s", "t", &["a", "b"]));
            let full = insert_msg(1, &[Some(&a), b.as_deref()]);
            let decoded = d.decode(&full[..cut.min(full.len())]);
            if cut >= full.len() {
                prop_assert_eq!(decoded, Ok(Change::Insert { relation: 1, values: vec![("a".into(), Some(a.clone())), ("b".into(), b.clone())] }));
            } else {
                prop_assert!(decoded.is_err());
            }
        }
    }
}
