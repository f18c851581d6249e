//! Database connection URLs: one parser per kind, used by every connection the relay makes.
//!
//! - PostgreSQL ([`PgTarget`]): `postgres://` and `postgresql://` URLs as libpq and sqlx take
//!   them: user and password in the authority or as `?user=` / `?password=`, `?host=` and
//!   `?port=` overriding the authority, IPv6 hosts in brackets (`[::1]`), a Unix socket as a
//!   host that is a directory (`?host=/var/run/postgresql`, or `%2F...` in the authority), and
//!   TLS with libpq's `sslmode` (`disable`, `allow`, `prefer`, `require`, `verify-ca`,
//!   `verify-full`), `sslrootcert`, `sslcert` and `sslkey`. The same target drives the
//!   replication connection (pgwire-replication) and the SQL pool (sqlx, through sea-orm), so
//!   both reach the same server the same way.
//! - MariaDB/MySQL ([`MySqlTarget`]): `mysql://` and `mariadb://` URLs with sqlx's `ssl-mode`
//!   (`DISABLED`, `PREFERRED`, `REQUIRED`, `VERIFY_CA`, `VERIFY_IDENTITY`, or the libpq names),
//!   `ssl-ca`, `ssl-cert`, `ssl-key`, `socket` and `?password=`.
//! - SQLite URLs pass through to sea-orm unchanged.
//!
//! Every secret a URL can carry (the password in the authority, any query parameter whose name
//! says `password` or `secret`) is removed by [`redact`], which every log of a URL goes through.

use std::fmt;
use std::path::PathBuf;

use pgwire_replication::{SslMode, TlsConfig};
use sea_orm::ConnectOptions;
use sea_orm::sqlx::mysql::{MySqlConnectOptions, MySqlSslMode};
use sea_orm::sqlx::postgres::{PgConnectOptions, PgSslMode};

/// A connection URL the relay cannot use, naming what is wrong with it. The message never
/// holds the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`database_url`: {0}")]
pub struct UrlError(pub String);

fn bad(message: impl Into<String>) -> UrlError {
    UrlError(message.into())
}

/// Whether a replication connection failed its TLS setup in a way no reconnect fixes: a
/// certificate the configured CA does not vouch for (or for another host), a server without
/// TLS under `sslmode=require` or stricter, unreadable certificate files. A handshake cut by
/// the network is transient.
pub fn is_tls_refusal(error: &pgwire_replication::PgWireError) -> bool {
    if !error.is_tls() {
        return false;
    }
    let text = error.to_string();
    ["certificate", "config error", "does not support TLS", "SNI"]
        .iter()
        .any(|cause| text.contains(cause))
}

/// libpq's `sslmode`. `allow` is taken as `prefer` (TLS first, plain if the server has none),
/// which is what the replication transport offers; both accept any certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PgSsl {
    Disable,
    /// libpq's default.
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// TLS settings of a PostgreSQL connection.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PgTls {
    pub mode: PgSsl,
    /// `sslrootcert`: the CA certificates (PEM) the server's certificate must chain to.
    pub root_cert: Option<PathBuf>,
    /// `sslcert` and `sslkey`: a client certificate and its key (PEM), both or neither.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// Where and how to connect to PostgreSQL, from a `postgres://` URL.
#[derive(Clone, PartialEq, Eq)]
pub struct PgTarget {
    /// A host name, an IP address (IPv6 without brackets), or a Unix socket directory
    /// (starting with `/`).
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub database: String,
    pub tls: PgTls,
}

impl fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}@{}:{}/{} (sslmode {:?})",
            self.user, self.host, self.port, self.database, self.tls.mode
        )
    }
}

/// The query parameters and authority of a URL, percent-decoded.
struct UrlParts {
    url: url::Url,
    query: Vec<(String, String)>,
}

impl UrlParts {
    fn parse(text: &str, schemes: &[&str]) -> Result<UrlParts, UrlError> {
        // The url crate's error never quotes the input, so it cannot leak the password.
        let url = url::Url::parse(text).map_err(|e| bad(format!("not a URL: {e}")))?;
        if !schemes.contains(&url.scheme()) {
            return Err(bad(format!(
                "scheme `{}` is not {}",
                url.scheme(),
                schemes
                    .iter()
                    .map(|s| format!("{s}://"))
                    .collect::<Vec<_>>()
                    .join(" or ")
            )));
        }
        let query = url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        Ok(UrlParts { url, query })
    }

    /// The last value of the first of `names` that is present (libpq: a later value wins).
    fn param(&self, names: &[&str]) -> Option<&str> {
        self.query
            .iter()
            .rev()
            .find(|(k, _)| names.contains(&k.as_str()))
            .map(|(_, v)| v.as_str())
    }

