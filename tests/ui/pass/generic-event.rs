#![deny(warnings)]

use std::fmt::Display;

use outbox::DomainEvent;
use serde::Serialize;

/// A type parameter in the payload, and one in the aggregate id.
#[derive(Serialize, DomainEvent)]
#[domain_event(aggregate = "Document")]
struct Edited<'a, Id, Body>
where
    Id: Display,
{
    #[domain_event(aggregate_id)]
    document: Id,
    body: Body,
    editor: &'a str,
}

#[derive(Serialize, DomainEvent)]
#[domain_event(aggregate = "Document")]
enum DocumentEvent<T> {
    Tagged {
        #[domain_event(aggregate_id)]
        document: T,
        tag: String,
    },
}

fn describe<E: DomainEvent>(event: &E) -> String {
    format!("{}/{}/{}", event.aggregate_type(), event.aggregate_id(), event.event_type())
}

fn main() {
    let edited = Edited { document: 7u32, body: vec!["hello"], editor: "ada" };
    assert_eq!(describe(&edited), "Document/7/Edited");
    assert_eq!(
        edited.payload().unwrap(),
        serde_json::json!({ "document": 7, "body": ["hello"], "editor": "ada" })
    );
    let tagged = DocumentEvent::Tagged { document: "d-1", tag: "draft".into() };
    assert_eq!(describe(&tagged), "Document/d-1/Tagged");
}
