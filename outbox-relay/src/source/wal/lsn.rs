//! The `wal` source's position.

use crate::record::{Origin, OriginValue};

/// A WAL position (PostgreSQL's LSN), shown as PostgreSQL prints it: `X/Y`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl std::fmt::Display for Lsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        OriginValue::Wal(self.0).fmt(f)
    }
}

impl crate::source::StoredPosition for Lsn {
    /// As PostgreSQL prints it: `X/Y`.
    fn encode(&self) -> String {
        self.to_string()
    }

    fn decode(text: &str) -> Result<Lsn, String> {
        Lsn::parse(text).ok_or_else(|| format!("`{text}` is not an LSN (`X/Y`, hexadecimal)"))
    }

    fn order(&self, other: &Lsn) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Lsn {
    /// `X/Y` as PostgreSQL prints an LSN.
    pub fn parse(text: &str) -> Option<Lsn> {
        let (high, low) = text.trim().split_once('/')?;
        let high = u32::from_str_radix(high, 16).ok()?;
        let low = u32::from_str_radix(low, 16).ok()?;
        Some(Lsn((u64::from(high) << 32) | u64::from(low)))
    }

    /// Where an event at this position was read, as its dead letter says.
    pub fn origin(self) -> Origin {
        Origin {
            header: "dlq.source.lsn",
            value: OriginValue::Wal(self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Lsn;

    #[test]
    fn an_origin_shows_the_position_as_postgres_prints_it() {
        for (lsn, shown) in [
            (0x1_0000_00A0, "1/A0"),
            (0, "0/0"),
            (u64::MAX, "FFFFFFFF/FFFFFFFF"),
        ] {
            let origin = Lsn(lsn).origin();
            assert_eq!(origin.header, "dlq.source.lsn");
            assert_eq!(origin.value.to_string(), shown);
            assert_eq!(Lsn(lsn).to_string(), shown);
            assert_eq!(Lsn::parse(shown), Some(Lsn(lsn)));
        }
    }
}
