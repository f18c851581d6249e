//! The service function as `#[emits]` sees it: which parameter is the transaction and which is
//! the event collector.

use syn::{FnArg, Ident, ItemFn, Pat, PatType, Type, TypeReference};

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
}

pub struct Connection<'a> {
    pub param: &'a PatType,
    /// Its name, if the pattern is a plain binding.
    pub ident: Option<&'a Ident>,
    /// The reference, if the type is one.
    pub reference: Option<&'a TypeReference>,
    pub kind: ConnectionKind,
}

#[derive(Copy, Clone, PartialEq, Eq)]
pub enum ConnectionKind {
    /// `&DatabaseTransaction`.
    Transaction,
    /// `&DatabaseConnection` or `&DbConn`: each statement autocommits.
    Autocommit,
    /// Named by `txn = ...`, of a type the macro does not know; the runtime checks it.
    Other,
}

pub struct Collector<'a> {
    pub index: usize,
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
                    param,
                    by_mut_ref,
                    path: collector_path(&param.ty),
                })
            })
            .collect();

        let (connection, txn_not_found) = match &args.txn {
            // #[emits(..., txn = name)]: that parameter, whatever its type.
            Some(name) => match params
                .iter()
                .find(|(_, param)| binding(&param.pat) == Some(name))
            {
                Some(&(_, param)) => (Some(Connection::new(param, ConnectionKind::Other)), None),
                None => (None, Some(name)),
            },
            None => (
                params.iter().find_map(|&(_, param)| {
                    connection_kind(&param.ty).map(|kind| Connection::new(param, kind))
                }),
                None,
            ),
        };

        Function {
            original: item,
            connection,
            txn_not_found,
            collectors,
        }
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
        // A parameter named by `txn = ...` is still recognized by its type.
        let kind = match kind {
            ConnectionKind::Other => connection_kind(&param.ty).unwrap_or(ConnectionKind::Other),
            known => known,
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

/// What kind of connection `&X` is, judged by the last segment of `X`'s path.
fn connection_kind(ty: &Type) -> Option<ConnectionKind> {
    let Type::Reference(reference) = peel(ty) else {
        return None;
    };
    let ident = last_segment(&reference.elem)?;
    if ident == DATABASE_TRANSACTION {
        Some(ConnectionKind::Transaction)
    } else if ident == DATABASE_CONNECTION || ident == DB_CONN {
        Some(ConnectionKind::Autocommit)
    } else {
        None
    }
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
    fn recognizes_connections_by_last_segment() {
        let kind = |ty: Type| connection_kind(&ty);
        assert!(kind(parse_quote!(&DatabaseTransaction)) == Some(ConnectionKind::Transaction));
        assert!(
            kind(parse_quote!(&'a sea_orm::DatabaseTransaction))
                == Some(ConnectionKind::Transaction)
        );
        assert!(kind(parse_quote!(&DatabaseConnection)) == Some(ConnectionKind::Autocommit));
        assert!(kind(parse_quote!(&DbConn)) == Some(ConnectionKind::Autocommit));
        assert!(kind(parse_quote!(DatabaseTransaction)).is_none());
        assert!(kind(parse_quote!(&impl ConnectionTrait)).is_none());
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
