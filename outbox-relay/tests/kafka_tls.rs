//! The relay against Kafka's SSL and SASL_SSL listeners (the test CA and the SCRAM-SHA-512 user
//! that `scripts/services` makes): events arrive over both, and a wrong password or an
//! untrusted certificate stops the relay at start with the cause named, without retrying.

mod common;

use std::collections::HashSet;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use outbox_core::WriteMode;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(120);
/// The preflight's bound is 15 s; a refusal must end the relay well within it plus start-up.
const REFUSAL_WITHIN: Duration = Duration::from_secs(40);

fn ssl_brokers() -> String {
    service_env("KAFKA_SSL_BROKERS", "Kafka (SSL listener)")
}
fn sasl_brokers() -> String {
    service_env("KAFKA_SASL_BROKERS", "Kafka (SASL_SSL listener)")
}
fn ca() -> String {
    service_env("KAFKA_CA", "the test CA")
}

/// `-X name=value` pairs for librdkafka.
fn properties(pairs: &[(&str, &str)]) -> Vec<String> {
    pairs
        .iter()
        .flat_map(|(k, v)| ["-X".to_owned(), format!("{k}={v}")])
        .collect()
}

/// The SASL password in a file of its own (so that it is on no command line).
fn password_file(name: &str, password: &str) -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/secrets"));
    std::fs::create_dir_all(&dir).expect("creating target/secrets");
    let path = dir.join(format!("{name}.sasl-password"));
    std::fs::write(&path, format!("{password}\n")).expect("writing the password file");
    path
}

/// Spawns `outbox-relay run` with `args`, its stderr in a file for the failure message.
fn spawn_relay(fx: &Fixture, args: &[String], env: &[(&str, &str)]) -> (Child, std::path::PathBuf) {
    let dir =
        std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/relay-logs"));
    std::fs::create_dir_all(&dir).expect("creating target/relay-logs");
    let log = dir.join(format!("{}-tls.log", fx.name));
    let mut command = fx.command("run");
    command
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("creating the relay log"));
    for (k, v) in env {
        command.env(k, v);
    }
    (command.spawn().expect("spawning outbox-relay run"), log)
}

/// Writes 3 transactions over 2 aggregates and reads them back from the PLAINTEXT listener:
/// every event once, each aggregate's in write order.
async fn events_arrive(fx: &Fixture, log: &std::path::Path) {
    let mut expected = Vec::new();
    for batch in 0..3 {
        let events: Vec<_> = (0..4)
            .map(|i| event(format!("agg-{}", i % 2), json!({"batch": batch, "i": i})))
            .collect();
        expected.extend(
            fx.write(&events)
                .await
                .into_iter()
                .map(|e| e.id.to_string()),
        );
    }
    let ids: HashSet<String> = expected.iter().cloned().collect();
    let mut reader = Reader::new(&[&fx.topic()]);
    reader
        .read_until(WAIT, has_all(&ids), || {
            std::fs::read_to_string(log).unwrap_or_default()
        })
        .await;
    assert_eq!(
        reader.messages.len(),
        expected.len(),
        "duplicates or strays"
    );
    for aggregate in ["agg-0", "agg-1"] {
        let mut got: Vec<&common::Received> = reader
            .messages
            .iter()
            .filter(|m| m.key.as_deref() == Some(aggregate))
            .collect();
        got.sort_by_key(|m| m.offset);
        let got: Vec<String> = got.iter().map(|m| m.id()).collect();
        let want: Vec<String> = expected
            .iter()
            .filter(|id| got.contains(id))
            .cloned()
            .collect();
        assert_eq!(got.len(), 6, "{aggregate}: {got:?}");
        assert_eq!(got, want, "{aggregate}: out of write order");
    }
}

