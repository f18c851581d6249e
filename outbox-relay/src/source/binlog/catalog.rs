//! What the server and the outbox table must be for the binlog source, checked at start, and
//! how a row event's values become [`ColumnValue`]s.
//!
//! Contract:
//! - The server writes a row-based binlog with full row images (`log_bin`, `binlog_format=ROW`,
//!   `binlog_row_image=FULL`); the relay's user may read it (`REPLICATION SLAVE`, and
//!   `REPLICATION CLIENT`, which MariaDB 10.5+ calls `BINLOG MONITOR`), may `SELECT` the outbox
//!   table, and may read and write its position table. Each thing missing is named with its fix.
//! - The binlog carries no column names: they come from `information_schema.columns`, in
//!   ordinal order. Outbox columns keep the configured spelling (`AggregateId` in the table is
//!   shipped as `aggregateid`), since MariaDB/MySQL column names are case-insensitive.
//! - Text columns (`char`, `varchar`, `*text`, `json`, `enum`, `set`) are text; binary ones
//!   (`binary`, `varbinary`, `*blob`, `bit`, `geometry`) are bytes, shipped as they are; numbers,
//!   dates and times are text as MariaDB/MySQL print them. Text is decoded from its column's
//!   character set (`charset`); a value that is not text in it is reported, never dropped, and a
//!   shipped column in a character set the relay does not know is refused at start.

use mysql_async::Conn;
use mysql_async::Value;
use mysql_async::binlog::events::TableMapEvent;
use mysql_async::binlog::value::BinlogValue;
use mysql_async::consts::ColumnType;
use mysql_async::prelude::Queryable;

use super::charset::Charset;
use super::dialect::Dialect;
use super::store::{self, quote};
use super::{BinlogError, ColumnValue, server_code};

/// What the relay needs to know about the server.
#[derive(Clone, Debug)]
pub(crate) struct Server {
    /// The flavour and version that choose its SQL.
    pub dialect: Dialect,
    /// `@@version`, for messages.
    pub version: String,
    /// MySQL with `gtid_mode=ON` (MariaDB always has GTIDs).
    pub mysql_gtid: bool,
    /// The connection's database: the default schema of the outbox and position tables.
    pub database: String,
}

impl Server {
    pub async fn read(conn: &mut Conn) -> Result<Server, BinlogError> {
        let row: Option<(String, Option<String>)> = conn
            .query_first("SELECT @@version, DATABASE()")
            .await
            .map_err(BinlogError::query("reading the server version"))?;
        let (version, database) = row.unwrap_or_default();
        let dialect = Dialect::from_version(&version);
        let mysql_gtid = if dialect.mariadb {
            false
        } else {
            let mode: Option<String> = conn
                .query_first("SELECT @@gtid_mode")
                .await
                .or_else(|e| match server_code(&e) {
                    // MySQL before 5.6 has no GTIDs.
                    Some(1193) => Ok(None),
                    _ => Err(e),
                })
                .map_err(BinlogError::query("reading @@gtid_mode"))?;
            mode.is_some_and(|m| m.eq_ignore_ascii_case("ON"))
        };
        Ok(Server {
            dialect,
            version,
            mysql_gtid,
            database: database.unwrap_or_default(),
        })
    }
}

/// Checks the server's binlog settings, naming each one that is wrong.
pub(crate) async fn check_settings(conn: &mut Conn) -> Result<(), BinlogError> {
    let row: Option<(Option<String>, Option<String>, Option<String>)> = conn
        .query_first("SELECT CAST(@@GLOBAL.log_bin AS CHAR), @@GLOBAL.binlog_format, @@GLOBAL.binlog_row_image")
        .await
        .map_err(BinlogError::query(
            "reading log_bin, binlog_format, binlog_row_image",
        ))?;
    let (log_bin, format, image) = row.unwrap_or_default();
    if !matches!(log_bin.as_deref(), Some("1" | "ON")) {
        return Err(BinlogError::Setting {
            setting: "log_bin",
            found: log_bin.unwrap_or_else(|| "unset".into()),
            fix: "the server writes no binlog: start it with `log_bin` (and a `server_id`) \
                  set in its configuration, e.g. `[mariadbd] log_bin = mariadb-bin`",
        });
    }
    let format = format.unwrap_or_default();
    if !format.eq_ignore_ascii_case("ROW") {
        return Err(BinlogError::Setting {
            setting: "binlog_format",
            found: format,
            fix: "the binlog source reads row events: set `binlog_format = ROW` in the \
                  server's configuration (and `SET GLOBAL binlog_format = 'ROW'`)",
        });
    }
    // MySQL before 5.6 has no `binlog_row_image` and always logs full rows.
    if let Some(image) = image.filter(|i| !i.eq_ignore_ascii_case("FULL")) {
        return Err(BinlogError::Setting {
            setting: "binlog_row_image",
            found: image,
            fix: "an INSERT must carry every column: set `binlog_row_image = FULL` in the \
                  server's configuration (and `SET GLOBAL binlog_row_image = 'FULL'`)",
        });
    }
    Ok(())
}

