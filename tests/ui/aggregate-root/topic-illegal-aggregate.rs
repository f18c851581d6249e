use outbox::AggregateRoot;
use serde::Serialize;

#[derive(Serialize, AggregateRoot)]
#[aggregate_root(aggregate = "orders/v2")]
struct Model {
    #[aggregate_root(id)]
    id: i32,
}

fn main() {}
