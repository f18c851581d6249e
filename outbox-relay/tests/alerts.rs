//! The alerting rules and the Grafana dashboard in `deploy/` (issue 13, part 5): Prometheus'
//! own `promtool check rules` accepts every `deploy/*.yml`, and every metric that a rule or a
//! dashboard panel names is one a live relay serves on `/metrics` (a renamed metric would
//! otherwise leave an alert that can never fire): a `wal` relay's, or a `binlog` relay's for the
//! binlog's own gauges.

mod binlog_support;
mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use binlog_support::{BinlogFixture, config_file, relay as binlog_command};
use common::{Fixture, RelayProcess, create_topics, free_local_addr, http_get};
use outbox_core::WriteMode;
use yaml_rust2::YamlLoader;

/// Series Prometheus records itself for every scrape target, not the relay: `up` says whether
/// the scrape worked (the relay-down alert needs it).
const SCRAPE_SERIES: &[&str] = &["up"];

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// The files of `dir` whose names end with `suffix`, sorted; at least one.
fn files_in(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *{suffix} in {}", dir.display());
    files
}

/// `deploy/*.yml`: the rule files.
fn rule_files() -> Vec<PathBuf> {
    files_in(&deploy_dir(), ".yml")
}

/// `promtool {verb} rules FILES...`, which must succeed; its output.
fn promtool(verb: &str, files: &[PathBuf]) -> String {
    let out = Command::new("promtool")
        .args([verb, "rules"])
        .args(files)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "promtool (Debian's `prometheus` package) cannot run ({e}): run `scripts/services up`"
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool {verb} rules {files:?}:\n{text}"
    );
    text
}

#[test]
fn promtool_accepts_the_rules() {
    let text = promtool("check", &rule_files());
    assert!(text.contains("SUCCESS"), "{text}");
}

/// The rules' own unit tests (`deploy/tests/*.test.yml`): each alert fires when it should, with
/// and without the `source` label, and stays quiet otherwise.
#[test]
fn the_alerts_fire_as_their_unit_tests_say() {
    let text = promtool("test", &files_in(&deploy_dir().join("tests"), ".test.yml"));
    assert!(text.contains("SUCCESS"), "{text}");
}

/// (where, expression) for every rule of `deploy/*.yml` and every panel query of
/// `deploy/*.json`.
fn expressions() -> Vec<(String, String)> {
    let mut found = Vec::new();
    for file in rule_files() {
        let text = std::fs::read_to_string(&file).expect("reading a rule file");
        let docs = YamlLoader::load_from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not YAML: {e}", file.display()));
        for doc in &docs {
            for group in doc["groups"].as_vec().into_iter().flatten() {
                for rule in group["rules"].as_vec().into_iter().flatten() {
                    let name = rule["alert"]
                        .as_str()
                        .or_else(|| rule["record"].as_str())
                        .unwrap_or("?");
                    let expr = rule["expr"].as_str().unwrap_or_else(|| {
                        panic!("{}: rule {name} has no string `expr`", file.display())
                    });
                    found.push((format!("{} rule {name}", file.display()), expr.to_owned()));
                }
            }
        }
    }
    let dir = deploy_dir();
    for entry in std::fs::read_dir(&dir).expect("reading deploy/").flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("reading a dashboard");
        let json: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
        for panel in json["panels"].as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    found.push((
                        format!("{} panel {}", path.display(), panel["title"]),
                        expr.to_owned(),
                    ));
                }
            }
        }
    }
    found
}

