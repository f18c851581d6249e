//! A position in the binlog: the file and offset just past a transaction's last event, and, when
//! the server has GTIDs, the GTID state that includes that transaction.
//!
//! Contract: a position names the end of a whole transaction (or of an event outside every
//! transaction), never the middle of one, so resuming from it reads the next transaction whole.
//! The file+offset is exact on the server it came from; the GTID state also survives a switch to
//! another server of the same replication topology. MariaDB's state is one `domain-server-seq`
//! per replication domain (`@@gtid_binlog_pos`); MySQL's is the executed set, `uuid:interval`
//! lists (`@@gtid_executed`).

use std::collections::BTreeMap;
use std::fmt;

/// Where a binlog reader stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BinlogPosition {
    /// The binlog file, as `SHOW BINARY LOGS` names it.
    pub file: String,
    /// The offset in `file` of the next event to read.
    pub offset: u64,
    /// The GTID state at this position, when the server keeps GTIDs.
    pub gtid: Option<GtidState>,
}

impl fmt::Display for BinlogPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.offset)?;
        match &self.gtid {
            Some(gtid) if !gtid.is_empty() => write!(f, " (gtid {gtid})"),
            _ => Ok(()),
        }
    }
}

/// Stored as `file:offset`, then ` mariadb:<pos>` or ` mysql:<set>` when the position has a GTID
/// state. Ordered by file (its sequence number, the suffix after the last `.`) and offset: the
/// file+offset is what the relay resumes from on the same server; positions of two differently
/// named logs are not comparable.
impl crate::source::StoredPosition for BinlogPosition {
    fn encode(&self) -> String {
        let mut text = format!("{}:{}", self.file, self.offset);
        match &self.gtid {
            Some(GtidState::MariaDb(pos)) => text.push_str(&format!(" mariadb:{pos}")),
            Some(GtidState::MySql(set)) => text.push_str(&format!(" mysql:{set}")),
            None => {}
        }
        text
    }

    fn decode(text: &str) -> Result<BinlogPosition, String> {
        let (place, gtid) = match text.split_once(' ') {
            Some((place, gtid)) => (place, Some(gtid)),
            None => (text, None),
        };
        let (file, offset) = place
            .rsplit_once(':')
            .ok_or_else(|| format!("`{text}` is not a binlog position (`file:offset`)"))?;
        let offset = offset
            .parse()
            .map_err(|_| format!("`{offset}` in `{text}` is not a binlog offset"))?;
        let gtid = match gtid.map(|g| g.split_once(':')) {
            None => None,
            Some(Some(("mariadb", pos))) => Some(GtidState::MariaDb(
                MariaDbGtidPos::parse(pos).map_err(|e| e.to_string())?,
            )),
            Some(Some(("mysql", set))) => Some(GtidState::MySql(
                MySqlGtidSet::parse(set).map_err(|e| e.to_string())?,
            )),
            Some(_) => {
                return Err(format!(
                    "`{text}`: the GTID state is not `mariadb:` or `mysql:`"
                ));
            }
        };
        Ok(BinlogPosition {
            file: file.to_owned(),
            offset,
            gtid,
        })
    }

    fn order(&self, other: &BinlogPosition) -> Option<std::cmp::Ordering> {
        let split = |file: &str| {
            let (base, number) = file.rsplit_once('.')?;
            Some((base.to_owned(), number.parse::<u64>().ok()?))
        };
        if self.file == other.file {
            return Some(self.offset.cmp(&other.offset));
        }
        let ((base, number), (other_base, other_number)) =
            (split(&self.file)?, split(&other.file)?);
        (base == other_base).then(|| (number, self.offset).cmp(&(other_number, other.offset)))
    }
}

/// A server's GTID state, in its own flavour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GtidState {
    MariaDb(MariaDbGtidPos),
    MySql(MySqlGtidSet),
}

impl GtidState {
    pub fn is_empty(&self) -> bool {
        match self {
            GtidState::MariaDb(pos) => pos.domains.is_empty(),
            GtidState::MySql(set) => set.sources.is_empty(),
        }
    }
}

impl fmt::Display for GtidState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GtidState::MariaDb(pos) => pos.fmt(f),
            GtidState::MySql(set) => set.fmt(f),
        }
    }
}

/// A GTID text that is not in the form its server writes, naming the part at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a GTID {flavour}: {problem}")]
pub struct GtidParseError {
    text: String,
    flavour: &'static str,
    problem: String,
}

/// MariaDB's GTID position: per replication domain, the last transaction's server and sequence
/// number (`0-1-100,1-2-7`), as `@@gtid_binlog_pos` and `@slave_connect_state` write it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MariaDbGtidPos {
    /// domain id -> (server id, sequence number)
    domains: BTreeMap<u32, (u32, u64)>,
}

