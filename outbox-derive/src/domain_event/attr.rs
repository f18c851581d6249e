//! The `#[domain_event(...)]` keys on the type, on variants and on fields, and the two
//! `#[serde(...)]` keys that decide how an enum's payload is cut out.

use syn::{Attribute, LitInt, LitStr, Path};

use crate::attr::{self, Keyed, Slot};
use crate::ctxt::Ctxt;
use crate::symbol::*;

/// Keys on the struct or enum.
pub struct Container {
    pub aggregate: Option<Keyed<LitStr>>,
    /// `aggregate` appeared, even if its value was unusable.
    pub aggregate_written: bool,
    pub event_type: Option<Keyed<LitStr>>,
    pub version: Option<Keyed<LitInt>>,
    pub krate: Option<Path>,
    /// `#[serde(tag = "...")]` or `#[serde(untagged)]`: the serialized enum has no
    /// `{"Variant": ...}` wrapper to strip.
    pub serde_tagged: bool,
}

/// Keys on an enum variant.
pub struct Variant {
    pub event_type: Option<Keyed<LitStr>>,
    pub version: Option<Keyed<LitInt>>,
}

/// Keys on a field.
pub struct Field {
    /// The `aggregate_id` key, when present.
    pub aggregate_id: Option<Path>,
}

const CONTAINER_KEYS: &[&str] = &["aggregate", "event_type", "version", "crate"];
const VARIANT_KEYS: &[&str] = &["event_type", "version"];
const FIELD_KEYS: &[&str] = &["aggregate_id"];

impl Container {
    pub fn from_attrs(ctxt: &Ctxt, attrs: &[Attribute]) -> Self {
        let mut aggregate = Slot::new(ctxt, AGGREGATE);
        let mut event_type = Slot::new(ctxt, EVENT_TYPE);
        let mut version = Slot::new(ctxt, VERSION);
        let mut krate = Slot::new(ctxt, CRATE);

        attr::parse_namespace(ctxt, attrs, DOMAIN_EVENT, |meta| {
            if meta.path == AGGREGATE {
                // #[domain_event(aggregate = "Order")]
                aggregate.set(
                    &meta.path,
                    attr::string(ctxt, meta, "aggregate = \"Order\"")?,
                );
            } else if meta.path == EVENT_TYPE {
                // #[domain_event(event_type = "OrderPlaced")]
                event_type.set(
                    &meta.path,
                    attr::string(ctxt, meta, "event_type = \"OrderPlaced\"")?,
                );
            } else if meta.path == VERSION {
                // #[domain_event(version = 2)]
                version.set(&meta.path, attr::integer(ctxt, meta, "version = 1")?);
            } else if meta.path == CRATE {
                // #[domain_event(crate = "my_outbox")]
                krate.set(&meta.path, attr::crate_key(ctxt, meta)?);
            } else {
                attr::unknown_key(
                    ctxt,
                    meta,
                    "in #[domain_event(...)] on the type",
                    CONTAINER_KEYS,
                )?;
            }
            Ok(())
        });

        Container {
            aggregate_written: aggregate.written(),
            aggregate: aggregate.get(),
            event_type: event_type.get(),
            version: version.get(),
            krate: krate.get().map(|keyed| keyed.value),
            serde_tagged: serde_tagged(attrs),
        }
    }
}

impl Variant {
    pub fn from_attrs(ctxt: &Ctxt, attrs: &[Attribute]) -> Self {
        let mut event_type = Slot::new(ctxt, EVENT_TYPE);
        let mut version = Slot::new(ctxt, VERSION);

        attr::parse_namespace(ctxt, attrs, DOMAIN_EVENT, |meta| {
            if meta.path == EVENT_TYPE {
                // #[domain_event(event_type = "OrderShipped")]
                event_type.set(
                    &meta.path,
                    attr::string(ctxt, meta, "event_type = \"OrderShipped\"")?,
                );
            } else if meta.path == VERSION {
                // #[domain_event(version = 2)]
                version.set(&meta.path, attr::integer(ctxt, meta, "version = 2")?);
            } else {
                attr::unknown_key(
                    ctxt,
                    meta,
                    "in #[domain_event(...)] on a variant",
                    VARIANT_KEYS,
                )?;
            }
            Ok(())
        });

        Variant {
            event_type: event_type.get(),
            version: version.get(),
        }
    }
}

impl Field {
    pub fn from_attrs(ctxt: &Ctxt, attrs: &[Attribute]) -> Self {
        let mut aggregate_id = Slot::new(ctxt, AGGREGATE_ID);

        attr::parse_namespace(ctxt, attrs, DOMAIN_EVENT, |meta| {
            if meta.path == AGGREGATE_ID {
                // #[domain_event(aggregate_id)]
                attr::flag(ctxt, meta)?;
                aggregate_id.set(&meta.path, Some(()));
            } else {
                attr::unknown_key(ctxt, meta, "in #[domain_event(...)] on a field", FIELD_KEYS)?;
            }
            Ok(())
        });

        Field {
            aggregate_id: aggregate_id.get().map(|keyed| keyed.key),
        }
    }
}

/// Whether serde writes this enum internally or adjacently tagged, or untagged. Malformed
/// `#[serde]` attributes are serde_derive's to report, so they are ignored here.
fn serde_tagged(attrs: &[Attribute]) -> bool {
    let mut tagged = false;
    for attr in attrs.iter().filter(|attr| attr.path() == SERDE) {
        let _ = attr.parse_nested_meta(|meta| {
            // #[serde(tag = "type")] or #[serde(untagged)]
            if meta.path == TAG || meta.path == UNTAGGED {
                tagged = true;
            }
            attr::skip_value(&meta)
        });
    }
    tagged
}
