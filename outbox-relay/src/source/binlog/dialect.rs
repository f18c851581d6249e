//! Where MariaDB and MySQL spell the same binlog fact differently, chosen by the server's
//! `@@version`, never by trying one form and catching the other's error.
//!
//! - The current binlog end: MySQL 8.2 renamed `SHOW MASTER STATUS` to `SHOW BINARY LOG STATUS`
//!   (8.4 removed the old name); MariaDB 10.5.2 added `SHOW BINLOG STATUS` beside the old name.
//!   MySQL's row carries the executed GTID set in its fifth column; MariaDB's has no GTID column,
//!   and its GTID state at a file+offset comes from `BINLOG_GTID_POS(file, offset)`.
//! - The binlog retention: `binlog_expire_logs_seconds` on MySQL 8.0.1+ and MariaDB 10.6.1+,
//!   `expire_logs_days` before.
//! - The heartbeat a replica asks for: MySQL 8.0.26 reads `@source_heartbeat_period` (and the old
//!   `@master_heartbeat_period`); MariaDB reads `@master_heartbeat_period`.

use std::fmt;

/// The server's flavour and version, as its binlog SQL depends on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dialect {
    pub mariadb: bool,
    /// (major, minor, patch); (0, 0, 0) when `@@version` does not start with numbers.
    pub version: (u32, u32, u32),
}

impl Dialect {
    /// The dialect of a server whose `@@version` is `version` (`10.11.6-MariaDB-0+deb12u1`,
    /// `8.4.0`, `8.0.36-0ubuntu0.22.04.1`; a MariaDB handshake's `5.5.5-10.11.6-MariaDB` too).
    pub fn from_version(version: &str) -> Dialect {
        let mariadb = version.to_ascii_lowercase().contains("mariadb");
        // MariaDB prefixes its handshake version with `5.5.5-` for old MySQL clients.
        let text = if mariadb {
            version.strip_prefix("5.5.5-").unwrap_or(version)
        } else {
            version
        };
        let mut numbers = text
            .split(|c: char| !c.is_ascii_digit() && c != '.')
            .next()
            .unwrap_or_default()
            .split('.')
            .map(|n| n.parse::<u32>().unwrap_or(0));
        let mut next = || numbers.next().unwrap_or(0);
        Dialect {
            mariadb,
            version: (next(), next(), next()),
        }
    }

    fn at_least(&self, version: (u32, u32, u32)) -> bool {
        self.version >= version
    }

    /// The statement whose first row is the current binlog file and offset.
    pub fn binlog_status_sql(&self) -> &'static str {
        match self.mariadb {
            true if self.at_least((10, 5, 2)) => "SHOW BINLOG STATUS",
            false if self.at_least((8, 2, 0)) => "SHOW BINARY LOG STATUS",
            _ => "SHOW MASTER STATUS",
        }
    }

    /// The column of [`Self::binlog_status_sql`]'s row holding the executed GTID set: MySQL's
    /// `Executed_Gtid_Set` (MySQL 5.6+); None on MariaDB, which reads it with
    /// [`Self::GTID_AT_SQL`].
    pub fn status_gtid_column(&self) -> Option<usize> {
        (!self.mariadb).then_some(4)
    }

    /// MariaDB's GTID state at a file and offset (its two parameters).
    pub const GTID_AT_SQL: &'static str = "SELECT BINLOG_GTID_POS(?, ?)";

    /// A query of one row, one column: how long the server keeps its binlog, in seconds (0:
    /// forever), and the setting's name.
    pub fn retention_sql(&self) -> (&'static str, &'static str) {
        let seconds = if self.mariadb {
            self.at_least((10, 6, 1))
        } else {
            self.at_least((8, 0, 1))
        };
        if seconds {
            (
                "SELECT CAST(@@GLOBAL.binlog_expire_logs_seconds AS UNSIGNED)",
                "binlog_expire_logs_seconds",
            )
        } else {
            (
                "SELECT CAST(@@GLOBAL.expire_logs_days * 86400 AS UNSIGNED)",
                "expire_logs_days",
            )
        }
    }

    /// The statements that ask the server for a heartbeat every `nanos` on an idle binlog.
    pub fn heartbeat_sql(&self, nanos: u128) -> Vec<String> {
        let mut names = vec!["master_heartbeat_period"];
        if !self.mariadb && self.at_least((8, 0, 26)) {
            names.insert(0, "source_heartbeat_period");
        }
        names
            .into_iter()
            .map(|name| format!("SET @{name} = {nanos}"))
            .collect()
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (major, minor, patch) = self.version;
        let name = if self.mariadb { "MariaDB" } else { "MySQL" };
        write!(f, "{name} {major}.{minor}.{patch}")
    }
}

