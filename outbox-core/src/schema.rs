//! The JSON Schema of each event's payload, exported per version, and the check that a change
//! keeps every exported version readable (feature `schema`).
//!
//! Every non-generic `#[derive(DomainEvent)]` type that also derives `schemars::JsonSchema`
//! registers its schema (one per variant for an enum: the payload the variant is written as).
//! Serde's attributes (renames, tagging, `skip`, `flatten`, `Option`, defaults) shape the schema
//! as they shape the payload, because schemars reads them.
//!
//! - [`export`] writes `<dir>/<aggregate>/<type>.v<version>.json` (`v0` for an event without a
//!   version): commit the directory, as consumers' contract.
//! - [`assert_compatible`] (in a `cargo test`) compares each event with the export of its current
//!   version and fails, naming the event, the field and the rule, when a change would break a
//!   reader of that version: a field removed, a field newly required (or no longer nullable), a
//!   field's type changed, an enum value or variant removed. A new `version` starts a new export,
//!   so it is compared with nothing.
//!
//! ```no_run
//! // tests/event_schemas.rs of a service
//! #[test]
//! fn events_stay_compatible_with_their_exported_schemas() {
//!     outbox_core::schema::assert_compatible("schemas");
//! }
//! ```

use std::collections::BTreeSet;
use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// One event type's schema as the derive registers it. Not public API; see [`schemas`].
#[doc(hidden)]
pub struct Registration {
    pub aggregate: &'static str,
    pub event_type: &'static str,
    pub version: Option<i32>,
    /// For an enum's variant: its place among the enum schema's alternatives, and whether serde
    /// wraps its content as `{"Variant": ...}` (which the payload leaves out).
    pub variant: Option<(usize, bool)>,
    /// The type's schema; `None` when the type does not implement `JsonSchema`.
    pub schema: fn() -> Option<Value>,
}

inventory::collect!(Registration);

/// Picks `JsonSchema` when the type implements it, and `None` otherwise (autoref
/// specialization: the derive cannot see whether the type derives `JsonSchema`).
#[doc(hidden)]
pub struct Probe<T>(PhantomData<T>);

impl<T> Probe<T> {
    pub const fn new() -> Self {
        Probe(PhantomData)
    }
}

impl<T> Default for Probe<T> {
    fn default() -> Self {
        Probe::new()
    }
}

#[doc(hidden)]
pub trait WithSchema {
    fn schema(&self) -> Option<Value>;
}

impl<T: schemars::JsonSchema> WithSchema for Probe<T> {
    fn schema(&self) -> Option<Value> {
        Some(schemars::schema_for!(T).to_value())
    }
}

#[doc(hidden)]
pub trait WithoutSchema {
    fn schema(&self) -> Option<Value>;
}

impl<T> WithoutSchema for &Probe<T> {
    fn schema(&self) -> Option<Value> {
        None
    }
}

/// The current schema of one event type.
#[derive(Clone, Debug, PartialEq)]
pub struct EventSchema {
    pub aggregate: &'static str,
    pub event_type: &'static str,
    pub version: Option<i32>,
    /// The JSON Schema of the payload.
    pub schema: Value,
}

impl EventSchema {
    /// `<aggregate>/<type>.v<version>.json`, relative to the export directory.
    pub fn file(&self) -> PathBuf {
        Path::new(self.aggregate).join(format!(
            "{}.v{}.json",
            self.event_type,
            self.version.unwrap_or(0)
        ))
    }

    fn name(&self) -> String {
        format!(
            "`{}/{}` v{}",
            self.aggregate,
            self.event_type,
            self.version.unwrap_or(0)
        )
    }
}

/// Every registered event type's schema, sorted by aggregate, type and version; event types
/// whose Rust type does not derive `schemars::JsonSchema` are left out.
pub fn schemas() -> Vec<EventSchema> {
    let mut all: Vec<EventSchema> = inventory::iter::<Registration>
        .into_iter()
        .filter_map(|r| {
            let schema = (r.schema)()?;
            let schema = match r.variant {
                Some((index, wrapped)) => variant_schema(&schema, index, wrapped)?,
                None => schema,
            };
            Some(EventSchema {
                aggregate: r.aggregate,
                event_type: r.event_type,
                version: r.version,
                schema,
            })
        })
        .collect();
    all.sort_by(|a, b| {
        (a.aggregate, a.event_type, a.version).cmp(&(b.aggregate, b.event_type, b.version))
    });
    all.dedup_by(|a, b| {
        (a.aggregate, a.event_type, a.version) == (b.aggregate, b.event_type, b.version)
    });
    all
}

