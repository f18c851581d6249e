//! The `wal` source's position.

use crate::record::Origin;

/// A WAL position (PostgreSQL's LSN), shown as PostgreSQL prints it: `X/Y`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl std::fmt::Display for Lsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl Lsn {
    /// Where an event at this position was read, as its dead letter says.
    pub fn origin(self) -> Origin {
        Origin {
            header: "dlq.source.lsn",
            value: self.to_string(),
        }
    }
}
