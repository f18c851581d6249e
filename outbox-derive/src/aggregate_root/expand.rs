//! Code generation for `AggregateRoot`. The snapshot is the root model's JSON with each child
//! collection loaded through the caller's connection (so, inside the caller's transaction).

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{DeriveInput, Ident, LitStr, Path};

use super::ast::Input;
use crate::codegen::{Facade, field_aggregate_id, stub_impl, with_error, wrap_in_const};

pub fn impl_aggregate_root(input: &Input) -> TokenStream {
    let krate = Facade::new(input.attrs.krate.as_ref());
    let ty = &input.original.ident;
    let (Some(aggregate), Some(id)) = (&input.attrs.aggregate, input.id()) else {
        // Unreachable after `valid`; a stub keeps this function total.
        return fallback_impl(input.original, &krate);
    };
    let aggregate = &aggregate.value;

    let aggregate_id = field_aggregate_id(&krate, id.original, &id.member);

    let snapshot = format_ident!("__snapshot");
    let db = format_ident!("__db");
    let children = input.attrs.children.iter().map(|child| {
        let name = LitStr::new(&child.name.to_string(), child.name.span());
        let entity = &child.entity;
        // Spanned on the child's path: "`Entity: Related<...>` is not satisfied" points there.
        let at = krate.at(entity.span());
        let rows = quote_spanned! {entity.span()=>
            #at::__private::sea_orm::ModelTrait::find_related::<#entity>(self, #entity).all(#db).await?
        };
        quote! {
            #krate::__private::attach_children(&mut #snapshot, #name, #rows)?;
        }
    });
    let at = krate.at(ty.span());
    let root = quote_spanned!(ty.span()=> #at::__private::snapshot_root(self)?);
    let snapshot_mut = if input.attrs.children.is_empty() {
        quote!(#snapshot)
    } else {
        quote!(mut #snapshot)
    };

    let signature = snapshot_signature(&krate, &db);
    wrap_in_const(quote! {
        #[automatically_derived]
        impl #krate::__private::AggregateRoot for #ty {
            fn aggregate_type(&self) -> &'static str {
                #aggregate
            }
            fn aggregate_id(&self) -> ::std::string::String {
                #aggregate_id
            }
            #signature {
                async move {
                    let #snapshot_mut = #root;
                    #(#children)*
                    ::core::result::Result::Ok(#snapshot)
                }
            }
        }
    })
}

/// The derive failed: the errors, and a stub impl.
pub fn fallback(input: &DeriveInput, krate: Option<&Path>, error: &syn::Error) -> TokenStream {
    with_error(error, fallback_impl(input, &Facade::new(krate)))
}

fn fallback_impl(input: &DeriveInput, krate: &Facade) -> TokenStream {
    let signature = snapshot_signature(krate, &format_ident!("_"));
    let items = quote! {
        fn aggregate_type(&self) -> &'static str {
            ::core::unreachable!()
        }
        fn aggregate_id(&self) -> ::std::string::String {
            ::core::unreachable!()
        }
        #signature {
            ::core::future::pending()
        }
    };
    stub_impl(input, quote!(#krate::__private::AggregateRoot), items)
}

/// `AggregateRoot::snapshot` as the trait declares it, with the connection parameter named `db`.
fn snapshot_signature(krate: &Facade, db: &Ident) -> TokenStream {
    quote! {
        fn snapshot<'__a, __C>(
            &'__a self,
            #db: &'__a __C,
        ) -> impl ::core::future::Future<
            Output = ::core::result::Result<
                #krate::__private::serde_json::Value,
                #krate::__private::sea_orm::DbErr,
            >,
        > + ::core::marker::Send + '__a
        where
            __C: #krate::__private::sea_orm::ConnectionTrait,
    }
}