    fn host(&self) -> Option<String> {
        match self.url.host()? {
            url::Host::Ipv6(address) => Some(address.to_string()),
            url::Host::Ipv4(address) => Some(address.to_string()),
            url::Host::Domain(name) => Some(decode(name)).filter(|h| !h.is_empty()),
        }
    }

    fn port(&self, default: u16) -> Result<u16, UrlError> {
        match self.param(&["port"]) {
            Some(port) => port
                .parse()
                .map_err(|_| bad(format!("port `{port}` is not a port number"))),
            None => Ok(self.url.port().unwrap_or(default)),
        }
    }

    fn user(&self) -> String {
        self.param(&["user"])
            .map(str::to_owned)
            .unwrap_or_else(|| decode(self.url.username()))
    }

    fn password(&self) -> String {
        self.param(&["password"])
            .map(str::to_owned)
            .or_else(|| self.url.password().map(decode))
            .unwrap_or_default()
    }

    fn database(&self, names: &[&str]) -> String {
        self.param(names)
            .map(str::to_owned)
            .unwrap_or_else(|| decode(self.url.path().trim_start_matches('/')))
    }

    fn path(&self, names: &[&str]) -> Option<PathBuf> {
        self.param(names)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
    }
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

impl PgTarget {
    /// Parses a `postgres://` URL (see the module's documentation for what it understands).
    pub fn parse(database_url: &str) -> Result<PgTarget, UrlError> {
        let parts = UrlParts::parse(database_url, &["postgres", "postgresql"])?;
        let mode = match parts.param(&["sslmode", "ssl-mode"]) {
            None => PgSsl::default(),
            Some(mode) => match mode.to_ascii_lowercase().as_str() {
                "disable" => PgSsl::Disable,
                "allow" | "prefer" => PgSsl::Prefer,
                "require" => PgSsl::Require,
                "verify-ca" => PgSsl::VerifyCa,
                "verify-full" => PgSsl::VerifyFull,
                _ => {
                    return Err(bad(format!(
                        "sslmode={mode} is not one of disable, allow, prefer, require, \
                         verify-ca, verify-full"
                    )));
                }
            },
        };
        let tls = PgTls {
            mode,
            root_cert: parts.path(&["sslrootcert", "ssl-root-cert", "ssl-ca"]),
            client_cert: parts.path(&["sslcert", "ssl-cert"]),
            client_key: parts.path(&["sslkey", "ssl-key"]),
        };
        if tls.client_cert.is_some() != tls.client_key.is_some() {
            return Err(bad("sslcert and sslkey go together: give both or neither"));
        }
        let host = parts
            .param(&["host"])
            .map(str::to_owned)
            .or_else(|| parts.host())
            .unwrap_or_else(|| "localhost".to_owned());
        let database = parts.database(&["dbname"]);
        if database.is_empty() {
            return Err(bad("names no database"));
        }
        Ok(PgTarget {
            port: parts.port(5432)?,
            user: parts.user(),
            password: parts.password(),
            database,
            host,
            tls,
        })
    }

    /// Whether the host is a Unix socket directory.
    pub fn is_unix_socket(&self) -> bool {
        self.host.starts_with('/')
    }

    /// The replication connection's TLS settings. TLS over a Unix socket is neither possible
    /// nor needed; libpq ignores `sslmode` there too.
    pub fn replication_tls(&self) -> TlsConfig {
        if self.is_unix_socket() {
            return TlsConfig::disabled();
        }
        let mut tls = TlsConfig {
            mode: match self.tls.mode {
                PgSsl::Disable => SslMode::Disable,
                PgSsl::Prefer => SslMode::Prefer,
                PgSsl::Require => SslMode::Require,
                PgSsl::VerifyCa => SslMode::VerifyCa,
                PgSsl::VerifyFull => SslMode::VerifyFull,
            },
            ca_pem_path: self.tls.root_cert.clone(),
            ..TlsConfig::default()
        };
        if self.tls.mode == PgSsl::VerifyFull && self.host.parse::<std::net::IpAddr>().is_ok() {
            // libpq checks an IP host against the certificate's IP addresses; the transport
            // does so when the address is given as the name to verify.
            tls = tls.with_sni_hostname(self.host.clone());
        }
        if let (Some(cert), Some(key)) = (&self.tls.client_cert, &self.tls.client_key) {
            tls = tls.with_client_cert(cert.clone(), key.clone());
        }
        tls
    }

