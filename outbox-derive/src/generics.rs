//! Which generated bounds a generic type needs: those on types that mention a type parameter.

use proc_macro2::{TokenStream, TokenTree};
use quote::ToTokens;
use syn::{Generics, Ident, Type};

pub fn type_param_idents(generics: &Generics) -> Vec<Ident> {
    generics
        .type_params()
        .map(|param| param.ident.clone())
        .collect()
}

/// Whether `ty` names one of `params` anywhere. A false positive (a path segment that happens to
/// share a parameter's name) only adds a bound that holds.
pub fn mentions(ty: &Type, params: &[Ident]) -> bool {
    fn walk(tokens: TokenStream, params: &[Ident]) -> bool {
        tokens.into_iter().any(|token| match token {
            TokenTree::Ident(ident) => params.contains(&ident),
            TokenTree::Group(group) => walk(group.stream(), params),
            TokenTree::Punct(_) | TokenTree::Literal(_) => false,
        })
    }
    walk(ty.to_token_stream(), params)
}

#[cfg(test)]
mod tests {
    use syn::parse_quote;

    use super::*;

    #[test]
    fn finds_parameters_inside_types() {
        let generics: Generics = parse_quote!(<'a, T, const N: usize>);
        let params = type_param_idents(&generics);
        assert!(mentions(&parse_quote!(T), &params));
        assert!(mentions(&parse_quote!(Option<Vec<T>>), &params));
        assert!(mentions(&parse_quote!([T; N]), &params));
        assert!(!mentions(&parse_quote!(&'a str), &params));
        assert!(!mentions(&parse_quote!(uuid::Uuid), &params));
    }
}
