//! The declared event types of an inbox, and how a message's payload picks one of them.
//!
//! A payload decodes into a declared type `E` when serde accepts it and the decoded event's
//! [`DomainEvent::event_type`] equals the message's event type (from its type header). Enums
//! under serde's default tagging carry their variant in the type rather than in the payload (see
//! `#[derive(DomainEvent)]`), so the payload is also tried wrapped as `{"<type>": payload}`.
//! Without a type header, the payload must decode into exactly one declared type.

use std::any::Any;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

use sea_orm::DatabaseTransaction;
use serde::de::DeserializeOwned;

use crate::DomainEvent;
use crate::inbox::Received;

/// What a handler returns: any error (`?` converts `DbErr`, `outbox::Error` and the user's own).
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// The future a handler returns, borrowing the transaction: write `Box::pin(async move { ... })`.
pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send + 'a>>;

/// One declared event type and its handler, with the type erased so an inbox can hold several.
pub(crate) trait Route: Send + Sync {
    /// The Rust type's name, for messages.
    fn type_name(&self) -> &'static str;
    /// The event decoded from `payload`, or why the payload is not this type's.
    fn decode(
        &self,
        event_type: Option<&str>,
        payload: &serde_json::Value,
    ) -> Result<Box<dyn Any + Send>, String>;
    /// Runs the handler on an event that [`decode`](Self::decode) of this route produced.
    fn handle<'a>(
        &'a self,
        txn: &'a DatabaseTransaction,
        event: Box<dyn Any + Send>,
        received: &'a Received,
    ) -> HandlerFuture<'a>;
}

pub(crate) struct TypedRoute<E, F> {
    handler: F,
    event: PhantomData<fn() -> E>,
}

impl<E, F> TypedRoute<E, F> {
    pub(crate) fn new(handler: F) -> Self {
        TypedRoute {
            handler,
            event: PhantomData,
        }
    }
}

impl<E, F> Route for TypedRoute<E, F>
where
    E: DomainEvent + DeserializeOwned + Send + 'static,
    F: for<'a> Fn(&'a DatabaseTransaction, E, &'a Received) -> HandlerFuture<'a> + Send + Sync,
{
    fn type_name(&self) -> &'static str {
        std::any::type_name::<E>()
    }

    fn decode(
        &self,
        event_type: Option<&str>,
        payload: &serde_json::Value,
    ) -> Result<Box<dyn Any + Send>, String> {
        decode_as::<E>(event_type, payload).map(|e| Box::new(e) as Box<dyn Any + Send>)
    }

    fn handle<'a>(
        &'a self,
        txn: &'a DatabaseTransaction,
        event: Box<dyn Any + Send>,
        received: &'a Received,
    ) -> HandlerFuture<'a> {
        match event.downcast::<E>() {
            Ok(event) => (self.handler)(txn, *event, received),
            // Unreachable by construction (an event reaches the route that decoded it), but a
            // wrong type must fail the message, not the process.
            Err(_) => Box::pin(async move {
                Err(format!(
                    "event {} was decoded by another route than `{}`",
                    received.event_id,
                    std::any::type_name::<E>()
                )
                .into())
            }),
        }
    }
}

/// Decodes `payload` as `E`, requiring `E`'s event type to be `event_type` when one is given.
fn decode_as<E: DomainEvent + DeserializeOwned>(
    event_type: Option<&str>,
    payload: &serde_json::Value,
) -> Result<E, String> {
    let Some(wanted) = event_type else {
        return serde_json::from_value(payload.clone()).map_err(|e| e.to_string());
    };
    let wrapped =
        serde_json::Value::Object([(wanted.to_owned(), payload.clone())].into_iter().collect());
    let mut mismatch = None;
    let mut first_error = None;
    for candidate in [payload.clone(), wrapped] {
        match serde_json::from_value::<E>(candidate) {
            Ok(event) if event.event_type() == wanted => return Ok(event),
            Ok(event) => mismatch = Some(event.event_type()),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(match (mismatch, first_error) {
        (Some(other), _) => format!("its payload is event type `{other}`, not `{wanted}`"),
        (None, Some(e)) => e.to_string(),
        (None, None) => format!("no event of type `{wanted}`"),
    })
}

/// Which route takes a message, and the decoded event; or why none does.
pub(crate) fn route<'r>(
    routes: &'r [Box<dyn Route>],
    event_type: Option<&str>,
    payload: &serde_json::Value,
) -> Result<(&'r dyn Route, Box<dyn Any + Send>), Unroutable> {
    let mut reasons = Vec::new();
    let mut accepted = Vec::new();
    for route in routes {
        match route.decode(event_type, payload) {
            // With a type, the first declared type of that name takes it.
            Ok(event) if event_type.is_some() => return Ok((route.as_ref(), event)),
            Ok(event) => accepted.push((route.as_ref(), event)),
            Err(reason) => reasons.push(format!("`{}`: {reason}", route.type_name())),
        }
    }
    match accepted.len() {
        1 => Ok(accepted.remove(0)),
        0 => Err(Unroutable::NoType(reasons.join("; "))),
        _ => Err(Unroutable::Ambiguous(
            accepted.iter().map(|(r, _)| r.type_name()).collect(),
        )),
    }
}

pub(crate) enum Unroutable {
    /// No declared type accepts the payload; the reasons, per type.
    NoType(String),
    /// Without a type header, several declared types accept it.
    Ambiguous(Vec<&'static str>),
}
