//! The service function as `#[emits]` sees it: which parameter is the transaction and which is
//! the event collector.

use syn::{
    FnArg, GenericParam, Generics, Ident, ItemFn, Pat, PatType, Type, TypeParamBound,
    TypeReference, WherePredicate,
};

use super::attr::Args;
use crate::symbol::*;

pub struct Function<'a> {
    pub original: &'a ItemFn,
    /// The transaction (or, with `autocommit`, the connection) parameter.
    pub connection: Option<Connection<'a>>,
    /// With `txn = name`: no parameter has that name.
    pub txn_not_found: Option<&'a Ident>,
    /// Every `Events` parameter; `valid` accepts exactly one.
    pub collectors: Vec<Collector<'a>>,
    /// `R` when the function is not `async` but returns `Pin<Box<dyn Future<Output = R> ..>>`:
    /// an `async fn` that `#[async_trait]` (on the impl, so expanded first) has rewritten.
    pub boxed_output: Option<&'a Type>,
}

pub struct Connection<'a> {
    pub param: &'a PatType,
    /// Its name, if the pattern is a plain binding.
    pub ident: Option<&'a Ident>,
    /// The reference, if the type is one.
    pub reference: Option<&'a TypeReference>,
    pub kind: ConnectionKind,
}

#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum ConnectionKind {
    /// `&DatabaseTransaction`: the events join it as they are.
    Transaction,
    /// `&DatabaseConnection` or `&DbConn`: each statement would autocommit, so #[emits] begins a
    /// transaction for the body and the events.
    Autocommit,
    /// `&C` for a type parameter `C`, or `&impl ...`, bounded by SeaORM's `ConnectionTrait` or
    /// `TransactionTrait`: either a pool or a transaction at run time.
    Generic {
        /// Bounded by `TransactionTrait`: #[emits] begins (a SAVEPOINT inside a transaction).
        /// Otherwise a connection outside any transaction is refused at run time.
        can_begin: bool,
    },
    /// Named by `txn = ...`, of a type the macro does not know: it must be a transaction.
    Other,
}

pub struct Collector<'a> {
    pub index: usize,
    /// The reference's lifetime, if named (`#[async_trait]` names every one).
    pub lifetime: Option<&'a syn::Lifetime>,
    pub param: &'a PatType,
    /// Whether it is taken as `&mut Events`, the only form that works.
    pub by_mut_ref: bool,
    /// The path the user wrote for `Events`, so the expansion names the type through it.
    pub path: Option<&'a syn::Path>,
}

impl<'a> Function<'a> {
    pub fn from_syn(item: &'a ItemFn, args: &'a Args) -> Self {
        let params: Vec<(usize, &PatType)> = item
            .sig
            .inputs
            .iter()
            .enumerate()
            .filter_map(|(index, arg)| match arg {
                FnArg::Typed(param) => Some((index, param)),
                FnArg::Receiver(_) => None,
            })
            .collect();

        let collectors = params
            .iter()
            .filter_map(|&(index, param)| {
                collector_type(&param.ty).map(|by_mut_ref| Collector {
                    index,
                    lifetime: match peel(&param.ty) {
                        Type::Reference(reference) => reference.lifetime.as_ref(),
                        _ => None,
                    },
                    param,
                    by_mut_ref,
                    path: collector_path(&param.ty),
                })
            })
            .collect();

        let generics = &item.sig.generics;
        let (connection, txn_not_found) = match &args.txn {
            // #[emits(..., txn = name)]: that parameter, whatever its type.
            Some(name) => match params
                .iter()
                .find(|(_, param)| binding(&param.pat) == Some(name))
            {
                Some(&(_, param)) => (
                    Some(Connection::new(
                        param,
                        connection_kind(&param.ty, generics).unwrap_or_else(|| {
                            // A type parameter bounded through the user's own trait: checked at
                            // run time, as for `ConnectionTrait` alone.
                            match peel(&param.ty) {
                                Type::Reference(r) => match peel(&r.elem) {
                                    Type::Path(p)
                                        if p.path
                                            .get_ident()
                                            .is_some_and(|i| is_type_param(i, generics)) =>
                                    {
                                        ConnectionKind::Generic { can_begin: false }
                                    }
                                    _ => ConnectionKind::Other,
                                },
                                _ => ConnectionKind::Other,
                            }
                        }),
                    )),
                    None,
                ),
                None => (None, Some(name)),
            },
            None => (
                params.iter().find_map(|&(_, param)| {
                    connection_kind(&param.ty, generics).map(|kind| Connection::new(param, kind))
                }),
                None,
            ),
        };

        let boxed_output = match (&item.sig.asyncness, &item.sig.output) {
            (None, syn::ReturnType::Type(_, ty)) => boxed_future_output(ty),
            _ => None,
        };

        Function {
            original: item,
            connection,
            txn_not_found,
            collectors,
            boxed_output,
        }
    }

    /// A helper that records into its caller's collector: it takes `events` but no connection,
    /// so it writes nothing itself; the calling `#[emits]` function writes what it recorded.
    pub fn is_helper(&self) -> bool {
        self.connection.is_none() && self.txn_not_found.is_none() && !self.collectors.is_empty()
    }