/// Checks that the connection's user holds the replication privileges.
pub(crate) async fn check_grants(conn: &mut Conn) -> Result<(), BinlogError> {
    let user: Option<String> = conn
        .query_first("SELECT CURRENT_USER()")
        .await
        .map_err(BinlogError::query("reading CURRENT_USER()"))?;
    let user = user.unwrap_or_default();
    let (name, host) = user.rsplit_once('@').unwrap_or((&user, "%"));
    let grantee = format!("'{name}'@'{host}'");
    let privileges: Vec<String> = conn
        .exec(
            "SELECT privilege_type FROM information_schema.user_privileges WHERE grantee = ?",
            (&grantee,),
        )
        .await
        .map_err(BinlogError::query(
            "reading information_schema.user_privileges",
        ))?;
    let has = |wanted: &[&str]| {
        privileges
            .iter()
            .any(|p| wanted.iter().any(|w| p.eq_ignore_ascii_case(w)))
    };
    let missing = [
        ("REPLICATION SLAVE", &["REPLICATION SLAVE"][..]),
        (
            "REPLICATION CLIENT",
            &["REPLICATION CLIENT", "BINLOG MONITOR", "SUPER"][..],
        ),
    ]
    .into_iter()
    .filter(|(_, accepted)| !has(accepted))
    .map(|(privilege, _)| privilege)
    .collect::<Vec<_>>();
    if missing.is_empty() {
        return Ok(());
    }
    Err(BinlogError::MissingPrivilege {
        grant: format!("GRANT {} ON *.* TO {grantee}", missing.join(", ")),
        what: "reads the binlog as a replica".into(),
        user: grantee,
    })
}

/// One column of the outbox table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Column {
    /// As shipped: the configured spelling for an outbox column, else the table's. Shared by
    /// every record of the table.
    pub name: crate::record::ColumnName,
    /// `information_schema.columns.data_type`, lower case (named in errors).
    pub data_type: String,
    /// Digits of fractional seconds (`datetime(6)`: 6).
    pub fsp: usize,
    /// `character_set_name`; None for binary and non-text columns.
    pub charset: Option<String>,
    /// How its values are shipped: decided once from the catalog, not per value.
    pub kind: Kind,
    /// The class of type a row event's table map gives it; None for a type not classed here
    /// (never a misfit).
    pub class: Option<TypeClass>,
}

/// Classes of column type as a binlog table map and the catalog both give them, coarse enough
/// that versions and spellings agree (`datetime` is `DATETIME2` or `DATETIME`, `json` is
/// MariaDB's `longtext` or MySQL's own). Two classes that differ mean two different columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TypeClass {
    Integer,
    Decimal,
    Float,
    Temporal,
    /// `char`, `varchar`, `binary`, `varbinary`, `enum`, `set`, MariaDB's `uuid` and `inet`s.
    Short,
    /// The `text` and `blob` families (and MariaDB's `json`, a `longtext`).
    Long,
    /// MySQL's binary `json`.
    Json,
    Bit,
    Geometry,
}

