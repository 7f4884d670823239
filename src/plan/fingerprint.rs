//! Fingerprints of the fields discovery owns, so that the daemon can tell "nothing to write"
//! without keeping the objects: the cache holds one 64-bit hash per owned Upstream, and a
//! Service whose desired Upstreams hash the same is done without a read or a write.
//!
//! Desired side: every leaf of the parts discovery manages (labels, annotations,
//! ownerReferences, spec), with its value. Observed side: every leaf discovery's field managers
//! own there, with the value the object holds. They agree exactly when the object holds what
//! desired sets and discovery owns nothing desired no longer gives, which is when [`plan`]
//! finds no difference and no stale field (`super::plan`); when they differ, the object is read
//! fresh and planned in full, so a collision-free false "differs" costs one read, never a wrong
//! write. Values hash as `json_equal` compares them (`1.0` is `1`), ownerReferences by the
//! Service references discovery writes (others' owners are theirs).

use std::collections::BTreeSet;
use std::hash::{DefaultHasher, Hash, Hasher};

use serde_json::Value;

use super::stale::MIRRORED_MAPS;
use super::{lookup, FieldPath, ObservedUpstream, OWNER_REFERENCES};
use crate::crd::Upstream;

/// Hashes of the discovery-owned fields of one Upstream, desired or observed: of their paths
/// and values (`fields`), and of their paths alone (`paths`). When only `fields` differs, the
/// write is an apply of desired with nothing to remove, which needs no fresh read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    pub fields: u64,
    pub paths: u64,
}

/// Of what discovery wants an Upstream to hold; `None` if it cannot be turned into JSON (then
/// it is planned in full, and writing it surfaces the error).
pub fn desired(upstream: &Upstream) -> Option<Fingerprint> {
    let json = serde_json::to_value(upstream).ok()?;
    let leaves = super::managed_leaf_paths(&json);
    Some(of_leaves(&json, &leaves))
}

/// Of what an owned Upstream holds in the fields discovery's managers own, and in the maps
/// that mirror the Service whoever set their keys (a key added by hand must go, as in
/// `stale`).
pub fn observed(upstream: &ObservedUpstream) -> Fingerprint {
    let mut owned: BTreeSet<FieldPath> = upstream
        .discovery_fields
        .iter()
        .filter(|path| path.is_managed())
        .cloned()
        .collect();
    for map in MIRRORED_MAPS {
        if let Some(Value::Object(keys)) = lookup(&upstream.object, map.iter().copied()) {
            owned.extend(
                keys.iter()
                    .filter(|(_, value)| !value.is_null())
                    .map(|(key, _)| {
                        FieldPath::new(map.iter().copied().chain(std::iter::once(key.as_str())))
                    }),
            );
        }
    }
    of_leaves(&upstream.object, &owned)
}

fn of_leaves(json: &Value, leaves: &BTreeSet<FieldPath>) -> Fingerprint {
    // Fixed keys: the same fields hash the same within the process, which is all it needs.
    let mut hasher = DefaultHasher::new();
    let mut paths = DefaultHasher::new();
    for leaf in leaves {
        leaf.keys().hash(&mut hasher);
        leaf.keys().hash(&mut paths);
        let value = lookup(json, leaf.keys().iter().map(String::as_str));
        match value {
            Some(value) if leaf.keys() == OWNER_REFERENCES => {
                hash_owner_references(value, &mut hasher)
            }
            Some(value) => hash_value(value, &mut hasher),
            None => 0u8.hash(&mut hasher),
        }
    }
    Fingerprint {
        fields: hasher.finish(),
        paths: paths.finish(),
    }
}

/// Only the references to Services, by uid order: discovery writes those, other owners add
/// theirs, and plan ignores theirs.
fn hash_owner_references(value: &Value, hasher: &mut DefaultHasher) {
    let Value::Array(references) = value else {
        return hash_value(value, hasher);
    };
    let mut ours: Vec<&Value> = references
        .iter()
        .filter(|reference| {
            reference.get("kind").and_then(Value::as_str) == Some("Service")
                && reference.get("apiVersion").and_then(Value::as_str) == Some("v1")
        })
        .collect();
    ours.sort_by_key(|reference| reference.get("uid").and_then(Value::as_str));
    7u8.hash(hasher);
    ours.len().hash(hasher);
    for reference in ours {
        hash_value(reference, hasher);
    }
}

