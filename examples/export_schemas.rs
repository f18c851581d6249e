//! Writes the JSON Schema of every event type to `<dir>/<aggregate>/<type>.v<version>.json`
//! (default dir: `schemas`), then checks that the events are compatible with what is there.
//!
//! ```text
//! cargo run --example export_schemas --features schema -- schemas
//! ```
//!
//! A service keeps such a binary (or a test) beside its events: export when a version is added,
//! commit the files, and let `outbox::schema::assert_compatible` guard them in `cargo test`.

use outbox::DomainEvent;
use schemars::JsonSchema;
use serde::Serialize;
use uuid::Uuid;

/// An order was placed.
#[derive(Serialize, JsonSchema, DomainEvent)]
#[domain_event(aggregate = "Order", version = 1)]
pub struct OrderCreated {
    #[domain_event(aggregate_id)]
    pub order_id: Uuid,
    pub customer_id: i64,
    pub lines: Vec<Line>,
}

#[derive(Serialize, JsonSchema)]
pub struct Line {
    pub sku: String,
    pub quantity: i32,
    pub price_cents: i64,
}

/// What happens to an order afterwards, one event type per variant.
#[derive(Serialize, JsonSchema, DomainEvent)]
#[domain_event(aggregate = "Order", version = 1)]
pub enum OrderEvent {
    Shipped {
        #[domain_event(aggregate_id)]
        id: Uuid,
        carrier: String,
    },
    Cancelled {
        #[domain_event(aggregate_id)]
        id: Uuid,
        reason: Option<String>,
    },
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "schemas".to_owned());
    outbox::schema::check_compatible(&dir).or_else(|e| match e {
        // Nothing exported yet: the first export is the contract.
        outbox::schema::SchemaError::Io { .. } => Ok(()),
        other => Err(other),
    })?;
    for file in outbox::schema::export(&dir)? {
        println!("{}", file.display());
    }
    Ok(())
}
