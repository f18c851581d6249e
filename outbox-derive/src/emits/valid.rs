//! What `#[emits]` needs of the function it wraps. Each violation is reported at the token at
//! fault: the `fn` token, the parameter list, a parameter's type, or the key in the attribute.

use proc_macro2::Span;
use quote::ToTokens;
use syn::ReturnType;

use super::ast::{ConnectionKind, Function};
use super::attr::Args;
use crate::ctxt::Ctxt;

pub fn check(ctxt: &Ctxt, function: &Function, args: &Args) {
    let sig = &function.original.sig;
    let params = sig.paren_token.span.join();

    let helper = function.is_helper();
    if sig.asyncness.is_none() && function.boxed_output.is_none() && !helper {
        ctxt.error_spanned_by(
            sig.fn_token,
            "#[emits] works on async fn: the outbox insert is awaited on the transaction; write `async fn`",
        );
    }

    check_declared(ctxt, args);

    if let Some(name) = function.txn_not_found {
        ctxt.error_spanned_by(
            name,
            format_args!("`txn = {name}` names no parameter of this function; name the parameter that is the transaction"),
        );
    }
    match &function.connection {
        None if function.txn_not_found.is_some() || helper => {}
        None => ctxt.error_at(
            params,
            "#[emits] writes the events in the caller's transaction, but no parameter is one: take \
             `txn: &DatabaseTransaction`, `db: &DatabaseConnection` or `db: &C` with \
             `C: ConnectionTrait` (or name the parameter with `#[emits(..., txn = name)]`)",
        ),
        Some(connection) => {
            let ty = &connection.param.ty;
            if connection.ident.is_none() {
                ctxt.error_spanned_by(
                    &connection.param.pat,
                    "bind the transaction to a plain name, such as `txn: &DatabaseTransaction`: #[emits] hands it to the outbox insert",
                );
            }
            if connection.reference.is_none() {
                ctxt.error_spanned_by(
                    ty,
                    "#[emits] takes the transaction by reference: `txn: &DatabaseTransaction`",
                );
            }
            if let (ConnectionKind::Transaction, Some(autocommit)) =
                (connection.kind, &args.autocommit)
            {
                ctxt.error_spanned_by(
                    autocommit,
                    "`autocommit` begins and commits a transaction on a `&DatabaseConnection`, but this \
                     function already takes a transaction: remove `autocommit`",
                );
            }
        }
    }

    match function.collectors.as_slice() {
        [] => ctxt.error_at(
            params,
            "#[emits] needs the collector that the body records events into: add the parameter \
             `events: &mut outbox::Events` and call `events.record(...)`; callers don't pass it, #[emits] supplies it",
        ),
        [first, rest @ ..] => {
            if !first.by_mut_ref {
                ctxt.error_spanned_by(
                    &first.param.ty,
                    "take the collector as `&mut Events`: recording an event needs mutable access",
                );
            }
            for extra in rest {
                ctxt.error_spanned_by(
                    extra.param,
                    "a second `Events` parameter: #[emits] supplies one collector; record every event into it",
                );
            }
        }
    }

    if let (ReturnType::Default, false) = (&sig.output, helper) {
        ctxt.error_spanned_by(
            sig,
            "#[emits] needs a return type `Result<T, E>` where `E: From<outbox::Error>`: a failed outbox insert \
             is returned as `Err`, and an `Err` from the body discards the recorded events",
        );
    }
}

/// At least one event type, each once.
fn check_declared(ctxt: &Ctxt, args: &Args) {
    if args.events.is_empty() {
        ctxt.error_at(
            Span::call_site(),
            "list the event types this function emits: `#[emits(OrderPlaced, OrderCancelled)]`; recording any other type is a compile error",
        );
    }
    let mut seen: Vec<String> = Vec::new();
    for ty in &args.events {
        let name = ty.to_token_stream().to_string();
        if seen.contains(&name) {
            ctxt.error_spanned_by(
                ty,
                format_args!("`{name}` is declared twice in #[emits(...)]; keep one"),
            );
        } else {
            seen.push(name);
        }
    }
}
