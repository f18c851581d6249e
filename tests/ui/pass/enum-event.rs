#![deny(warnings, unused_qualifications)]

use outbox::DomainEvent;
use serde::Serialize;

/// serde's default representation: the payload is the variant's content.
#[derive(Serialize, DomainEvent)]
#[domain_event(aggregate = "Order", version = 1)]
enum OrderEvent {
    Placed {
        #[domain_event(aggregate_id)]
        order_id: u64,
        lines: u32,
    },
    #[domain_event(event_type = "OrderShipped", version = 3)]
    Shipped {
        #[domain_event(aggregate_id)]
        order_id: u64,
    },
    Cancelled(#[domain_event(aggregate_id)] u64),
}

/// Internally tagged: the payload keeps the tag.
#[derive(Serialize, DomainEvent)]
#[serde(tag = "kind")]
#[domain_event(aggregate = "Customer")]
enum CustomerEvent {
    Registered {
        #[domain_event(aggregate_id)]
        customer_id: String,
    },
    #[domain_event(version = 2)]
    Renamed {
        #[domain_event(aggregate_id)]
        customer_id: String,
        name: String,
    },
}

fn main() {
    let placed = OrderEvent::Placed { order_id: 1, lines: 2 };
    assert_eq!(placed.aggregate_type(), "Order");
    assert_eq!(placed.aggregate_id(), "1");
    assert_eq!(placed.event_type(), "Placed");
    assert_eq!(placed.schema_version(), Some(1));
    assert_eq!(placed.payload().unwrap(), serde_json::json!({ "order_id": 1, "lines": 2 }));

    let shipped = OrderEvent::Shipped { order_id: 2 };
    assert_eq!(shipped.event_type(), "OrderShipped");
    assert_eq!(shipped.schema_version(), Some(3));

    let cancelled = OrderEvent::Cancelled(3);
    assert_eq!(cancelled.aggregate_id(), "3");
    assert_eq!(cancelled.event_type(), "Cancelled");
    assert_eq!(cancelled.payload().unwrap(), serde_json::json!(3));

    let registered = CustomerEvent::Registered { customer_id: "c-1".into() };
    assert_eq!(registered.aggregate_id(), "c-1");
    assert_eq!(registered.schema_version(), None);
    assert_eq!(
        registered.payload().unwrap(),
        serde_json::json!({ "kind": "Registered", "customer_id": "c-1" })
    );
    let renamed = CustomerEvent::Renamed { customer_id: "c-1".into(), name: "Ada".into() };
    assert_eq!(renamed.schema_version(), Some(2));
}
