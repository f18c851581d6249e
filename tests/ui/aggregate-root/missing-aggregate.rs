use outbox::AggregateRoot;
use serde::Serialize;

#[derive(Serialize, AggregateRoot)]
struct Model {
    #[aggregate_root(id)]
    id: i32,
}

fn main() {}