/// The schema of one variant's payload: its alternative in the enum's `oneOf`/`anyOf`, unwrapped
/// from `{"Variant": ...}` in serde's default representation. `$defs` stay at the root.
fn variant_schema(schema: &Value, index: usize, wrapped: bool) -> Option<Value> {
    let alternatives = schema.get("oneOf").or_else(|| schema.get("anyOf"))?;
    let mut variant = alternatives.get(index)?.clone();
    if wrapped {
        let properties = variant.get("properties")?.as_object()?;
        variant = properties.values().next()?.clone();
    }
    if let (Some(defs), Value::Object(map)) = (schema.get("$defs"), &mut variant) {
        map.insert("$defs".into(), defs.clone());
    }
    if let (Some(meta), Value::Object(map)) = (schema.get("$schema"), &mut variant) {
        map.insert("$schema".into(), meta.clone());
    }
    Some(variant)
}

/// What can go wrong reading or writing exported schemas.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a JSON schema: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// Changes that break readers of exported versions; each names the event, field and rule.
    #[error("{}", Incompatible(.0))]
    Incompatible(Vec<Incompatibility>),
}

struct Incompatible<'a>(&'a [Incompatibility]);

impl fmt::Display for Incompatible<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} change(s) break readers of an exported event schema; keep the change compatible, or bump the event's `version` and export again:",
            self.0.len()
        )?;
        for incompatibility in self.0 {
            writeln!(f, "- {incompatibility}")?;
        }
        Ok(())
    }
}

/// Writes every registered event's schema to `<dir>/<aggregate>/<type>.v<version>.json`, and
/// returns the files written. Existing exports of other versions are kept.
pub fn export(dir: impl AsRef<Path>) -> Result<Vec<PathBuf>, SchemaError> {
    let dir = dir.as_ref();
    let mut written = Vec::new();
    for event in schemas() {
        let path = dir.join(event.file());
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| SchemaError::Io {
                action: "create",
                path: parent.to_owned(),
                source,
            })?;
        }
        let mut document = event.schema.clone();
        if let Value::Object(map) = &mut document {
            map.insert(
                "x-outbox".into(),
                serde_json::json!({
                    "aggregatetype": event.aggregate,
                    "type": event.event_type,
                    "schemaversion": event.version,
                }),
            );
        }
        let mut text =
            serde_json::to_string_pretty(&document).map_err(|source| SchemaError::Json {
                path: path.clone(),
                source,
            })?;
        text.push('\n');
        std::fs::write(&path, text).map_err(|source| SchemaError::Io {
            action: "write",
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    Ok(written)
}

/// Compares every registered event with the export of its current version in `dir`. An event
/// with no export of its version (new, or bumped) is compared with nothing.
pub fn check_compatible(dir: impl AsRef<Path>) -> Result<(), SchemaError> {
    let dir = dir.as_ref();
    std::fs::metadata(dir).map_err(|source| SchemaError::Io {
        action: "read the exported schemas in",
        path: dir.to_owned(),
        source,
    })?;
    let mut found = Vec::new();
    for event in schemas() {
        let path = dir.join(event.file());
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(SchemaError::Io {
                    action: "read",
                    path,
                    source,
                });
            }
        };
        let exported: Value =
            serde_json::from_str(&text).map_err(|source| SchemaError::Json { path, source })?;
        found.extend(
            compare(&exported, &event.schema)
                .into_iter()
                .map(|change| Incompatibility {
                    event: event.name(),
                    change,
                }),
        );
    }
    if found.is_empty() {
        Ok(())
    } else {
        Err(SchemaError::Incompatible(found))
    }
}

/// [`check_compatible`] for `cargo test`: panics with every incompatibility.
#[track_caller]
pub fn assert_compatible(dir: impl AsRef<Path>) {
    if let Err(e) = check_compatible(dir) {
        panic!("{e}");
    }
}

/// One change to one event that breaks readers of its exported version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incompatibility {
    /// Such as `` `Order/OrderCreated` v1 ``.
    pub event: String,
    pub change: Change,
}

impl fmt::Display for Incompatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "event {}: {}", self.event, self.change)
    }
}

/// A breaking difference between an exported schema and the current one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The field's path in the payload, such as `lines[].sku`; empty for the payload itself.
    pub field: String,
    pub rule: Rule,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let field = if self.field.is_empty() {
            "the payload".to_owned()
        } else {
            format!("field `{}`", self.field)
        };
        match &self.rule {
            Rule::FieldRemoved => write!(f, "{field} was removed (rule: no field may be removed)"),
            Rule::FieldMadeRequired => write!(
                f,
                "{field} is now required (rule: no field may become required, or stop being nullable)"
            ),
            Rule::TypeChanged { from, to } => write!(
                f,
                "{field} changed type from {from} to {to} (rule: no field may change type)"
            ),
            Rule::VariantRemoved { variant } => write!(
                f,
                "{field} lost the enum variant {variant} (rule: no enum variant may be removed)"
            ),
        }
    }
}

