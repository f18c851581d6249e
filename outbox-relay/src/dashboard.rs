//! The dashboard: a read-only page served on the metrics listener at `/`. The browser draws it
//! from `/metrics` (polled every second: per source the state, events/s as a live chart, the
//! lag, the oldest pending event, the retained WAL) and from `/api/dead-letters`. Every asset is
//! embedded in the binary and the page's Content-Security-Policy allows only this origin, so it
//! loads nothing from elsewhere.
//!
//! Routes besides the probes and `/metrics` (see [`crate::metrics`]): `/` (the page),
//! `/dashboard.js`, `/dashboard.css`, `/favicon.svg`, `/api/relay` (what `/metrics` does not say:
//! the source kind that unlabelled metrics belong to, the dead-letter topic), and
//! `/api/dead-letters` ([`crate::dlq::list`] on the relay's Kafka configuration, the
//! [`MAX_DEAD_LETTERS`] newest, read at most once per [`DEAD_LETTERS_TTL`] whoever asks).
//!
//! Access: with `metrics.token` set, every path but the probes (`/livez`, `/healthz`, `/readyz`)
//! answers 401 unless the request carries `Authorization: Bearer <token>`. Nothing here changes
//! anything: no redrive, no setting.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use subtle::ConstantTimeEq;

use crate::config::{Config, KafkaConfig};
use crate::dlq::{self, DeadLetterEntry, ListFilter};

/// The most dead letters `/api/dead-letters` returns (the newest); the total is reported too.
pub const MAX_DEAD_LETTERS: usize = 100;

/// How long a reading of the dead-letter topic is served again: each reading consumes the whole
/// topic, so page polls and many open pages must not each cause one.
pub const DEAD_LETTERS_TTL: Duration = Duration::from_secs(10);

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const DASHBOARD_JS: &str = include_str!("dashboard/dashboard.js");
const DASHBOARD_CSS: &str = include_str!("dashboard/dashboard.css");
const FAVICON_SVG: &str = include_str!("dashboard/favicon.svg");

/// Only this origin, no inline script or style: the page works with its embedded assets alone.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// The dashboard's state: its settings and the last reading of the dead letters. Cheap to clone.
#[derive(Clone)]
pub struct Dashboard {
    token: Option<Arc<str>>,
    kafka: Arc<KafkaConfig>,
    /// The `source` label the relay's metrics carry, for metrics rendered without one.
    source: String,
    dead_letters: Arc<tokio::sync::Mutex<Option<Reading>>>,
}

/// The last reading of the dead letters: when, and the JSON served.
struct Reading {
    at: Instant,
    body: Arc<Vec<u8>>,
}

/// One HTTP response of the metrics listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status line's code and reason, `200 OK`.
    pub status: &'static str,
    pub content_type: &'static str,
    pub body: Cow<'static, [u8]>,
}

impl Response {
    /// A plain-text response (the probes, the errors).
    pub fn text(status: &'static str, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: Cow::Owned(body.into().into_bytes()),
        }
    }

    /// The Prometheus text exposition.
    pub fn metrics(body: String) -> Response {
        Response {
            status: "200 OK",
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: Cow::Owned(body.into_bytes()),
        }
    }

    /// A request without the bearer token `metrics.token` asks for.
    pub fn unauthorized() -> Response {
        Response::text(
            "401 Unauthorized",
            "unauthorized: this relay's `metrics.token` is set; send `Authorization: Bearer <token>`\n",
        )
    }

    fn asset(content_type: &'static str, body: &'static str) -> Response {
        Response {
            status: "200 OK",
            content_type,
            body: Cow::Borrowed(body.as_bytes()),
        }
    }

    fn json(body: Vec<u8>) -> Response {
        Response {
            status: "200 OK",
            content_type: "application/json",
            body: Cow::Owned(body),
        }
    }

    /// The whole response, head and body; the connection closes after it.
    pub fn into_bytes(self) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.1 {}\r\ncontent-type: {}\r\ncontent-length: {}\r\ncache-control: no-store\r\n\
             x-content-type-options: nosniff\r\ncontent-security-policy: {CONTENT_SECURITY_POLICY}\r\n",
            self.status,
            self.content_type,
            self.body.len()
        );
        if self.status.starts_with("401") {
            head.push_str("www-authenticate: Bearer realm=\"outbox-relay\"\r\n");
        }
        head.push_str("connection: close\r\n\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// What `/api/relay` says.
#[derive(Serialize)]
struct RelayInfo<'a> {
    version: &'static str,
    source: &'a str,
    dead_letter_topic: &'a str,
}

