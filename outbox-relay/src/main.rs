//! `outbox-relay`: `setup`, `teardown`, `run` and `status` for one outbox.
//!
//! Errors are printed with their causes and the config key at fault; the exit code is 2 for a
//! configuration error, 1 for any other failure, 0 after a graceful stop (SIGTERM/SIGINT).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use outbox_relay::config::{Config, ConfigError, Overrides};
use outbox_relay::{Metrics, Relay, admin};

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
    /// Print the slot's lag, its confirmed LSN, and the events a running relay published.
    Status(Overrides),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(&e),
    };
    runtime.block_on(async move {
        let (overrides, command) = match &cli.command {
            Command::Setup(o) => (o, "setup"),
            Command::Teardown(o) => (o, "teardown"),
            Command::Run(o) => (o, "run"),
            Command::Status(o) => (o, "status"),
        };
        let config = match load(overrides, command) {
            Ok(config) => config,
            Err(e) => {
                eprintln!("error: configuration: {e}");
                return ExitCode::from(2);
            }
        };
        tracing::debug!(?config, "configuration");
        let result: Result<(), Box<dyn std::error::Error>> = match cli.command {
            // `--source poll`: the polling source has its own setup, status and run loop.
            _ if config.source.kind == outbox_relay::config::SourceKind::Poll => {
                outbox_relay::source::poll::command(config, command, shutdown_signal())
                    .await
                    .map_err(Into::into)
            }
            Command::Setup(_) => admin::setup(&config).await.map_err(Into::into).map(|()| {
                println!(
                    "publication {:?} and slot {:?} are ready",
                    config.source.publication, config.source.slot
                );
            }),
            Command::Teardown(_) => admin::teardown(&config).await.map_err(Into::into),
            Command::Status(_) => status(&config).await,
            Command::Run(_) => run(config).await,
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e.as_ref()),
        }
    })
}

fn load(overrides: &Overrides, command: &str) -> Result<Config, ConfigError> {
    let mut config = Config::load(overrides);
    // Admin commands need no Kafka.
    if command != "run"
        && let Err(ConfigError::Invalid {
            key: "kafka.brokers",
            ..
        }) = config
    {
        let mut o = overrides.clone();
        o.kafka_brokers = Some("unused".into());
        config = Config::load(&o);
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

async fn status(config: &Config) -> Result<(), Box<dyn std::error::Error>> {
    match admin::status(config).await? {
        None => println!(
            "slot {:?} does not exist (run `outbox-relay setup`)",
            config.source.slot
        ),
        Some(s) => {
            println!("slot: {}", s.slot);
            println!("active: {}", s.active);
            println!(
                "confirmed_lsn: {}",
                s.confirmed_flush_lsn.as_deref().unwrap_or("none")
            );
            println!(
                "lag_bytes: {}",
                s.lag_bytes
                    .map_or_else(|| "unknown".to_owned(), |b| b.to_string())
            );
        }
    }
    let published = match config.metrics.listen {
        Some(addr) => admin::published_by_running_relay(addr).await,
        None => None,
    };
    println!(
        "events_published: {}",
        published.map_or_else(
            || "unknown (no running relay with metrics.listen)".to_owned(),
            |n| n.to_string()
        )
    );
    Ok(())
}

async fn run(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    let metrics = Metrics::new();
    let _listener = match config.metrics.listen {
        Some(addr) => Some(metrics.clone().serve(addr).await.map_err(|e| {
            Box::<dyn std::error::Error>::from(format!("`metrics.listen` {addr}: {e}"))
        })?),
        None => None,
    };
    let relay = Relay::new(config, metrics)?;
    relay.run(shutdown_signal()).await?;
    Ok(())
}

/// Resolves on the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers, only a kill stops the relay; keep running.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining"),
        _ = int.recv() => tracing::info!("SIGINT: draining"),
    }
}
