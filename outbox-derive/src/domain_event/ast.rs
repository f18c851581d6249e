//! The derive input as this macro sees it: the type, its variants and fields, each with its
//! parsed `#[domain_event]` keys.

use syn::{Data as SynData, DeriveInput, Fields};

use super::attr;
use crate::ast;
use crate::ctxt::Ctxt;

pub struct Input<'a> {
    pub original: &'a DeriveInput,
    pub attrs: attr::Container,
    pub data: Data<'a>,
}

pub enum Data<'a> {
    Struct(Vec<Field<'a>>),
    Enum(Vec<Variant<'a>>),
    /// Refused by `valid`.
    Union(&'a syn::DataUnion),
}

pub struct Variant<'a> {
    pub original: &'a syn::Variant,
    pub attrs: attr::Variant,
    pub fields: Vec<Field<'a>>,
}

pub type Field<'a> = ast::Field<'a, attr::Field>;

impl<'a> Input<'a> {
    pub fn from_syn(ctxt: &Ctxt, input: &'a DeriveInput) -> Self {
        let attrs = attr::Container::from_attrs(ctxt, &input.attrs);
        let data = match &input.data {
            SynData::Struct(data) => Data::Struct(fields(ctxt, &data.fields)),
            SynData::Enum(data) => Data::Enum(
                data.variants
                    .iter()
                    .map(|variant| Variant {
                        original: variant,
                        attrs: attr::Variant::from_attrs(ctxt, &variant.attrs),
                        fields: fields(ctxt, &variant.fields),
                    })
                    .collect(),
            ),
            SynData::Union(data) => Data::Union(data),
        };
        Input {
            original: input,
            attrs,
            data,
        }
    }
}

impl<'a> Variant<'a> {
    pub fn aggregate_id(&self) -> Option<&Field<'a>> {
        aggregate_id(&self.fields)
    }
}

fn fields<'a>(ctxt: &Ctxt, fields: &'a Fields) -> Vec<Field<'a>> {
    Field::multiple_from_syn(fields, |field| attr::Field::from_attrs(ctxt, &field.attrs))
}

/// The field marked `#[domain_event(aggregate_id)]` (the first, if `valid` found several).
pub fn aggregate_id<'f, 'a>(fields: &'f [Field<'a>]) -> Option<&'f Field<'a>> {
    fields
        .iter()
        .find(|field| field.attrs.aggregate_id.is_some())
}
