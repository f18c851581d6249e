//! `outbox-relay`: `setup`, `teardown`, `run`, `status` and `dlq` for one outbox.
//!
//! Errors are printed with their causes and the config key at fault; the exit code is 2 for a
//! configuration error, 1 for any other failure, 0 after a graceful stop (SIGTERM/SIGINT).

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use outbox_relay::config::{Config, ConfigError, Delivery, Overrides};
use outbox_relay::{Metrics, Relay, admin, dlq};

/// Relays committed outbox events from PostgreSQL's log to Kafka (Debezium-compatible format).
#[derive(Debug, Parser)]
#[command(name = "outbox-relay", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the publication and the logical replication slot (idempotent).
    Setup(Overrides),
    /// Drop the slot and the publication.
    Teardown(Overrides),
    /// Relay events until SIGTERM or SIGINT.
    Run(Overrides),
    /// The relay's state, last error and counts (from a running relay at `metrics.listen`) and
    /// the source's facts read from its server: the slot, the polled table, or the binlog.
    Status(StatusArgs),
    /// List the dead letters, or publish them again to their original topics.
    #[command(subcommand)]
    Dlq(DlqCommand),
}

#[derive(Debug, clap::Args)]
struct StatusArgs {
    #[command(flatten)]
    overrides: Overrides,
    /// One JSON object instead of `key: value` lines.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// The dead letters: event id, reason, original topic, source position and age.
    List(DlqList),
    /// Publish dead letters again to their original topic (original key, value and headers).
    /// A re-driven dead letter is recorded in `<dead-letter topic>.redriven` and is not sent
    /// again unless `--force`.
    Redrive(DlqRedrive),
}

#[derive(Debug, clap::Args)]
struct DlqList {
    #[command(flatten)]
    overrides: Overrides,
    /// Only dead letters whose reason contains this text (case-insensitive).
    #[arg(long)]
    reason: Option<String>,
    /// Only dead letters at most this old, such as `1h`.
    #[arg(long, value_parser = parse_duration)]
    newer_than: Option<Duration>,
    /// Only dead letters at least this old, such as `10m`.
    #[arg(long, value_parser = parse_duration)]
    older_than: Option<Duration>,
    /// One JSON array instead of lines of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct DlqRedrive {
    #[command(flatten)]
    overrides: Overrides,
    /// The event id (`id` header) of a dead letter to re-drive; repeatable.
    #[arg(long = "id", required_unless_present = "all", conflicts_with = "all")]
    ids: Vec<String>,
    /// Every dead letter.
    #[arg(long)]
    all: bool,
    /// Show what would be sent; send nothing.
    #[arg(long)]
    dry_run: bool,
    /// Send dead letters that were re-driven before again.
    #[arg(long)]
    force: bool,
    /// One JSON array instead of lines of text.
    #[arg(long)]
    json: bool,
}

