//! Code generation for `#[emits]`.
//!
//! The body runs as an `async move` block, so its `return` and `?` produce the function's result
//! as before. Only when that result is `Ok` are the recorded events written, on the same
//! transaction, before the function returns; a failed write becomes the function's `Err` through
//! the user's `From<outbox::Error>`.
//!
//! What the connection parameter is decides the transaction the events join:
//! - `&DatabaseTransaction`: that one, checked at compile time;
//! - `&DatabaseConnection`, `&DbConn`, `&C` with `C: TransactionTrait`, or `autocommit`: one that
//!   #[emits] begins before the body (SeaORM makes it a SAVEPOINT when `C` is a transaction) and
//!   commits after the events; the body sees it under the parameter's name, and on any `Err` it is
//!   dropped, which rolls it back. The events are written on it with the same bound INSERT as on a
//!   caller's transaction, then it commits: one write path whoever owns the transaction;
//! - `&C` with only `C: ConnectionTrait`: that one, refused at run time before the body when it
//!   is not inside a transaction.
//!
//! The declared set is the type-level list `(A, (B, ()))`, written in the body, so the declared
//! types may name the function's generics and `Self`.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{GenericParam, Ident, PathArguments, ReturnType, Signature, Type, WherePredicate};

use super::ast::{Collector, ConnectionKind, Function};
use super::attr::Args;
use crate::codegen::Facade;

/// The locals the expansion introduces: mixed-site, so the body cannot see or shadow them.
struct Names {
    events: Ident,
    result: Ident,
    is_ok: Ident,
    fail: Ident,
    error: Ident,
    txn: Ident,
    future: Ident,
}

impl Names {
    fn new() -> Self {
        let local = |name: &str| Ident::new(name, Span::mixed_site());
        Names {
            events: local("__outbox_events"),
            result: local("__outbox_result"),
            is_ok: local("__outbox_is_ok"),
            fail: local("__outbox_fail"),
            error: local("__outbox_error"),
            txn: local("__outbox_txn"),
            future: local("__outbox_future"),
        }
    }
}

