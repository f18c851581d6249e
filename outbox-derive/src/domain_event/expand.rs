//! Code generation for `DomainEvent`. Expressions whose trait bounds can fail are spanned on the
//! user's tokens: the aggregate id call on the field's type, the payload call on the type's name,
//! so the runtime's `#[diagnostic::on_unimplemented]` messages land there.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{DeriveInput, Generics, Ident, LitStr, Path};

use super::ast::{self, Data, Field, Input, Variant};
use crate::codegen::{
    Facade, domain_event_stub_items, field_aggregate_id, payload_type, respan_member, stub_impl,
    with_error, wrap_in_const,
};
use crate::generics;

pub fn impl_domain_event(input: &Input) -> TokenStream {
    let krate = Facade::new(input.attrs.krate.as_ref());
    let ty = &input.original.ident;
    let generics = bounded_generics(input, &krate);
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();

    let aggregate = match &input.attrs.aggregate {
        Some(aggregate) => &aggregate.value,
        // Unreachable after `valid`; a stub keeps this function total.
        None => return fallback_impl(input.original, &krate),
    };
    let body = match &input.data {
        Data::Struct(fields) => struct_body(input, fields, &krate),
        Data::Enum(variants) => enum_body(input, variants, &krate),
        Data::Union(_) => return fallback_impl(input.original, &krate),
    };
    let Body {
        aggregate_id,
        event_type,
        schema_version,
        payload,
    } = body;

    let payload_type = payload_type(&krate);
    let registrations = schema_registrations(input, &krate, aggregate);
    wrap_in_const(quote! {
        #registrations

        #[automatically_derived]
        impl #impl_generics #krate::__private::DomainEvent for #ty #ty_generics #where_clause {
            fn aggregate_type(&self) -> &'static str {
                #aggregate
            }
            fn aggregate_id(&self) -> ::std::string::String {
                #aggregate_id
            }
            fn event_type(&self) -> &'static str {
                #event_type
            }
            fn schema_version(&self) -> ::core::option::Option<i32> {
                #schema_version
            }
            fn payload(&self) -> #payload_type {
                #payload
            }
        }
    })
}

/// One schema registration per event type for `outbox::schema` (a no-op without its feature).
/// Generic types have no one schema, so they register none.
fn schema_registrations(input: &Input, krate: &Facade, aggregate: &LitStr) -> TokenStream {
    if !input.original.generics.params.is_empty() {
        return TokenStream::new();
    }
    let ty = &input.original.ident;
    let default_version = input.attrs.version.as_ref().map(|v| &v.value);
    match &input.data {
        Data::Struct(_) => {
            let event_type = struct_event_type(input);
            let version = version(default_version);
            quote! {
                #krate::__private::register_event_schema!(
                    #ty, #aggregate, #event_type, #version, ::core::option::Option::None
                );
            }
        }
        Data::Enum(variants) => {
            // serde's default representation wraps each variant's content, which the payload
            // leaves out.
            let wrapped = !input.attrs.serde_tagged;
            variants
                .iter()
                .enumerate()
                .map(|(index, variant)| {
                    let event_type = variant_event_type(variant);
                    let version = version(variant_version(variant, default_version));
                    quote! {
                        #krate::__private::register_event_schema!(
                            #ty, #aggregate, #event_type, #version,
                            ::core::option::Option::Some((#index, #wrapped))
                        );
                    }
                })
                .collect()
        }
        Data::Union(_) => TokenStream::new(),
    }
}

/// The derive failed: the errors, and a stub impl.
pub fn fallback(input: &DeriveInput, krate: Option<&Path>, error: &syn::Error) -> TokenStream {
    with_error(error, fallback_impl(input, &Facade::new(krate)))
}