    /// The collector parameter that the expansion removes from the signature.
    pub fn collector(&self) -> Option<&Collector<'a>> {
        self.collectors.first()
    }
}

impl<'a> Connection<'a> {
    fn new(param: &'a PatType, kind: ConnectionKind) -> Self {
        let reference = match peel(&param.ty) {
            Type::Reference(reference) => Some(reference),
            _ => None,
        };
        Connection {
            param,
            ident: binding(&param.pat),
            reference,
            kind,
        }
    }
}

/// `Some(true)` for `&mut Events<..>`, `Some(false)` for any other form of `Events`.
fn collector_type(ty: &Type) -> Option<bool> {
    match peel(ty) {
        Type::Reference(reference) => {
            last_segment(&reference.elem).filter(|ident| *ident == EVENTS)?;
            Some(reference.mutability.is_some())
        }
        other => last_segment(other)
            .filter(|ident| *ident == EVENTS)
            .map(|_| false),
    }
}

/// `outbox::Events` in `&mut outbox::Events<..>` (or in a mistaken `&Events` or `Events`).
fn collector_path(ty: &Type) -> Option<&syn::Path> {
    let ty = match peel(ty) {
        Type::Reference(reference) => peel(&reference.elem),
        other => other,
    };
    match ty {
        Type::Path(path) if path.qself.is_none() => Some(&path.path),
        _ => None,
    }
}

/// What kind of connection `&X` is: judged by the last segment of `X`'s path, or, for a type
/// parameter or `impl Trait`, by its bounds (the parameter's own and the where clause's). A bound
/// the macro cannot see through (a user trait with `ConnectionTrait` as supertrait) is not
/// recognized; `txn = name` names such a parameter.
fn connection_kind(ty: &Type, generics: &Generics) -> Option<ConnectionKind> {
    let Type::Reference(reference) = peel(ty) else {
        return None;
    };
    let bounds: Vec<&TypeParamBound> = match peel(&reference.elem) {
        Type::ImplTrait(bounds) => bounds.bounds.iter().collect(),
        Type::Path(path) if path.qself.is_none() => {
            let ident = path.path.get_ident();
            match ident.filter(|ident| is_type_param(ident, generics)) {
                Some(param) => bounds_of(param, generics),
                None => {
                    let ident = last_segment(&reference.elem)?;
                    return if ident == DATABASE_TRANSACTION {
                        Some(ConnectionKind::Transaction)
                    } else if ident == DATABASE_CONNECTION || ident == DB_CONN {
                        Some(ConnectionKind::Autocommit)
                    } else {
                        None
                    };
                }
            }
        }
        _ => return None,
    };
    let names: Vec<&Ident> = bounds
        .iter()
        .filter_map(|bound| match bound {
            TypeParamBound::Trait(bound) => bound.path.segments.last().map(|s| &s.ident),
            _ => None,
        })
        .collect();
    let can_begin = names.iter().any(|name| **name == TRANSACTION_TRAIT);
    (can_begin || names.iter().any(|name| **name == CONNECTION_TRAIT))
        .then_some(ConnectionKind::Generic { can_begin })
}

fn is_type_param(ident: &Ident, generics: &Generics) -> bool {
    generics.params.iter().any(|param| match param {
        GenericParam::Type(param) => param.ident == *ident,
        _ => false,
    })
}

/// Every bound of the type parameter `param`: inline and in the where clause.
fn bounds_of<'a>(param: &Ident, generics: &'a Generics) -> Vec<&'a TypeParamBound> {
    let inline = generics.params.iter().filter_map(|p| match p {
        GenericParam::Type(p) if p.ident == *param => Some(p.bounds.iter()),
        _ => None,
    });
    let predicates = generics
        .where_clause
        .iter()
        .flat_map(|clause| clause.predicates.iter())
        .filter_map(|predicate| match predicate {
            WherePredicate::Type(predicate) => match &predicate.bounded_ty {
                Type::Path(path) if path.path.get_ident() == Some(param) => {
                    Some(predicate.bounds.iter())
                }
                _ => None,
            },
            _ => None,
        });
    inline.chain(predicates).flatten().collect()
}

/// `R` in `Pin<Box<dyn Future<Output = R> + ..>>`, whatever paths lead to `Pin`, `Box` and
/// `Future`.
fn boxed_future_output(ty: &Type) -> Option<&Type> {
    fn only_type_argument<'t>(ty: &'t Type, name: &str) -> Option<&'t Type> {
        let Type::Path(path) = peel(ty) else {
            return None;
        };
        let segment = path.path.segments.last().filter(|s| s.ident == name)?;
        match &segment.arguments {
            syn::PathArguments::AngleBracketed(args) => match args.args.first()? {
                syn::GenericArgument::Type(ty) if args.args.len() == 1 => Some(ty),
                _ => None,
            },
            _ => None,
        }
    }
    let boxed = only_type_argument(ty, "Pin")?;
    let Type::TraitObject(object) = peel(only_type_argument(boxed, "Box")?) else {
        return None;
    };
    object.bounds.iter().find_map(|bound| match bound {
        TypeParamBound::Trait(bound) => {
            let segment = bound.path.segments.last().filter(|s| s.ident == "Future")?;
            match &segment.arguments {
                syn::PathArguments::AngleBracketed(args) => {
                    args.args.iter().find_map(|arg| match arg {
                        syn::GenericArgument::AssocType(assoc) if assoc.ident == "Output" => {
                            Some(&assoc.ty)
                        }
                        _ => None,
                    })
                }
                _ => None,
            }
        }
        _ => None,
    })
}

