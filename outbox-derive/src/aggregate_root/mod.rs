//! `#[derive(AggregateRoot)]` on a SeaORM entity's `Model`: parse (`ast`, `attr`), check
//! (`valid`), generate (`expand`).

mod ast;
mod attr;
mod expand;
mod valid;

use proc_macro2::TokenStream;
use syn::DeriveInput;

use crate::ctxt::Ctxt;

pub fn derive(input: &DeriveInput) -> TokenStream {
    let ctxt = Ctxt::new();
    let ast = ast::Input::from_syn(&ctxt, input);
    valid::check(&ctxt, &ast);
    match ctxt.check() {
        Ok(()) => expand::impl_aggregate_root(&ast),
        // Still implement the trait, so this mistake is the only error the user sees.
        Err(error) => expand::fallback(input, ast.attrs.krate.as_ref(), &error),
    }
}