/// How long a server keeps its binlog, for messages: `binlog_expire_logs_seconds = 86400 (1
/// day)`.
pub fn describe_retention(setting: &str, seconds: u64) -> String {
    if seconds == 0 {
        return format!("{setting} = 0 (binlogs are kept until purged by hand)");
    }
    let value = if setting == "expire_logs_days" {
        seconds / 86_400
    } else {
        seconds
    };
    let human = if seconds.is_multiple_of(86_400) {
        format!("{} day(s)", seconds / 86_400)
    } else if seconds.is_multiple_of(3_600) {
        format!("{} hour(s)", seconds / 3_600)
    } else {
        format!("{seconds} s")
    };
    format!("{setting} = {value} ({human})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_both_flavours() {
        let maria = Dialect::from_version("10.11.6-MariaDB-0+deb12u1");
        assert!(maria.mariadb);
        assert_eq!(maria.version, (10, 11, 6));
        assert_eq!(maria.to_string(), "MariaDB 10.11.6");
        let handshake = Dialect::from_version("5.5.5-10.4.32-MariaDB-log");
        assert_eq!(handshake.version, (10, 4, 32));
        let mysql = Dialect::from_version("8.0.36-0ubuntu0.22.04.1");
        assert!(!mysql.mariadb);
        assert_eq!(mysql.version, (8, 0, 36));
        assert_eq!(Dialect::from_version("8.4.0-commercial").version, (8, 4, 0));
        assert_eq!(Dialect::from_version("9.1").version, (9, 1, 0));
        assert_eq!(Dialect::from_version("unknown").version, (0, 0, 0));
    }

    #[test]
    fn the_binlog_status_statement_follows_the_version() {
        let sql = |v: &str| Dialect::from_version(v).binlog_status_sql();
        assert_eq!(sql("8.0.36"), "SHOW MASTER STATUS");
        assert_eq!(sql("8.2.0"), "SHOW BINARY LOG STATUS");
        assert_eq!(sql("8.4.3"), "SHOW BINARY LOG STATUS");
        assert_eq!(sql("9.1.0"), "SHOW BINARY LOG STATUS");
        assert_eq!(sql("5.7.44-log"), "SHOW MASTER STATUS");
        assert_eq!(sql("10.4.32-MariaDB"), "SHOW MASTER STATUS");
        assert_eq!(sql("10.5.2-MariaDB"), "SHOW BINLOG STATUS");
        assert_eq!(sql("11.4.2-MariaDB-log"), "SHOW BINLOG STATUS");
    }

    #[test]
    fn gtids_come_from_the_status_row_on_mysql_only() {
        assert_eq!(
            Dialect::from_version("8.0.36").status_gtid_column(),
            Some(4)
        );
        assert_eq!(
            Dialect::from_version("10.11.6-MariaDB").status_gtid_column(),
            None
        );
    }

    #[test]
    fn retention_setting_follows_the_version() {
        let name = |v: &str| Dialect::from_version(v).retention_sql().1;
        assert_eq!(name("8.0.36"), "binlog_expire_logs_seconds");
        assert_eq!(name("5.7.44"), "expire_logs_days");
        assert_eq!(name("10.11.6-MariaDB"), "binlog_expire_logs_seconds");
        assert_eq!(name("10.5.9-MariaDB"), "expire_logs_days");
        assert_eq!(
            describe_retention("binlog_expire_logs_seconds", 86_400),
            "binlog_expire_logs_seconds = 86400 (1 day(s))"
        );
        assert_eq!(
            describe_retention("expire_logs_days", 2 * 86_400),
            "expire_logs_days = 2 (2 day(s))"
        );
        assert_eq!(
            describe_retention("binlog_expire_logs_seconds", 7_200),
            "binlog_expire_logs_seconds = 7200 (2 hour(s))"
        );
        assert!(describe_retention("expire_logs_days", 0).contains("kept until purged"));
    }

    #[test]
    fn heartbeat_statements_follow_the_version() {
        let mysql = Dialect::from_version("8.0.36").heartbeat_sql(5);
        assert_eq!(
            mysql,
            [
                "SET @source_heartbeat_period = 5",
                "SET @master_heartbeat_period = 5"
            ]
        );
        assert_eq!(
            Dialect::from_version("10.11.6-MariaDB").heartbeat_sql(5),
            ["SET @master_heartbeat_period = 5"]
        );
        assert_eq!(
            Dialect::from_version("5.7.44").heartbeat_sql(5),
            ["SET @master_heartbeat_period = 5"]
        );
    }
}