/// One glibc malloc arena for the whole process, unless the operator chose a number
/// (`MALLOC_ARENA_MAX`, or `glibc.malloc.arena_max` in `GLIBC_TUNABLES`). librdkafka's threads
/// free what the relay's thread allocated and allocate their own request buffers; with an arena
/// each they grow heaps of their own. Measured (BENCHMARKS.md, round 2, part 5): over five
/// 1M-event `wal` drains each, peak RSS 29.9 MB against 35.1 MB (medians), relay CPU and
/// throughput equal within the noise.
fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let chosen = std::env::var_os("MALLOC_ARENA_MAX").is_some()
            || std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("arena_max"));
        if !chosen {
            // SAFETY: `mallopt` only sets a parameter of glibc's allocator (M_ARENA_MAX is one
            // of its documented ones); it runs here before the relay starts any thread.
            unsafe {
                libc::mallopt(libc::M_ARENA_MAX, 1);
            }
        }
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime_serde::re::humantime::parse_duration(text).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    one_malloc_arena();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    // One thread runs the relay: the replication reader, the session loop and the servers.
    // Measured (BENCHMARKS.md "Runtime and allocator"): against tokio's multi-thread runtime a
    // 1M-event drain costs about a third less relay CPU and memory, since each event no longer
    // crosses from the reader's worker thread to the loop's. Blocking Kafka calls go to
    // `spawn_blocking`, so they never hold this thread.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(&e),
    };
    runtime.block_on(async move {
        // First thing for `run`, before the configuration is read: see `Shutdown`.
        let shutdown = matches!(cli.command, Command::Run(_))
            .then(Shutdown::install)
            .flatten();
        let (overrides, command) = match &cli.command {
            Command::Setup(o) => (o, "setup"),
            Command::Teardown(o) => (o, "teardown"),
            Command::Run(o) => (o, "run"),
            Command::Status(s) => (&s.overrides, "status"),
            Command::Dlq(DlqCommand::List(l)) => (&l.overrides, "dlq"),
            Command::Dlq(DlqCommand::Redrive(r)) => (&r.overrides, "dlq"),
        };
        let config = match load(overrides, command) {
            Ok(config) => config,
            Err(e) => {
                eprintln!("error: configuration: {e}");
                return ExitCode::from(2);
            }
        };
        tracing::debug!(?config, "configuration");
        // `setup --delivery exactly-once` also creates the offsets topic.
        let offsets = (matches!(cli.command, Command::Setup(_))
            && config.delivery == Delivery::ExactlyOnce)
            .then(|| config.clone());
        let result: Result<(), Box<dyn std::error::Error>> = match cli.command {
            Command::Dlq(command) => dlq_command(&config, command).await,
            Command::Run(_) => run(config, shutdown).await,
            Command::Status(s) => status(&config, s.json).await,
            // `--source poll`: the polling source has its own setup and teardown.
            _ if config.source.kind == outbox_relay::config::SourceKind::Poll => {
                poll_command(config, command).await
            }
            // `--source binlog`: the position table, and the checks `run` makes.
            Command::Setup(_) if config.source.kind == outbox_relay::config::SourceKind::Binlog => {
                outbox_relay::source::binlog::setup(&config)
                    .await
                    .map(|done| println!("{done}"))
                    .map_err(Into::into)
            }
            Command::Setup(_) => admin::setup(&config).await.map_err(Into::into).map(|()| {
                println!(
                    "publication {:?} and slot {:?} are ready",
                    config.source.publication, config.source.slot
                );
            }),
            Command::Teardown(_) => admin::teardown(&config).await.map_err(Into::into),
        };
        let result = match result {
            Ok(()) => match &offsets {
                Some(config) => offsets_setup(config).await,
                None => Ok(()),
            },
            other => other,
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e.as_ref()),
        }
    })
}

fn load(overrides: &Overrides, command: &str) -> Result<Config, ConfigError> {
    let mut config = outbox_relay::load::load(overrides);
    // The dead letters are in Kafka alone.
    if command == "dlq"
        && let Err(ConfigError::Invalid {
            key: "database_url",
            ..
        }) = config
    {
        let mut o = overrides.clone();
        o.database_url = Some("postgres://unused/unused".into());
        config = outbox_relay::load::load(&o);
    }
    // Admin commands need no Kafka.
    if command != "run"
        && command != "dlq"
        && let Err(ConfigError::Invalid {
            key: "kafka.brokers",
            ..
        }) = config
    {
        let mut o = overrides.clone();
        o.kafka_brokers = Some("unused".into());
        config = outbox_relay::load::load(&o);
    }
    config
}

fn fail(error: &dyn std::error::Error) -> ExitCode {
    let mut message = format!("error: {error}");
    let mut source = error.source();
    while let Some(cause) = source {
        // Many errors already print their cause; show each text once.
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(&format!("\n  caused by: {text}"));
        }
        source = cause.source();
    }
    if message.contains("replication slot") && message.contains("does not exist") {
        message.push_str("\n  hint: create the slot and the publication with `outbox-relay setup`");
    }
    eprintln!("{message}");
    ExitCode::FAILURE
}

/// `setup --delivery exactly-once`: the compacted offsets topic.
async fn offsets_setup(config: &Config) -> Result<(), Box<dyn std::error::Error>> {
    if config.kafka.brokers.as_deref() == Some("unused") {
        return Err(
            "`setup --delivery exactly-once` creates the offsets topic in Kafka: set \
                    `kafka.brokers` (KAFKA_BROKERS / --kafka-brokers)"
                .into(),
        );
    }
    let created = outbox_relay::exactly_once::create_offsets_topic(&config.kafka).await?;
    println!(
        "offsets topic {:?} {} (compacted); transactional id {:?}",
        config.kafka.offsets_topic,
        if created { "created" } else { "is there" },
        config.transactional_id()
    );
    Ok(())
}

/// `outbox-relay status [--json]`: see [`outbox_relay::inspect::status`].
async fn status(config: &Config, json: bool) -> Result<(), Box<dyn std::error::Error>> {
    let status = outbox_relay::inspect::status(config).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        for line in status.lines() {
            println!("{line}");
        }
    }
    Ok(())
}