/// Waits for the relay to exit by itself; its status and stderr.
fn exits_by_itself(mut child: Child, log: &std::path::Path) -> (Output, Duration) {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("waiting for the relay") {
            let stderr = std::fs::read(log).unwrap_or_default();
            return (
                Output {
                    status,
                    stdout: Vec::new(),
                    stderr,
                },
                start.elapsed(),
            );
        }
        if start.elapsed() > REFUSAL_WITHIN {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the relay still runs after {REFUSAL_WITHIN:?} (retrying a refusal?):\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Over the SSL listener, the broker's certificate verified against the test CA (and its
/// name, librdkafka's default `ssl.endpoint.identification.algorithm=https`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ships_over_ssl_verifying_the_ca() {
    let fx = Fixture::new("kafka_ssl", WriteMode::Insert).await;
    let mut args = vec!["--kafka-brokers".to_owned(), ssl_brokers()];
    args.extend(properties(&[
        ("security.protocol", "SSL"),
        ("ssl.ca.location", &ca()),
        ("ssl.endpoint.identification.algorithm", "https"),
    ]));
    let (mut child, log) = spawn_relay(&fx, &args, &[]);
    events_arrive(&fx, &log).await;
    let _ = child.kill();
    let _ = child.wait();
    fx.teardown().await;
}

/// The relay's arguments for the SASL_SSL listener as the SCRAM-SHA-512 user (the password
/// comes from `KAFKA_SASL_PASSWORD_FILE`).
fn sasl_ssl_args() -> Vec<String> {
    let mut args = vec!["--kafka-brokers".to_owned(), sasl_brokers()];
    args.extend(properties(&[
        ("security.protocol", "SASL_SSL"),
        ("ssl.ca.location", &ca()),
        ("sasl.mechanism", "SCRAM-SHA-512"),
        (
            "sasl.username",
            &service_env("KAFKA_SASL_USER", "Kafka (SASL user)"),
        ),
    ]));
    args
}

/// Over SASL_SSL with the SCRAM-SHA-512 user, the password read from a file
/// (`KAFKA_SASL_PASSWORD_FILE`), so that it is not on the relay's command line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ships_over_sasl_ssl_with_scram_and_a_password_file() {
    let fx = Fixture::new("kafka_sasl", WriteMode::Insert).await;
    let password = service_env("KAFKA_SASL_PASSWORD", "Kafka (SASL user)");
    let file = password_file(&fx.name, &password);
    let args = sasl_ssl_args();
    let file_text = file.display().to_string();
    let (mut child, log) = spawn_relay(&fx, &args, &[("KAFKA_SASL_PASSWORD_FILE", &file_text)]);
    events_arrive(&fx, &log).await;
    // Read once the relay runs (right after the spawn, it may not have exec'd yet).
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", child.id())).unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("SCRAM-SHA-512"),
        "not the relay's command line"
    );
    assert!(
        !String::from_utf8_lossy(&cmdline).contains(&password),
        "the SASL password is on the command line"
    );
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(&password),
        "the SASL password reached the log"
    );
    fx.teardown().await;
}

fn assert_refused(output: &Output, took: Duration, causes: &[&str]) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "the relay exited 0 after {took:?}:\n{stderr}"
    );
    let last = stderr
        .lines()
        .skip_while(|l| !l.starts_with("error:"))
        .collect::<Vec<_>>()
        .join("\n");
    for cause in causes {
        assert!(
            last.contains(cause),
            "the error does not name `{cause}`:\n{stderr}"
        );
    }
}

/// A wrong SASL password is a refusal: the relay stops at start, naming SASL authentication
/// and the settings to check, instead of reconnecting forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_sasl_password_stops_the_relay_at_start() {
    let fx = Fixture::new("kafka_badpw", WriteMode::Insert).await;
    let file = password_file(&fx.name, "not-the-password");
    let args = sasl_ssl_args();
    let file_text = file.display().to_string();
    let (child, log) = spawn_relay(&fx, &args, &[("KAFKA_SASL_PASSWORD_FILE", &file_text)]);
    let (output, took) = exits_by_itself(child, &log);
    assert_refused(
        &output,
        took,
        &["SASL authentication failed", "sasl.password"],
    );
    assert!(!String::from_utf8_lossy(&output.stderr).contains("not-the-password"));
    fx.teardown().await;
}

/// A broker certificate that the configured CA did not issue is a refusal too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_broker_certificate_stops_the_relay_at_start() {
    let fx = Fixture::new("kafka_badca", WriteMode::Insert).await;
    let untrusted = service_env("TLS_UNTRUSTED_CA", "the untrusted test CA");
    let mut args = vec!["--kafka-brokers".to_owned(), ssl_brokers()];
    args.extend(properties(&[
        ("security.protocol", "SSL"),
        ("ssl.ca.location", &untrusted),
    ]));
    let (child, log) = spawn_relay(&fx, &args, &[]);
    let (output, took) = exits_by_itself(child, &log);
    assert_refused(
        &output,
        took,
        &["TLS handshake failed", "ssl.ca.location", "certificate"],
    );
    fx.teardown().await;
}

/// The build has what production needs: librdkafka's `builtin.features` lists TLS, the SASL
/// mechanisms that need no libsasl2, and the compression codecs.
#[test]
fn librdkafka_is_built_with_tls_sasl_and_compression() {
    let producer: rdkafka::producer::BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", "127.0.0.1:1")
        .set("security.protocol", "SASL_SSL")
        .set("sasl.mechanism", "SCRAM-SHA-512")
        .set("sasl.username", "relay")
        .set("sasl.password", "unused")
        .set("compression.type", "zstd")
        .create()
        .unwrap_or_else(|e| panic!("SASL_SSL with SCRAM and zstd are refused by this build: {e}"));
    drop(producer);
    for (mechanism, extra) in [
        ("PLAIN", None),
        ("SCRAM-SHA-256", None),
        (
            "OAUTHBEARER",
            Some(("enable.sasl.oauthbearer.unsecure.jwt", "true")),
        ),
    ] {
        let mut config = rdkafka::ClientConfig::new();
        config
            .set("bootstrap.servers", "127.0.0.1:1")
            .set("security.protocol", "SASL_SSL")
            .set("sasl.mechanism", mechanism)
            .set("sasl.username", "relay")
            .set("sasl.password", "unused")
            .set("compression.type", "lz4");
        if let Some((k, v)) = extra {
            config.set(k, v);
        }
        let created: Result<rdkafka::producer::BaseProducer, _> = config.create();
        assert!(created.is_ok(), "{mechanism}: {:?}", created.err());
    }
}
