//! The rules that span several attributes: what a domain event must declare, and which
//! combinations make no sense. Each violation is reported at the token at fault.

use std::collections::BTreeMap;

use syn::{Fields, LitInt, LitStr};

use super::ast::{Data, Field, Input, Variant};
use crate::ctxt::Ctxt;
use crate::topic;

const AGGREGATE_ID_HINT: &str = "mark the field that identifies the aggregate with #[domain_event(aggregate_id)]; its value becomes the Kafka message key";

/// The `type` column's width.
const EVENT_TYPE_MAX: usize = outbox_limits::NAME_COLUMN_WIDTH;

pub fn check(ctxt: &Ctxt, input: &Input) {
    let ident = &input.original.ident;

    match &input.attrs.aggregate {
        Some(aggregate) => topic::check_aggregate(ctxt, &aggregate.value),
        None if input.attrs.aggregate_written => {}
        None => ctxt.error_spanned_by(
            ident,
            "missing #[domain_event(aggregate = \"...\")]: name the aggregate this event is about, \
             such as `aggregate = \"Order\"`; it routes the Kafka topic `outbox.event.Order`",
        ),
    }
    if let Some(version) = &input.attrs.version {
        check_version(ctxt, &version.value);
    }

    match &input.data {
        Data::Struct(fields) => {
            if let Some(event_type) = &input.attrs.event_type {
                check_event_type(ctxt, &event_type.value);
            }
            check_aggregate_id(ctxt, fields, || {
                ctxt.error_spanned_by(
                    ident,
                    format_args!("`{ident}` has no aggregate id: {AGGREGATE_ID_HINT}"),
                );
            });
        }
        Data::Enum(variants) => {
            if let Some(event_type) = &input.attrs.event_type {
                ctxt.error_spanned_by(
                    &event_type.key,
                    "`event_type` goes on the variants of an enum: each variant is its own event type, \
                     named after the variant unless it has #[domain_event(event_type = \"...\")]",
                );
            }
            if variants.is_empty() {
                ctxt.error_spanned_by(
                    ident,
                    format_args!(
                        "enum `{ident}` has no variants: each variant of a DomainEvent enum is one event type"
                    ),
                );
            }
            check_variants(ctxt, variants);
        }
        Data::Union(union) => ctxt.error_spanned_by(
            union.union_token,
            "DomainEvent cannot be derived for a union: derive it on a struct (one event type) \
             or an enum (one event type per variant)",
        ),
    }
}

fn check_variants(ctxt: &Ctxt, variants: &[Variant]) {
    // Two variants with one event type could not be told apart by consumers.
    let mut event_types: BTreeMap<String, &syn::Ident> = BTreeMap::new();
    for variant in variants {
        let ident = &variant.original.ident;
        if let Some(version) = &variant.attrs.version {
            check_version(ctxt, &version.value);
        }
        let event_type = match &variant.attrs.event_type {
            Some(event_type) => {
                check_event_type(ctxt, &event_type.value);
                event_type.value.value()
            }
            None => syn::ext::IdentExt::unraw(ident).to_string(),
        };
        if let Some(first) = event_types.get(&event_type) {
            let msg =
                format!("event type `{event_type}` is already the event type of variant `{first}`");
            match &variant.attrs.event_type {
                Some(event_type) => ctxt.error_spanned_by(&event_type.value, msg),
                None => ctxt.error_spanned_by(ident, msg),
            }
        } else {
            event_types.insert(event_type, ident);
        }

        if let Fields::Unit = variant.original.fields {
            ctxt.error_spanned_by(
                ident,
                format_args!(
                    "unit variant `{ident}` carries no aggregate id: give it fields and {AGGREGATE_ID_HINT}"
                ),
            );
            continue;
        }
        check_aggregate_id(ctxt, &variant.fields, || {
            ctxt.error_spanned_by(
                ident,
                format_args!("variant `{ident}` has no aggregate id: {AGGREGATE_ID_HINT}"),
            );
        });
    }
}

/// Exactly one field is the aggregate id: `missing` reports none; each extra one is reported at
/// its key.
fn check_aggregate_id(ctxt: &Ctxt, fields: &[Field], missing: impl FnOnce()) {
    let mut ids = fields
        .iter()
        .filter_map(|field| field.attrs.aggregate_id.as_ref().map(|key| (field, key)));
    let Some((first, _)) = ids.next() else {
        missing();
        return;
    };
    for (_, key) in ids {
        ctxt.error_spanned_by(
            key,
            format_args!(
                "a second aggregate id: an event is about one aggregate, and {} already is its id; \
                 keep #[domain_event(aggregate_id)] on one field",
                describe(first)
            ),
        );
    }
}

fn describe(field: &Field) -> String {
    match &field.original.ident {
        Some(ident) => format!("field `{ident}`"),
        None => format!("field {}", quote::ToTokens::to_token_stream(&field.member)),
    }
}

fn check_event_type(ctxt: &Ctxt, event_type: &LitStr) {
    let value = event_type.value();
    if value.trim().is_empty() {
        ctxt.error_spanned_by(
            event_type,
            "`event_type` is empty; leave it out to use the type's name",
        );
    } else if value.len() > EVENT_TYPE_MAX {
        ctxt.error_spanned_by(
            event_type,
            format_args!(
                "`event_type` is {} bytes long; the outbox `type` column holds at most {EVENT_TYPE_MAX}",
                value.len()
            ),
        );
    }
}

fn check_version(ctxt: &Ctxt, version: &LitInt) {
    if !matches!(version.suffix(), "" | "i32") || version.base10_parse::<i32>().is_err() {
        ctxt.error_spanned_by(
            version,
            "`version` must be an integer that fits the `i32` schema version, such as `version = 2`",
        );
    }
}
