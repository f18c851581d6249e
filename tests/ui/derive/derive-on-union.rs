use outbox::DomainEvent;

#[derive(DomainEvent)]
#[domain_event(aggregate = "Order")]
union OrderPlaced {
    order_id: u64,
    raw: [u8; 8],
}

fn main() {}
