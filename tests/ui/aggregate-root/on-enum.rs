use outbox::AggregateRoot;

#[derive(AggregateRoot)]
#[aggregate_root(aggregate = "Order")]
enum Model {
    Open,
}

fn main() {}
