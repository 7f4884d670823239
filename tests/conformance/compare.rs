//! Upstreams found compared with Upstreams expected, where the expectations are written by hand
//! (the conformance cases, and the end-to-end tests). Shared by the `render` runner
//! (`tests/conformance.rs`) and the end-to-end tests (through `tests/e2e/support.rs`), so that
//! both read an expectation the same way.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// Compares the Upstreams found (whole objects, as JSON) with those expected, and says every
/// difference, one per line:
/// - exactly the names expected;
/// - for each, its labels and annotations (absent counts as empty) and its spec, exactly;
/// - its status, when the expectation gives one;
/// - its ownerReferences, when the expectation's metadata has the key: `null` means none, a list
///   is compared entry by entry on the keys each expected entry gives (a hand-written
///   expectation cannot know a Service's UID).
pub fn compare_upstreams(actual: &[Value], expected: &[Value]) -> Result<(), String> {
    let actual = by_name(actual)?;
    let expected = by_name(expected)?;
    let mut differences = Vec::new();
    for name in expected.keys() {
        if !actual.contains_key(name) {
            differences.push(format!("{name}: missing"));
        }
    }
    for name in actual.keys() {
        if !expected.contains_key(name) {
            differences.push(format!("{name}: not expected: {}", actual[name]));
        }
    }
    for (name, want) in &expected {
        let Some(found) = actual.get(name) else {
            continue;
        };
        for field in ["labels", "annotations"] {
            let want_map = metadata_map(want, field);
            let found_map = metadata_map(found, field);
            if want_map != found_map {
                differences.push(format!(
                    "{name}: metadata.{field}\n    expected {}\n    found    {}",
                    Value::Object(want_map),
                    Value::Object(found_map)
                ));
            }
        }
        let want_spec = want.get("spec").unwrap_or(&Value::Null);
        let found_spec = found.get("spec").unwrap_or(&Value::Null);
        if want_spec != found_spec {
            differences.push(format!(
                "{name}: spec\n    expected {want_spec}\n    found    {found_spec}"
            ));
        }
        if let Some(want_status) = want.get("status") {
            let found_status = found.get("status").unwrap_or(&Value::Null);
            if want_status != found_status {
                differences.push(format!(
                    "{name}: status\n    expected {want_status}\n    found    {found_status}"
                ));
            }
        }
        if let Some(want_owners) = want.pointer("/metadata/ownerReferences") {
            if let Some(difference) = compare_owners(want_owners, found) {
                differences.push(format!("{name}: metadata.ownerReferences: {difference}"));
            }
        }
    }
    if differences.is_empty() {
        Ok(())
    } else {
        Err(differences.join("\n"))
    }
}

/// The objects by `metadata.name`; an object without a name, or a name given twice, is an error.
fn by_name(objects: &[Value]) -> Result<BTreeMap<String, &Value>, String> {
    let mut named = BTreeMap::new();
    for object in objects {
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("an Upstream without metadata.name: {object}"))?;
        if named.insert(name.to_string(), object).is_some() {
            return Err(format!("two Upstreams named {name}"));
        }
    }
    Ok(named)
}

fn metadata_map(object: &Value, field: &str) -> Map<String, Value> {
    object
        .get("metadata")
        .and_then(|metadata| metadata.get(field))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

fn compare_owners(want: &Value, found: &Value) -> Option<String> {
    let found_owners = found
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let want_owners = match want {
        Value::Null => Vec::new(),
        Value::Array(owners) => owners.clone(),
        other => return Some(format!("expected null or a list, the case says {other}")),
    };
    let matches = want_owners.len() == found_owners.len()
        && want_owners.iter().zip(&found_owners).all(|(w, f)| {
            w.as_object()
                .is_some_and(|w| w.iter().all(|(key, value)| f.get(key) == Some(value)))
        });
    (!matches).then(|| {
        format!(
            "expected {}, found {}",
            Value::Array(want_owners),
            Value::Array(found_owners)
        )
    })
}