/// What `/api/dead-letters` says: the newest dead letters, or why they could not be read.
#[derive(Serialize)]
struct DeadLetters<'a> {
    topic: &'a str,
    /// How many dead letters the topic holds.
    total: usize,
    dead_letters: &'a [DeadLetterEntry],
    /// Why the topic could not be read (the broker is unreachable, the topic does not exist).
    error: Option<String>,
}

impl Dashboard {
    /// The dashboard of the relay that `config` describes. Warns when the listener is reachable
    /// from other hosts with no token: the dead letters' reasons and topics would be public.
    pub fn new(config: &Config) -> Dashboard {
        let token = config.metrics.token.as_deref().map(Arc::from);
        if let Some(addr) = config.metrics.listen
            && !addr.ip().is_loopback()
            && token.is_none()
        {
            tracing::warn!(
                %addr,
                "`metrics.listen` is not a loopback address and `metrics.token` is unset: anyone \
                 who reaches it reads the metrics, the dashboard and the dead letters"
            );
        }
        Dashboard {
            token,
            kafka: Arc::new(config.kafka.clone()),
            source: clap::ValueEnum::to_possible_value(&config.source.kind)
                .map(|v| v.get_name().to_owned())
                .unwrap_or_default(),
            dead_letters: Arc::default(),
        }
    }

    /// Whether the request whose head is `request` may read past the probes: no token is set, or
    /// it carries `Authorization: Bearer <token>` (compared in constant time).
    pub fn authorized(&self, request: &str) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        request
            .lines()
            .skip(1)
            .take_while(|line| !line.is_empty())
            .filter_map(|line| line.split_once(':'))
            .filter(|(name, _)| name.trim().eq_ignore_ascii_case("authorization"))
            .filter_map(|(_, value)| {
                let (scheme, credentials) = value.trim().split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then(|| credentials.trim())
            })
            .any(|given| bool::from(given.as_bytes().ct_eq(token.as_bytes())))
    }

    /// The answer to a GET of `path` (already authorized), for every path the dashboard owns.
    pub async fn respond(&self, path: &str) -> Response {
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        match path {
            "/" | "/index.html" => Response::asset("text/html; charset=utf-8", INDEX_HTML),
            "/dashboard.js" => Response::asset("text/javascript; charset=utf-8", DASHBOARD_JS),
            "/dashboard.css" => Response::asset("text/css; charset=utf-8", DASHBOARD_CSS),
            "/favicon.svg" | "/favicon.ico" => Response::asset("image/svg+xml", FAVICON_SVG),
            "/api/relay" => Response::json(json_bytes(&RelayInfo {
                version: env!("CARGO_PKG_VERSION"),
                source: &self.source,
                dead_letter_topic: &self.kafka.dead_letter_topic,
            })),
            "/api/dead-letters" => Response::json(self.dead_letters().await.to_vec()),
            _ => Response::text("404 Not Found", "not found\n"),
        }
    }

    /// The dead letters as JSON, read anew when the last reading is older than
    /// [`DEAD_LETTERS_TTL`]; concurrent requests wait for the one reading under way.
    async fn dead_letters(&self) -> Arc<Vec<u8>> {
        let mut cached = self.dead_letters.lock().await;
        if let Some(reading) = cached.as_ref()
            && reading.at.elapsed() < DEAD_LETTERS_TTL
        {
            return reading.body.clone();
        }
        let kafka = self.kafka.clone();
        // `dlq::list` consumes with a blocking client.
        let read =
            tokio::task::spawn_blocking(move || dlq::list(&kafka, &ListFilter::default())).await;
        let topic = &self.kafka.dead_letter_topic;
        let body = match read {
            Ok(Ok(mut entries)) => {
                entries.sort_by_key(|e| std::cmp::Reverse(e.dead_lettered_at_ms));
                json_bytes(&DeadLetters {
                    topic,
                    total: entries.len(),
                    dead_letters: &entries[..entries.len().min(MAX_DEAD_LETTERS)],
                    error: None,
                })
            }
            Ok(Err(error)) => dead_letters_error(topic, error.to_string()),
            Err(join) => dead_letters_error(topic, format!("reading the dead letters: {join}")),
        };
        let body = Arc::new(body);
        *cached = Some(Reading {
            at: Instant::now(),
            body: body.clone(),
        });
        body
    }
}

