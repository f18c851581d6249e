//! Text columns' character sets: how the bytes of a binlog value become the UTF-8 text that
//! `SELECT` shows through a `utf8mb4` connection.
//!
//! Contract:
//! - The binlog carries a text value in its column's own character set, unconverted (a
//!   `latin1` column's `€` is the byte `0x80`). Each character set the relay knows is decoded
//!   as MariaDB/MySQL convert it: `latin1` is Windows-1252 (MariaDB's and MySQL's `latin1`,
//!   not ISO 8859-1), `ucs2` and `utf16` are UTF-16 big-endian, `utf32` is UTF-32 big-endian.
//! - Bytes that are not text in their character set are reported, never replaced.
//! - A character set the relay does not know is [`Charset::of`] `None`: the catalog refuses it,
//!   at start, for a column the relay ships, and keeps the bytes of any other column.

use std::borrow::Cow;

use encoding_rs::Encoding;

/// A character set the relay decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Charset {
    /// `utf8mb4`, `utf8mb3` (`utf8`), `ascii`: UTF-8 as stored, checked.
    Utf8,
    /// `utf32`: four bytes per character, big-endian (not one of the WHATWG encodings).
    Utf32,
    /// The others, by the WHATWG decoder that maps them as the server does.
    Encoded(&'static Encoding),
}

impl Charset {
    /// The decoder of the MariaDB/MySQL character set `name` (`character_set_name`, lower case),
    /// or None for one the relay does not know.
    pub fn of(name: &str) -> Option<Charset> {
        use encoding_rs::*;
        let encoding = match name {
            "utf8mb4" | "utf8mb3" | "utf8" | "ascii" => return Some(Charset::Utf8),
            "utf32" => return Some(Charset::Utf32),
            "latin1" => WINDOWS_1252,
            "latin2" => ISO_8859_2,
            "latin7" => ISO_8859_13,
            "greek" => ISO_8859_7,
            "hebrew" => ISO_8859_8,
            "cp1250" => WINDOWS_1250,
            "cp1251" => WINDOWS_1251,
            "cp1256" => WINDOWS_1256,
            "cp1257" => WINDOWS_1257,
            "cp866" => IBM866,
            "koi8r" => KOI8_R,
            "koi8u" => KOI8_U,
            "macroman" => MACINTOSH,
            "tis620" => WINDOWS_874,
            "sjis" | "cp932" => SHIFT_JIS,
            "ujis" | "eucjpms" => EUC_JP,
            "euckr" => EUC_KR,
            "gb2312" | "gbk" => GBK,
            "gb18030" => GB18030,
            "big5" => BIG5,
            "ucs2" | "utf16" => UTF_16BE,
            "utf16le" => UTF_16LE,
            _ => return None,
        };
        Some(Charset::Encoded(encoding))
    }

    /// `bytes` as text, or the bytes back if they are not text in this character set.
    pub fn decode(self, bytes: Vec<u8>) -> Result<String, Vec<u8>> {
        match self {
            Charset::Utf8 => String::from_utf8(bytes).map_err(|e| e.into_bytes()),
            Charset::Utf32 => {
                let chars: Option<String> = bytes
                    .len()
                    .is_multiple_of(4)
                    .then(|| {
                        bytes
                            .chunks_exact(4)
                            .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                            .collect()
                    })
                    .flatten();
                chars.ok_or(bytes)
            }
            Charset::Encoded(encoding) => {
                match encoding.decode_without_bom_handling_and_without_replacement(&bytes) {
                    Some(Cow::Owned(text)) => Ok(text),
                    // Borrowed: the bytes are their own UTF-8 (ASCII, in the 8-bit sets).
                    Some(Cow::Borrowed(_)) => String::from_utf8(bytes).map_err(|e| e.into_bytes()),
                    None => Err(bytes),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(charset: &str, bytes: &[u8]) -> Result<String, Vec<u8>> {
        Charset::of(charset)
            .unwrap_or_else(|| panic!("{charset} is known"))
            .decode(bytes.to_vec())
    }

    #[test]
    fn each_set_decodes_as_the_server_converts_it() {
        // latin1 is Windows-1252: 0x80 is the euro sign, 0x93/0x94 curly quotes; the five
        // bytes Windows-1252 leaves undefined stay the C1 controls, as in the server's table.
        assert_eq!(text("latin1", b"\x80 \x93a\x94 \xe9"), Ok("€ “a” é".into()));
        assert_eq!(text("latin1", b"\x81\x8d"), Ok("\u{81}\u{8d}".into()));
        assert_eq!(text("cp1251", b"\xcf\xf0\xe8"), Ok("При".into()));
        assert_eq!(text("ucs2", b"\x00h\x20\xac"), Ok("h€".into()));
        assert_eq!(text("utf16", b"\xd8\x3d\xde\x00"), Ok("😀".into()));
        assert_eq!(text("utf16le", b"\x3d\xd8\x00\xde"), Ok("😀".into()));
        assert_eq!(
            text("utf32", b"\x00\x01\xf6\x00\x00\x00\x00\xfc"),
            Ok("😀ü".into())
        );
        assert_eq!(text("sjis", b"\x93\xfa\x96\x7b"), Ok("日本".into()));
        assert_eq!(text("utf8mb3", "é".as_bytes()), Ok("é".into()));
        assert_eq!(text("ascii", b"plain"), Ok("plain".into()));
    }

    #[test]
    fn bytes_that_are_no_text_are_refused_whole() {
        for (charset, bytes) in [
            ("utf8mb4", &b"a\xff"[..]),
            ("utf16", b"\xd8\x3d"),
            ("ucs2", b"\x00"),
            ("utf32", b"\x00\x11\x00\x00"),
            ("utf32", b"\x00\x00\x00"),
            ("sjis", b"\x93"),
        ] {
            assert_eq!(text(charset, bytes), Err(bytes.to_vec()), "{charset}");
        }
    }

    #[test]
    fn unknown_sets_are_none() {
        for name in [
            "armscii8", "dec8", "swe7", "hp8", "keybcs2", "geostd8", "binary",
        ] {
            assert_eq!(Charset::of(name), None, "{name}");
        }
    }
}
