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

/// SeaORM runs no `ActiveModelBehavior` hooks for its bulk statements, so they write no snapshot.
/// Inherent functions of the same names on the model's `Entity` (which `DeriveEntityModel`
/// declares beside it) take precedence over `EntityTrait`'s: they do the same, with a deprecation
/// warning that says so. `<Entity as EntityTrait>::insert_many(..)` is the explicit way past it.
#[allow(dead_code)] // off: a model without `Entity` in scope (tests/ui/pass/crate-override.rs) fails
fn bulk_write_warnings(krate: &Facade) -> TokenStream {
    let orm = quote!(#krate::__private::sea_orm);
    quote! {
        #[automatically_derived]
        impl Entity {
            /// `EntityTrait::insert_many`, which runs no `ActiveModelBehavior` hooks: no aggregate
            /// snapshot is written for these rows.
            #[deprecated(note = "SeaORM runs no ActiveModelBehavior hooks for insert_many, so no aggregate snapshot is written: insert each model with `model.insert(&txn)`, or call `<Entity as EntityTrait>::insert_many` and `outbox::write_snapshot` for each model yourself")]
            pub fn insert_many<__A, __I>(models: __I) -> #orm::InsertMany<__A>
            where
                __A: #orm::ActiveModelTrait<Entity = Self>,
                __I: ::core::iter::IntoIterator<Item = __A>,
            {
                <Self as #orm::EntityTrait>::insert_many(models)
            }

            /// `EntityTrait::update_many`, which runs no `ActiveModelBehavior` hooks: no aggregate
            /// snapshot is written for the rows it changes.
            #[deprecated(note = "SeaORM runs no ActiveModelBehavior hooks for update_many, so no aggregate snapshot is written: update each model with `active.update(&txn)`, or call `<Entity as EntityTrait>::update_many` and `outbox::write_snapshot` for each changed model yourself")]
            pub fn update_many() -> #orm::UpdateMany<Self> {
                <Self as #orm::EntityTrait>::update_many()
            }

            /// `EntityTrait::delete_many`, which runs no `ActiveModelBehavior` hooks: no aggregate
            /// snapshot is written for the rows it deletes.
            #[deprecated(note = "SeaORM runs no ActiveModelBehavior hooks for delete_many, so no `Deleted` snapshot is written: delete each model with `active.delete(&txn)`, or call `<Entity as EntityTrait>::delete_many` and `outbox::write_snapshot` for each model first yourself")]
            pub fn delete_many() -> #orm::DeleteMany<Self> {
                <Self as #orm::EntityTrait>::delete_many()
            }
        }
    }
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