/// The metric names a PromQL expression selects: identifiers outside strings, label matchers,
/// ranges and grouping clauses that are neither functions, operators nor keywords.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: &[&str] = &[
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
        "and",
        "or",
        "unless",
        "offset",
        "bool",
        "atan2",
        "inf",
        "nan",
    ];
    const GROUPING: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    // Tokens: identifiers, numbers (with their unit letters: `5m`, `1e9`), and single chars;
    // strings, `{...}` and `[...]` are dropped.
    let mut tokens: Vec<String> = Vec::new();
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '{' || c == '[' {
            let close = if c == '{' { '}' } else { ']' };
            while i < chars.len() && chars[i] != close {
                if chars[i] == '"' {
                    i += 1;
                    while i < chars.len() && chars[i] != '"' {
                        i += if chars[i] == '\\' { 2 } else { 1 };
                    }
                }
                i += 1;
            }
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_:".contains(chars[i])) {
                i += 1;
            }
            tokens.push(chars[start..i].iter().collect());
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else {
            if !c.is_whitespace() {
                tokens.push(c.to_string());
            }
            i += 1;
        }
    }
    let mut names = BTreeSet::new();
    let mut t = 0;
    while t < tokens.len() {
        let token = &tokens[t];
        let next_is_paren = tokens.get(t + 1).is_some_and(|n| n == "(");
        let is_ident = token
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
        if GROUPING.contains(&token.to_lowercase().as_str()) && next_is_paren {
            // Skip the label list.
            while t < tokens.len() && tokens[t] != ")" {
                t += 1;
            }
        } else if is_ident && !next_is_paren && !KEYWORDS.contains(&token.to_lowercase().as_str()) {
            names.insert(token.clone());
        }
        t += 1;
    }
    names
}

#[test]
fn metric_names_are_read_from_promql() {
    let names = metric_names(
        r#"sum by (job, source) (increase(a_total{state="x{y}"}[5m] offset 1h)) > 1e9
           unless on (job) group_left (instance) max without (pod) (b:rec) or c_bucket * 2"#,
    );
    let expected: BTreeSet<String> = ["a_total", "b:rec", "c_bucket"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(names, expected);
}

/// Every metric name of the text exposition (samples, so histograms show `_bucket`, `_count`,
/// `_sum`).
fn served_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// Waits for `addr` to answer `/readyz`, then for `/metrics` to serve a sample of every name in
/// `wanted`; the names it serves.
async fn served_by(addr: &str, wanted: &[&str], log: impl Fn() -> String) -> BTreeSet<String> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if std::net::TcpStream::connect(addr).is_ok() && http_get(addr, "/readyz").0 == 200 {
            let (code, exposition) = http_get(addr, "/metrics");
            assert_eq!(code, 200, "{exposition}");
            let served = served_names(&exposition);
            if wanted.iter().all(|name| served.contains(*name)) {
                return served;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the relay at {addr} never served {wanted:?}:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_rules_and_the_dashboard_name_is_served() {
    let expressions = expressions();
    let fx = Fixture::new("alerts_metrics", WriteMode::Insert).await;
    let addr = free_local_addr();
    let mut relay = fx.start_relay(&["--metrics-listen", &addr]);
    let mut served = served_by(&addr, &["outbox_relay_connected"], || relay.log_text()).await;

    // The binlog source's own gauges, from a binlog relay that has stored a position.
    let binlog = BinlogFixture::new("alerts_binlog").await;
    create_topics(&[
        &format!("{}.Order", binlog.name),
        &format!("{}.dlq", binlog.name),
    ])
    .await;
    let binlog_addr = free_local_addr();
    let config = config_file(&binlog, &format!("[metrics]\nlisten = \"{binlog_addr}\"\n"));
    let setup = binlog_command(&config, "setup")
        .output()
        .expect("running outbox-relay setup");
    assert!(setup.status.success(), "setup: {setup:?}");
    let mut binlog_relay = RelayProcess::spawn(binlog_command(&config, "run"), "alerts-binlog");
    binlog.insert("a", "{}").await;
    served.extend(
        served_by(
            &binlog_addr,
            &["outbox_relay_binlog_position_on_server"],
            || binlog_relay.log_text(),
        )
        .await,
    );
    assert!(
        served.iter().any(|n| n.starts_with("outbox_relay_")),
        "no outbox_relay_ metric served: {served:?}"
    );

    let mut missing = Vec::new();
    for (place, expr) in &expressions {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{place}: `{expr}` names no metric");
        for name in names {
            if !served.contains(&name) && !SCRAPE_SERIES.contains(&name.as_str()) {
                missing.push(format!("{place}: `{name}` (in `{}`)", expr.trim()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "metrics named in deploy/ that the relay does not serve on /metrics:\n{}\n\nserved: {served:?}",
        missing.join("\n")
    );
    relay.terminate(Duration::from_secs(30));
    binlog_relay.terminate(Duration::from_secs(30));
    fx.teardown().await;
}