/// The rules an exported version holds its event to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rule {
    FieldRemoved,
    FieldMadeRequired,
    TypeChanged { from: String, to: String },
    VariantRemoved { variant: String },
}

/// The breaking changes from `old` to `new`, two JSON Schemas of one payload.
pub fn compare(old: &Value, new: &Value) -> Vec<Change> {
    let mut changes = Vec::new();
    Comparison {
        old_root: old,
        new_root: new,
        changes: &mut changes,
        depth: 0,
    }
    .schema(old, new, "");
    changes
}

struct Comparison<'a> {
    old_root: &'a Value,
    new_root: &'a Value,
    changes: &'a mut Vec<Change>,
    /// Recursive types (a `$ref` to itself) stop here.
    depth: usize,
}

const MAX_DEPTH: usize = 32;

impl Comparison<'_> {
    fn report(&mut self, field: &str, rule: Rule) {
        let change = Change {
            field: field.to_owned(),
            rule,
        };
        if !self.changes.contains(&change) {
            self.changes.push(change);
        }
    }

    fn schema(&mut self, old: &Value, new: &Value, field: &str) {
        if self.depth > MAX_DEPTH {
            return;
        }
        self.depth += 1;
        let old = resolve(self.old_root, old);
        let new = resolve(self.new_root, new);

        let (old_types, new_types) = (types(old), types(new));
        if let (Some(old_types), Some(new_types)) = (&old_types, &new_types) {
            let old_kinds: BTreeSet<&str> =
                old_types.iter().copied().filter(|t| *t != "null").collect();
            let new_kinds: BTreeSet<&str> =
                new_types.iter().copied().filter(|t| *t != "null").collect();
            if old_kinds != new_kinds && !old_kinds.is_empty() && !new_kinds.is_empty() {
                self.report(
                    field,
                    Rule::TypeChanged {
                        from: describe(&old_kinds),
                        to: describe(&new_kinds),
                    },
                );
                self.depth -= 1;
                return;
            }
            if old_types.contains("null") && !new_types.contains("null") && !field.is_empty() {
                self.report(field, Rule::FieldMadeRequired);
            }
        }

        for removed in enum_values(old).difference(&enum_values(new)) {
            self.report(
                field,
                Rule::VariantRemoved {
                    variant: removed.clone(),
                },
            );
        }
        let (old_variants, new_variants) =
            (variants(self.old_root, old), variants(self.new_root, new));
        for (name, old_variant) in &old_variants {
            match new_variants.iter().find(|(n, _)| n == name) {
                Some((_, new_variant)) => self.schema(old_variant, new_variant, field),
                None => self.report(
                    field,
                    Rule::VariantRemoved {
                        variant: name.clone(),
                    },
                ),
            }
        }

        let (old_props, new_props) = (properties(old), properties(new));
        let (old_required, new_required) = (required(old), required(new));
        for (name, old_prop) in &old_props {
            let path = join(field, name);
            match new_props.get(name) {
                None => self.report(&path, Rule::FieldRemoved),
                Some(new_prop) => {
                    if new_required.contains(name) && !old_required.contains(name) {
                        self.report(&path, Rule::FieldMadeRequired);
                    }
                    self.schema(old_prop, new_prop, &path);
                }
            }
        }
        for name in new_required.difference(&old_required) {
            if !old_props.contains_key(name) {
                self.report(&join(field, name), Rule::FieldMadeRequired);
            }
        }

        if let (Some(old_items), Some(new_items)) = (old.get("items"), new.get("items")) {
            self.schema(old_items, new_items, &format!("{field}[]"));
        }
        self.depth -= 1;
    }
}

fn join(field: &str, name: &str) -> String {
    if field.is_empty() {
        name.to_owned()
    } else {
        format!("{field}.{name}")
    }
}

/// Follows `{"$ref": "#/$defs/Name"}` (and `allOf` of one such) within `root`.
fn resolve<'a>(root: &'a Value, mut schema: &'a Value) -> &'a Value {
    for _ in 0..MAX_DEPTH {
        let target = schema
            .get("$ref")
            .or_else(|| match schema.get("allOf").and_then(Value::as_array) {
                Some(all) if all.len() == 1 => all[0].get("$ref"),
                _ => None,
            })
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix('#'))
            .and_then(|pointer| root.pointer(pointer));
        match target {
            Some(target) => schema = target,
            None => break,
        }
    }
    schema
}

fn types(schema: &Value) -> Option<BTreeSet<&str>> {
    match schema.get("type")? {
        Value::String(t) => Some(BTreeSet::from([t.as_str()])),
        Value::Array(ts) => Some(ts.iter().filter_map(Value::as_str).collect()),
        _ => None,
    }
}

fn describe(types: &BTreeSet<&str>) -> String {
    types.iter().copied().collect::<Vec<_>>().join(" or ")
}

