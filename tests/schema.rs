//! `outbox::schema`: each event's JSON Schema, as serde writes the payload, exported per version;
//! `check_compatible` passes a compatible change and a version bump, and fails each breaking kind
//! with a message naming the event, the field and the rule.
//!
//! The events' types cannot change inside one test binary, so each breaking change is made to
//! the exported side instead: the export then describes a payload the current type no longer
//! accepts, which is the same comparison.

use std::path::{Path, PathBuf};

use outbox::DomainEvent;
use outbox::schema::{self, SchemaError};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{Value, json};

#[derive(Serialize, JsonSchema, DomainEvent)]
#[domain_event(aggregate = "Order", version = 1)]
struct OrderCreated {
    #[domain_event(aggregate_id)]
    order_id: String,
    #[serde(rename = "customer")]
    customer_id: i64,
    note: Option<String>,
    status: Status,
    lines: Vec<Line>,
    #[serde(skip)]
    #[allow(dead_code)]
    cache: u8,
}

#[derive(Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // exported, never constructed
enum Status {
    Placed,
    Shipped,
}

#[derive(Serialize, JsonSchema)]
struct Line {
    sku: String,
    quantity: i32,
}

/// Two event types, one per variant, in serde's default representation.
#[derive(Serialize, JsonSchema, DomainEvent)]
#[domain_event(aggregate = "Order", version = 2)]
#[allow(dead_code)] // exported, never constructed
enum OrderEvent {
    Shipped {
        #[domain_event(aggregate_id)]
        id: String,
        carrier: String,
    },
    #[domain_event(event_type = "OrderCancelled")]
    Cancelled {
        #[domain_event(aggregate_id)]
        id: String,
        reason: Option<String>,
    },
}

/// Internally tagged: the tag stays in the payload, and so in the schema.
#[derive(Serialize, JsonSchema, DomainEvent)]
#[domain_event(aggregate = "Parcel")]
#[serde(tag = "kind")]
#[allow(dead_code)] // exported, never constructed
enum ParcelEvent {
    Weighed {
        #[domain_event(aggregate_id)]
        parcel: String,
        grams: u32,
    },
}

/// An event without `JsonSchema` is left out of the export.
#[derive(Serialize, DomainEvent)]
#[domain_event(aggregate = "Audit")]
struct AuditLine {
    #[domain_event(aggregate_id)]
    id: u32,
}

fn fresh_dir() -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "outbox-schemas-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn read(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("read the export")).expect("JSON")
}

/// Exports, then changes the exported `OrderCreated` v1 with `edit`.
fn exported_then(edit: impl FnOnce(&mut Value)) -> PathBuf {
    let dir = fresh_dir();
    schema::export(&dir).expect("export");
    let file = dir.join("Order/OrderCreated.v1.json");
    let mut exported = read(&file);
    edit(&mut exported);
    std::fs::write(&file, serde_json::to_string_pretty(&exported).unwrap()).unwrap();
    dir
}

fn incompatibilities(dir: &Path) -> Vec<String> {
    match schema::check_compatible(dir) {
        Ok(()) => Vec::new(),
        Err(SchemaError::Incompatible(found)) => found.iter().map(ToString::to_string).collect(),
        Err(other) => panic!("the check failed to run: {other}"),
    }
}

