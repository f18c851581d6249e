//! With the `tracing` feature, the writing span's W3C trace context is stored with each event,
//! so the relay can hand `traceparent` to Kafka and the consumer's trace continues the writer's.
#![cfg(feature = "tracing")]

#[path = "../examples/shop/mod.rs"]
mod shop;
use outbox_testkit as support;

use opentelemetry::trace::{TraceContextExt, TracerProvider};
use outbox::{DomainEvent, Outbox, OutboxTable};
use sea_orm::TransactionTrait;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

#[tokio::test(flavor = "current_thread")]
async fn the_writing_spans_traceparent_is_stored_with_the_event() {
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("outbox-test")));
    let _guard = tracing::subscriber::set_default(subscriber);

    let db = support::sqlite().await;
    let table = OutboxTable::default();
    outbox::migration::create_table(&db, &table).await.unwrap();
    let event = shop::OrderEvent::Cancelled {
        id: uuid::Uuid::now_v7(),
    };

    let span = tracing::info_span!("place_order");
    let expected = {
        let context = span.context();
        let span_ref = context.span();
        let sc = span_ref.span_context();
        assert!(
            sc.is_valid(),
            "the SDK tracer gives the span a valid context"
        );
        format!("traceparent=00-{}-{}-01", sc.trace_id(), sc.span_id())
    };
    let written = async {
        let txn = db.begin().await.unwrap();
        let written = outbox::write_events(&txn, &Outbox::new(table), [&event as &dyn DomainEvent])
            .await
            .unwrap();
        txn.commit().await.unwrap();
        written
    }
    .instrument(span)
    .await;
    assert_eq!(
        written[0].tracing_span_context.as_deref(),
        Some(expected.as_str())
    );

    // Outside any span nothing is stored.
    let untraced = outbox::OutboxEvent::from_event(&event).unwrap();
    assert_eq!(untraced.tracing_span_context, None);
}