    /// sqlx's options for this target: every field set from here, so that sqlx's own reading
    /// of the URL cannot differ from the replication connection's.
    pub fn sqlx_options(&self, options: PgConnectOptions) -> PgConnectOptions {
        let mut options = if self.is_unix_socket() {
            options.socket(&self.host)
        } else {
            options.host(&self.host)
        }
        .port(self.port)
        .username(&self.user)
        .password(&self.password)
        .database(&self.database)
        .ssl_mode(match self.tls.mode {
            PgSsl::Disable => PgSslMode::Disable,
            PgSsl::Prefer => PgSslMode::Prefer,
            PgSsl::Require => PgSslMode::Require,
            PgSsl::VerifyCa => PgSslMode::VerifyCa,
            PgSsl::VerifyFull => PgSslMode::VerifyFull,
        });
        if let Some(root) = &self.tls.root_cert {
            options = options.ssl_root_cert(root);
        }
        if let (Some(cert), Some(key)) = (&self.tls.client_cert, &self.tls.client_key) {
            options = options.ssl_client_cert(cert).ssl_client_key(key);
        }
        options
    }
}

/// Where and how to connect to MariaDB or MySQL, from a `mysql://` URL.
#[derive(Clone)]
pub struct MySqlTarget {
    /// A host name or IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// `?socket=`: a Unix socket file, used instead of host and port.
    pub socket: Option<PathBuf>,
    pub user: String,
    pub password: String,
    pub database: String,
    pub ssl_mode: MySqlSslMode,
    pub ssl_ca: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

impl fmt::Debug for MySqlTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}@{}:{}/{} (ssl-mode {:?})",
            self.user, self.host, self.port, self.database, self.ssl_mode
        )
    }
}

impl MySqlTarget {
    /// Parses a `mysql://` (or `mariadb://`) URL.
    pub fn parse(database_url: &str) -> Result<MySqlTarget, UrlError> {
        let parts = UrlParts::parse(database_url, &["mysql", "mariadb"])?;
        let ssl_mode = match parts.param(&["ssl-mode", "sslmode"]) {
            None => MySqlSslMode::default(),
            Some(mode) => match mode.to_ascii_lowercase().replace('_', "-").as_str() {
                "disabled" | "disable" => MySqlSslMode::Disabled,
                "preferred" | "prefer" | "allow" => MySqlSslMode::Preferred,
                "required" | "require" => MySqlSslMode::Required,
                "verify-ca" => MySqlSslMode::VerifyCa,
                "verify-identity" | "verify-full" => MySqlSslMode::VerifyIdentity,
                _ => {
                    return Err(bad(format!(
                        "ssl-mode={mode} is not one of DISABLED, PREFERRED, REQUIRED, \
                         VERIFY_CA, VERIFY_IDENTITY"
                    )));
                }
            },
        };
        let client_cert = parts.path(&["ssl-cert", "sslcert"]);
        let client_key = parts.path(&["ssl-key", "sslkey"]);
        if client_cert.is_some() != client_key.is_some() {
            return Err(bad(
                "ssl-cert and ssl-key go together: give both or neither",
            ));
        }
        Ok(MySqlTarget {
            host: parts
                .param(&["host"])
                .map(str::to_owned)
                .or_else(|| parts.host())
                .unwrap_or_else(|| "localhost".to_owned()),
            port: parts.port(3306)?,
            socket: parts.path(&["socket"]),
            user: parts.user(),
            password: parts.password(),
            database: parts.database(&["database", "dbname"]),
            ssl_mode,
            ssl_ca: parts.path(&["ssl-ca", "sslrootcert"]),
            client_cert,
            client_key,
        })
    }

    /// sqlx's options for this target, every field set from here.
    pub fn sqlx_options(&self, options: MySqlConnectOptions) -> MySqlConnectOptions {
        let mut options = options
            .host(&self.host)
            .port(self.port)
            .username(&self.user)
            .password(&self.password)
            .ssl_mode(self.ssl_mode);
        if !self.database.is_empty() {
            options = options.database(&self.database);
        }
        if let Some(socket) = &self.socket {
            options = options.socket(socket);
        }
        if let Some(ca) = &self.ssl_ca {
            options = options.ssl_ca(ca);
        }
        if let (Some(cert), Some(key)) = (&self.client_cert, &self.client_key) {
            options = options.ssl_client_cert(cert).ssl_client_key(key);
        }
        options
    }
}

/// The rows sqlx's SQLite worker may hand over before it waits for the relay: room for the
/// largest `poll` batch (`config::MAX_BATCH_SIZE`, which a `const` assertion there holds).
pub const SQLITE_ROW_BUFFER: usize = 10_000;

