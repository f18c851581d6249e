//! The macros of the transactional outbox. Use them through the `outbox` facade, which pins this
//! crate with `=`: generated code reaches the runtime only through `::outbox::__private` (or the
//! path given with `crate = "..."`), so it may change with every release of this crate.
//!
//! - `#[derive(DomainEvent)]`: a struct or enum becomes an event type (`#[domain_event(...)]`).
//! - `#[derive(AggregateRoot)]`: a SeaORM `Model` becomes a snapshot source (`#[aggregate_root(...)]`).
//! - `#[emits(A, B, ...)]`: an `async fn` service writes the events it records into its
//!   transaction.
//!
//! Every misuse is a compile error at the token at fault, and a failed macro still emits its item
//! (or a stub impl), so one mistake yields one error.
//!
//! The sketches below are not compiled here (this crate cannot depend on the facade); the
//! `outbox` crate's front page has the complete example as a doctest, and `tests/ui/pass/`
//! compiles every supported form.

mod aggregate_root;
mod ast;
mod attr;
mod codegen;
mod ctxt;
mod domain_event;
mod emits;
mod generics;
mod symbol;
mod topic;

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

/// Makes a struct or enum a domain event: `impl outbox::DomainEvent`.
///
/// ```text
/// #[derive(serde::Serialize, outbox::DomainEvent)]
/// #[domain_event(aggregate = "Order", version = 2)]
/// struct OrderPlaced {
///     #[domain_event(aggregate_id)]
///     order_id: Uuid,
///     total_cents: i64,
/// }
/// ```
///
/// On the type:
/// - `aggregate = "Order"` (required): the aggregate type; the topic is `outbox.event.Order`, so
///   only ASCII letters, digits, `.`, `_` and `-` are allowed.
/// - `event_type = "..."` (structs): the `type` column; default: the type's name.
/// - `version = 1`: the payload's schema version; default: none.
/// - `crate = "path"`: where the `outbox` facade is, if renamed.
///
/// On exactly one field (per variant, for enums): `aggregate_id`, whose `Display` is the Kafka key.
///
/// On an enum, each variant is one event type, named after the variant unless it has
/// `#[domain_event(event_type = "...")]`; `version` may be set per variant. The payload is the
/// serde JSON of the value; for an enum in serde's default representation, the variant's content
/// without the `{"Variant": ...}` wrapper.
#[proc_macro_derive(DomainEvent, attributes(domain_event))]
pub fn derive_domain_event(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    domain_event::derive(&input).into()
}

/// Makes a SeaORM entity's `Model` the root of an aggregate: `impl outbox::AggregateRoot`, whose
/// snapshot is the model's JSON plus its related child rows, loaded on the caller's connection.
///
/// ```text
/// #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize, outbox::AggregateRoot)]
/// #[sea_orm(table_name = "orders")]
/// #[aggregate_root(aggregate = "Order", children(lines = super::order_line::Entity))]
/// pub struct Model {
///     #[sea_orm(primary_key)]
///     #[aggregate_root(id)]
///     pub id: i32,
/// }
/// ```
///
/// On the model: `aggregate = "Order"` (required), `children(name = path::to::Entity, ...)` (each
/// child entity must be `Related` to this one; its rows go under `name`), `crate = "path"`. On
/// exactly one field: `id`, the Kafka key.
#[proc_macro_derive(AggregateRoot, attributes(aggregate_root))]
pub fn derive_aggregate_root(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    aggregate_root::derive(&input).into()
}

/// Writes the events that an `async fn` service records into the outbox, in its transaction.
///
/// ```text
/// #[emits(OrderPlaced, OrderEvent)]
/// async fn place_order(
///     txn: &DatabaseTransaction,
///     events: &mut outbox::Events,
///     cmd: PlaceOrder,
/// ) -> Result<Order, AppError> {
///     // ... business writes on `txn` ...
///     events.record(OrderPlaced { order_id: cmd.id });
///     Ok(order)
/// }
///
/// // Callers don't pass the collector:
/// let order = place_order(&txn, cmd).await?;
/// ```
///
/// When the body returns `Ok`, the recorded events are inserted on the same transaction in one
/// statement before the function returns; an `Err` discards them. A failed insert is returned as
/// `Err(outbox::Error.into())`, so the error type needs `From<outbox::Error>`. Recording a type not
/// listed is a compile error.
///
/// The connection is the first parameter of type `&DatabaseTransaction`, `&DatabaseConnection`,
/// `&DbConn`, or `&C` / `&impl ...` bounded by `ConnectionTrait` or `TransactionTrait`:
/// - `&DatabaseTransaction`: the events are inserted in it; the caller commits.
/// - `&DatabaseConnection`, `&DbConn`, or a `C: TransactionTrait`: the macro begins a transaction
///   on it (a SAVEPOINT if `C` is a transaction), the body sees it under the parameter's name, and
///   it is committed after the events (rolled back on `Err`).
/// - a `C: ConnectionTrait` alone: it must be inside a transaction; otherwise the call returns
///   `Err(outbox::Error::NotInTransaction)` before the body runs.
///
/// A function with `events: &mut Events` and no connection is a helper: it records into its
/// caller's collector, whose `#[emits(...)]` must declare the helper's types too, and writes
/// nothing itself. The declared types may name the function's generics and `Self`. On an
/// `#[async_trait]` impl, the trait declares the method without `events`.
///
/// Keys after the event types:
/// - `autocommit`: begin a transaction on the connection parameter (implied for connections).
/// - `outbox = <expr>`: an `&Outbox` to write to; default: the installed global outbox.
/// - `txn = name`: the parameter that is the connection, when its type does not show it (a
///   bound through your own trait).
/// - `crate = "path"`: where the `outbox` facade is, if renamed.
#[proc_macro_attribute]
pub fn emits(args: TokenStream, item: TokenStream) -> TokenStream {
    emits::expand(args.into(), item.into()).into()
}
