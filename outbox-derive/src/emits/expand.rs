//! Code generation for `#[emits]`.
//!
//! The body runs as an `async move` block, so its `return` and `?` produce the function's result
//! as before. Only when that result is `Ok` are the recorded events written, on the same
//! transaction, before the function returns; a failed write becomes the function's `Err` through
//! the user's `From<outbox::Error>`. With `autocommit`, the transaction is begun before the body
//! and committed after the events; on any `Err` it is dropped, which rolls it back.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Ident, PathArguments, ReturnType, Signature, Type};

use super::ast::{Collector, Function};
use super::attr::Args;
use crate::codegen::{Facade, domain_event_stub_items};

/// The names the expansion introduces. Locals are mixed-site, so the body cannot see or shadow
/// them; items only need unlikely names.
struct Names {
    marker: Ident,
    undeclared: Ident,
    events: Ident,
    result: Ident,
    is_ok: Ident,
    fail: Ident,
    error: Ident,
    txn: Ident,
}

impl Names {
    fn new() -> Self {
        let local = |name: &str| Ident::new(name, Span::mixed_site());
        Names {
            marker: format_ident!("__Emits"),
            undeclared: format_ident!("__Placeholder"),
            events: local("__outbox_events"),
            result: local("__outbox_result"),
            is_ok: local("__outbox_is_ok"),
            fail: local("__outbox_fail"),
            error: local("__outbox_error"),
            txn: local("__outbox_txn"),
        }
    }
}

pub fn service(function: &Function, args: &Args) -> TokenStream {
    let item = function.original;
    let (Some(connection), Some(collector), ReturnType::Type(_, ret)) =
        (&function.connection, function.collector(), &item.sig.output)
    else {
        // Unreachable after `valid`; the fallback keeps this function total.
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
        ..
    } = &names;
    let attrs = &item.attrs;
    let vis = &item.vis;
    let sig = without_param(&item.sig, collector.index);
    let block = &item.block;
    let declarations = declarations(args, &krate, &names, true);
    let marker = &names.marker;
    let bind_collector = bind_collector(collector, &names);

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

    let (prologue, rebind, target, commit) = if args.autocommit.is_some() {
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
        let assert = quote_spanned! {conn_span=>
            #at_conn::__private::assert_in_transaction(#conn_at_ty);
        };
        // The body's `async move` takes a copy of a shared reference; a `&mut` one would be moved.
        let rebind = match connection.reference {
            Some(reference) if reference.mutability.is_some() => quote!(let #conn = &*#conn;),
            _ => TokenStream::new(),
        };
        (assert, rebind, conn.to_token_stream(), TokenStream::new())
    };

    quote! {
        #(#attrs)*
        #vis #sig {
            #declarations
            #result_ops_call
            #prologue
            let mut #events = #krate::__private::collector::<#marker>();
            let #result #result_ty = {
                #rebind
                #bind_collector
                async move #block.await
            };
            if #is_ok(&#result) {
                if let ::core::result::Result::Err(#error) =
                    #krate::__private::flush(#target, #outbox, #events).await
                {
                    return #fail(#error);
                }
                #commit
            }
            #result
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
    let declarations = declarations(args, &krate, &names, !args.events.is_empty());
    let (sig, bind) = match function.collector() {
        Some(collector) => {
            let Names { marker, events, .. } = &names;
            let bind = bind_collector(collector, &names);
            (
                without_param(&item.sig, collector.index),
                quote! {
                    let mut #events = #krate::__private::collector::<#marker>();
                    #bind
                },
            )
        }
        None => (item.sig.clone(), TokenStream::new()),
    };
    quote! {
        #(#attrs)*
        #vis #sig {
            #declarations
            #bind
            #block
        }
    }
}

/// `let events: &mut Events<__Emits> = &mut __outbox_events;`: the user's pattern, and the
/// user's path to `Events` (which keeps their import used) with the declared set as parameter.
fn bind_collector(collector: &Collector, names: &Names) -> TokenStream {
    let Names { marker, events, .. } = names;
    let pat = &collector.param.pat;
    // Always `&mut`, whatever a mistaken signature says, so the body's `record` calls still check.
    let annotation = collector.path.map(|path| {
        let mut path = path.clone();
        if let Some(last) = path.segments.last_mut() {
            let marker = syn::TypePath {
                qself: None,
                path: syn::Path::from(marker.clone()),
            };
            last.arguments = PathArguments::AngleBracketed(syn::AngleBracketedGenericArguments {
                colon2_token: None,
                lt_token: Default::default(),
                args: std::iter::once(syn::GenericArgument::Type(Type::Path(marker))).collect(),
                gt_token: Default::default(),
            });
        }
        quote!(: &mut #path)
    });
    quote!(let #pat #annotation = &mut #events;)
}

/// The marker type that the collector is parameterized with, and one `Declares` impl per
/// declared type, spanned on that type: "not a domain event" points into the attribute.
/// `strict: false` declares every domain event instead.
fn declarations(args: &Args, krate: &Facade, names: &Names, strict: bool) -> TokenStream {
    let Names {
        marker, undeclared, ..
    } = names;
    if !strict {
        return quote! {
            struct #marker;
            impl<__E: #krate::__private::DomainEvent> #krate::__private::Declares<__E> for #marker {}
        };
    }
    let mut seen: Vec<String> = Vec::new();
    let mut impls = Vec::new();
    for ty in &args.events {
        let name = ty.to_token_stream().to_string();
        if seen.contains(&name) {
            continue;
        }
        seen.push(name);
        let span = ty.span();
        let at = krate.at(span);
        impls.push(quote_spanned!(span=> impl #at::__private::Declares<#ty> for #marker {}));
    }
    // With a single `Declares` impl, rustc infers `record`'s type parameter from it and reports
    // an undeclared event as a type mismatch. A second, unnameable event type keeps the choice
    // open, so the undeclared type is reported as such.
    let second = (impls.len() == 1).then(|| {
        let placeholder_items = domain_event_stub_items(krate, &quote!(match *self {}));
        quote! {
            enum #undeclared {}
            impl #krate::__private::DomainEvent for #undeclared {
                #placeholder_items
            }
            impl #krate::__private::Declares<#undeclared> for #marker {}
        }
    });
    quote! {
        struct #marker;
        #(#impls)*
        #second
    }
}

fn without_param(sig: &Signature, index: usize) -> Signature {
    let mut sig = sig.clone();
    sig.inputs = sig
        .inputs
        .into_iter()
        .enumerate()
        .filter(|&(i, _)| i != index)
        .map(|(_, arg)| arg)
        .collect::<Punctuated<_, _>>();
    sig
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