/// sea-orm's options for `database_url`, with the URL read by this module's parser for
/// PostgreSQL and MariaDB/MySQL (SQLite URLs pass through). Every SQL connection of the relay
/// is made from these.
pub fn connect_options(database_url: &str) -> Result<ConnectOptions, UrlError> {
    let mut options = ConnectOptions::new(database_url.to_owned());
    let scheme = database_url.split_once("://").map_or("", |(s, _)| s);
    match scheme {
        "postgres" | "postgresql" => {
            let target = PgTarget::parse(database_url)?;
            options.map_sqlx_postgres_opts(move |o| target.sqlx_options(o));
        }
        "mysql" | "mariadb" => {
            let target = MySqlTarget::parse(database_url)?;
            options.map_sqlx_mysql_opts(move |o| target.sqlx_options(o));
        }
        "sqlite" => {
            // sqlx reads SQLite on a worker thread and hands each row to the caller through a
            // channel of 50 rows by default: a 4,000-row claim then stops the worker about 80
            // times, each a thread switch. Room for a whole batch made the `poll` drain 1.1x
            // faster, its claim a fifth shorter (BENCHMARKS.md, round 2, part 15). It bounds
            // no memory that the claim would not hold anyway: its rows are collected whole.
            options.map_sqlx_sqlite_opts(|o| o.row_buffer_size(SQLITE_ROW_BUFFER));
        }
        other => {
            return Err(bad(format!(
                "scheme `{other}` is not postgres://, mysql:// or sqlite://"
            )));
        }
    }
    Ok(options)
}

/// Whether a query parameter holds a secret.
fn is_secret_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.contains("password") || name.contains("secret") || name.contains("token")
}

