//! `shipping`: creates one shipment per order. It consumes `OrderCreated` through the inbox
//! (`outbox::inbox`): each message is handled in one transaction of this service's database that
//! records the event id, creates the shipment, and writes `ShipmentCreated` to this service's
//! outbox (`#[emits]`). A redelivered `OrderCreated` (after a relay restart, or after this
//! service died between its commit and its Kafka offset commit) finds its event id in the inbox
//! and changes nothing. The relay at-least-once plus the inbox make each order's effects happen
//! once.
//!
//! Environment: `DATABASE_URL` (PostgreSQL, this service's own database), `KAFKA_BROKERS`,
//! `ORDER_TOPIC` (default `outbox.event.Order`), `GROUP_ID` (default `shipping`), `RUST_LOG`.
//! The tables are created at start if missing. Stops on SIGTERM or Ctrl-C after the message in
//! hand.

mod shipment;

use std::process::ExitCode;

use outbox::inbox::{Inbox, InboxError, Received};
use rdkafka::ClientConfig;

use shipment::OrderCreated;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match consume().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("shipping: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum ShippingError {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("connecting to the database: {0}")]
    Connect(sea_orm::DbErr),
    #[error("creating the tables: {0}")]
    Schema(sea_orm::DbErr),
    #[error(transparent)]
    Inbox(#[from] InboxError),
}

fn env(name: &'static str) -> Result<String, ShippingError> {
    std::env::var(name).map_err(|_| ShippingError::Missing(name))
}

async fn consume() -> Result<(), ShippingError> {
    let url = env("DATABASE_URL")?;
    let brokers = env("KAFKA_BROKERS")?;
    let topic = std::env::var("ORDER_TOPIC").unwrap_or_else(|_| "outbox.event.Order".into());
    let group = std::env::var("GROUP_ID").unwrap_or_else(|_| "shipping".into());
    let db = sea_orm::Database::connect(&url)
        .await
        .map_err(ShippingError::Connect)?;
    shipment::create_schema(&db)
        .await
        .map_err(ShippingError::Schema)?;

    let inbox = Inbox::builder("shipping", db)
        // The inbox row, the shipment and `ShipmentCreated` commit together; an error rolls all
        // three back and the message is retried.
        .handle(|txn, order: OrderCreated, _: &Received| {
            Box::pin(async move {
                shipment::create_shipment(txn, order).await?;
                Ok(())
            })
        })
        .build()?;
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &brokers)
        .set("group.id", &group)
        // Only what the relays committed: the same reading a Kafka-transactional producer needs.
        .set("isolation.level", "read_committed");
    let consumer = inbox.consumer(&config, &[&topic])?;
    tracing::info!(%topic, %group, "shipping: consuming");
    inbox.run(&consumer, shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(e) => {
                tracing::warn!("shipping: no SIGTERM handler ({e}); Ctrl-C still stops");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