/// Canonical: object keys in order, numbers by value, nulls in maps dropped (the API server
/// prunes them).
fn hash_value(value: &Value, hasher: &mut DefaultHasher) {
    match value {
        Value::Null => 0u8.hash(hasher),
        Value::Bool(b) => {
            1u8.hash(hasher);
            b.hash(hasher);
        }
        Value::Number(number) => {
            2u8.hash(hasher);
            match (number.as_i64(), number.as_u64(), number.as_f64()) {
                (Some(i), _, _) => i128::from(i).hash(hasher),
                (None, Some(u), _) => i128::from(u).hash(hasher),
                (None, None, Some(f)) if f.fract() == 0.0 && f.abs() < 1e18 => {
                    // A whole number read back as an integer must hash as one.
                    (f as i128).hash(hasher)
                }
                (None, None, f) => f.map(f64::to_bits).hash(hasher),
            }
        }
        Value::String(text) => {
            3u8.hash(hasher);
            text.hash(hasher);
        }
        Value::Array(items) => {
            4u8.hash(hasher);
            items.len().hash(hasher);
            for item in items {
                hash_value(item, hasher);
            }
        }
        Value::Object(map) => {
            5u8.hash(hasher);
            let mut entries: Vec<(&String, &Value)> =
                map.iter().filter(|(_, v)| !v.is_null()).collect();
            entries.sort_by_key(|(key, _)| *key);
            entries.len().hash(hasher);
            for (key, item) in entries {
                key.hash(hasher);
                hash_value(item, hasher);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn observed_with(object: Value, owned: &[&[&str]]) -> ObservedUpstream {
        ObservedUpstream {
            namespace: "gloo-system".into(),
            name: "shop-web-80".into(),
            uid: "u".into(),
            resource_version: "1".into(),
            object,
            discovery_fields: owned
                .iter()
                .map(|keys| FieldPath::new(keys.iter().copied()))
                .collect(),
        }
    }

    fn desired_upstream(port: u64) -> Upstream {
        serde_json::from_value(json!({
            "metadata": {"name": "shop-web-80", "namespace": "gloo-system",
                         "labels": {"discovered_by": "kubernetesplugin"}},
            "spec": {"kube": {"serviceName": "web", "serviceNamespace": "shop", "servicePort": port}},
        }))
        .expect("upstream")
    }

    const OWNED: &[&[&str]] = &[
        &["metadata", "labels", "discovered_by"],
        &["spec", "kube", "serviceName"],
        &["spec", "kube", "serviceNamespace"],
        &["spec", "kube", "servicePort"],
    ];

    fn stored(port: Value, extra_spec: Value) -> Value {
        let mut spec = json!({"kube": {"serviceName": "web", "serviceNamespace": "shop", "servicePort": port}});
        if let (Some(spec), Value::Object(extra)) = (spec.as_object_mut(), extra_spec) {
            spec.extend(extra);
        }
        json!({"metadata": {"labels": {"discovered_by": "kubernetesplugin"}}, "spec": spec})
    }

    #[test]
    fn the_same_fields_and_values_agree_whatever_others_added() {
        let want = desired(&desired_upstream(80)).expect("json");
        let same = observed_with(stored(json!(80), json!({})), OWNED);
        assert_eq!(observed(&same), want);
        // Someone else's health checks, which discovery does not own: still the same.
        let others = observed_with(
            stored(json!(80), json!({"healthChecks": [{"timeout": "1s"}]})),
            OWNED,
        );
        assert_eq!(observed(&others), want);
        // A whole number read back from a float.
        let float = observed_with(stored(json!(80.0), json!({})), OWNED);
        assert_eq!(observed(&float), want);
    }

    #[test]
    fn a_changed_value_or_a_field_discovery_still_owns_differs() {
        let want = desired(&desired_upstream(80)).expect("json");
        let changed = observed_with(stored(json!(8080), json!({})), OWNED);
        assert_ne!(observed(&changed).fields, want.fields);
        assert_eq!(observed(&changed).paths, want.paths, "the same fields");
        let mut stale: Vec<&[&str]> = OWNED.to_vec();
        stale.push(&["spec", "useHttp2"]);
        let with_stale = observed_with(stored(json!(80), json!({"useHttp2": true})), &stale);
        assert_ne!(observed(&with_stale).paths, want.paths, "a field to remove");
        // A selector key added by hand (another manager): it must go, so a read and a write.
        let hand = observed_with(
            json!({"metadata": {"labels": {"discovered_by": "kubernetesplugin"}},
                   "spec": {"kube": {"serviceName": "web", "serviceNamespace": "shop",
                                     "servicePort": 80, "selector": {"extra": "1"}}}}),
            OWNED,
        );
        assert_ne!(
            observed(&hand).paths,
            want.paths,
            "a hand-added selector key"
        );
        // Someone else took over a field discovery set (kubectl edit): not owned, so a write.
        let taken = observed_with(stored(json!(80), json!({})), &OWNED[..3]);
        assert_ne!(observed(&taken).paths, want.paths);
    }

    #[test]
    fn owner_references_of_other_owners_do_not_count() {
        let reference = json!({"apiVersion": "v1", "kind": "Service", "name": "web", "uid": "s-1"});
        let mut upstream = desired_upstream(80);
        upstream.metadata.owner_references =
            Some(vec![serde_json::from_value(reference.clone()).expect("ref")]);
        let want = desired(&upstream).expect("json");
        let mut object = stored(json!(80), json!({}));
        object["metadata"]["ownerReferences"] = json!([
            {"apiVersion": "apps/v1", "kind": "Deployment", "name": "x", "uid": "d-1"},
            reference,
        ]);
        let mut owned: Vec<&[&str]> = OWNED.to_vec();
        owned.push(&["metadata", "ownerReferences"]);
        assert_eq!(observed(&observed_with(object, &owned)), want);
    }
}