impl TypeClass {
    /// The class of a catalog `data_type` (lower case).
    fn of_catalog(data_type: &str) -> Option<TypeClass> {
        Some(match data_type {
            "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "year" => {
                TypeClass::Integer
            }
            "decimal" | "numeric" => TypeClass::Decimal,
            "float" | "double" | "real" => TypeClass::Float,
            "date" | "time" | "datetime" | "timestamp" => TypeClass::Temporal,
            "char" | "varchar" | "binary" | "varbinary" | "enum" | "set" | "uuid" | "inet4"
            | "inet6" => TypeClass::Short,
            "tinytext" | "text" | "mediumtext" | "longtext" | "tinyblob" | "blob"
            | "mediumblob" | "longblob" => TypeClass::Long,
            "json" => TypeClass::Json,
            "bit" => TypeClass::Bit,
            "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring"
            | "multipolygon" | "geometrycollection" => TypeClass::Geometry,
            _ => return None,
        })
    }

    /// The class of a table map's column type.
    fn of_binlog(column_type: ColumnType) -> Option<TypeClass> {
        use ColumnType::*;
        Some(match column_type {
            MYSQL_TYPE_TINY | MYSQL_TYPE_SHORT | MYSQL_TYPE_INT24 | MYSQL_TYPE_LONG
            | MYSQL_TYPE_LONGLONG | MYSQL_TYPE_YEAR => TypeClass::Integer,
            MYSQL_TYPE_DECIMAL | MYSQL_TYPE_NEWDECIMAL => TypeClass::Decimal,
            MYSQL_TYPE_FLOAT | MYSQL_TYPE_DOUBLE => TypeClass::Float,
            MYSQL_TYPE_DATE
            | MYSQL_TYPE_NEWDATE
            | MYSQL_TYPE_TIME
            | MYSQL_TYPE_TIME2
            | MYSQL_TYPE_DATETIME
            | MYSQL_TYPE_DATETIME2
            | MYSQL_TYPE_TIMESTAMP
            | MYSQL_TYPE_TIMESTAMP2 => TypeClass::Temporal,
            MYSQL_TYPE_STRING
            | MYSQL_TYPE_VAR_STRING
            | MYSQL_TYPE_VARCHAR
            | MYSQL_TYPE_ENUM
            | MYSQL_TYPE_SET => TypeClass::Short,
            MYSQL_TYPE_TINY_BLOB
            | MYSQL_TYPE_MEDIUM_BLOB
            | MYSQL_TYPE_LONG_BLOB
            | MYSQL_TYPE_BLOB => TypeClass::Long,
            MYSQL_TYPE_JSON => TypeClass::Json,
            MYSQL_TYPE_BIT => TypeClass::Bit,
            MYSQL_TYPE_GEOMETRY => TypeClass::Geometry,
            _ => return None,
        })
    }
}

/// How a column's binlog values are shipped, by its type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// As the server prints it: numbers, date-times; a value without a character set (MySQL's
    /// `json`) as UTF-8.
    Plain,
    /// Text in its column's character set, decoded to UTF-8.
    Text(Charset),
    /// Text in a character set the relay does not know: refused at start in a column the
    /// relay ships ([`Table::read`]); any other column's bytes are kept as they are.
    UnknownText,
    /// `date`: without a time of day.
    Date,
    /// `timestamp`: Unix seconds in the binlog, shipped in UTC.
    Timestamp,
    /// Bytes as stored. A fixed-width one (`binary(n)`: `n`) gets back the trailing zero
    /// bytes that the binlog drops.
    Binary { width: Option<usize> },
    /// MariaDB's `uuid` (10.7+): 16 bytes, shipped as its text.
    Uuid,
    /// MariaDB's `inet6` (16 bytes) and `inet4` (4): shipped as the address.
    Address { width: usize },
    /// `enum` (the member's number) and `set` (a bit per member): shipped as the labels.
    Labels { members: Vec<String>, set: bool },
}

impl Kind {
    /// The kind of a column of `data_type` (lower case), `column_type` and `charset`.
    fn of(data_type: &str, column_type: &str, charset: Option<&str>) -> Kind {
        match data_type {
            "enum" | "set" => Kind::Labels {
                members: members(column_type),
                set: data_type == "set",
            },
            "timestamp" => Kind::Timestamp,
            "date" => Kind::Date,
            "uuid" => Kind::Uuid,
            "inet6" => Kind::Address { width: 16 },
            "inet4" => Kind::Address { width: 4 },
            // `binary` alone is `binary(1)`.
            "binary" => Kind::Binary {
                width: Some(
                    column_type
                        .split_once('(')
                        .and_then(|(_, n)| n.trim_end_matches(')').trim().parse().ok())
                        .unwrap_or(1),
                ),
            },
            "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" | "bit" | "geometry"
            | "point" | "linestring" | "polygon" => Kind::Binary { width: None },
            _ => match charset {
                None => Kind::Plain,
                Some("binary") => Kind::Binary { width: None },
                Some(name) => Charset::of(name).map_or(Kind::UnknownText, Kind::Text),
            },
        }
    }

    /// The bytes of a fixed-width value, whose trailing zeros the binlog drops.
    fn fixed_width(&self) -> Option<usize> {
        match self {
            Kind::Binary { width } => *width,
            Kind::Uuid => Some(16),
            Kind::Address { width } => Some(*width),
            _ => None,
        }
    }
}

/// The outbox table as the catalog describes it.
#[derive(Clone, Debug)]
pub(crate) struct Table {
    pub schema: String,
    pub name: String,
    pub columns: Vec<Column>,
}

