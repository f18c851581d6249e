#![deny(warnings, unused_qualifications)]

use outbox::DomainEvent;
use serde::Serialize;
use uuid::Uuid;

#[derive(Serialize, DomainEvent)]
#[domain_event(aggregate = "Order", version = 2)]
struct OrderPlaced {
    #[domain_event(aggregate_id)]
    order_id: Uuid,
    total_cents: i64,
}

#[derive(Serialize, DomainEvent)]
#[domain_event(aggregate = "billing.Invoice_v2", event_type = "InvoiceIssued")]
struct Issued(u64, #[domain_event(aggregate_id)] String);

fn main() {
    let placed = OrderPlaced {
        order_id: Uuid::nil(),
        total_cents: 1250,
    };
    assert_eq!(placed.aggregate_type(), "Order");
    assert_eq!(placed.aggregate_id(), Uuid::nil().to_string());
    assert_eq!(placed.event_type(), "OrderPlaced");
    assert_eq!(placed.schema_version(), Some(2));
    assert_eq!(
        placed.payload().unwrap(),
        serde_json::json!({ "order_id": Uuid::nil(), "total_cents": 1250 })
    );

    let issued = Issued(7, "INV-1".to_owned());
    assert_eq!(issued.aggregate_type(), "billing.Invoice_v2");
    assert_eq!(issued.aggregate_id(), "INV-1");
    assert_eq!(issued.event_type(), "InvoiceIssued");
    assert_eq!(issued.schema_version(), None);
    assert_eq!(issued.payload().unwrap(), serde_json::json!([7, "INV-1"]));
}
