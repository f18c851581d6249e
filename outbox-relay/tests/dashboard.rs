//! The dashboard (issue 13, part 4) in a real headless browser: Debian's `chromium`, driven over
//! the DevTools protocol. A relay runs on the real PostgreSQL and Kafka and relays events, one of
//! which Kafka refuses (over its topic's `max.message.bytes`) and the relay dead-letters; the
//! page served at `/` shows the events' count, a live events/s chart, the dead letter with its
//! reason, and logs no console error. With `metrics.token` set, every path but the probes answers
//! 401 without the bearer token, and the page works when the token is sent (as a reverse proxy
//! in front of it would).

mod common;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::cdp::browser_protocol::log::{EventEntryAdded, LogEntryLevel};
use chromiumoxide::cdp::browser_protocol::network::{Headers, SetExtraHttpHeadersParams};
use chromiumoxide::cdp::js_protocol::runtime::{
    ConsoleApiCalledType, EventConsoleApiCalled, EventExceptionThrown,
};
use chromiumoxide::page::Page;
use common::*;
use futures_util::StreamExt;
use outbox_core::WriteMode;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(120);

/// Debian's chromium; a missing browser fails the test naming the package.
fn chromium() -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("chromium"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "chromium (Debian's `chromium` package) is not installed: run `scripts/services up`"
            )
        })
}

/// A headless chromium whose page logs are gathered: console errors, uncaught exceptions and
/// the browser's own error entries (a failed load, a Content-Security-Policy refusal).
struct Dashboard {
    browser: Browser,
    handler: tokio::task::JoinHandle<()>,
    page: Page,
    errors: Arc<Mutex<Vec<String>>>,
}

impl Dashboard {
    /// Opens `http://{addr}/`, sending `Authorization: Bearer {token}` with every request.
    async fn open(addr: &str, token: Option<&str>) -> Dashboard {
        let profile = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/chromium"))
            .join(unique("profile"));
        let config = BrowserConfig::builder()
            .chrome_executable(chromium())
            // The tests run as root, where chromium's sandbox cannot start.
            .no_sandbox()
            .user_data_dir(&profile)
            .args(["--disable-gpu", "--disable-dev-shm-usage"])
            .launch_timeout(Duration::from_secs(60))
            .build()
            .unwrap_or_else(|e| panic!("chromium's configuration: {e}"));
        let (browser, mut events) = Browser::launch(config)
            .await
            .unwrap_or_else(|e| panic!("launching chromium: {e}"));
        let handler = tokio::spawn(async move {
            // A message this crate cannot decode is not the page's fault: keep going.
            while events.next().await.is_some() {}
        });
        let page = browser
            .new_page("about:blank")
            .await
            .unwrap_or_else(|e| panic!("opening a tab: {e}"));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let mut console = page
            .event_listener::<EventConsoleApiCalled>()
            .await
            .expect("console listener");
        let mut exceptions = page
            .event_listener::<EventExceptionThrown>()
            .await
            .expect("exception listener");
        let mut log = page
            .event_listener::<EventEntryAdded>()
            .await
            .expect("log listener");
        let sink = errors.clone();
        tokio::spawn(async move {
            while let Some(call) = console.next().await {
                if matches!(
                    call.r#type,
                    ConsoleApiCalledType::Error | ConsoleApiCalledType::Assert
                ) {
                    let args: Vec<String> = call
                        .args
                        .iter()
                        .map(|a| {
                            a.value
                                .as_ref()
                                .map(ToString::to_string)
                                .or_else(|| a.description.clone())
                                .unwrap_or_default()
                        })
                        .collect();
                    push(
                        &sink,
                        format!("console.{:?}: {}", call.r#type, args.join(" ")),
                    );
                }
            }
        });
        let sink = errors.clone();
        tokio::spawn(async move {
            while let Some(thrown) = exceptions.next().await {
                let details = &thrown.exception_details;
                push(
                    &sink,
                    format!(
                        "uncaught: {} {:?} at {:?}:{}",
                        details.text,
                        details
                            .exception
                            .as_ref()
                            .and_then(|e| e.description.clone()),
                        details.url,
                        details.line_number
                    ),
                );
            }
        });
        let sink = errors.clone();
        tokio::spawn(async move {
            while let Some(entry) = log.next().await {
                if matches!(entry.entry.level, LogEntryLevel::Error) {
                    push(
                        &sink,
                        format!("browser log: {} ({:?})", entry.entry.text, entry.entry.url),
                    );
                }
            }
        });
        if let Some(token) = token {
            page.execute(SetExtraHttpHeadersParams::new(Headers::new(
                json!({"Authorization": format!("Bearer {token}")}),
            )))
            .await
            .expect("setting the Authorization header");
        }
        page.goto(format!("http://{addr}/"))
            .await
            .unwrap_or_else(|e| panic!("loading http://{addr}/: {e}"));
        Dashboard {
            browser,
            handler,
            page,
            errors,
        }
    }

    async fn eval<T: serde::de::DeserializeOwned>(&self, js: &str) -> T {
        self.page
            .evaluate(js)
            .await
            .unwrap_or_else(|e| panic!("evaluating `{js}`: {e}"))
            .into_value()
            .unwrap_or_else(|e| panic!("the value of `{js}`: {e}"))
    }

    /// What the page shows: its source cards and dead-letter rows.
    async fn shown(&self) -> serde_json::Value {
        self.eval(
            r##"(() => {
                const text = (root, sel) => { const e = root.querySelector(sel); return e ? e.textContent : null; };
                return {
                  status: text(document, "#status"),
                  sources: [...document.querySelectorAll("article.source")].map(c => ({
                    name: c.dataset.source,
                    state: text(c, ".state"),
                    published: text(c, '[data-metric="published"]'),
                    dead_lettered: text(c, '[data-metric="dead_lettered"]'),
                    rate: text(c, '[data-metric="rate"]'),
                    oldest_pending: text(c, '[data-metric="oldest_pending"]'),
                    retained_wal: text(c, '[data-metric="retained_wal"]'),
                    peak: Number(text(c, ".peak")),
                    chart_points: (c.querySelector("polyline.series").getAttribute("points") || "").trim().split(/\s+/).filter(Boolean).length,
                  })),
                  dead_letters_summary: text(document, "#dead-letters-summary"),
                  dead_letters: [...document.querySelectorAll("#dead-letters tbody tr")].map(r => ({
                    event_id: r.dataset.eventId,
                    cells: [...r.cells].map(c => c.textContent),
                  })),
                };
            })()"##,
        )
        .await
    }

    /// Polls what the page shows until `done` holds, failing after `WAIT` with the last view.
    async fn until(
        &self,
        what: &str,
        done: impl Fn(&serde_json::Value) -> bool,
        log: impl Fn() -> String,
    ) -> serde_json::Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let shown = self.shown().await;
            if done(&shown) {
                return shown;
            }
            assert!(
                Instant::now() < deadline,
                "the dashboard never showed {what}; it shows:\n{shown:#}\nerrors: {:?}\nrelay log:\n{}",
                self.errors(),
                log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn errors(&self) -> Vec<String> {
        self.errors.lock().map(|e| e.clone()).unwrap_or_default()
    }

    async fn close(mut self) {
        let _ = self.browser.close().await;
        let _ = self.browser.wait().await;
        self.handler.abort();
    }
}

