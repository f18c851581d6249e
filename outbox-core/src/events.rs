//! The collector that the body of an `#[emits]` function records its events into.

use std::marker::PhantomData;

use sea_orm::{
    ActiveModelBehavior, ActiveModelTrait, ConnectionTrait, EntityTrait, IntoActiveModel,
};

use crate::{DomainEvent, Error, Outbox, OutboxEvent};

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
    // The outbox that `insert_with` sent events to, so that the end-of-function write can refuse
    // to send the rest to another one.
    carried_to: Option<Outbox>,
    declared: PhantomData<fn() -> D>,
}

impl<D> Events<D> {
    pub(crate) fn new() -> Self {
        Events {
            rows: Vec::new(),
            error: None,
            carried_to: None,
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

    /// Inserts `model` as `model.insert(conn)` does (its `ActiveModelBehavior` hooks included)
    /// and returns the inserted model, sending the events recorded so far **with it**: on
    /// PostgreSQL as one statement, `WITH .. AS (INSERT INTO <outbox> ..) INSERT INTO <table> ..
    /// RETURNING ..`, every value bound, so the events cost no round trip of their own. The
    /// collector is left empty: the write at the end of the `#[emits]` function sends only the
    /// events recorded after this call, in a later statement, so the outbox keeps the order of
    /// the `record` calls. Events go to the process-wide [`Outbox::global`]; an `#[emits]`
    /// function that names its own outbox uses [`insert_with_in`](Self::insert_with_in).
    ///
    /// On MySQL/MariaDB and SQLite, which have no data-modifying CTE, and in the write modes other
    /// than [`WriteMode::Insert`](crate::WriteMode::Insert), the same call sends two statements,
    /// the events' INSERT first, after checking that `conn` is inside a transaction (they are
    /// atomic only there). User code is the same on every backend.
    ///
    /// A failure rolls back nothing by itself: like any failed statement, it fails the function,
    /// and its transaction is rolled back with the business row and the events. The error
    /// ([`Error::Carrying`]) names the outbox table and the business table.
    ///
    /// ```no_run
    /// # use outbox_core::{DomainEvent, Events};
    /// # async fn demo<D, A>(txn: &sea_orm::DatabaseTransaction, events: &mut Events<D>, order: A)
    /// # -> Result<(), outbox_core::Error>
    /// # where A: sea_orm::ActiveModelTrait + sea_orm::ActiveModelBehavior + Send,
    /// #   <A::Entity as sea_orm::EntityTrait>::Model: sea_orm::IntoActiveModel<A> {
    /// // events.record(OrderCreated { .. }) before, then the order's INSERT carries it:
    /// let order = events.insert_with(txn, order).await?;
    /// # Ok(()) }
    /// ```
    pub async fn insert_with<A, C>(
        &mut self,
        conn: &C,
        model: A,
    ) -> Result<<A::Entity as EntityTrait>::Model, Error>
    where
        A: ActiveModelTrait + ActiveModelBehavior + Send,
        <A::Entity as EntityTrait>::Model: IntoActiveModel<A>,
        C: ConnectionTrait,
    {
        self.insert_with_in(conn, Outbox::global(), model).await
    }

    /// [`insert_with`](Self::insert_with) into `outbox`: pass the outbox that the `#[emits]`
    /// function names (`#[emits(.., outbox = ..)]`). The end-of-function write refuses, with
    /// [`Error::Config`], to send later events to another outbox than this one.
    pub async fn insert_with_in<A, C>(
        &mut self,
        conn: &C,
        outbox: &Outbox,
        model: A,
    ) -> Result<<A::Entity as EntityTrait>::Model, Error>
    where
        A: ActiveModelTrait + ActiveModelBehavior + Send,
        <A::Entity as EntityTrait>::Model: IntoActiveModel<A>,
        C: ConnectionTrait,
    {
        if let Some(error) = &self.error {
            // Kept for the end-of-function write too, so a caller that goes on still fails.
            return Err(error.duplicate());
        }
        self.check_same_outbox(outbox)?;
        let rows = std::mem::take(&mut self.rows);
        let carried = crate::write::insert_carrying(conn, outbox, &rows, model).await;
        if carried.events_written {
            if !rows.is_empty() {
                self.carried_to = Some(outbox.clone());
            }
        } else {
            // Not written (the statement failed as a whole): they are still to be written, so a
            // caller that recovers from the error (a savepoint) does not lose them.
            self.rows = rows;
        }
        carried.result
    }

    /// Refuses to send to `outbox` when earlier events were sent to another one.
    fn check_same_outbox(&self, outbox: &Outbox) -> Result<(), Error> {
        match &self.carried_to {
            Some(carried) if carried != outbox => Err(Error::Config(format!(
                "the events of one call go to one outbox, but `insert_with` sent some to {} and \
                 the rest would go to {}: pass the function's outbox to `insert_with_in`",
                carried.table, outbox.table
            ))),
            _ => Ok(()),
        }
    }

    /// The rows still to write to `outbox` at the end of the function.
    pub(crate) fn into_rows_for(self, outbox: &Outbox) -> Result<Vec<OutboxEvent>, Error> {
        self.check_same_outbox(outbox)?;
        self.into_rows()
    }

    pub(crate) fn into_rows(self) -> Result<Vec<OutboxEvent>, Error> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.rows),
        }
    }
}