impl Table {
    /// Reads `schema.name`'s columns and checks that `required` are there; `optional` names are
    /// only respelled.
    pub async fn read(
        conn: &mut Conn,
        schema: &str,
        name: &str,
        required: &[String],
        optional: &[&str],
    ) -> Result<Table, BinlogError> {
        let probe = format!("SELECT 1 FROM {}.{} LIMIT 0", quote(schema), quote(name));
        if let Err(e) = conn.query_drop(probe).await {
            return Err(match server_code(&e) {
                Some(1146 | 1049) => BinlogError::NoTable {
                    schema: schema.to_owned(),
                    table: name.to_owned(),
                },
                Some(1142) => BinlogError::MissingPrivilege {
                    user: "the relay's user".into(),
                    what: format!("reads the outbox table `{schema}`.`{name}`"),
                    grant: format!(
                        "GRANT SELECT ON {}.{} TO <user>",
                        quote(schema),
                        quote(name)
                    ),
                },
                _ => BinlogError::query("reading the outbox table")(e),
            });
        }
        let rows: Vec<(String, String, String, Option<String>)> = conn
            .exec(
                "SELECT CAST(column_name AS CHAR), CAST(data_type AS CHAR), \
                 CAST(column_type AS CHAR), CAST(character_set_name AS CHAR) \
                 FROM information_schema.columns \
                 WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
                (schema, name),
            )
            .await
            .map_err(BinlogError::query("reading information_schema.columns"))?;
        let known = required
            .iter()
            .map(String::as_str)
            .chain(optional.iter().copied());
        let known: Vec<&str> = known.collect();
        let columns: Vec<Column> = rows
            .into_iter()
            .map(|(column, data_type, column_type, charset)| {
                let name = known
                    .iter()
                    .find(|k| k.eq_ignore_ascii_case(&column))
                    .map_or(column, |k| (*k).to_owned());
                let data_type = data_type.to_ascii_lowercase();
                let charset = charset.map(|c| c.to_ascii_lowercase());
                Column {
                    name: name.into(),
                    fsp: fractional_digits(&column_type),
                    kind: Kind::of(&data_type, &column_type, charset.as_deref()),
                    class: TypeClass::of_catalog(&data_type),
                    data_type,
                    charset,
                }
            })
            .collect();
        let missing: Vec<&str> = required
            .iter()
            .filter(|r| !columns.iter().any(|c| *c.name == ***r))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(BinlogError::MissingColumns {
                schema: schema.to_owned(),
                table: name.to_owned(),
                missing: missing.join("`, `"),
            });
        }
        // A shipped column in a character set the relay cannot decode: every event would be
        // wrong or a dead letter, and no retry changes that.
        if let Some(column) = columns
            .iter()
            .find(|c| c.kind == Kind::UnknownText && known.contains(&&*c.name))
        {
            return Err(BinlogError::UnknownCharset {
                schema: schema.to_owned(),
                table: name.to_owned(),
                column: column.name.to_string(),
                charset: column.charset.clone().unwrap_or_default(),
            });
        }
        Ok(Table {
            schema: schema.to_owned(),
            name: name.to_owned(),
            columns,
        })
    }
}

/// The column names a table map carries (`binlog_row_metadata = FULL`), in its order; None
/// without them.
pub(crate) fn column_names(map: &TableMapEvent<'_>) -> Option<Vec<String>> {
    use mysql_async::binlog::events::OptionalMetadataField;
    map.iter_optional_meta().find_map(|field| match field {
        Ok(OptionalMetadataField::ColumnName(names)) => names
            .iter_names()
            .map(|name| name.map(|n| n.name().into_owned()))
            .collect::<Result<Vec<_>, _>>()
            .ok(),
        _ => None,
    })
}

impl Table {
    /// The columns of a table map that names them: each the catalog's column of that name
    /// (case-insensitively), or, for a name the catalog no longer has (dropped since the event
    /// was written), one whose bytes are kept and which nothing reads.
    pub fn by_names(&self, names: &[String]) -> Vec<Column> {
        names
            .iter()
            .map(|name| {
                self.columns
                    .iter()
                    .find(|c| c.name.eq_ignore_ascii_case(name))
                    .cloned()
                    .unwrap_or_else(|| Column {
                        name: name.as_str().into(),
                        data_type: "(not in the table now)".into(),
                        fsp: 0,
                        charset: None,
                        kind: Kind::UnknownText,
                        class: None,
                    })
            })
            .collect()
    }