fn push(errors: &Mutex<Vec<String>>, error: String) {
    if let Ok(mut errors) = errors.lock() {
        errors.push(error);
    }
}

/// The value of an unlabelled or `source`-labelled sample `name` in `/metrics`, summed.
fn metric(addr: &str, authorization: Option<&str>, name: &str) -> f64 {
    let (code, _, body) = http_get_authorized(addr, "/metrics", authorization);
    assert_eq!(code, 200, "{body}");
    body.lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

async fn until_ready(addr: &str, relay: &mut RelayProcess) {
    let deadline = Instant::now() + WAIT;
    while !(std::net::TcpStream::connect(addr).is_ok()
        && http_get_authorized(addr, "/readyz", None).0 == 200)
    {
        assert!(
            relay.is_running() && Instant::now() < deadline,
            "the relay never became ready:\n{}",
            relay.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writes `count` events, one transaction each, and waits until Kafka has them all.
async fn relay_events(fx: &Fixture, reader: &mut Reader, relay: &RelayProcess, count: usize) {
    let mut ids = std::collections::HashSet::new();
    for n in 0..count {
        let written = fx
            .write(&[event(format!("order-{n}"), json!({"n": n}))])
            .await;
        ids.insert(written[0].id.to_string());
    }
    reader
        .read_until(WAIT, has_all(&ids), || relay.log_text())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_relayed_events_and_dead_letters_without_console_errors() {
    let fx = Fixture::new("dashboard", WriteMode::Insert).await;
    set_max_message_bytes(&fx.topic(), 4000).await;
    let addr = free_local_addr();
    let mut relay = fx.start_relay(&["--metrics-listen", &addr]);
    until_ready(&addr, &mut relay).await;

    let mut topic = Reader::new(&[&fx.topic()]);
    relay_events(&fx, &mut topic, &relay, 12).await;
    // Alone in its transaction, so the dead-letter count is exactly one.
    let big = fx
        .write(&[event("order-big", json!({"blob": "x".repeat(20_000)}))])
        .await;
    let big_id = big[0].id.to_string();
    let mut dead = Reader::new(&[&fx.dlq_topic()]);
    dead.read_until(WAIT, has_all(&[big_id.clone()].into()), || relay.log_text())
        .await;
    // The relay's own count, which the page must show.
    let deadline = Instant::now() + WAIT;
    while metric(&addr, None, "outbox_relay_events_published_total") < 12.0
        || metric(&addr, None, "outbox_relay_events_dead_lettered_total") < 1.0
    {
        assert!(Instant::now() < deadline, "{}", relay.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        metric(&addr, None, "outbox_relay_events_published_total"),
        12.0
    );

    let page = Dashboard::open(&addr, None).await;
    let shown = page
        .until(
            "12 events published, 1 dead letter, and the dead letter's reason",
            |v| {
                v["sources"][0]["published"] == "12"
                    && v["sources"][0]["dead_lettered"] == "1"
                    && v["dead_letters"]
                        .as_array()
                        .is_some_and(|rows| rows.iter().any(|r| r["event_id"] == big_id.as_str()))
            },
            || relay.log_text(),
        )
        .await;
    let card = &shown["sources"][0];
    assert_eq!(
        shown["sources"].as_array().map(Vec::len),
        Some(1),
        "{shown:#}"
    );
    assert_eq!(card["name"], "wal", "{shown:#}");
    assert_eq!(card["state"], "leading", "{shown:#}");
    let row = shown["dead_letters"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["event_id"] == big_id.as_str()))
        .cloned()
        .unwrap_or_default();
    let cells: Vec<String> = row["cells"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_str().map(str::to_lowercase))
        .collect();
    assert!(
        cells.iter().any(|c| c.contains("too large")),
        "the dead letter's reason is not shown: {row:#}"
    );
    assert!(
        cells.iter().any(|c| c == &fx.topic().to_lowercase()),
        "the dead letter's topic is not shown: {row:#}"
    );

    // Live: events relayed while the page is open raise the count and draw the rate.
    relay_events(&fx, &mut topic, &relay, 20).await;
    let shown = page
        .until(
            "32 events published and a non-zero events/s in the chart",
            |v| {
                v["sources"][0]["published"] == "32"
                    && v["sources"][0]["peak"].as_f64().is_some_and(|p| p > 0.0)
                    && v["sources"][0]["chart_points"]
                        .as_u64()
                        .is_some_and(|n| n >= 2)
            },
            || relay.log_text(),
        )
        .await;
    println!("the page shows: {shown:#}");

    // A picture for a person to look at, beside the relay logs.
    if let Ok(png) = page
        .page
        .screenshot(
            chromiumoxide::page::ScreenshotParams::builder()
                .full_page(true)
                .build(),
        )
        .await
    {
        let _ = std::fs::write(relay.log.with_extension("png"), png);
    }
    // Late errors (a poll that failed) have time to show.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let errors = page.errors();
    page.close().await;
    assert!(errors.is_empty(), "the page logged errors: {errors:#?}");
    relay.terminate(Duration::from_secs(30));
    fx.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_every_path_but_the_probes_needs_it() {
    let fx = Fixture::new("dashboard_token", WriteMode::Insert).await;
    let token = format!("t0k-{}", fx.name);
    let token_file = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/relay-logs"))
        .join(format!("{}.token", fx.name));
    std::fs::create_dir_all(token_file.parent().expect("a parent")).expect("target/relay-logs");
    std::fs::write(&token_file, format!("{token}\n")).expect("writing the token file");
    let addr = free_local_addr();
    let mut relay = fx.start_relay(&[
        "--metrics-listen",
        &addr,
        "--metrics-token-file",
        token_file.to_str().expect("a UTF-8 path"),
    ]);
    // The probes answer without it (a kubelet sends no token).
    until_ready(&addr, &mut relay).await;
    assert_eq!(http_get_authorized(&addr, "/livez", None).0, 200);
    assert_eq!(http_get_authorized(&addr, "/healthz", None).0, 200);

    let bearer = format!("Bearer {token}");
    for path in [
        "/",
        "/metrics",
        "/dashboard.js",
        "/api/relay",
        "/api/dead-letters",
        "/nowhere",
    ] {
        for wrong in [None, Some("Bearer wrong"), Some(token.as_str())] {
            let (code, head, body) = http_get_authorized(&addr, path, wrong);
            assert_eq!(code, 401, "{path} with {wrong:?} answered {code}: {body}");
            assert!(
                head.to_lowercase().contains("www-authenticate: bearer"),
                "{path}: {head}"
            );
            assert!(!body.contains("outbox_relay_"), "{path} leaked: {body}");
        }
    }
    let (code, _, body) = http_get_authorized(&addr, "/metrics", Some(&bearer));
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("outbox_relay_events_published_total"),
        "{body}"
    );
    assert_eq!(http_get_authorized(&addr, "/", Some(&bearer)).0, 200);
    assert_eq!(http_get_authorized(&addr, "/nowhere", Some(&bearer)).0, 404);

    // The page works when the token comes with every request, as from a proxy that adds it.
    let mut topic = Reader::new(&[&fx.topic()]);
    relay_events(&fx, &mut topic, &relay, 3).await;
    // `outbox-relay status` reads the running relay's count with the same token.
    let out = fx
        .command("status")
        .args(["--metrics-listen", &addr, "--metrics-token-file"])
        .arg(&token_file)
        .output()
        .expect("outbox-relay status");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.lines().any(|line| line == "published: 3"),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = Dashboard::open(&addr, Some(&token)).await;
    page.until(
        "3 events published",
        |v| v["sources"][0]["published"] == "3",
        || relay.log_text(),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let errors = page.errors();
    page.close().await;
    assert!(errors.is_empty(), "the page logged errors: {errors:#?}");
    relay.terminate(Duration::from_secs(30));
    fx.teardown().await;
}
