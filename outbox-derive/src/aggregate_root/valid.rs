//! What an aggregate root must declare. Each violation is reported at the token at fault.

use quote::ToTokens;
use syn::Data;

use super::ast::Input;
use crate::ctxt::Ctxt;
use crate::topic;

pub fn check(ctxt: &Ctxt, input: &Input) {
    let ident = &input.original.ident;

    match &input.original.data {
        Data::Struct(_) => {}
        Data::Enum(data) => ctxt.error_spanned_by(data.enum_token, not_a_model()),
        Data::Union(data) => ctxt.error_spanned_by(data.union_token, not_a_model()),
    }
    let generics = &input.original.generics;
    if !generics.params.is_empty() {
        ctxt.error_spanned_by(
            generics,
            "AggregateRoot cannot be derived for a generic type: a SeaORM `Model` has no generic parameters",
        );
    }

    match &input.attrs.aggregate {
        Some(aggregate) => topic::check_aggregate(ctxt, &aggregate.value),
        None if input.attrs.aggregate_written => {}
        None => ctxt.error_spanned_by(
            ident,
            "missing #[aggregate_root(aggregate = \"...\")]: name the aggregate type, such as \
             `aggregate = \"Order\"`; its snapshots go to the Kafka topic `outbox.event.Order`",
        ),
    }

    let mut ids = input
        .fields
        .iter()
        .filter_map(|field| field.attrs.id.as_ref().map(|key| (field, key)));
    match ids.next() {
        None if matches!(input.original.data, Data::Struct(_)) => ctxt.error_spanned_by(
            ident,
            format_args!(
                "`{ident}` has no aggregate id: mark the field that identifies the aggregate \
                 (usually the primary key) with #[aggregate_root(id)]; it becomes the Kafka message key"
            ),
        ),
        None => {}
        Some((first, _)) => {
            for (_, key) in ids {
                ctxt.error_spanned_by(
                    key,
                    format_args!(
                        "a second aggregate id: field `{}` already is the id; keep #[aggregate_root(id)] on one field",
                        first.member.to_token_stream()
                    ),
                );
            }
        }
    }
}

fn not_a_model() -> &'static str {
    "AggregateRoot is derived on a SeaORM entity's `Model` struct, next to `DeriveEntityModel`"
}