fn properties(schema: &Value) -> Map<String, Value> {
    schema
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

fn required(schema: &Value) -> BTreeSet<String> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| {
            r.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The values of `enum` (and `const`), rendered as JSON.
fn enum_values(schema: &Value) -> BTreeSet<String> {
    let mut values: BTreeSet<String> = schema
        .get("enum")
        .and_then(Value::as_array)
        .map(|vs| vs.iter().map(Value::to_string).collect())
        .unwrap_or_default();
    if let Some(value) = schema.get("const") {
        values.insert(value.to_string());
    }
    values
}

/// The named alternatives of a `oneOf`/`anyOf`: an externally tagged variant by its one
/// required property, an internally tagged one by its tag's `const`, a unit variant by its value.
fn variants<'a>(root: &'a Value, schema: &'a Value) -> Vec<(String, &'a Value)> {
    let alternatives = schema
        .get("oneOf")
        .or_else(|| schema.get("anyOf"))
        .and_then(Value::as_array);
    let mut named = Vec::new();
    for alternative in alternatives.into_iter().flatten() {
        let resolved = resolve(root, alternative);
        let values = enum_values(resolved);
        if !values.is_empty() && resolved.get("properties").is_none() {
            named.extend(values.into_iter().map(|v| (v, resolved)));
            continue;
        }
        let required = required(resolved);
        let props = properties(resolved);
        let tag = props
            .iter()
            .find_map(|(name, prop)| prop.get("const").map(|value| format!("{name}={value}")));
        match (tag, required.len(), props.len()) {
            (Some(tag), _, _) => named.push((tag, resolved)),
            (None, 1, 1) => {
                if let Some(name) = required.into_iter().next() {
                    named.push((format!("\"{name}\""), resolved));
                }
            }
            // An alternative with no name (untagged) is compared by nothing but its place.
            _ => named.push((format!("#{}", named.len()), resolved)),
        }
    }
    named
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn order() -> Value {
        json!({
            "type": "object",
            "properties": {
                "order_id": { "type": "string", "format": "uuid" },
                "customer_id": { "type": "integer" },
                "note": { "type": ["string", "null"] },
                "status": { "$ref": "#/$defs/Status" },
                "lines": { "type": "array", "items": { "$ref": "#/$defs/Line" } }
            },
            "required": ["order_id", "customer_id", "status", "lines"],
            "$defs": {
                "Status": { "type": "string", "enum": ["placed", "shipped"] },
                "Line": {
                    "type": "object",
                    "properties": { "sku": { "type": "string" }, "quantity": { "type": "integer" } },
                    "required": ["sku", "quantity"]
                }
            }
        })
    }

    fn rules(old: &Value, new: &Value) -> Vec<(String, Rule)> {
        compare(old, new)
            .into_iter()
            .map(|c| (c.field, c.rule))
            .collect()
    }

    #[test]
    fn an_added_optional_field_is_compatible() {
        let mut new = order();
        new["properties"]["coupon"] = json!({ "type": ["string", "null"] });
        assert_eq!(rules(&order(), &new), []);
        assert_eq!(rules(&order(), &order()), []);
    }

    #[test]
    fn each_breaking_kind_is_named_with_its_field() {
        let mut new = order();
        new["$defs"]["Line"]["properties"]
            .as_object_mut()
            .unwrap()
            .remove("quantity");
        new["$defs"]["Line"]["required"] = json!(["sku"]);
        assert_eq!(
            rules(&order(), &new),
            [("lines[].quantity".into(), Rule::FieldRemoved)]
        );

        let mut new = order();
        new["properties"]["note"] = json!({ "type": "string" });
        new["required"] = json!(["order_id", "customer_id", "status", "lines", "note"]);
        assert_eq!(
            rules(&order(), &new),
            [("note".into(), Rule::FieldMadeRequired)]
        );

        let mut new = order();
        new["properties"]["customer_id"] = json!({ "type": "string" });
        assert_eq!(
            rules(&order(), &new),
            [(
                "customer_id".into(),
                Rule::TypeChanged {
                    from: "integer".into(),
                    to: "string".into()
                }
            )]
        );

        let mut new = order();
        new["$defs"]["Status"]["enum"] = json!(["placed"]);
        assert_eq!(
            rules(&order(), &new),
            [(
                "status".into(),
                Rule::VariantRemoved {
                    variant: "\"shipped\"".into()
                }
            )]
        );
    }

    #[test]
    fn the_message_names_event_field_and_rule() {
        let incompatibility = Incompatibility {
            event: "`Order/OrderCreated` v1".into(),
            change: Change {
                field: "customer_id".into(),
                rule: Rule::FieldRemoved,
            },
        };
        assert_eq!(
            incompatibility.to_string(),
            "event `Order/OrderCreated` v1: field `customer_id` was removed (rule: no field may be removed)"
        );
    }
}
