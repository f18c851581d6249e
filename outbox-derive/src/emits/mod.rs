//! `#[emits(A, B, ...)]` on an `async fn` service: parse (`attr`, `ast`), check (`valid`),
//! generate (`expand`).

mod ast;
mod attr;
mod expand;
mod valid;

use proc_macro2::{Span, TokenStream};
use syn::ItemFn;

use crate::codegen::with_error;
use crate::ctxt::Ctxt;

pub fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let function: ItemFn = match syn::parse2(item.clone()) {
        Ok(function) => function,
        Err(_) => {
            let error = syn::Error::new(
                Span::call_site(),
                "#[emits(...)] goes on an `async fn` with a body, such as a service method that takes the transaction",
            );
            return with_error(&error, item);
        }
    };
    let ctxt = Ctxt::new();
    let args = attr::Args::parse(&ctxt, args);
    let ast = ast::Function::from_syn(&function, &args);
    valid::check(&ctxt, &ast, &args);
    match ctxt.check() {
        Ok(()) => expand::service(&ast, &args),
        // Still emit the function, so callers and the body report only their own mistakes.
        Err(error) => with_error(&error, expand::fallback(&ast, &args)),
    }
}
