//! The drain benchmarks' event, one definition so that every source drains the same workload:
//! about 80 B of JSON over 1,000 aggregates.

use outbox_core::DomainEvent;

pub struct Bench {
    pub id: u64,
}

impl DomainEvent for Bench {
    fn aggregate_type(&self) -> &'static str {
        "Bench"
    }
    fn aggregate_id(&self) -> String {
        format!("agg-{}", self.id % 1000)
    }
    fn event_type(&self) -> &'static str {
        "BenchHappened"
    }
    fn payload(&self) -> Result<serde_json::Value, serde_json::Error> {
        Ok(
            serde_json::json!({"id": self.id, "customer": "c-42", "total": 12.5, "items": ["a", "b"]}),
        )
    }
}
