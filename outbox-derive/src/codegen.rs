//! Output pieces shared by the macros.

use proc_macro2::{Group, Span, TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{DeriveInput, Index, Member, Path};

/// The path of the `outbox` facade in generated code: `::outbox`, or the user's `crate = "..."`.
pub struct Facade(TokenStream);

impl Facade {
    pub fn new(krate: Option<&Path>) -> Self {
        Facade(match krate {
            Some(path) => path.to_token_stream(),
            None => quote!(::outbox),
        })
    }

    /// The path with every token at `span`. An expression's span runs from its first token to its
    /// last, so a path left at the macro's call site would drag a `quote_spanned!` error there.
    pub fn at(&self, span: Span) -> TokenStream {
        respan(self.0.clone(), span)
    }
}

impl ToTokens for Facade {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        self.0.to_tokens(tokens);
    }
}

fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut token| {
            if let TokenTree::Group(group) = &token {
                let mut respanned = Group::new(group.delimiter(), respan(group.stream(), span));
                respanned.set_span(span);
                token = TokenTree::Group(respanned);
            } else {
                token.set_span(span);
            }
            token
        })
        .collect()
}

/// Wraps derive output in an anonymous constant, so nothing it declares leaks into the user's
/// namespace.
pub fn wrap_in_const(item: TokenStream) -> TokenStream {
    quote! {
        const _: () = {
            #item
        };
    }
}

/// The errors as `compile_error!`s, followed by the output that stands in for what failed.
pub fn with_error(error: &syn::Error, output: TokenStream) -> TokenStream {
    let error = error.to_compile_error();
    quote! {
        #error
        #output
    }
}

/// What a failed derive emits beside its errors: an impl of `trait_path` whose `items` are never
/// run (the crate does not compile), so uses of the type don't add errors of their own.
pub fn stub_impl(input: &DeriveInput, trait_path: TokenStream, items: TokenStream) -> TokenStream {
    let ty = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    wrap_in_const(quote! {
        #[automatically_derived]
        impl #impl_generics #trait_path for #ty #ty_generics #where_clause {
            #items
        }
    })
}

/// The same member with the given span.
pub fn respan_member(member: &Member, span: Span) -> Member {
    match member {
        Member::Named(ident) => {
            let mut ident = ident.clone();
            ident.set_span(span);
            Member::Named(ident)
        }
        Member::Unnamed(index) => Member::Unnamed(Index {
            index: index.index,
            span,
        }),
    }
}

/// `aggregate_id(&self.field)`, spanned on the field's type, so that "cannot be an aggregate id"
/// points at the type that lacks `Display`.
pub fn field_aggregate_id(krate: &Facade, field: &syn::Field, member: &Member) -> TokenStream {
    let span = field.ty.span();
    let member = respan_member(member, span);
    let krate = krate.at(span);
    quote_spanned!(span=> #krate::__private::aggregate_id(&self.#member))
}

/// The items of a `DomainEvent` impl that never runs, each with `body` (`unreachable!()`, or
/// `match *self {}` for an uninhabited type).
pub fn domain_event_stub_items(krate: &Facade, body: &TokenStream) -> TokenStream {
    let payload = payload_type(krate);
    quote! {
        fn aggregate_type(&self) -> &'static str {
            #body
        }
        fn aggregate_id(&self) -> ::std::string::String {
            #body
        }
        fn event_type(&self) -> &'static str {
            #body
        }
        fn payload(&self) -> #payload {
            #body
        }
    }
}

/// The return type of `DomainEvent::payload`.
pub fn payload_type(krate: &Facade) -> TokenStream {
    quote! {
        ::core::result::Result<#krate::__private::serde_json::Value, #krate::__private::serde_json::Error>
    }
}