pub fn service(function: &Function, args: &Args) -> TokenStream {
    if function.is_helper() {
        return helper(function, args);
    }
    let item = function.original;
    let ret = match (&function.boxed_output, &item.sig.output) {
        (Some(output), _) => *output,
        (None, ReturnType::Type(_, ret)) => &**ret,
        // Unreachable after `valid`; the fallback keeps this function total.
        (None, ReturnType::Default) => return fallback(function, args),
    };
    let (Some(connection), Some(collector)) = (&function.connection, function.collector()) else {
        return fallback(function, args);
    };
    let Some(conn) = connection.ident else {
        return fallback(function, args);
    };

    let krate = Facade::new(args.krate.as_ref());
    let names = Names::new();
    let Names {
        events,
        result,
        is_ok,
        fail,
        error,
        txn,
        future,
    } = &names;
    let attrs = &item.attrs;
    let vis = &item.vis;
    let sig = without_param(&item.sig, collector);
    let block = &item.block;
    let checks = declared_checks(args, &krate);
    let declared = declared_list(args, &krate, true);
    let bind_collector = bind_collector(collector, &declared);

    // How the result tells success from failure, and turns an outbox error into the function's
    // error: looked up once, spanned on the return type, so a return type that cannot carry
    // `outbox::Error` is one error, on it.
    let ret_span = ret.span();
    let at_ret = krate.at(ret_span);
    // `impl Trait` cannot be named in a turbofish or a `let` type; it is then inferred from the
    // function's return.
    let nameable = !mentions_impl_trait(ret);
    let turbofish = nameable.then(|| quote!(::<#ret>));
    let result_ty = nameable.then(|| quote!(: #ret));
    let result_ops_call = quote_spanned! {ret_span=>
        let (#is_ok, #fail) = #at_ret::__private::result_ops #turbofish();
    };

    // The connection parameter, spanned on its type: errors about what it is point there.
    let conn_span = connection.param.ty.span();
    let conn_at_ty = respan(conn, conn_span);
    let at_conn = krate.at(conn_span);
    let outbox = match &args.outbox {
        Some(outbox) => outbox.to_token_stream(),
        None => quote!(#krate::__private::default_outbox()),
    };
    let begins = args.autocommit.is_some()
        || matches!(
            connection.kind,
            ConnectionKind::Autocommit | ConnectionKind::Generic { can_begin: true }
        );

    let (prologue, rebind, target, commit) = if begins {
        (
            quote! {
                let #txn = match #at_conn::__private::begin(#conn_at_ty).await {
                    ::core::result::Result::Ok(#txn) => #txn,
                    ::core::result::Result::Err(#error) => return #fail(#error),
                };
            },
            // The body sees the transaction under the parameter's name.
            quote!(let #conn = &#txn;),
            quote!(&#txn),
            quote! {
                if let ::core::result::Result::Err(#error) = #krate::__private::commit(#txn).await {
                    return #fail(#error);
                }
            },
        )
    } else {
        let check = if let ConnectionKind::Generic { .. } = connection.kind {
            let name = item.sig.ident.to_string();
            quote_spanned! {conn_span=>
                if let ::core::result::Result::Err(#error) =
                    #at_conn::__private::require_transaction(#conn_at_ty, #name).await
                {
                    return #fail(#error);
                }
            }
        } else {
            quote_spanned! {conn_span=>
                #at_conn::__private::assert_in_transaction(#conn_at_ty);
            }
        };
        // The body's `async move` takes a copy of a shared reference; a `&mut` one would be moved.
        let rebind = match connection.reference {
            Some(reference) if reference.mutability.is_some() => quote!(let #conn = &*#conn;),
            _ => TokenStream::new(),
        };
        (check, rebind, conn.to_token_stream(), TokenStream::new())
    };

    // An `async fn` runs the body as an `async move` block; after `#[async_trait]` the body
    // already is an expression of a boxed future, awaited as it is.
    let run_body = if function.boxed_output.is_some() {
        quote!(let #future = #block; #future.await)
    } else {
        quote!(async move #block.await)
    };
    let finish = quote! {
        if let ::core::result::Result::Err(#error) =
            #krate::__private::flush(#target, #outbox, #events).await
        {
            return #fail(#error);
        }
        #commit
    };
    let steps = quote! {
        #prologue
        let mut #events = #krate::__private::collector::<#declared>();
        let #result #result_ty = {
            #rebind
            #bind_collector
            #run_body
        };
        if #is_ok(&#result) {
            #finish
        }
        #result
    };
    let body = if function.boxed_output.is_some() {
        quote!(::std::boxed::Box::pin(async move { #steps }))
    } else {
        steps
    };

    quote! {
        #(#attrs)*
        #vis #sig {
            #checks
            #result_ops_call
            #body
        }
    }
}

/// A helper that records into its caller's collector: the collector's set becomes a type
/// parameter that must declare each listed event, so the helper accepts any caller whose
/// `#[emits(...)]` lists them, and nothing else.
fn helper(function: &Function, args: &Args) -> TokenStream {
    let item = function.original;
    let Some(collector) = function.collector() else {
        return fallback(function, args);
    };
    let krate = Facade::new(args.krate.as_ref());
    let set = Ident::new("__OutboxDeclared", Span::mixed_site());
    let mut sig = item.sig.clone();
    sig.generics.params.push(syn::parse_quote!(#set));
    let mut predicates = Vec::new();
    for (i, ty) in distinct(&args.events).into_iter().enumerate() {
        let index = Ident::new(&format!("__OutboxIndex{i}"), Span::mixed_site());
        sig.generics.params.push(syn::parse_quote!(#index));
        let at = krate.at(ty.span());
        predicates.push(quote_spanned!(ty.span()=> #set: #at::__private::Declares<#ty, #index>));
    }
    let clause = sig.generics.make_where_clause();
    for predicate in predicates {
        clause.predicates.push(syn::parse_quote!(#predicate));
    }
    if let Some(syn::FnArg::Typed(param)) = sig.inputs.iter_mut().nth(collector.index)
        && let Some(path) = collector.path
    {
        let events = with_argument(path, quote!(#set));
        *param.ty = syn::parse_quote!(&mut #events);
    }
    let checks = declared_checks(args, &krate);
    let attrs = &item.attrs;
    let vis = &item.vis;
    let stmts = &item.block.stmts;
    quote! {
        #(#attrs)*
        #vis #sig {
            #checks
            #(#stmts)*
        }
    }
}

/// The function as the user wrote it, minus the collector parameter, with the collector bound in
/// the body: callers and the body type-check as they will once the mistake is fixed, and nothing
/// is written. The errors are emitted beside it.
pub fn fallback(function: &Function, args: &Args) -> TokenStream {
    let item = function.original;
    let krate = Facade::new(args.krate.as_ref());
    let names = Names::new();
    let attrs = &item.attrs;
    let vis = &item.vis;
    let block = &item.block;
    // Without a usable list, accept every event, so recording doesn't add errors of its own.
    let strict = !args.events.is_empty();
    let checks = if strict {
        declared_checks(args, &krate)
    } else {
        TokenStream::new()
    };
    let declared = declared_list(args, &krate, strict);
    let (sig, bind) = match function.collector() {
        Some(collector) => {
            let events = &names.events;
            let bind = bind_collector(collector, &declared);
            (
                without_param(&item.sig, collector),
                quote! {
                    let mut #events = #krate::__private::collector::<#declared>();
                    #bind
                },
            )
        }
        None => (item.sig.clone(), TokenStream::new()),
    };
    quote! {
        #(#attrs)*
        #vis #sig {
            #checks
            #bind
            #block
        }
    }
}

/// `let events: &mut Events<(A, (B, ()))> = &mut __outbox_events;`: the user's pattern, and the
/// user's path to `Events` (which keeps their import used) with the declared set as parameter.
fn bind_collector(collector: &Collector, declared: &TokenStream) -> TokenStream {
    let events = &Names::new().events;
    let pat = &collector.param.pat;
    // Always `&mut`, whatever a mistaken signature says, so the body's `record` calls still check.
    let annotation = collector.path.map(|path| {
        let path = with_argument(path, declared.clone());
        quote!(: &mut #path)
    });
    quote!(let #pat #annotation = &mut #events;)
}

/// `path` with its last segment's generic arguments replaced by `<argument>`.
fn with_argument(path: &syn::Path, argument: TokenStream) -> syn::Path {
    let mut path = path.clone();
    if let Some(last) = path.segments.last_mut() {
        last.arguments = PathArguments::AngleBracketed(syn::parse_quote!(<#argument>));
    }
    path
}

/// The declared types, each once, in order (`valid` reports the duplicates).
fn distinct(events: &[Type]) -> Vec<&Type> {
    let mut seen: Vec<String> = Vec::new();
    events
        .iter()
        .filter(|ty| {
            let name = ty.to_token_stream().to_string();
            let new = !seen.contains(&name);
            seen.push(name);
            new
        })
        .collect()
}

/// The declared set as the list `(A, (B, ()))`; `strict: false` declares every domain event.
fn declared_list(args: &Args, krate: &Facade, strict: bool) -> TokenStream {
    if !strict {
        return quote!(#krate::__private::AnyEvent);
    }
    distinct(&args.events)
        .into_iter()
        .rev()
        .fold(quote!(()), |tail, ty| quote!((#ty, #tail)))
}

/// One check per declared type that it is a domain event, spanned on the type: "not a domain
/// event" points into the attribute.
fn declared_checks(args: &Args, krate: &Facade) -> TokenStream {
    distinct(&args.events)
        .into_iter()
        .map(|ty| {
            let span = ty.span();
            let at = krate.at(span);
            quote_spanned!(span=> #at::__private::assert_domain_event::<#ty>();)
        })
        .collect()
}

/// The signature without the collector parameter, and without the lifetime that only that
/// parameter used (`#[async_trait]` names one per reference), so it matches the trait's.
fn without_param(sig: &Signature, collector: &Collector) -> Signature {
    let mut sig = sig.clone();
    sig.inputs = sig
        .inputs
        .into_iter()
        .enumerate()
        .filter(|&(i, _)| i != collector.index)
        .map(|(_, arg)| arg)
        .collect::<Punctuated<_, _>>();
    let Some(lifetime) = collector.lifetime else {
        return sig;
    };
    let still_used = |tokens: TokenStream| mentions_lifetime(tokens, &lifetime.ident);
    if still_used(sig.inputs.to_token_stream()) || still_used(sig.output.to_token_stream()) {
        return sig;
    }
    sig.generics.params = std::mem::take(&mut sig.generics.params)
        .into_iter()
        .filter(|param| !matches!(param, GenericParam::Lifetime(def) if def.lifetime == *lifetime))
        .collect();
    if let Some(clause) = &mut sig.generics.where_clause {
        clause.predicates = std::mem::take(&mut clause.predicates)
            .into_iter()
            .filter(|predicate| {
                !matches!(predicate, WherePredicate::Lifetime(p) if p.lifetime == *lifetime)
            })
            .collect();
    }
    sig
}

fn mentions_lifetime(tokens: TokenStream, name: &Ident) -> bool {
    let mut tokens = tokens.into_iter().peekable();
    while let Some(token) = tokens.next() {
        match token {
            TokenTree::Punct(p) if p.as_char() == '\'' => {
                if let Some(TokenTree::Ident(ident)) = tokens.peek()
                    && ident == name
                {
                    return true;
                }
            }
            TokenTree::Group(group) if mentions_lifetime(group.stream(), name) => return true,
            _ => {}
        }
    }
    false
}

fn respan(ident: &Ident, span: Span) -> Ident {
    let mut ident = ident.clone();
    ident.set_span(span);
    ident
}

fn mentions_impl_trait(ty: &Type) -> bool {
    fn walk(tokens: TokenStream) -> bool {
        tokens.into_iter().any(|token| match token {
            TokenTree::Ident(ident) => ident == "impl",
            TokenTree::Group(group) => walk(group.stream()),
            TokenTree::Punct(_) | TokenTree::Literal(_) => false,
        })
    }
    walk(ty.to_token_stream())
}
