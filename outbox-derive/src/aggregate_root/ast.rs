//! The derive input as this macro sees it: the model struct and its fields, with their parsed
//! `#[aggregate_root]` keys.

use syn::{Data, DeriveInput};

use super::attr;
use crate::ast;
use crate::ctxt::Ctxt;

pub struct Input<'a> {
    pub original: &'a DeriveInput,
    pub attrs: attr::Container,
    /// Empty unless the input is a struct; `valid` refuses the rest.
    pub fields: Vec<Field<'a>>,
}

pub type Field<'a> = ast::Field<'a, attr::Field>;

impl<'a> Input<'a> {
    pub fn from_syn(ctxt: &Ctxt, input: &'a DeriveInput) -> Self {
        let attrs = attr::Container::from_attrs(ctxt, &input.attrs);
        let fields = match &input.data {
            Data::Struct(data) => Field::multiple_from_syn(&data.fields, |field| {
                attr::Field::from_attrs(ctxt, &field.attrs)
            }),
            Data::Enum(_) | Data::Union(_) => Vec::new(),
        };
        Input {
            original: input,
            attrs,
            fields,
        }
    }

    /// The field marked `#[aggregate_root(id)]` (the first, if `valid` found several).
    pub fn id(&self) -> Option<&Field<'a>> {
        self.fields.iter().find(|field| field.attrs.id.is_some())
    }
}
