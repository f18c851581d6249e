//! The collector that the body of an `#[emits]` function records its events into.

use std::marker::PhantomData;

use crate::__private::Declares;
use crate::{DomainEvent, Error, OutboxEvent};

/// The events a service method produces, written by `#[emits]` in the method's transaction when
/// the body returns `Ok`.
///
/// Declare it as a parameter `events: &mut Events`; `#[emits]` supplies it, so callers don't pass
/// it. Its type parameter is the set of event types declared in `#[emits(...)]`: recording any
/// other type does not compile.
pub struct Events<D = ()> {
    rows: Vec<OutboxEvent>,
    // The first serialization failure; reported by the write, so `record` stays infallible.
    error: Option<Error>,
    declared: PhantomData<fn() -> D>,
}

impl<D> Events<D> {
    pub(crate) fn new() -> Self {
        Events {
            rows: Vec::new(),
            error: None,
            declared: PhantomData,
        }
    }

    /// Records one event. It is written when the function returns `Ok`, in recording order.
    pub fn record<E>(&mut self, event: E)
    where
        E: DomainEvent,
        D: Declares<E>,
    {
        if self.error.is_some() {
            return;
        }
        match OutboxEvent::from_event(&event) {
            Ok(row) => self.rows.push(row),
            Err(e) => self.error = Some(e),
        }
    }

    /// How many events were recorded.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.error.is_none()
    }

    pub(crate) fn into_rows(self) -> Result<Vec<OutboxEvent>, Error> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.rows),
        }
    }
}
