//! The discovered fields an owned Upstream still holds that its Service no longer gives
//! (docs/behaviour.md: what discovery produces follows the Service key by key).
//!
//! Server-side apply removes a field only when no other manager still owns it. On an Upstream
//! adopted from Gloo, Gloo's field manager co-owns every discovered key, and a key added by hand
//! is owned by whoever added it, so a key dropped from the Service would stay for good (a stale
//! `kube.selector` key silently drops every endpoint). These fields are therefore removed
//! explicitly, whoever owns them:
//! - every key of the maps that mirror the Service (`spec.kube.selector`,
//!   `spec.discoveryMetadata.labels`) that the Service does not have;
//! - every other field discovery's managers own (ours, or Gloo's) that desired no longer sets:
//!   a copied annotation, `useHttp2`, `sslConfig`, a field an override used to set.
//!
//! Fields nobody in discovery wrote (a user's annotation, health checks) are never touched, nor
//! are `ownerReferences`, a list other controllers add to.

use std::collections::BTreeSet;

use serde_json::Value;

use super::{lookup, FieldPath, ObservedUpstream};

/// Maps that hold exactly what the Service has: any other key is stale, whoever set it.
pub(super) const MIRRORED_MAPS: [&[&str]; 2] = [
    &["spec", "kube", "selector"],
    &["spec", "discoveryMetadata", "labels"],
];

/// The parts of an Upstream where a stale field may be removed.
const REMOVABLE_ROOTS: [&[&str]; 3] = [
    &["metadata", "labels"],
    &["metadata", "annotations"],
    &["spec"],
];

/// The fields to remove from `observed` so that it holds only what `desired` (as JSON) gives,
/// as the highest paths that cover them: a container left empty by the removal goes with it
/// (an empty `sslConfig.secretRef` would mean something else to Gloo), unless desired sets it.
pub fn stale_fields(desired: &Value, observed: &ObservedUpstream) -> Vec<FieldPath> {
    let mut stale = BTreeSet::new();
    for map in MIRRORED_MAPS {
        let Some(Value::Object(current)) = lookup(&observed.object, map.iter().copied()) else {
            continue;
        };
        for key in current.keys() {
            let mut path: Vec<String> = map.iter().map(|k| k.to_string()).collect();
            path.push(key.clone());
            if lookup(desired, path.iter().map(String::as_str)).is_none() {
                stale.insert(FieldPath(path));
            }
        }
    }
    for path in &observed.discovery_fields {
        let removable = REMOVABLE_ROOTS.iter().any(|root| path.is_under(root));
        let keys = || path.0.iter().map(String::as_str);
        if removable
            && lookup(desired, keys()).is_none()
            && lookup(&observed.object, keys()).is_some()
        {
            stale.insert(path.clone());
        }
    }
    if stale.is_empty() {
        return Vec::new();
    }
    let mut covering = Vec::new();
    let mut path = Vec::new();
    if let Value::Object(root) = &observed.object {
        for (key, child) in root {
            path.push(key.clone());
            collapse(child, &mut path, &stale, desired, &mut covering);
            path.pop();
        }
    }
    covering
}

/// Whether the node at `path` goes whole; when it does not, the paths of its children that go
/// whole are pushed to `covering`. The top level (`spec`, `metadata`) never goes whole.
fn collapse(
    node: &Value,
    path: &mut Vec<String>,
    stale: &BTreeSet<FieldPath>,
    desired: &Value,
    covering: &mut Vec<FieldPath>,
) -> bool {
    if stale.contains(&FieldPath(path.clone())) {
        return true;
    }
    let Value::Object(children) = node else {
        return false;
    };
    let mut removed = Vec::new();
    let mut kept = 0;
    for (key, child) in children {
        path.push(key.clone());
        if collapse(child, path, stale, desired, covering) {
            removed.push(FieldPath(path.clone()));
        } else {
            kept += 1;
        }
        path.pop();
    }
    let whole = kept == 0
        && !removed.is_empty()
        && path.len() >= 2
        && lookup(desired, path.iter().map(String::as_str)).is_none();
    if !whole {
        covering.extend(removed);
    }
    whole
}