impl MariaDbGtidPos {
    pub fn parse(text: &str) -> Result<MariaDbGtidPos, GtidParseError> {
        let fail = |problem: String| GtidParseError {
            text: text.to_owned(),
            flavour: "position (MariaDB's `domain-server-sequence`, comma-separated)",
            problem,
        };
        let mut domains = BTreeMap::new();
        for gtid in text.split(',').map(str::trim).filter(|g| !g.is_empty()) {
            let parts: Vec<&str> = gtid.split('-').collect();
            let [domain, server, seq] = parts.as_slice() else {
                return Err(fail(format!("`{gtid}` is not three numbers joined by `-`")));
            };
            let number = |part: &str| {
                part.parse::<u64>()
                    .map_err(|_| fail(format!("`{part}` in `{gtid}` is not a number")))
            };
            let domain = u32::try_from(number(domain)?)
                .map_err(|_| fail(format!("domain `{domain}` is out of range")))?;
            let server = u32::try_from(number(server)?)
                .map_err(|_| fail(format!("server id `{server}` is out of range")))?;
            if domains.insert(domain, (server, number(seq)?)).is_some() {
                return Err(fail(format!("domain {domain} appears twice")));
            }
        }
        Ok(MariaDbGtidPos { domains })
    }

    /// Records the transaction `domain-server-seq` as the last one of its domain.
    pub fn apply(&mut self, domain: u32, server: u32, seq: u64) {
        self.domains.insert(domain, (server, seq));
    }
}

impl fmt::Display for MariaDbGtidPos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (domain, (server, seq))) in self.domains.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{domain}-{server}-{seq}")?;
        }
        Ok(())
    }
}

/// MySQL's executed GTID set: per source UUID, the transaction numbers as inclusive intervals
/// (`3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:7`), as `@@gtid_executed` writes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MySqlGtidSet {
    /// source uuid (lower case, hyphenated) -> sorted, disjoint, non-adjacent intervals
    sources: BTreeMap<String, Vec<(u64, u64)>>,
}

