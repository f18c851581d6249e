//! The piece of the input model that both derives share: a field with its parsed keys.

use syn::{Fields, Index, Member};

pub struct Field<'a, A> {
    pub original: &'a syn::Field,
    /// How generated code names the field: its name, or its position.
    pub member: Member,
    pub attrs: A,
}

impl<'a, A> Field<'a, A> {
    /// Every field, with `parse` reading its attributes.
    pub fn multiple_from_syn(
        fields: &'a Fields,
        mut parse: impl FnMut(&'a syn::Field) -> A,
    ) -> Vec<Self> {
        fields
            .iter()
            .enumerate()
            .map(|(index, field)| Field {
                original: field,
                member: match &field.ident {
                    Some(ident) => Member::Named(ident.clone()),
                    None => Member::Unnamed(Index::from(index)),
                },
                attrs: parse(field),
            })
            .collect()
    }
}