async fn dlq_command(
    config: &Config,
    command: DlqCommand,
) -> Result<(), Box<dyn std::error::Error>> {
    match command {
        DlqCommand::List(l) => {
            let filter = dlq::ListFilter {
                reason: l.reason,
                newer_than: l.newer_than,
                older_than: l.older_than,
            };
            let entries = dlq::list(&config.kafka, &filter)?;
            if l.json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
            } else {
                for e in &entries {
                    println!(
                        "{}\tid={}\tage={}s\ttopic={}\tposition={}\t{}reason={}",
                        e.dead_letter,
                        e.event_id.as_deref().unwrap_or("-"),
                        e.age_seconds
                            .map_or_else(|| "?".to_owned(), |a| a.to_string()),
                        e.original_topic,
                        e.source_position.as_deref().unwrap_or("-"),
                        if e.redriven { "redriven\t" } else { "" },
                        e.reason
                    );
                }
                println!("{} dead letter(s)", entries.len());
            }
        }
        DlqCommand::Redrive(r) => {
            let selection = if r.all {
                dlq::Selection::All
            } else {
                dlq::Selection::Ids(r.ids)
            };
            let report = dlq::redrive(&config.kafka, &selection, r.dry_run, r.force).await?;
            if r.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                for line in &report {
                    let outcome = match &line.outcome {
                        dlq::Outcome::Redriven => "re-driven".to_owned(),
                        dlq::Outcome::WouldRedrive => "would be re-driven (dry run)".to_owned(),
                        dlq::Outcome::AlreadyRedriven => {
                            "already re-driven (use --force to send it again)".to_owned()
                        }
                        dlq::Outcome::NotRedrivable(why) => format!("not re-driven: {why}"),
                    };
                    println!(
                        "{}\tid={}\ttopic={}\t{outcome}",
                        line.dead_letter,
                        line.event_id.as_deref().unwrap_or("-"),
                        line.original_topic
                    );
                }
                let sent = report
                    .iter()
                    .filter(|l| l.outcome == dlq::Outcome::Redriven)
                    .count();
                println!("{sent} re-driven");
            }
        }
    }
    Ok(())
}

async fn poll_command(config: Config, command: &str) -> Result<(), Box<dyn std::error::Error>> {
    outbox_relay::source::poll::command(config, command).await?;
    Ok(())
}

async fn run(config: Config, shutdown: Option<Shutdown>) -> Result<(), Box<dyn std::error::Error>> {
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        source = ?config.source.kind,
        "relay starting; SIGTERM or SIGINT stops it gracefully"
    );
    let metrics = Metrics::new();
    let dashboard = outbox_relay::dashboard::Dashboard::new(&config);
    let listen = config.metrics.listen;
    let relay = Relay::new(config, metrics.clone())?;
    let _listener = match listen {
        Some(addr) => Some(
            outbox_relay::listener::serve(metrics.clone(), addr, dashboard, relay.status_handle())
                .await
                .map_err(|e| {
                    Box::<dyn std::error::Error>::from(format!("`metrics.listen` {addr}: {e}"))
                })?,
        ),
        None => None,
    };
    relay
        .run(async move {
            match shutdown {
                Some(shutdown) => shutdown.requested().await,
                // Without signal handlers, only a kill stops the relay; keep running.
                None => std::future::pending().await,
            }
        })
        .await?;
    Ok(())
}

/// The SIGTERM and SIGINT handlers of `run`.
///
/// They are installed when this is made, before `run` reads its configuration or logs its first
/// line, because a signal that comes before its handler ends the process by the default action:
/// no drain, nothing logged, and a failed exit status where a supervisor asked for a graceful
/// stop. (Before, the handlers were made when the relay first polled its shutdown future, after
/// the Kafka client and the source were built.) So once the relay has logged anything, SIGTERM
/// is a graceful stop, also during start-up.
struct Shutdown {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Shutdown {
    /// `None` when the handlers cannot be installed (the error is logged).
    fn install() -> Option<Shutdown> {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(terminate), Ok(interrupt)) => Some(Shutdown {
                terminate,
                interrupt,
            }),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "no SIGTERM/SIGINT handler: only a kill stops the relay");
                None
            }
        }
    }

    /// Resolves on the first SIGTERM or SIGINT.
    async fn requested(mut self) {
        tokio::select! {
            _ = self.terminate.recv() => tracing::info!("SIGTERM: draining"),
            _ = self.interrupt.recv() => tracing::info!("SIGINT: draining"),
        }
    }
}
