//! The collector that the body of an `#[emits]` function records its events into.

use std::marker::PhantomData;

use crate::{DomainEvent, Error, OutboxEvent};

/// Where `E` is in a declared set: at its head, or further down its tail. Inferred, never written.
#[doc(hidden)]
pub struct Here;
/// See [`Here`].
#[doc(hidden)]
pub struct There<I>(PhantomData<I>);

/// `D: Declares<E, I>`: the set `D` of an [`Events`] collector declares the event type `E`.
///
/// `#[emits(A, B)]` makes its collector's set the type-level list `(A, (B, ()))` (a list, not a
/// marker item, because the declared types may name the function's generics or `Self`), and
/// [`Events::record`] requires `Declares`, so recording an undeclared type does not compile. `I`
/// is where `E` is in the list; it is always inferred.
///
/// A helper that records into its caller's collector names it in its bounds. `#[emits(E)]` on a
/// function that takes `events: &mut Events` and no connection writes these bounds for you; the
/// bounds written out are `D: Declares<E, I>` on the helper's `events: &mut Events<D>`. The facade
/// crate's front page (`outbox`) shows both forms in a tested example.
#[diagnostic::on_unimplemented(
    message = "`{E}` is not declared in this function's `#[emits(...)]`",
    label = "recorded here, but not declared",
    note = "add `{E}` to the list in `#[emits(...)]` on the enclosing function (or, in a helper that records into the caller's `events`, to the helper's `#[emits(...)]`)"
)]
pub trait Declares<E, I> {}
impl<E, Tail> Declares<E, Here> for (E, Tail) {}
impl<E, Head, Tail: Declares<E, I>, I> Declares<E, There<I>> for (Head, Tail) {}

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
    pub fn record<E, I>(&mut self, event: E)
    where
        E: DomainEvent,
        D: Declares<E, I>,
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