#[test]
fn every_event_type_is_exported_per_version_as_serde_writes_it() {
    let dir = fresh_dir();
    let mut written: Vec<String> = schema::export(&dir)
        .expect("export")
        .iter()
        .map(|p| p.strip_prefix(&dir).unwrap().display().to_string())
        .collect();
    written.sort();
    assert_eq!(
        written,
        [
            "Order/OrderCancelled.v2.json",
            "Order/OrderCreated.v1.json",
            "Order/Shipped.v2.json",
            "Parcel/Weighed.v0.json",
        ]
    );

    let created = read(&dir.join("Order/OrderCreated.v1.json"));
    let properties = created["properties"].as_object().unwrap();
    let mut names: Vec<&str> = properties.keys().map(String::as_str).collect();
    names.sort();
    // `rename` and `skip` as serde writes the payload.
    assert_eq!(names, ["customer", "lines", "note", "order_id", "status"]);
    assert_eq!(properties["customer"]["type"], "integer");
    let required: Vec<&str> = created["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(!required.contains(&"note"), "an Option is not required");
    assert_eq!(
        created["x-outbox"],
        json!({"aggregatetype": "Order", "type": "OrderCreated", "schemaversion": 1})
    );

    // A variant's schema is its payload: the content without the `{"Shipped": ...}` wrapper.
    let shipped = read(&dir.join("Order/Shipped.v2.json"));
    assert_eq!(shipped["properties"]["carrier"]["type"], "string");
    assert!(shipped["properties"].get("Shipped").is_none());
    // Internally tagged: the tag is part of the payload.
    let weighed = read(&dir.join("Parcel/Weighed.v0.json"));
    assert_eq!(weighed["properties"]["kind"]["const"], "Weighed");

    // The exported schemas accept what the relay ships: the payloads themselves.
    let payload = OrderCreated {
        order_id: "o-1".into(),
        customer_id: 7,
        note: None,
        status: Status::Shipped,
        lines: vec![],
        cache: 0,
    }
    .payload()
    .unwrap();
    for name in payload.as_object().unwrap().keys() {
        assert!(properties.contains_key(name), "{name} is in the schema");
    }

    // And the export checks as compatible with itself.
    assert_eq!(incompatibilities(&dir), Vec::<String>::new());
}

#[test]
fn a_compatible_change_passes() {
    // The current type has an optional field that the export lacks: readers ignore it.
    let dir = exported_then(|s| {
        s["properties"].as_object_mut().unwrap().remove("note");
    });
    assert_eq!(incompatibilities(&dir), Vec::<String>::new());
}

#[test]
fn a_removed_field_fails_naming_event_field_and_rule() {
    let dir = exported_then(|s| {
        s["properties"]["legacy_code"] = json!({"type": "string"});
    });
    assert_eq!(
        incompatibilities(&dir),
        [
            "event `Order/OrderCreated` v1: field `legacy_code` was removed (rule: no field may be removed)"
        ]
    );
}

#[test]
fn a_newly_required_field_fails() {
    let dir = exported_then(|s| {
        let required = s["required"].as_array_mut().unwrap();
        required.retain(|name| name != "customer");
    });
    assert_eq!(
        incompatibilities(&dir),
        [
            "event `Order/OrderCreated` v1: field `customer` is now required (rule: no field may become required, or stop being nullable)"
        ]
    );
}

#[test]
fn a_changed_type_fails() {
    let dir = exported_then(|s| {
        s["properties"]["customer"] = json!({"type": "string"});
    });
    assert_eq!(
        incompatibilities(&dir),
        [
            "event `Order/OrderCreated` v1: field `customer` changed type from string to integer (rule: no field may change type)"
        ]
    );
}

#[test]
fn a_removed_enum_variant_fails() {
    let dir = exported_then(|s| {
        let status = s["properties"]["status"]["$ref"]
            .as_str()
            .unwrap()
            .to_owned();
        let pointer = status.trim_start_matches('#').to_owned();
        let values = s.pointer_mut(&pointer).unwrap()["enum"]
            .as_array_mut()
            .unwrap_or_else(|| panic!("Status has no `enum` in {pointer}"));
        values.push(json!("returned"));
    });
    assert_eq!(
        incompatibilities(&dir),
        [
            "event `Order/OrderCreated` v1: field `status` lost the enum variant \"returned\" (rule: no enum variant may be removed)"
        ]
    );
}

#[test]
fn a_nested_field_is_named_by_its_path() {
    let dir = exported_then(|s| {
        let line = s["properties"]["lines"]["items"]["$ref"]
            .as_str()
            .unwrap()
            .to_owned();
        let line = s.pointer_mut(line.trim_start_matches('#')).unwrap();
        line["properties"]["sku"] = json!({"type": "integer"});
    });
    assert_eq!(
        incompatibilities(&dir),
        [
            "event `Order/OrderCreated` v1: field `lines[].sku` changed type from integer to string (rule: no field may change type)"
        ]
    );
}

#[test]
fn a_version_bump_passes() {
    // The `OrderEvent` variants are at v2; a v1 export that they would break is history.
    let dir = fresh_dir();
    schema::export(&dir).expect("export");
    let old = dir.join("Order/Shipped.v1.json");
    std::fs::write(
        &old,
        json!({"type": "object", "properties": {"id": {"type": "string"}, "depot": {"type": "string"}}, "required": ["id", "depot"]}).to_string(),
    )
    .unwrap();
    assert_eq!(incompatibilities(&dir), Vec::<String>::new());
    // The same change at the current version fails.
    std::fs::copy(&old, dir.join("Order/Shipped.v2.json")).unwrap();
    let found = incompatibilities(&dir);
    assert!(
        found
            .iter()
            .any(|m| m.contains("`Order/Shipped` v2: field `depot` was removed")),
        "{found:?}"
    );
}

#[test]
fn a_missing_export_directory_is_an_error_naming_it() {
    let dir = fresh_dir();
    let err = schema::check_compatible(&dir).unwrap_err();
    assert!(
        err.to_string().contains(&dir.display().to_string()),
        "{err}"
    );
}