    /// Why a row event's table map does not fit the columns as read, if it does not. The
    /// binlog names no columns, so values are the catalog's columns by position: that holds
    /// only if the event has no more columns than the catalog and each is of the same class of
    /// type (fewer: columns added at the end after it was written). A column dropped or added
    /// before the end since then shifts the rest, which this catches unless every shifted
    /// column is of its neighbour's class.
    pub fn misfit(&self, map: &TableMapEvent<'_>) -> Option<String> {
        let count = map.columns_count();
        if count > self.columns.len() as u64 {
            return Some(format!("{count} columns, the table {}", self.columns.len()));
        }
        self.columns
            .iter()
            .take(count as usize)
            .enumerate()
            .find_map(|(i, column)| {
                let found = map
                    .get_column_type(i)
                    .ok()
                    .flatten()
                    .and_then(TypeClass::of_binlog);
                match (column.class, found) {
                    (Some(want), Some(found)) if want != found => Some(format!(
                        "its column {} is of class {found:?}, where the table has `{}` ({})",
                        i + 1,
                        column.name,
                        column.data_type
                    )),
                    _ => None,
                }
            })
    }
}

/// The members of an `enum('a','b')` or `set(...)` column type, in order: each quoted, a quote
/// within doubled, as MariaDB and MySQL write them in `information_schema.columns.column_type`.
fn members(column_type: &str) -> Vec<String> {
    let list = column_type.split_once('(').map_or("", |(_, list)| list);
    let mut members = Vec::new();
    let mut chars = list.chars().peekable();
    while let Some(c) = chars.next() {
        // Between members: the commas and the closing parenthesis.
        if c != '\'' {
            continue;
        }
        let mut member = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\'' if chars.peek() == Some(&'\'') => {
                    chars.next();
                    member.push('\'');
                }
                '\'' => break,
                c => member.push(c),
            }
        }
        members.push(member);
    }
    members
}

fn fractional_digits(column_type: &str) -> usize {
    let lower = column_type.to_ascii_lowercase();
    if !["datetime", "timestamp", "time"]
        .iter()
        .any(|t| lower.starts_with(t))
    {
        return 0;
    }
    lower
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .and_then(|(digits, _)| digits.trim().parse().ok())
        .unwrap_or(0)
}

/// Checks the position table: there, with its columns, readable and writable.
pub(crate) async fn check_position_table(
    conn: &mut Conn,
    schema: &str,
    table: &str,
) -> Result<(), BinlogError> {
    let qualified = format!("{}.{}", quote(schema), quote(table));
    let columns = store::COLUMNS.map(quote).join(", ");
    let probes = [
        format!("SELECT {columns} FROM {qualified} LIMIT 0"),
        format!(
            "INSERT INTO {qualified} ({columns}) SELECT {columns} FROM {qualified} WHERE 1 = 0 \
             ON DUPLICATE KEY UPDATE `binlog_offset` = VALUES(`binlog_offset`)"
        ),
    ];
    for probe in probes {
        if let Err(e) = conn.query_drop(probe).await {
            return Err(match server_code(&e) {
                Some(1146 | 1049) => BinlogError::NoPositionTable {
                    table: format!("{schema}.{table}"),
                },
                Some(1054) => BinlogError::PositionTableShape {
                    table: format!("{schema}.{table}"),
                    problem: e.to_string(),
                },
                Some(1142) => BinlogError::MissingPrivilege {
                    user: "the relay's user".into(),
                    what: format!("keeps its position in `{schema}`.`{table}`"),
                    grant: format!("GRANT SELECT, INSERT, UPDATE ON {qualified} TO <user>"),
                },
                _ => BinlogError::query("checking the position table")(e),
            });
        }
    }
    Ok(())
}

/// A value as shipped, or why it cannot be read (with its raw bytes, shipped to the dead letters).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    Value(Option<ColumnValue>),
    Unreadable { raw: Vec<u8>, reason: String },
}