fn fallback_impl(input: &DeriveInput, krate: &Facade) -> TokenStream {
    let items = domain_event_stub_items(krate, &quote!(::core::unreachable!()));
    stub_impl(input, quote!(#krate::__private::DomainEvent), items)
}

struct Body {
    aggregate_id: TokenStream,
    event_type: TokenStream,
    schema_version: TokenStream,
    payload: TokenStream,
}

fn struct_body(input: &Input, fields: &[Field], krate: &Facade) -> Body {
    let ty = &input.original.ident;
    let aggregate_id = match ast::aggregate_id(fields) {
        Some(field) => field_aggregate_id(krate, field.original, &field.member),
        None => quote!(::core::unreachable!()),
    };
    let event_type = struct_event_type(input);
    Body {
        aggregate_id,
        event_type: quote!(#event_type),
        schema_version: version(input.attrs.version.as_ref().map(|v| &v.value)),
        payload: payload_call(krate, ty, "payload"),
    }
}

fn enum_body(input: &Input, variants: &[Variant], krate: &Facade) -> Body {
    let ty = &input.original.ident;
    let default_version = input.attrs.version.as_ref().map(|v| &v.value);

    let aggregate_id = variants.iter().map(|variant| {
        let ident = &variant.original.ident;
        match variant.aggregate_id() {
            Some(field) => {
                let span = field.original.ty.span();
                let member = respan_member(&field.member, span);
                let id = Ident::new("__id", span);
                let krate = krate.at(span);
                quote_spanned! {span=>
                    Self::#ident { #member: #id, .. } => #krate::__private::aggregate_id(#id),
                }
            }
            None => quote!(Self::#ident { .. } => ::core::unreachable!(),),
        }
    });
    let event_type = variants.iter().map(|variant| {
        let ident = &variant.original.ident;
        let event_type = variant_event_type(variant);
        quote!(Self::#ident { .. } => #event_type,)
    });
    let any_version =
        default_version.is_some() || variants.iter().any(|v| v.attrs.version.is_some());
    let schema_version = if any_version {
        let arms = variants.iter().map(|variant| {
            let ident = &variant.original.ident;
            let version = version(variant_version(variant, default_version));
            quote!(Self::#ident { .. } => #version,)
        });
        quote!(match self { #(#arms)* })
    } else {
        version(None)
    };
    // serde's default enum representation wraps the content as `{"Variant": ...}`; the variant is
    // already the `type` column, so the payload is the content alone. Tagged and untagged
    // representations carry no such wrapper.
    let payload = if input.attrs.serde_tagged {
        payload_call(krate, ty, "payload")
    } else {
        payload_call(krate, ty, "variant_payload")
    };

    Body {
        aggregate_id: quote!(match self { #(#aggregate_id)* }),
        event_type: quote!(match self { #(#event_type)* }),
        schema_version,
        payload,
    }
}

/// The payload through `function` of `__private`, spanned on the type's name: "must implement
/// `serde::Serialize`" points there.
fn payload_call(krate: &Facade, ty: &Ident, function: &str) -> TokenStream {
    let span = ty.span();
    let krate = krate.at(span);
    let function = Ident::new(function, span);
    quote_spanned!(span=> #krate::__private::#function(self))
}

fn version(version: Option<&syn::LitInt>) -> TokenStream {
    match version {
        Some(version) => quote!(::core::option::Option::Some(#version)),
        None => quote!(::core::option::Option::None),
    }
}

/// A struct's event type: `event_type = "..."`, or its name.
fn struct_event_type(input: &Input) -> LitStr {
    match &input.attrs.event_type {
        Some(event_type) => event_type.value.clone(),
        None => type_name(&input.original.ident),
    }
}

/// A variant's event type: its `event_type = "..."`, or its name.
fn variant_event_type(variant: &Variant) -> LitStr {
    match &variant.attrs.event_type {
        Some(event_type) => event_type.value.clone(),
        None => type_name(&variant.original.ident),
    }
}

/// A variant's version: its own, or the enum's.
fn variant_version<'a>(
    variant: &'a Variant,
    default: Option<&'a syn::LitInt>,
) -> Option<&'a syn::LitInt> {
    variant.attrs.version.as_ref().map(|v| &v.value).or(default)
}

/// The default event type: the type or variant name as written, without `r#`.
fn type_name(ident: &Ident) -> LitStr {
    let name = syn::ext::IdentExt::unraw(ident).to_string();
    LitStr::new(&name, ident.span())
}

/// The type's generics, plus what the impl needs of its type parameters: `Serialize` for the
/// payload, and `Display` (as `AggregateId`) for aggregate ids whose type mentions one.
fn bounded_generics(input: &Input, krate: &Facade) -> Generics {
    let mut generics = input.original.generics.clone();
    if generics.type_params().next().is_none() {
        return generics;
    }
    let params = generics::type_param_idents(&generics);
    let ty = &input.original.ident;
    let (_, ty_generics, _) = input.original.generics.split_for_impl();
    let serialize = krate.at(ty.span());
    let mut bounds =
        vec![quote_spanned!(ty.span()=> #ty #ty_generics: #serialize::__private::serde::Serialize)];
    let id_fields: Vec<&Field> = match &input.data {
        Data::Struct(fields) => ast::aggregate_id(fields).into_iter().collect(),
        Data::Enum(variants) => variants.iter().filter_map(Variant::aggregate_id).collect(),
        Data::Union(_) => Vec::new(),
    };
    for field in id_fields {
        let field_ty = &field.original.ty;
        if generics::mentions(field_ty, &params) {
            let krate = krate.at(field_ty.span());
            bounds
                .push(quote_spanned!(field_ty.span()=> #field_ty: #krate::__private::AggregateId));
        }
    }
    let where_clause = generics.make_where_clause();
    // Each bound is well-formed by construction; parsing only converts it.
    where_clause.predicates.extend(
        bounds
            .into_iter()
            .filter_map(|bound| syn::parse2::<syn::WherePredicate>(bound).ok()),
    );
    generics
}
