use outbox::AggregateRoot;
use serde::Serialize;

#[derive(Serialize, AggregateRoot)]
#[aggregate_root(aggregate = "Order")]
struct Model {
    id: i32,
    customer: String,
}

fn main() {}
