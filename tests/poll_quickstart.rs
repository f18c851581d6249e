//! `cargo run --example quickstart` with zero servers: the example's body runs here, on its
//! embedded default (a SQLite file and librdkafka's mock cluster) whatever the environment says,
//! and its output is checked.

#[path = "../examples/quickstart.rs"]
mod quickstart;

use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_relays_every_event_with_zero_servers() {
    let started = Instant::now();
    let mut out = Vec::new();
    let summary = quickstart::run(quickstart::Servers::default(), &mut out).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let summary = summary.unwrap_or_else(|e| panic!("quickstart failed: {e}\n{text}"));
    // Three OrderCreated, one Shipped, one CustomerCreated snapshot.
    assert_eq!(
        summary,
        quickstart::Summary {
            written: 5,
            received: 5
        },
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "it ends within seconds:\n{text}"
    );

    assert!(text.contains("database: sqlite://"), "{text}");
    assert!(text.contains("kafka:    in-process mock Kafka"), "{text}");
    assert_eq!(
        text.matches("received  topic=outbox.event.Order  key=")
            .count(),
        4,
        "{text}"
    );
    assert_eq!(
        text.matches("received  topic=outbox.event.Customer  key=")
            .count(),
        1,
        "{text}"
    );
    for event_type in ["OrderCreated", "Shipped", "CustomerCreated"] {
        assert!(
            text.contains(&format!("eventType={event_type}")),
            "{event_type} missing:\n{text}"
        );
    }
    // Every message carries its event id header, and the value is the stored JSON.
    assert_eq!(text.matches("headers: id=").count(), 5, "{text}");
    assert!(text.contains(r#""carrier":"DHL""#), "{text}");
    let last = text.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(
            "summary: 5 events written, 5 relayed, 5 received by the consumer, 0 left in the outbox"
        ),
        "{text}"
    );
}