fn last_segment(ty: &Type) -> Option<&Ident> {
    match peel(ty) {
        Type::Path(path) if path.qself.is_none() => {
            path.path.segments.last().map(|segment| &segment.ident)
        }
        _ => None,
    }
}

/// The type without the invisible groups that `macro_rules!` wraps around `$t:ty`, or parentheses.
fn peel(mut ty: &Type) -> &Type {
    loop {
        match ty {
            Type::Group(group) => ty = &group.elem,
            Type::Paren(paren) => ty = &paren.elem,
            other => return other,
        }
    }
}

/// The name a parameter pattern binds, if it is a plain `name` or `mut name`.
pub fn binding(pat: &Pat) -> Option<&Ident> {
    match pat {
        Pat::Ident(pat) if pat.by_ref.is_none() && pat.subpat.is_none() => Some(&pat.ident),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use quote::ToTokens;
    use syn::parse_quote;

    use super::*;

    #[test]
    fn recognizes_collectors_by_last_segment() {
        assert_eq!(collector_type(&parse_quote!(&mut Events)), Some(true));
        assert_eq!(
            collector_type(&parse_quote!(&mut outbox::Events<()>)),
            Some(true)
        );
        assert_eq!(collector_type(&parse_quote!(&Events)), Some(false));
        assert_eq!(collector_type(&parse_quote!(Events)), Some(false));
        assert_eq!(collector_type(&parse_quote!(&mut Vec<Events>)), None);
    }

    #[test]
    fn recognizes_generic_connections_by_their_bounds() {
        let generics: Generics =
            parse_quote!(<C: ConnectionTrait, T: sea_orm::TransactionTrait + ConnectionTrait, U>);
        let kind = |ty: Type| connection_kind(&ty, &generics);
        assert_eq!(
            kind(parse_quote!(&C)),
            Some(ConnectionKind::Generic { can_begin: false })
        );
        assert_eq!(
            kind(parse_quote!(&T)),
            Some(ConnectionKind::Generic { can_begin: true })
        );
        assert_eq!(kind(parse_quote!(&U)), None);
        assert_eq!(
            kind(parse_quote!(&(impl ConnectionTrait + TransactionTrait))),
            Some(ConnectionKind::Generic { can_begin: true })
        );
        let mut generics: Generics = parse_quote!(<C>);
        generics.where_clause = Some(parse_quote!(where C: ConnectionTrait));
        assert_eq!(
            connection_kind(&parse_quote!(&C), &generics),
            Some(ConnectionKind::Generic { can_begin: false })
        );
    }

    #[test]
    fn recognizes_connections_by_last_segment() {
        let generics = Generics::default();
        let kind = |ty: Type| connection_kind(&ty, &generics);
        assert!(kind(parse_quote!(&DatabaseTransaction)) == Some(ConnectionKind::Transaction));
        assert!(
            kind(parse_quote!(&'a sea_orm::DatabaseTransaction))
                == Some(ConnectionKind::Transaction)
        );
        assert!(kind(parse_quote!(&DatabaseConnection)) == Some(ConnectionKind::Autocommit));
        assert!(kind(parse_quote!(&DbConn)) == Some(ConnectionKind::Autocommit));
        assert!(kind(parse_quote!(DatabaseTransaction)).is_none());
        assert!(kind(parse_quote!(&impl Display)).is_none());
    }

    #[test]
    fn sees_through_async_trait_return_types() {
        let ty: Type = parse_quote!(
            ::core::pin::Pin<
                Box<
                    dyn ::core::future::Future<Output = Result<u8, E>>
                        + ::core::marker::Send
                        + 'async_trait,
                >,
            >
        );
        let output = boxed_future_output(&ty).map(|ty| ty.to_token_stream().to_string());
        assert_eq!(output.as_deref(), Some("Result < u8 , E >"));
        assert!(boxed_future_output(&parse_quote!(Result<u8, E>)).is_none());
    }

    #[test]
    fn finds_the_parameters() {
        let item: ItemFn = parse_quote! {
            async fn place(&self, cmd: Cmd, txn: &DatabaseTransaction, events: &mut Events) -> Result<(), E> {}
        };
        let args = Args {
            events: Vec::new(),
            autocommit: None,
            outbox: None,
            txn: None,
            krate: None,
        };
        let function = Function::from_syn(&item, &args);
        let connection = function.connection.as_ref().unwrap();
        assert_eq!(connection.ident.unwrap(), "txn");
        assert!(connection.kind == ConnectionKind::Transaction);
        assert_eq!(function.collector().unwrap().index, 3);
    }
}
