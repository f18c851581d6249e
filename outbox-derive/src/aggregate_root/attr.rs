//! The `#[aggregate_root(...)]` keys on the model and on its fields.

use syn::ext::IdentExt;
use syn::meta::ParseNestedMeta;
use syn::{Attribute, Ident, LitStr, Path};

use crate::attr::{self, Keyed, Slot};
use crate::ctxt::Ctxt;
use crate::symbol::*;

/// Keys on the model.
pub struct Container {
    pub aggregate: Option<Keyed<LitStr>>,
    /// `aggregate` appeared, even if its value was unusable.
    pub aggregate_written: bool,
    pub children: Vec<Child>,
    pub krate: Option<Path>,
}

/// `name = path::to::Entity` in `children(...)`: a related entity whose rows are loaded into the
/// snapshot under `name`.
pub struct Child {
    pub name: Ident,
    pub entity: Path,
}

/// Keys on a field.
pub struct Field {
    /// The `id` key, when present.
    pub id: Option<Path>,
}

const CONTAINER_KEYS: &[&str] = &["aggregate", "children", "crate"];
const FIELD_KEYS: &[&str] = &["id"];
const CHILDREN_SYNTAX: &str = "`children(lines = super::order_line::Entity, ...)`: each child is a JSON key and the SeaORM `Entity` whose related rows are placed under it";

impl Container {
    pub fn from_attrs(ctxt: &Ctxt, attrs: &[Attribute]) -> Self {
        let mut aggregate = Slot::new(ctxt, AGGREGATE);
        let mut children = Slot::new(ctxt, CHILDREN);
        let mut krate = Slot::new(ctxt, CRATE);

        attr::parse_namespace(ctxt, attrs, AGGREGATE_ROOT, |meta| {
            if meta.path == AGGREGATE {
                // #[aggregate_root(aggregate = "Order")]
                aggregate.set(
                    &meta.path,
                    attr::string(ctxt, meta, "aggregate = \"Order\"")?,
                );
            } else if meta.path == CHILDREN {
                // #[aggregate_root(children(lines = super::order_line::Entity))]
                children.set(&meta.path, parse_children(ctxt, meta)?);
            } else if meta.path == CRATE {
                // #[aggregate_root(crate = "my_outbox")]
                krate.set(&meta.path, attr::crate_key(ctxt, meta)?);
            } else {
                attr::unknown_key(
                    ctxt,
                    meta,
                    "in #[aggregate_root(...)] on the model",
                    CONTAINER_KEYS,
                )?;
            }
            Ok(())
        });

        Container {
            aggregate_written: aggregate.written(),
            aggregate: aggregate.get(),
            children: children.get().map(|keyed| keyed.value).unwrap_or_default(),
            krate: krate.get().map(|keyed| keyed.value),
        }
    }
}

impl Field {
    pub fn from_attrs(ctxt: &Ctxt, attrs: &[Attribute]) -> Self {
        let mut id = Slot::new(ctxt, ID);

        attr::parse_namespace(ctxt, attrs, AGGREGATE_ROOT, |meta| {
            if meta.path == ID {
                // #[aggregate_root(id)]
                attr::flag(ctxt, meta)?;
                id.set(&meta.path, Some(()));
            } else {
                attr::unknown_key(
                    ctxt,
                    meta,
                    "in #[aggregate_root(...)] on a field",
                    FIELD_KEYS,
                )?;
            }
            Ok(())
        });

        Field {
            id: id.get().map(|keyed| keyed.key),
        }
    }
}

/// `children(name = path, ...)`. Returns `None` when the list is not parenthesized at all.
fn parse_children(ctxt: &Ctxt, meta: &ParseNestedMeta) -> syn::Result<Option<Vec<Child>>> {
    if !meta.input.peek(syn::token::Paren) {
        ctxt.error_spanned_by(&meta.path, format_args!("expected {CHILDREN_SYNTAX}"));
        attr::skip_value(meta)?;
        return Ok(None);
    }
    let mut children: Vec<Child> = Vec::new();
    meta.parse_nested_meta(|child| {
        let Some(name) = child.path.get_ident() else {
            ctxt.error_spanned_by(
                &child.path,
                format_args!("a child's name is one identifier: {CHILDREN_SYNTAX}"),
            );
            return attr::skip_value(&child);
        };
        if !child.input.peek(syn::Token![=]) {
            ctxt.error_spanned_by(
                &child.path,
                format_args!("child `{name}` names no entity: expected {CHILDREN_SYNTAX}"),
            );
            return attr::skip_value(&child);
        }
        let entity: Path = child.value()?.parse()?;
        let name = Ident::new(&name.unraw().to_string(), name.span());
        if let Some(first) = children.iter().find(|c| c.name == name) {
            ctxt.error_spanned_by(
                &name,
                format_args!("duplicate child `{name}`: keep only one"),
            );
            ctxt.error_spanned_by(
                &first.name,
                format_args!("child `{name}` first defined here"),
            );
        } else {
            children.push(Child { name, entity });
        }
        Ok(())
    })?;
    Ok(Some(children))
}