fn dead_letters_error(topic: &str, error: String) -> Vec<u8> {
    tracing::debug!(%error, "the dashboard could not read the dead letters");
    json_bytes(&DeadLetters {
        topic,
        total: 0,
        dead_letters: &[],
        error: Some(error),
    })
}

fn json_bytes(value: &impl Serialize) -> Vec<u8> {
    // These types hold only strings, numbers and options: serializing them cannot fail.
    serde_json::to_vec(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}").into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dashboard(token: Option<&str>) -> Dashboard {
        let mut config = Config::default();
        config.metrics.token = token.map(str::to_owned);
        Dashboard::new(&config)
    }

    fn head(authorization: Option<&str>) -> String {
        let mut head = "GET / HTTP/1.1\r\nhost: x\r\n".to_owned();
        if let Some(value) = authorization {
            head.push_str(&format!("Authorization: {value}\r\n"));
        }
        head + "\r\n"
    }

    #[test]
    fn bearer_token_is_required_when_set() {
        let open = dashboard(None);
        assert!(open.authorized(&head(None)));
        let closed = dashboard(Some("s3cret"));
        assert!(!closed.authorized(&head(None)));
        assert!(closed.authorized(&head(Some("Bearer s3cret"))));
        assert!(closed.authorized(&head(Some("bearer  s3cret "))));
        assert!(!closed.authorized(&head(Some("Bearer s3cre"))));
        assert!(!closed.authorized(&head(Some("Bearer s3cret2"))));
        assert!(!closed.authorized(&head(Some("Basic s3cret"))));
        // A header in the body (after the blank line) is not a header.
        assert!(!closed.authorized("GET / HTTP/1.1\r\n\r\nAuthorization: Bearer s3cret\r\n"));
    }

    #[tokio::test]
    async fn serves_the_embedded_page_under_a_strict_policy() {
        let d = dashboard(None);
        let page = d.respond("/").await;
        assert_eq!(page.content_type, "text/html; charset=utf-8");
        let html = String::from_utf8_lossy(&page.body).into_owned();
        assert!(html.contains("dashboard.js") && html.contains("dashboard.css"));
        // Nothing from another origin.
        assert!(!html.contains("http://") && !html.contains("https://"));
        assert_eq!(d.respond("/dashboard.js?v=1").await.status, "200 OK");
        assert_eq!(d.respond("/nope").await.status, "404 Not Found");
        let info = d.respond("/api/relay").await;
        let info: serde_json::Value =
            serde_json::from_slice(&info.body).unwrap_or(serde_json::Value::Null);
        assert_eq!(info["source"], "wal");
        let bytes = String::from_utf8_lossy(&Response::unauthorized().into_bytes()).into_owned();
        assert!(
            bytes.starts_with("HTTP/1.1 401 Unauthorized\r\n"),
            "{bytes}"
        );
        assert!(bytes.contains("www-authenticate: Bearer"), "{bytes}");
    }
}