/// A JSON merge patch (RFC 7386) that removes `paths`: a null at each.
pub fn removal_patch(paths: &[FieldPath]) -> Value {
    let mut patch = Value::Object(serde_json::Map::new());
    for path in paths {
        let Some((last, parents)) = path.0.split_last() else {
            continue;
        };
        let mut node = &mut patch;
        for key in parents {
            let Value::Object(map) = node else { break };
            node = map
                .entry(key.clone())
                .or_insert_with(|| Value::Object(serde_json::Map::new()));
        }
        if let Value::Object(map) = node {
            map.insert(last.clone(), Value::Null);
        }
    }
    patch
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(keys: &[&str]) -> FieldPath {
        FieldPath::new(keys.iter().copied())
    }

    fn observed(object: Value, discovery_fields: &[&[&str]]) -> ObservedUpstream {
        ObservedUpstream {
            namespace: "gloo-system".into(),
            name: "shop-web-80".into(),
            uid: "u".into(),
            resource_version: "1".into(),
            object,
            discovery_fields: discovery_fields.iter().map(|keys| p(keys)).collect(),
        }
    }

    #[test]
    fn a_selector_or_label_key_the_service_dropped_goes_whoever_owns_it() {
        let current = observed(
            json!({"metadata": {"labels": {"discovered_by": "kubernetesplugin"}},
                   "spec": {"kube": {"serviceName": "web", "selector": {"app": "web", "tier": "front", "hand": "added"}},
                            "discoveryMetadata": {"labels": {"app": "web", "tier": "front"}}}}),
            &[],
        );
        let desired = json!({"spec": {"kube": {"serviceName": "web", "selector": {"app": "web"}},
                                      "discoveryMetadata": {"labels": {"app": "web"}}}});
        assert_eq!(
            stale_fields(&desired, &current),
            [
                p(&["spec", "discoveryMetadata", "labels", "tier"]),
                p(&["spec", "kube", "selector", "hand"]),
                p(&["spec", "kube", "selector", "tier"]),
            ]
        );
    }

    #[test]
    fn a_map_the_service_no_longer_has_goes_whole() {
        let current = observed(
            json!({"spec": {"kube": {"serviceName": "web", "selector": {"app": "web"}},
                            "discoveryMetadata": {"labels": {"app": "web"}}}}),
            &[],
        );
        let desired = json!({"spec": {"kube": {"serviceName": "web"}, "discoveryMetadata": {}}});
        assert_eq!(
            stale_fields(&desired, &current),
            [
                p(&["spec", "discoveryMetadata", "labels"]),
                p(&["spec", "kube", "selector"]),
            ]
        );
    }

    #[test]
    fn discovered_fields_no_longer_given_go_but_other_peoples_fields_stay() {
        let current = observed(
            json!({"metadata": {"annotations": {"copied": "1", "kept": "2", "user": "3"}},
                   "spec": {"useHttp2": true, "healthChecks": [{"timeout": "1s"}],
                            "sslConfig": {"secretRef": {"name": "tls", "namespace": "shop"}, "sni": "x"}}}),
            &[
                &["metadata", "annotations", "copied"],
                &["metadata", "annotations", "kept"],
                &["spec", "useHttp2"],
                &["spec", "sslConfig", "secretRef", "name"],
                &["spec", "sslConfig", "secretRef", "namespace"],
                &["metadata", "ownerReferences"],
            ],
        );
        let desired = json!({"metadata": {"annotations": {"kept": "2"}}, "spec": {}});
        assert_eq!(
            stale_fields(&desired, &current),
            [
                p(&["metadata", "annotations", "copied"]),
                p(&["spec", "sslConfig", "secretRef"]),
                p(&["spec", "useHttp2"]),
            ],
            "secretRef goes whole; sni, the user's annotation and health checks stay"
        );
    }

    #[test]
    fn a_container_empties_whole_unless_desired_sets_it() {
        let current = observed(
            json!({"metadata": {"annotations": {"a": "1"}}, "spec": {"sslConfig": {"oneWayTls": true}}}),
            &[
                &["metadata", "annotations", "a"],
                &["spec", "sslConfig", "oneWayTls"],
            ],
        );
        assert_eq!(
            stale_fields(&json!({"spec": {}}), &current),
            [p(&["metadata", "annotations"]), p(&["spec", "sslConfig"])]
        );
        assert_eq!(
            stale_fields(&json!({"spec": {"sslConfig": {"sni": "x"}}}), &current),
            [
                p(&["metadata", "annotations"]),
                p(&["spec", "sslConfig", "oneWayTls"])
            ]
        );
    }

    #[test]
    fn nothing_stale_when_everything_is_given() {
        let object = json!({"metadata": {"annotations": {"a": "1"}},
                            "spec": {"kube": {"selector": {"app": "web"}}}});
        let current = observed(
            object.clone(),
            &[
                &["metadata", "annotations", "a"],
                &["spec", "kube", "selector", "app"],
            ],
        );
        assert!(stale_fields(&object, &current).is_empty());
    }

    #[test]
    fn the_patch_nulls_each_path() {
        assert_eq!(
            removal_patch(&[
                p(&["spec", "kube", "selector", "tier"]),
                p(&["spec", "kube", "selector", "x.io/y"]),
                p(&["metadata", "annotations"]),
            ]),
            json!({"metadata": {"annotations": null},
                   "spec": {"kube": {"selector": {"tier": null, "x.io/y": null}}}})
        );
    }
}