/// `url` with every secret replaced by `<redacted>`: the password of the authority and every
/// query parameter whose name says password, secret or token (`?password=`, `sslpassword=`).
/// A string that is not a URL is not shown at all: it may be a secret itself.
pub fn redact(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return "<redacted: not a URL>".to_owned();
    };
    if parsed.password().is_some() && parsed.set_password(Some("<redacted>")).is_err() {
        return "<redacted>".to_owned();
    }
    if parsed.query().is_some() {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if is_secret_param(&k) {
                    "<redacted>".to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    // The url crate percent-encodes the marker; show it as written.
    parsed
        .to_string()
        .replace("%3Credacted%3E", "<redacted>")
        .replace("%3Credacted%3A+not+a+URL%3E", "<redacted>")
}

/// Whether a PostgreSQL error is a mistake that no retry can fix, by its SQLSTATE: refused
/// credentials (class 28), a missing database (3D000) or schema (3F000), a missing or forbidden
/// object such as a table, slot or publication (class 42), an unsupported feature (class 0A), or
/// a server not set up for it (55000: `wal_level` is not `logical`, an invalidated slot). Every
/// other code, a busy slot (55006) and a restarting server (class 57) among them, may pass.
pub fn sqlstate_is_permanent(code: &str) -> bool {
    matches!(code.get(..2), Some("28" | "42" | "0A")) || matches!(code, "3D000" | "3F000" | "55000")
}

/// Whether a failed catalog query may pass on a retry: a network fault, a busy pool or a server
/// error whose SQLSTATE is not [`sqlstate_is_permanent`].
pub fn sqlx_error_is_transient(error: &sea_orm::sqlx::Error) -> bool {
    use sea_orm::sqlx::Error;
    match error {
        Error::Database(e) => e.code().is_none_or(|code| !sqlstate_is_permanent(&code)),
        // A certificate the configured CA does not vouch for (rustls reports it as invalid
        // data) is refused for good; a connection cut or refused by the network is not.
        Error::Io(e) => {
            !(e.kind() == std::io::ErrorKind::InvalidData && e.to_string().contains("certificate"))
        }
        Error::PoolTimedOut | Error::PoolClosed | Error::WorkerCrashed | Error::Protocol(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg(url: &str) -> PgTarget {
        PgTarget::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    #[test]
    fn authority_and_percent_decoding() {
        let t = pg("postgres://out%40box:p%3Ass@db.local:6543/app");
        assert_eq!(
            (
                t.user.as_str(),
                t.password.as_str(),
                t.host.as_str(),
                t.port,
                t.database.as_str()
            ),
            ("out@box", "p:ss", "db.local", 6543, "app")
        );
        assert_eq!(t.tls.mode, PgSsl::Prefer);
        assert!(!format!("{t:?}").contains("p:ss"));
    }

    #[test]
    fn query_parameters_override_the_authority() {
        let t = pg(
            "postgresql://u@ignored:1/ignored?host=db2&port=7000&password=s%26cret\
             &dbname=real&user=v",
        );
        assert_eq!(
            (
                t.host.as_str(),
                t.port,
                t.password.as_str(),
                t.database.as_str(),
                t.user.as_str()
            ),
            ("db2", 7000, "s&cret", "real", "v")
        );
    }

    #[test]
    fn ipv6_and_unix_sockets() {
        let t = pg("postgres://u:p@[::1]:5433/db");
        assert_eq!((t.host.as_str(), t.port), ("::1", 5433));
        let t = pg("postgres://u@%2Fvar%2Frun%2Fpostgresql/db");
        assert!(t.is_unix_socket(), "{t:?}");
        assert_eq!(t.host, "/var/run/postgresql");
        let t = pg("postgres:///db?host=/tmp/pg&sslmode=verify-full");
        assert_eq!(t.host, "/tmp/pg");
        assert_eq!(t.replication_tls().mode, SslMode::Disable);
    }

    #[test]
    fn sslmodes_and_certificates() {
        let t = pg(
            "postgres://u@127.0.0.1/db?sslmode=verify-full&sslrootcert=/ca.pem\
             &sslcert=/c.pem&sslkey=/k.pem",
        );
        assert_eq!(t.tls.mode, PgSsl::VerifyFull);
        let tls = t.replication_tls();
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(tls.ca_pem_path, Some(PathBuf::from("/ca.pem")));
        // An IP host is verified against the certificate's IP addresses.
        assert_eq!(tls.sni_hostname.as_deref(), Some("127.0.0.1"));
        assert!(tls.is_mtls());
        for (mode, want) in [
            ("disable", PgSsl::Disable),
            ("allow", PgSsl::Prefer),
            ("prefer", PgSsl::Prefer),
            ("require", PgSsl::Require),
            ("verify-ca", PgSsl::VerifyCa),
        ] {
            assert_eq!(pg(&format!("postgres://h/d?sslmode={mode}")).tls.mode, want);
        }
        let e = PgTarget::parse("postgres://h/d?sslmode=on").err();
        assert!(e.is_some_and(|e| e.to_string().contains("sslmode=on")));
        let e = PgTarget::parse("postgres://h/d?sslcert=/c.pem").err();
        assert!(e.is_some_and(|e| e.to_string().contains("sslkey")));
    }

    #[test]
    fn bad_urls_are_named() {
        let e = PgTarget::parse("mysql://x/y").err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.starts_with("`database_url`")));
        let e = PgTarget::parse("postgres://x/")
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("no database")));
        let e = PgTarget::parse("postgres://u:hunter2@x:99999/d")
            .err()
            .map(|e| e.to_string());
        assert!(
            e.as_deref().is_some_and(|e| !e.contains("hunter2")),
            "{e:?}"
        );
        assert!(connect_options("redis://x").is_err());
    }

    #[test]
    fn mysql_urls() {
        let t = MySqlTarget::parse(
            "mysql://u:p%40ss@[::1]:3307/app?ssl-mode=VERIFY_IDENTITY&ssl-ca=/ca.pem",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (
                t.host.as_str(),
                t.port,
                t.password.as_str(),
                t.database.as_str()
            ),
            ("::1", 3307, "p@ss", "app")
        );
        assert!(matches!(t.ssl_mode, MySqlSslMode::VerifyIdentity));
        let t = MySqlTarget::parse("mariadb://u@h/d?sslmode=verify-ca&password=x")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(t.ssl_mode, MySqlSslMode::VerifyCa));
        assert_eq!(t.password, "x");
        assert!(MySqlTarget::parse("mysql://h/d?ssl-mode=sometimes").is_err());
    }

    #[test]
    fn every_secret_form_is_redacted() {
        for url in [
            "postgres://user:hunter2@host/db",
            "postgres://user@host/db?password=hunter2",
            "postgres://user@host/db?sslmode=require&sslpassword=hunter2&application_name=x",
            "mysql://user:hunter2@[::1]:3306/db?ssl-mode=REQUIRED",
            "postgres://user:hunter2@host/db?PASSWORD=hunter2",
        ] {
            let shown = redact(url);
            assert!(!shown.contains("hunter2"), "{url} -> {shown}");
            assert!(shown.contains("<redacted>"), "{url} -> {shown}");
        }
        assert_eq!(
            redact("postgres://user@host/db?sslmode=verify-full"),
            "postgres://user@host/db?sslmode=verify-full"
        );
        assert!(!redact("user=x password=hunter2").contains("hunter2"));
    }
}