impl Column {
    /// The column's value as shipped.
    pub fn decode(&self, value: BinlogValue<'_>) -> Decoded {
        let value = match value {
            BinlogValue::Value(v) => v,
            jsonb @ BinlogValue::Jsonb(_) => match Value::try_from(jsonb) {
                Ok(v) => v,
                Err(e) => {
                    return Decoded::Unreadable {
                        raw: Vec::new(),
                        reason: format!("column `{}`: MySQL JSON value: {e}", self.name),
                    };
                }
            },
            BinlogValue::JsonDiff(_) => {
                return Decoded::Unreadable {
                    raw: Vec::new(),
                    reason: format!(
                        "column `{}`: a partial JSON update, not a row image",
                        self.name
                    ),
                };
            }
        };
        let text = |t: String| Decoded::Value(Some(ColumnValue::Text(t)));
        let value = match (value, self.kind.fixed_width()) {
            (Value::Bytes(mut bytes), Some(width)) if bytes.len() < width => {
                bytes.resize(width, 0);
                Value::Bytes(bytes)
            }
            (value, _) => value,
        };
        match (&self.kind, value) {
            (_, Value::NULL) => Decoded::Value(None),
            (
                Kind::Labels { members, set },
                value @ (Value::Int(_) | Value::UInt(_) | Value::Bytes(_)),
            ) => self.labels(members, *set, value),
            (Kind::Timestamp, Value::Bytes(bytes)) => self.timestamp(bytes),
            (Kind::Timestamp, Value::Int(i)) => self.timestamp(i.to_string().into_bytes()),
            (Kind::Uuid, Value::Bytes(bytes)) => self.uuid(bytes),
            (Kind::Address { .. }, Value::Bytes(bytes)) => self.address(bytes),
            (Kind::Binary { .. } | Kind::UnknownText, Value::Bytes(bytes)) => {
                Decoded::Value(Some(ColumnValue::Bytes(bytes)))
            }
            (kind, Value::Bytes(bytes)) => {
                let charset = match kind {
                    Kind::Text(charset) => *charset,
                    _ => Charset::Utf8,
                };
                match charset.decode(bytes) {
                    Ok(t) => text(t),
                    Err(raw) => Decoded::Unreadable {
                        reason: format!(
                            "column `{}` holds bytes that are not {} text",
                            self.name,
                            self.charset.as_deref().unwrap_or("UTF-8")
                        ),
                        raw,
                    },
                }
            }
            (_, Value::Int(i)) => text(i.to_string()),
            (_, Value::UInt(u)) => text(u.to_string()),
            (_, Value::Float(f)) => text(f.to_string()),
            (_, Value::Double(d)) => text(d.to_string()),
            (Kind::Date, Value::Date(y, mo, d, ..)) => text(format!("{y:04}-{mo:02}-{d:02}")),
            (_, Value::Date(y, mo, d, h, mi, s, us)) => text(format!(
                "{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}{}",
                self.fraction(us)
            )),
            (_, Value::Time(negative, days, h, mi, s, us)) => text(format!(
                "{}{:02}:{mi:02}:{s:02}{}",
                if negative { "-" } else { "" },
                u64::from(days) * 24 + u64::from(h),
                self.fraction(us)
            )),
        }
    }

    fn fraction(&self, micros: u32) -> String {
        if self.fsp == 0 {
            return String::new();
        }
        let digits = format!("{micros:06}");
        format!(".{}", &digits[..self.fsp.min(6)])
    }

    /// MariaDB's `UUID` (10.7+) arrives as its 16 bytes in the order of its text (the binlog of
    /// MariaDB 10.11 carries a time-based id in that order too, though the server may store it
    /// with its groups reversed); shipped as the text the server shows.
    fn uuid(&self, bytes: Vec<u8>) -> Decoded {
        match uuid::Uuid::from_slice(&bytes) {
            Ok(uuid) => Decoded::Value(Some(ColumnValue::Text(uuid.hyphenated().to_string()))),
            Err(_) => Decoded::Unreadable {
                reason: format!(
                    "column `{}` (uuid): {} bytes, not the 16 of a UUID",
                    self.name,
                    bytes.len()
                ),
                raw: bytes,
            },
        }
    }