impl MySqlGtidSet {
    pub fn parse(text: &str) -> Result<MySqlGtidSet, GtidParseError> {
        let fail = |problem: String| GtidParseError {
            text: text.to_owned(),
            flavour: "set (MySQL's `uuid:start-end`, comma-separated)",
            problem,
        };
        let mut set = MySqlGtidSet::default();
        for member in text.split(',').map(str::trim).filter(|m| !m.is_empty()) {
            let mut parts = member.split(':');
            let uuid = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            if uuid.len() != 36 || !uuid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
                return Err(fail(format!("`{uuid}` is not a server UUID")));
            }
            for interval in parts {
                let (start, end) = interval.split_once('-').unwrap_or((interval, interval));
                let number = |part: &str| {
                    part.trim().parse::<u64>().map_err(|_| {
                        fail(format!(
                            "`{interval}` of `{uuid}` is not an interval of transaction numbers \
                             (tagged GTIDs are not supported)"
                        ))
                    })
                };
                let (start, end) = (number(start)?, number(end)?);
                if start == 0 || end < start {
                    return Err(fail(format!("`{interval}` of `{uuid}` is empty")));
                }
                set.add_interval(&uuid, start, end);
            }
        }
        Ok(set)
    }

    /// Adds the transaction `uuid:gno`.
    pub fn add(&mut self, uuid: &str, gno: u64) {
        self.add_interval(uuid, gno, gno);
    }

    fn add_interval(&mut self, uuid: &str, start: u64, end: u64) {
        let intervals = self.sources.entry(uuid.to_owned()).or_default();
        intervals.push((start, end));
        intervals.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(intervals.len());
        for &(s, e) in intervals.iter() {
            match merged.last_mut() {
                Some(last) if s <= last.1.saturating_add(1) => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        *intervals = merged;
    }

    /// Each source's UUID bytes and its intervals as half-open ranges (the wire form of
    /// `COM_BINLOG_DUMP_GTID`).
    pub fn wire(&self) -> Vec<WireSid> {
        self.sources
            .iter()
            .filter_map(|(uuid, intervals)| {
                let hex: String = uuid.chars().filter(|c| *c != '-').collect();
                let mut bytes = [0u8; 16];
                for (i, byte) in bytes.iter_mut().enumerate() {
                    *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
                }
                let ranges = intervals.iter().map(|&(s, e)| (s, e + 1)).collect();
                Some((bytes, ranges))
            })
            .collect()
    }
}

/// A source UUID's bytes and its half-open transaction-number ranges.
pub type WireSid = ([u8; 16], Vec<(u64, u64)>);

/// The text form of a 16-byte server UUID.
pub fn uuid_text(bytes: [u8; 16]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

impl fmt::Display for MySqlGtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (uuid, intervals)) in self.sources.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(uuid)?;
            for (start, end) in intervals {
                if start == end {
                    write!(f, ":{start}")?;
                } else {
                    write!(f, ":{start}-{end}")?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mariadb_position_round_trips_and_replaces_per_domain() {
        let mut pos = MariaDbGtidPos::parse("0-1-100, 2-5-7").unwrap();
        assert_eq!(pos.to_string(), "0-1-100,2-5-7");
        pos.apply(0, 3, 101);
        pos.apply(1, 1, 1);
        assert_eq!(pos.to_string(), "0-3-101,1-1-1,2-5-7");
        assert_eq!(MariaDbGtidPos::parse("").unwrap().to_string(), "");
    }

    #[test]
    fn mariadb_position_errors_name_the_part() {
        let err = MariaDbGtidPos::parse("0-1-x").unwrap_err().to_string();
        assert!(err.contains("`x` in `0-1-x` is not a number"), "{err}");
        let err = MariaDbGtidPos::parse("0-1").unwrap_err().to_string();
        assert!(err.contains("`0-1` is not three numbers"), "{err}");
        let err = MariaDbGtidPos::parse("0-1-2,0-1-3")
            .unwrap_err()
            .to_string();
        assert!(err.contains("domain 0 appears twice"), "{err}");
    }

    #[test]
    fn mysql_set_merges_intervals_and_round_trips() {
        let text = "3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5:7,\n\
                    4e11fa47-71ca-11e1-9e33-c80aa9429562:2";
        let mut set = MySqlGtidSet::parse(text).unwrap();
        assert_eq!(
            set.to_string(),
            "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:7,4e11fa47-71ca-11e1-9e33-c80aa9429562:2"
        );
        set.add("3e11fa47-71ca-11e1-9e33-c80aa9429562", 6);
        set.add("4e11fa47-71ca-11e1-9e33-c80aa9429562", 4);
        assert_eq!(
            set.to_string(),
            "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-7,4e11fa47-71ca-11e1-9e33-c80aa9429562:2:4"
        );
        let wire = set.wire();
        assert_eq!(wire[0].0[0], 0x3e);
        assert_eq!(wire[0].1, vec![(1, 8)]);
        assert_eq!(uuid_text(wire[0].0), "3e11fa47-71ca-11e1-9e33-c80aa9429562");
    }

    #[test]
    fn mysql_set_refuses_tags_and_bad_uuids() {
        let err = MySqlGtidSet::parse("3e11fa47-71ca-11e1-9e33-c80aa9429562:tag:1-5")
            .unwrap_err()
            .to_string();
        assert!(err.contains("tagged GTIDs are not supported"), "{err}");
        let err = MySqlGtidSet::parse("nope:1").unwrap_err().to_string();
        assert!(err.contains("`nope` is not a server UUID"), "{err}");
    }

    #[test]
    fn display_prefers_file_and_adds_the_gtid() {
        let pos = BinlogPosition {
            file: "mariadb-bin.000003".into(),
            offset: 1234,
            gtid: Some(GtidState::MariaDb(MariaDbGtidPos::parse("0-1-9").unwrap())),
        };
        assert_eq!(pos.to_string(), "mariadb-bin.000003:1234 (gtid 0-1-9)");
    }
}

#[cfg(test)]
mod stored_tests {
    use super::*;
    use crate::source::StoredPosition;
    use std::cmp::Ordering;

    #[test]
    fn stored_form_reads_back_and_orders_by_file_number() {
        let at = |file: &str, offset| BinlogPosition {
            file: file.to_owned(),
            offset,
            gtid: None,
        };
        let mut p = at("mariadb-bin.000009", 420);
        p.gtid = Some(GtidState::MariaDb(
            MariaDbGtidPos::parse("0-1-100,1-2-7").unwrap_or_default(),
        ));
        assert_eq!(BinlogPosition::decode(&p.encode()), Ok(p.clone()));
        assert_eq!(
            at("mariadb-bin.000010", 4).order(&p),
            Some(Ordering::Greater)
        );
        assert_eq!(
            p.order(&at("mariadb-bin.000009", 421)),
            Some(Ordering::Less)
        );
        assert_eq!(p.order(&at("other.000001", 4)), None);
        assert!(BinlogPosition::decode("nonsense").is_err());
    }
}