    /// An `enum`'s member number (1 for the first; 0 for the empty string the server stores
    /// for a value it could not take) or a `set`'s bits (little-endian, a bit per member), as
    /// the labels the server shows (a set's joined by commas).
    fn labels(&self, members: &[String], set: bool, value: Value) -> Decoded {
        let number = match value {
            Value::Int(i) => u64::try_from(i).ok(),
            Value::UInt(u) => Some(u),
            Value::Bytes(ref bytes) if bytes.len() <= 8 => Some(
                bytes
                    .iter()
                    .rev()
                    .fold(0u64, |n, &b| (n << 8) | u64::from(b)),
            ),
            _ => None,
        };
        let label = number.and_then(|n| {
            if set {
                // No bit past the last member.
                let beyond = u32::try_from(members.len()).unwrap_or(u32::MAX);
                (n.checked_shr(beyond).unwrap_or(0) == 0).then(|| {
                    members
                        .iter()
                        .enumerate()
                        .filter(|(bit, _)| n & (1 << bit) != 0)
                        .map(|(_, member)| member.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                })
            } else if n == 0 {
                Some(String::new())
            } else {
                usize::try_from(n - 1)
                    .ok()
                    .and_then(|i| members.get(i).cloned())
            }
        });
        match label {
            Some(label) => Decoded::Value(Some(ColumnValue::Text(label))),
            None => Decoded::Unreadable {
                reason: format!(
                    "column `{}` ({}): {value:?} names no member of {:?}",
                    self.name, self.data_type, members
                ),
                raw: Vec::new(),
            },
        }
    }

    /// MariaDB's `INET6` (10.5+) and `INET4` (10.10+) arrive as the address's bytes in network
    /// order; shipped as the text the server shows.
    fn address(&self, bytes: Vec<u8>) -> Decoded {
        let text = if let Ok(v6) = <[u8; 16]>::try_from(bytes.as_slice()) {
            std::net::Ipv6Addr::from(v6).to_string()
        } else if let Ok(v4) = <[u8; 4]>::try_from(bytes.as_slice()) {
            std::net::Ipv4Addr::from(v4).to_string()
        } else {
            return Decoded::Unreadable {
                reason: format!(
                    "column `{}` ({}): {} bytes, not an address",
                    self.name,
                    self.data_type,
                    bytes.len()
                ),
                raw: bytes,
            };
        };
        Decoded::Value(Some(ColumnValue::Text(text)))
    }

    /// A `timestamp` arrives as Unix seconds (`1700000000.123456`); shipped in UTC as
    /// `YYYY-MM-DD HH:MM:SS[.ffffff]`, as the server prints it with `time_zone = '+00:00'`.
    fn timestamp(&self, bytes: Vec<u8>) -> Decoded {
        let parsed = std::str::from_utf8(&bytes).ok().and_then(|t| {
            let (secs, micros) = t.split_once('.').unwrap_or((t, "0"));
            let micros = format!("{micros:0<6}");
            Some((
                secs.parse::<i64>().ok()?,
                micros.get(..6)?.parse::<u32>().ok()?,
            ))
        });
        let Some(at) =
            parsed.and_then(|(secs, micros)| chrono::DateTime::from_timestamp(secs, micros * 1000))
        else {
            return Decoded::Unreadable {
                reason: format!("column `{}`: not a timestamp", self.name),
                raw: bytes,
            };
        };
        let micros = at.timestamp_subsec_micros();
        Decoded::Value(Some(ColumnValue::Text(format!(
            "{}{}",
            at.format("%Y-%m-%d %H:%M:%S"),
            self.fraction(micros)
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(data_type: &str, fsp: usize, charset: Option<&str>) -> Column {
        Column {
            name: "c".into(),
            data_type: data_type.into(),
            fsp,
            charset: charset.map(str::to_owned),
            kind: Kind::of(data_type, data_type, charset),
            class: TypeClass::of_catalog(data_type),
        }
    }

    #[test]
    fn enum_and_set_values_are_their_labels() {
        assert_eq!(
            members("enum('Order','it''s','a,b')"),
            ["Order", "it's", "a,b"]
        );
        assert_eq!(members("set('x')"), ["x"]);
        let kind = Column {
            kind: Kind::of("enum", "enum('Order','Customer')", None),
            ..column("enum", 0, None)
        };
        assert_eq!(
            kind.decode(BinlogValue::Value(Value::Int(2))),
            text("Customer")
        );
        assert_eq!(kind.decode(BinlogValue::Value(Value::Int(0))), text(""));
        assert!(matches!(
            kind.decode(BinlogValue::Value(Value::Int(3))),
            Decoded::Unreadable { .. }
        ));
        let flags = Column {
            kind: Kind::of("set", "set('a','b','c','d','e','f','g','h','i')", None),
            ..column("set", 0, None)
        };
        assert_eq!(
            flags.decode(BinlogValue::Value(Value::Bytes(vec![0x02, 0x01]))),
            text("b,i")
        );
        assert_eq!(
            flags.decode(BinlogValue::Value(Value::Bytes(vec![0, 0]))),
            text("")
        );
        assert!(matches!(
            flags.decode(BinlogValue::Value(Value::Bytes(vec![0, 0x02]))),
            Decoded::Unreadable { .. }
        ));
    }

    #[test]
    fn fixed_width_binary_values_get_their_trailing_zeros_back() {
        let binary = Column {
            kind: Kind::of("binary", "binary(4)", None),
            ..column("binary", 0, None)
        };
        assert_eq!(
            binary.decode(BinlogValue::Value(Value::Bytes(vec![7]))),
            Decoded::Value(Some(ColumnValue::Bytes(vec![7, 0, 0, 0])))
        );
        assert_eq!(Kind::of("binary", "binary", None).fixed_width(), Some(1));
        assert_eq!(
            Kind::of("varbinary", "varbinary(16)", None).fixed_width(),
            None
        );
    }

    #[test]
    fn a_mariadb_uuid_as_the_server_prints_it() {
        let uuid = column("uuid", 0, None);
        // Versions 7 and 1 (the server's own `UUID()`) come in the order of their text; the nil
        // UUID comes without its zeros, which the binlog drops.
        for (bytes, shown) in [
            (
                "0192f1c47b3a7def8a11223344556677",
                "0192f1c4-7b3a-7def-8a11-223344556677",
            ),
            (
                "6ccd780cbaba102695645b8c60246024",
                "6ccd780c-baba-1026-9564-5b8c60246024",
            ),
            ("", "00000000-0000-0000-0000-000000000000"),
        ] {
            let bytes: Vec<u8> = (0..bytes.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&bytes[i..i + 2], 16).expect("hex"))
                .collect();
            assert_eq!(
                uuid.decode(BinlogValue::Value(Value::Bytes(bytes))),
                text(shown)
            );
        }
    }

    fn text(t: &str) -> Decoded {
        Decoded::Value(Some(ColumnValue::Text(t.into())))
    }

    #[test]
    fn text_binary_and_null() {
        let varchar = column("varchar", 0, Some("utf8mb4"));
        assert_eq!(
            varchar.decode(BinlogValue::Value(Value::Bytes(b"a\xc3\xa9".to_vec()))),
            text("aé")
        );
        assert_eq!(
            varchar.decode(BinlogValue::Value(Value::NULL)),
            Decoded::Value(None)
        );
        let blob = column("blob", 0, None);
        assert_eq!(
            blob.decode(BinlogValue::Value(Value::Bytes(vec![0xff, 0]))),
            Decoded::Value(Some(ColumnValue::Bytes(vec![0xff, 0])))
        );
        let latin1 = column("varchar", 0, Some("latin1"));
        assert_eq!(
            latin1.decode(BinlogValue::Value(Value::Bytes(vec![0xe9]))),
            text("é")
        );
    }

    #[test]
    fn invalid_utf8_is_unreadable_with_its_bytes() {
        let varchar = column("longtext", 0, Some("utf8mb4"));
        match varchar.decode(BinlogValue::Value(Value::Bytes(vec![b'a', 0xff]))) {
            Decoded::Unreadable { raw, reason } => {
                assert_eq!(raw, vec![b'a', 0xff]);
                assert!(
                    reason.contains("column `c` holds bytes that are not utf8mb4 text"),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
        // A column in a set the relay does not know (refused at start if shipped) keeps its
        // bytes, so an unshipped one never makes the event unreadable.
        let armscii8 = column("varchar", 0, Some("armscii8"));
        assert_eq!(
            armscii8.decode(BinlogValue::Value(Value::Bytes(vec![0xb2, 0xff]))),
            Decoded::Value(Some(ColumnValue::Bytes(vec![0xb2, 0xff])))
        );
    }

    #[test]
    fn numbers_dates_and_timestamps_as_the_server_prints_them() {
        assert_eq!(
            column("bigint", 0, None).decode(BinlogValue::Value(Value::Int(-3))),
            text("-3")
        );
        let datetime6 = column("datetime", 6, None);
        assert_eq!(
            datetime6.decode(BinlogValue::Value(Value::Date(2026, 11, 28, 23, 5, 9, 42))),
            text("2026-11-28 23:05:09.000042")
        );
        assert_eq!(
            column("datetime", 0, None)
                .decode(BinlogValue::Value(Value::Date(2026, 1, 2, 3, 4, 5, 0))),
            text("2026-01-02 03:04:05")
        );
        let ts3 = column("timestamp", 3, None);
        assert_eq!(
            ts3.decode(BinlogValue::Value(Value::Bytes(
                b"1700000000.123456".to_vec()
            ))),
            text("2023-11-14 22:13:20.123")
        );
        assert_eq!(
            column("timestamp", 0, None).decode(BinlogValue::Value(Value::Int(0))),
            text("1970-01-01 00:00:00")
        );
        assert_eq!(fractional_digits("datetime(6)"), 6);
        assert_eq!(fractional_digits("varchar(6)"), 0);
    }
}
