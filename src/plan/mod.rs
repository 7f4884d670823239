//! Pure planning: compares the Upstreams one Service should have with the ones the daemon owns for
//! it and decides which to create, update or delete (docs/behaviour.md, "User fields kept": writes
//! only on real change), and which names it must leave alone because someone else holds them.
//!
//! Who holds each name is an input (a [`NameClaims`] view of the cache): a name held by an object
//! without our label, or by an Upstream discovered from another Service, is reported as blocked
//! and never written.
//!
//! An owned Upstream is rewritten only when a field we manage really changed. Two rules decide:
//! a value desired sets differs from the observed one (compared only over what desired sets, so
//! fields other people add never cause a write), or the object holds a discovered field the
//! Service no longer gives ([`stale`]: removed explicitly, since server-side apply leaves a field
//! another manager co-owns). Nothing else counts, so a restart, or taking over an Upstream Gloo's
//! discovery wrote, costs no write.

mod cached;
pub mod fingerprint;
pub mod grants;
mod stale;

use cached::blocked_by;
pub use cached::{collect, plan_cached, plan_fresh, CachedPlan, Fresh, OwnedUpstream};
pub use grants::{plan_grants, GrantAction, ObservedGrant};
pub use stale::removal_patch;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Map, Value};

use crate::crd::Upstream;
use crate::model::{EventReason, ServiceKey, SkipReason, UpstreamKey};

/// The parts of an Upstream the daemon manages. Other metadata (name, finalizers, …) is the API
/// server's or someone else's business and must never trigger a write.
const MANAGED_ROOTS: [&[&str]; 4] = [
    &["metadata", "labels"],
    &["metadata", "annotations"],
    &["metadata", "ownerReferences"],
    &["spec"],
];

const OWNER_REFERENCES: &[&str] = &["metadata", "ownerReferences"];

/// A field of an object as a list of keys, e.g. `["spec", "kube", "selector", "app"]`.
///
/// Keys are kept apart rather than joined because label and annotation keys contain dots.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FieldPath(Vec<String>);

impl FieldPath {
    pub fn new<I, S>(keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self(keys.into_iter().map(Into::into).collect())
    }

    pub fn keys(&self) -> &[String] {
        &self.0
    }

    /// Whether the path lies in a part of the object the daemon manages.
    pub fn is_managed(&self) -> bool {
        MANAGED_ROOTS.iter().any(|root| self.is_under(root))
    }

    /// Whether the path is `root` or lies below it.
    pub fn is_under(&self, root: &[&str]) -> bool {
        root.len() <= self.0.len() && root.iter().zip(&self.0).all(|(a, b)| a == b)
    }
}

/// Rendered with dots for logs (`spec.kube.selector.app`); ambiguous when a key has a dot, which
/// is fine for humans but is why the keys are stored apart.
impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

/// What the daemon remembers of an Upstream it owns: only what planning needs, without
/// `managedFields`, which is often larger than the object itself.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedUpstream {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub resource_version: String,
    /// The object as JSON: `metadata.labels`, `metadata.annotations`, `metadata.ownerReferences`
    /// and `spec`, without `managedFields`.
    pub object: Value,
    /// The leaf fields discovery's field managers own (ours, or Gloo's on an adopted Upstream),
    /// by any operation: what discovery produced, so what goes when the Service stops giving it.
    pub discovery_fields: BTreeSet<FieldPath>,
}

impl ObservedUpstream {
    /// Builds it from an Upstream as the API server returns it. `managers` are discovery's field
    /// managers; every operation counts (a create is an `Update`, Gloo only ever updates), since
    /// removal no longer relies on server-side apply dropping what it stops sending. `None` when
    /// name, namespace, uid or resourceVersion is missing, which the API server never returns.
    pub fn from_upstream(upstream: &Upstream, managers: &[&str]) -> Option<Self> {
        let meta = &upstream.metadata;
        let mut metadata = Map::new();
        if let Some(labels) = &meta.labels {
            metadata.insert("labels".to_string(), serde_json::to_value(labels).ok()?);
        }
        if let Some(annotations) = &meta.annotations {
            metadata.insert(
                "annotations".to_string(),
                serde_json::to_value(annotations).ok()?,
            );
        }
        if let Some(owners) = &meta.owner_references {
            metadata.insert(
                "ownerReferences".to_string(),
                serde_json::to_value(owners).ok()?,
            );
        }
        let mut object = Map::new();
        object.insert("metadata".to_string(), Value::Object(metadata));
        object.insert(
            "spec".to_string(),
            serde_json::to_value(&upstream.spec).ok()?,
        );

        let discovery_fields = meta
            .managed_fields
            .iter()
            .flatten()
            .filter(|entry| {
                entry
                    .manager
                    .as_deref()
                    .is_some_and(|manager| managers.contains(&manager))
                    // A subresource entry (e.g. status) is about another object view.
                    && entry.subresource.as_deref().unwrap_or_default().is_empty()
            })
            .filter_map(|entry| entry.fields_v1.as_ref())
            .flat_map(|fields| fields_v1_leaf_paths(&fields.0))
            .collect();

        Some(Self {
            namespace: meta.namespace.clone()?,
            name: meta.name.clone()?,
            uid: meta.uid.clone()?,
            resource_version: meta.resource_version.clone()?,
            object: Value::Object(object),
            discovery_fields,
        })
    }
}

/// One write to make.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// No object of that name exists (as far as we know): create it.
    Create(Upstream),
    /// An owned object exists and differs in a field we manage: first remove `remove` (stale
    /// discovered fields, see [`stale`]), then server-side apply `desired` when a value differs,
    /// each with the observed object's uid and resourceVersion as preconditions.
    Update {
        desired: Upstream,
        uid: String,
        resource_version: String,
        /// The first difference found, for the logs.
        reason: UpdateReason,
        remove: Vec<FieldPath>,
    },
    /// An owned object that is no longer desired.
    Delete {
        namespace: String,
        name: String,
        uid: String,
        resource_version: String,
    },
    /// A write of the ReferenceGrant kept beside an Upstream ([`grants`]).
    Grant(GrantAction),
}

/// The actions for one Service, creates and updates in desired order, then deletes sorted by
/// namespace and name, so that repeated passes over the same state plan the same thing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// Desired names someone else holds: nothing is written to them.
    pub blocked: Vec<Blocked>,
    /// Owned Upstreams that are desired and already as desired.
    pub unchanged: usize,
    /// Deletes not planned because the first full list of Services has not completed yet.
    pub deletes_held_back: usize,
}

/// Who holds an Upstream name, as far as the cache knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameHolder {
    /// Nobody: the Service being planned may take it (create, or update in place).
    Free,
    /// An object without our ownership label: never touched.
    Foreign,
    /// This Service holds the name (see the `NameClaims` of the cache for the rule).
    Service(ServiceKey),
}

/// The view of the cache `plan` asks who holds a name.
pub trait NameClaims {
    fn holder(&self, name: &UpstreamKey) -> NameHolder;
}

/// A cache that knows no names: every name is free (offline rendering, tests).
pub struct NoClaims;

impl NameClaims for NoClaims {
    fn holder(&self, _: &UpstreamKey) -> NameHolder {
        NameHolder::Free
    }
}

/// A desired Upstream that cannot be written, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub name: UpstreamKey,
    pub by: BlockedBy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockedBy {
    /// An object without the ownership label holds the name.
    NotOwned,
    /// Another Service's Upstream holds the name (Gloo's naming gives both the same one).
    Service(ServiceKey),
    /// A ReferenceGrant without the ownership label holds the grant's name (the Upstream's).
    GrantNotOwned,
}

impl Blocked {
    pub fn skip_reason(&self) -> SkipReason {
        match self.by {
            BlockedBy::NotOwned | BlockedBy::GrantNotOwned => SkipReason::NotOwned,
            BlockedBy::Service(_) => SkipReason::NameCollision,
        }
    }

    pub fn event_reason(&self) -> EventReason {
        match self.by {
            BlockedBy::NotOwned => EventReason::UpstreamNotOwned,
            BlockedBy::Service(_) => EventReason::UpstreamNameCollision,
            BlockedBy::GrantNotOwned => EventReason::ReferenceGrantNotOwned,
        }
    }

    /// The Event's text, for the Service that wanted the name.
    pub fn note(&self) -> String {
        let name = &self.name;
        match &self.by {
            BlockedBy::NotOwned => format!(
                "Upstream {name} exists and was not written by discovery (no discovered_by=kubernetesplugin label); it is left alone"
            ),
            BlockedBy::Service(owner) => format!(
                "Upstream {name} is already discovered from Service {owner}: Gloo's naming gives both the same name; it is left to {owner}"
            ),
            BlockedBy::GrantNotOwned => format!(
                "ReferenceGrant {name} exists and was not written by discovery (no discovered_by=kubernetesplugin label); it is left alone and no grant is kept for Upstream {name}"
            ),
        }
    }
}

/// Why an owned Upstream needs a write; for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateReason {
    /// Desired sets a value at this path that the object lacks or holds differently. The empty
    /// path means the desired Upstream could not be turned into JSON at all.
    Differs(FieldPath),
    /// The object holds this discovered field but desired no longer gives it (the first of the
    /// stale fields, see [`stale`]).
    NoLongerSet(FieldPath),
    /// A value discovery owns changed and no field came or went: known from the fingerprints
    /// alone, without reading the object ([`plan_cached`]).
    ValueChanged,
}

/// Plans the writes for Service `service`. `desired` are the Upstreams translate produced for it,
/// `observed` the owned Upstreams at the names it holds, `claims` says who holds each name.
/// `may_delete` stays false until the first full list of Services has completed: before that,
/// a missing Service may just not have been seen yet.
pub fn plan(
    service: &ServiceKey,
    desired: &[Upstream],
    observed: &[ObservedUpstream],
    claims: &impl NameClaims,
    may_delete: bool,
) -> Plan {
    let mut observed_by_key: BTreeMap<(&str, &str), &ObservedUpstream> = BTreeMap::new();
    for upstream in observed {
        observed_by_key
            .entry((upstream.namespace.as_str(), upstream.name.as_str()))
            .or_insert(upstream);
    }

    let mut result = Plan::default();
    let mut seen = BTreeSet::new();
    for upstream in desired {
        let key = desired_key(upstream);
        // Two ports cannot share a name in a valid Service; if they ever do, one write is enough.
        if !seen.insert(key) {
            continue;
        }
        let name = UpstreamKey::new(key.0, key.1);
        if let Some(by) = blocked_by(service, &name, claims) {
            result.blocked.push(Blocked { name, by });
            continue;
        }
        match observed_by_key.get(&key) {
            None => result.actions.push(Action::Create(upstream.clone())),
            Some(current) => match changes(upstream, current) {
                Some((reason, remove)) => result.actions.push(Action::Update {
                    desired: upstream.clone(),
                    uid: current.uid.clone(),
                    resource_version: current.resource_version.clone(),
                    reason,
                    remove,
                }),
                None => result.unchanged += 1,
            },
        }
    }

    for (key, current) in observed_by_key {
        if seen.contains(&key) {
            continue;
        }
        result.delete(current.identity(), may_delete);
    }
    result
}

/// What a delete is guarded by: namespace, name, uid, resourceVersion.
type Identity<'a> = (&'a str, &'a str, &'a str, &'a str);

impl ObservedUpstream {
    fn identity(&self) -> Identity<'_> {
        (
            &self.namespace,
            &self.name,
            &self.uid,
            &self.resource_version,
        )
    }
}

impl Plan {
    fn delete(&mut self, (namespace, name, uid, resource_version): Identity<'_>, may_delete: bool) {
        if !may_delete {
            self.deletes_held_back += 1;
            return;
        }
        self.actions.push(Action::Delete {
            namespace: namespace.to_string(),
            name: name.to_string(),
            uid: uid.to_string(),
            resource_version: resource_version.to_string(),
        });
    }
}

fn desired_key(upstream: &Upstream) -> (&str, &str) {
    (
        upstream.metadata.namespace.as_deref().unwrap_or_default(),
        upstream.metadata.name.as_deref().unwrap_or_default(),
    )
}

/// The first reason found for writing `desired` over `observed`, or `None` when they agree on
/// everything we manage.
pub fn update_reason(desired: &Upstream, observed: &ObservedUpstream) -> Option<UpdateReason> {
    changes(desired, observed).map(|(reason, _)| reason)
}

/// Why `observed` needs a write to become `desired`, and the stale fields to remove first.
fn changes(
    desired: &Upstream,
    observed: &ObservedUpstream,
) -> Option<(UpdateReason, Vec<FieldPath>)> {
    let Ok(desired_json) = serde_json::to_value(desired) else {
        // Cannot happen with string-keyed maps; if it did, writing surfaces the error.
        return Some((UpdateReason::Differs(FieldPath::default()), Vec::new()));
    };
    let remove = stale::stale_fields(&desired_json, observed);
    if let Some(path) = first_managed_difference(&desired_json, observed) {
        return Some((UpdateReason::Differs(path), remove));
    }
    let first = remove.first()?.clone();
    Some((UpdateReason::NoLongerSet(first), remove))
}

fn first_managed_difference(
    desired_json: &Value,
    observed: &ObservedUpstream,
) -> Option<FieldPath> {
    for root in MANAGED_ROOTS {
        let Some(wanted) = lookup(desired_json, root.iter().copied()) else {
            continue;
        };
        let mut path: Vec<String> = root.iter().map(|key| key.to_string()).collect();
        let current = lookup(&observed.object, root.iter().copied());
        let difference = match current {
            None => Some(FieldPath(path)),
            Some(current) if root == OWNER_REFERENCES => {
                owner_references_difference(wanted, current, &path)
            }
            Some(current) => first_difference(wanted, current, &mut path),
        };
        if difference.is_some() {
            return difference;
        }
    }
    None
}

/// The leaf fields `upstream` sets in the parts we manage: what our field manager owns once it
/// is applied. Lists are leaves as a whole, like the list-level paths of
/// [`fields_v1_leaf_paths`]; an empty map is a leaf of its own.
pub fn desired_leaf_paths(upstream: &Upstream) -> BTreeSet<FieldPath> {
    match serde_json::to_value(upstream) {
        Ok(json) => managed_leaf_paths(&json),
        Err(_) => BTreeSet::new(),
    }
}

/// The leaf paths of an object's (as JSON) managed parts.
pub fn managed_leaf_paths(json: &Value) -> BTreeSet<FieldPath> {
    let mut leaves = BTreeSet::new();
    for root in MANAGED_ROOTS {
        if let Some(value) = lookup(json, root.iter().copied()) {
            let mut path = root.iter().map(|key| key.to_string()).collect();
            collect_value_leaves(value, &mut path, &mut leaves);
        }
    }
    leaves
}

fn collect_value_leaves(value: &Value, path: &mut Vec<String>, leaves: &mut BTreeSet<FieldPath>) {
    match value {
        Value::Null => {}
        Value::Object(map) if map.values().any(|v| !v.is_null()) => {
            for (key, child) in map {
                path.push(key.clone());
                collect_value_leaves(child, path, leaves);
                path.pop();
            }
        }
        _ => {
            leaves.insert(FieldPath(path.clone()));
        }
    }
}

/// The leaf paths of a `managedFields[].fieldsV1` set (structured-merge-diff format: `f:<name>`
/// for a field, `k:{…}`, `v:<value>` and `i:<n>` for list items, `.` for the node itself).
/// A list item counts as owning the whole list, since lists are compared whole.
pub fn fields_v1_leaf_paths(fields: &Value) -> BTreeSet<FieldPath> {
    let mut leaves = BTreeSet::new();
    collect_fields_v1_leaves(fields, &mut Vec::new(), &mut leaves);
    leaves
}

fn collect_fields_v1_leaves(
    node: &Value,
    path: &mut Vec<String>,
    leaves: &mut BTreeSet<FieldPath>,
) {
    let mut is_leaf = true;
    if let Value::Object(children) = node {
        for (key, child) in children {
            if key == "." {
                continue;
            }
            is_leaf = false;
            if let Some(field) = key.strip_prefix("f:") {
                path.push(field.to_string());
                collect_fields_v1_leaves(child, path, leaves);
                path.pop();
            } else if !path.is_empty() {
                // `k:`, `v:`, `i:` (or a prefix newer than this code): something in this list.
                leaves.insert(FieldPath(path.clone()));
            }
        }
    }
    if is_leaf && !path.is_empty() {
        leaves.insert(FieldPath(path.clone()));
    }
}

/// The value at `keys`, treating an explicit null as absent: the API server prunes nulls, and
/// translate uses them to mean "unset".
fn lookup<'a, 'k>(json: &'a Value, keys: impl IntoIterator<Item = &'k str>) -> Option<&'a Value> {
    let mut node = json;
    for key in keys {
        node = node.as_object()?.get(key)?;
    }
    (!node.is_null()).then_some(node)
}

/// The first path where `observed` does not hold what `desired` sets. Maps are compared only over
/// the keys desired sets, because other keys belong to other people; lists and scalars whole.
fn first_difference(
    desired: &Value,
    observed: &Value,
    path: &mut Vec<String>,
) -> Option<FieldPath> {
    match desired {
        Value::Null => None,
        Value::Object(wanted) => {
            let Value::Object(current) = observed else {
                return Some(FieldPath(path.clone()));
            };
            for (key, wanted_value) in wanted {
                if wanted_value.is_null() {
                    continue;
                }
                path.push(key.clone());
                let difference = match current.get(key) {
                    None => Some(FieldPath(path.clone())),
                    Some(current_value) => first_difference(wanted_value, current_value, path),
                };
                path.pop();
                if difference.is_some() {
                    return difference;
                }
            }
            None
        }
        _ => (!json_equal(desired, observed)).then(|| FieldPath(path.clone())),
    }
}

/// ownerReferences is a list keyed by uid that other controllers may add to: each reference we
/// want must be there, exactly, but references of other owners are theirs. Comparing the whole
/// list would rewrite such an object on every pass without ever converging.
fn owner_references_difference(
    desired: &Value,
    observed: &Value,
    path: &[String],
) -> Option<FieldPath> {
    let (Value::Array(wanted), Value::Array(current)) = (desired, observed) else {
        return (!json_equal(desired, observed)).then(|| FieldPath(path.to_vec()));
    };
    let all_present = wanted.iter().all(|reference| {
        let uid = reference.get("uid").and_then(Value::as_str);
        current.iter().any(|candidate| match uid {
            Some(uid) => {
                candidate.get("uid").and_then(Value::as_str) == Some(uid)
                    && json_equal(reference, candidate)
            }
            None => json_equal(reference, candidate),
        })
    });
    (!all_present).then(|| FieldPath(path.to_vec()))
}

/// JSON equality where numbers compare by value: a `1.0` from a user's upstream_config comes
/// back from the API server as `1`, and that must not look like a change forever.
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                x == y
            } else if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                x == y
            } else {
                x.as_f64() == y.as_f64()
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_equal(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(key, x)| y.get(key).is_some_and(|y| json_equal(x, y)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{DiscoveryMetadata, KubeUpstream};
    use crate::crd::{ResourceRef, UpstreamSpec, UpstreamSslConfig};
    use crate::model::{DISCOVERED_BY_LABEL, KUBERNETES_PLUGIN};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
        FieldsV1, ManagedFieldsEntry, ObjectMeta, OwnerReference,
    };
    use proptest::prelude::*;
    use serde_json::json;
    use std::slice::from_ref;

    const MANAGER: &str = "upstream-discovery";
    const WRITE_NS: &str = "gloo-system";

    fn p(keys: &[&str]) -> FieldPath {
        FieldPath::new(keys.iter().copied())
    }

    fn owner(service: &str, uid: &str) -> OwnerReference {
        OwnerReference {
            api_version: "v1".to_string(),
            kind: "Service".to_string(),
            name: service.to_string(),
            uid: uid.to_string(),
            ..Default::default()
        }
    }

    /// An Upstream as translate writes it for port `port` of Service `default/petstore`.
    fn upstream(port: u32) -> Upstream {
        Upstream {
            metadata: ObjectMeta {
                name: Some(format!("default-petstore-{port}")),
                namespace: Some(WRITE_NS.to_string()),
                labels: Some(BTreeMap::from([(
                    DISCOVERED_BY_LABEL.to_string(),
                    KUBERNETES_PLUGIN.to_string(),
                )])),
                annotations: Some(BTreeMap::from([(
                    "team.example.com/owner".to_string(),
                    "pets".to_string(),
                )])),
                ..Default::default()
            },
            spec: UpstreamSpec {
                discovery_metadata: Some(DiscoveryMetadata {
                    labels: Some(BTreeMap::from([(
                        "app".to_string(),
                        "petstore".to_string(),
                    )])),
                }),
                kube: Some(KubeUpstream {
                    service_name: Some("petstore".to_string()),
                    service_namespace: Some("default".to_string()),
                    service_port: Some(port),
                    selector: Some(BTreeMap::from([
                        ("app".to_string(), "petstore".to_string()),
                        ("tier".to_string(), "web".to_string()),
                    ])),
                    ..Default::default()
                }),
                ..Default::default()
            },
            status: None,
        }
    }

    fn named(mut upstream: Upstream, name: &str) -> Upstream {
        upstream.metadata.name = Some(name.to_string());
        upstream
    }

    /// The observed form of `upstream` with the given fields owned by us.
    fn observed_with(
        upstream: &Upstream,
        discovery_fields: BTreeSet<FieldPath>,
    ) -> ObservedUpstream {
        let mut full = upstream.clone();
        let name = full.metadata.name.clone().unwrap_or_default();
        full.metadata.uid = Some(format!("uid-{name}"));
        full.metadata.resource_version = Some("42".to_string());
        let mut observed = ObservedUpstream::from_upstream(&full, &[MANAGER]).expect("complete");
        observed.discovery_fields = discovery_fields;
        observed
    }

    /// `upstream` right after we applied it.
    fn applied(upstream: &Upstream) -> ObservedUpstream {
        observed_with(upstream, desired_leaf_paths(upstream))
    }

    /// `upstream` as Gloo's discovery left it: same content, no field of ours.
    fn written_by_gloo(upstream: &Upstream) -> ObservedUpstream {
        observed_with(upstream, BTreeSet::new())
    }

    fn update_of(desired: &Upstream, observed: &ObservedUpstream) -> Action {
        Action::Update {
            desired: desired.clone(),
            uid: observed.uid.clone(),
            resource_version: observed.resource_version.clone(),
            reason: update_reason(desired, observed).expect("a difference"),
            remove: super::changes(desired, observed)
                .map(|(_, remove)| remove)
                .unwrap_or_default(),
        }
    }

    /// The Service of [`upstream`].
    fn petstore() -> ServiceKey {
        ServiceKey::new("default", "petstore")
    }

    /// Plans for `default/petstore` with every name free.
    fn plan(desired: &[Upstream], observed: &[ObservedUpstream], may_delete: bool) -> Plan {
        super::plan(&petstore(), desired, observed, &NoClaims, may_delete)
    }

    /// Names held as listed, the rest free.
    struct Held(Vec<(&'static str, NameHolder)>);

    impl NameClaims for Held {
        fn holder(&self, name: &UpstreamKey) -> NameHolder {
            self.0
                .iter()
                .find(|(held, _)| *held == &*name.name && &*name.namespace == WRITE_NS)
                .map_or(NameHolder::Free, |(_, holder)| holder.clone())
        }
    }

    fn delete_of(observed: &ObservedUpstream) -> Action {
        Action::Delete {
            namespace: observed.namespace.clone(),
            name: observed.name.clone(),
            uid: observed.uid.clone(),
            resource_version: observed.resource_version.clone(),
        }
    }

    fn unchanged(count: usize) -> Plan {
        Plan {
            unchanged: count,
            ..Default::default()
        }
    }

    /// Encodes leaf paths as the API server writes fieldsV1, with `.` on every inner node and
    /// ownerReferences as `k:{"uid":…}` items, so that parsing is tested against the real shape.
    fn fields_v1_for(upstream: &Upstream, leaves: &BTreeSet<FieldPath>) -> Value {
        let mut root = Map::new();
        for leaf in leaves {
            let mut node = &mut root;
            for key in leaf.keys() {
                let child = node.entry(format!("f:{key}")).or_insert_with(|| json!({}));
                node = child.as_object_mut().expect("object");
            }
            if leaf == &p(&["metadata", "ownerReferences"]) {
                node.insert(".".to_string(), json!({}));
                for reference in upstream.metadata.owner_references.iter().flatten() {
                    node.insert(
                        format!("k:{{\"uid\":\"{}\"}}", reference.uid),
                        json!({".": {}, "f:apiVersion": {}, "f:kind": {}, "f:name": {}, "f:uid": {}}),
                    );
                }
            }
        }
        fn add_dots(node: &mut Map<String, Value>) {
            if !node.is_empty() {
                node.insert(".".to_string(), json!({}));
            }
            for (key, child) in node.iter_mut() {
                if key.starts_with("f:") {
                    if let Some(child) = child.as_object_mut() {
                        add_dots(child);
                    }
                }
            }
        }
        for (_, child) in root.iter_mut() {
            if let Some(child) = child.as_object_mut() {
                for (_, grandchild) in child.iter_mut() {
                    if let Some(grandchild) = grandchild.as_object_mut() {
                        add_dots(grandchild);
                    }
                }
            }
        }
        Value::Object(root)
    }

    /// `upstream` as the API server returns it after our apply, with another manager's entry too.
    fn served_after_apply(upstream: &Upstream) -> Upstream {
        let mut served = upstream.clone();
        served.metadata.uid = Some("6b0e0b8e-0000-4000-8000-000000000001".to_string());
        served.metadata.resource_version = Some("1234".to_string());
        served.metadata.managed_fields = Some(vec![
            ManagedFieldsEntry {
                api_version: Some("gloo.solo.io/v1".to_string()),
                fields_type: Some("FieldsV1".to_string()),
                fields_v1: Some(FieldsV1(fields_v1_for(
                    upstream,
                    &desired_leaf_paths(upstream),
                ))),
                manager: Some(MANAGER.to_string()),
                operation: Some("Apply".to_string()),
                ..Default::default()
            },
            ManagedFieldsEntry {
                api_version: Some("gloo.solo.io/v1".to_string()),
                fields_type: Some("FieldsV1".to_string()),
                fields_v1: Some(FieldsV1(json!({"f:spec": {"f:healthChecks": {}}}))),
                manager: Some("kubectl-edit".to_string()),
                operation: Some("Update".to_string()),
                ..Default::default()
            },
        ]);
        served
    }

    // ---- create / unchanged ----

    #[test]
    fn creates_what_is_absent() {
        let desired = upstream(8080);
        assert_eq!(
            plan(from_ref(&desired), &[], true),
            Plan {
                actions: vec![Action::Create(desired)],
                ..Default::default()
            }
        );
    }

    #[test]
    fn equal_objects_need_no_write() {
        let desired = upstream(8080);
        assert_eq!(
            plan(from_ref(&desired), &[applied(&desired)], true),
            unchanged(1)
        );
    }

    #[test]
    fn an_upstream_written_by_gloo_is_adopted_without_a_write() {
        let desired = upstream(8080);
        assert_eq!(
            plan(from_ref(&desired), &[written_by_gloo(&desired)], true),
            unchanged(1)
        );
    }

    #[test]
    fn a_differing_upstream_written_by_gloo_is_updated_in_place() {
        let before = upstream(8080);
        let mut desired = before.clone();
        desired.spec.use_http2 = Some(true);
        let observed = written_by_gloo(&before);
        assert_eq!(
            plan(from_ref(&desired), from_ref(&observed), true).actions,
            vec![update_of(&desired, &observed)]
        );
    }

    #[test]
    fn right_after_a_restart_our_own_apply_needs_no_write() {
        let mut desired = upstream(8080);
        desired.metadata.owner_references = Some(vec![owner("petstore", "svc-uid-1")]);
        let observed = ObservedUpstream::from_upstream(&served_after_apply(&desired), &[MANAGER])
            .expect("complete");
        assert_eq!(observed.discovery_fields, desired_leaf_paths(&desired));
        assert_eq!(plan(&[desired], &[observed], true), unchanged(1));
    }

    #[test]
    fn fields_others_add_cause_no_write() {
        type Edit = fn(&mut Value);
        let cases: Vec<(&str, Edit)> = vec![
            ("health checks", |o| {
                o["spec"]["healthChecks"] =
                    json!([{"timeout": "1s", "httpHealthCheck": {"path": "/healthz"}}]);
            }),
            ("circuit breakers", |o| {
                o["spec"]["circuitBreakers"] = json!({"maxConnections": 7});
            }),
            ("extra label", |o| {
                o["metadata"]["labels"]["team"] = json!("pets");
            }),
            ("extra annotation", |o| {
                o["metadata"]["annotations"]["note"] = json!("hand written");
            }),
            ("nested key in kube", |o| {
                o["spec"]["kube"]["subsetSpec"] = json!({"selectors": [{"keys": ["version"]}]});
            }),
            ("nested key in sslConfig", |o| {
                o["spec"]["sslConfig"]["sni"] = json!("petstore.example.com");
            }),
            ("another controller's ownerReference", |o| {
                o["metadata"]["ownerReferences"]
                    .as_array_mut()
                    .expect("list")
                    .push(json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Application", "name": "pets", "uid": "argo-uid"}));
            }),
        ];
        let mut desired = upstream(8080);
        desired.spec.ssl_config = Some(UpstreamSslConfig {
            secret_ref: Some(ResourceRef {
                name: "petstore-tls".to_string(),
                namespace: "default".to_string(),
            }),
            ..Default::default()
        });
        desired.metadata.owner_references = Some(vec![owner("petstore", "svc-uid-1")]);
        for (case, edit) in cases {
            for observed in [applied(&desired), written_by_gloo(&desired)] {
                let mut observed = observed;
                edit(&mut observed.object);
                assert_eq!(
                    plan(from_ref(&desired), &[observed], true),
                    unchanged(1),
                    "{case}"
                );
            }
        }
    }

    #[test]
    fn a_key_the_service_lacks_in_a_mirrored_map_goes_whoever_added_it() {
        // Issue 11, failure 2: Gloo co-owns an adopted Upstream's keys, and a hand edit adds one.
        let desired = upstream(8080);
        for observed in [applied(&desired), written_by_gloo(&desired)] {
            let mut observed = observed;
            observed.object["spec"]["kube"]["selector"]["zone"] = json!("a");
            observed.object["spec"]["discoveryMetadata"]["labels"]["tier"] = json!("web");
            let Plan { actions, .. } = plan(from_ref(&desired), &[observed], true);
            let [Action::Update { remove, reason, .. }] = actions.as_slice() else {
                panic!("one update: {actions:?}");
            };
            assert_eq!(
                remove,
                &[
                    p(&["spec", "discoveryMetadata", "labels", "tier"]),
                    p(&["spec", "kube", "selector", "zone"]),
                ]
            );
            assert_eq!(
                reason,
                &UpdateReason::NoLongerSet(p(&["spec", "discoveryMetadata", "labels", "tier"]))
            );
        }
    }

    #[test]
    fn an_owner_reference_is_never_removed() {
        // Other controllers add to the list; a merge patch would replace it whole.
        let before = with_owner(upstream(8080), Some("svc-uid-1"));
        let after = upstream(8080);
        assert_eq!(
            plan(from_ref(&after), &[applied(&before)], true),
            unchanged(1)
        );
    }

    #[test]
    fn numbers_compare_by_value() {
        let mut desired = upstream(8080);
        desired.spec.other.insert(
            "connectionConfig".to_string(),
            json!({"perConnectionBufferLimitBytes": 1.0}),
        );
        let mut observed = applied(&desired);
        observed.object["spec"]["connectionConfig"]["perConnectionBufferLimitBytes"] = json!(1);
        assert_eq!(plan(&[desired], &[observed], true), unchanged(1));
    }

    #[test]
    fn annotations_on_an_object_we_give_none_cause_no_write() {
        let desired = with_annotations(upstream(8080), &[]);
        let mut observed = applied(&desired);
        observed.object["metadata"]["annotations"] = json!({"note": "x"});
        assert_eq!(plan(&[desired], &[observed], true), unchanged(1));
    }

    #[test]
    fn explicit_nulls_in_desired_mean_unset() {
        let mut desired = upstream(8080);
        desired.spec.other.insert(
            "circuitBreakers".to_string(),
            json!({"maxConnections": 7, "maxPendingRequests": null}),
        );
        desired
            .spec
            .other
            .insert("healthChecks".to_string(), Value::Null);
        let leaves = desired_leaf_paths(&desired);
        assert!(!leaves.contains(&p(&["spec", "healthChecks"])));
        assert!(!leaves.contains(&p(&["spec", "circuitBreakers", "maxPendingRequests"])));
        // As the API server stores it: nulls pruned.
        let mut observed = applied(&desired);
        observed.object["spec"] = json!({
            "discoveryMetadata": {"labels": {"app": "petstore"}},
            "kube": {"serviceName": "petstore", "serviceNamespace": "default",
                     "servicePort": 8080, "selector": {"app": "petstore", "tier": "web"}},
            "circuitBreakers": {"maxConnections": 7}
        });
        assert_eq!(plan(&[desired], &[observed], true), unchanged(1));
    }

    // ---- updates ----

    fn with_selector(mut u: Upstream, pairs: &[(&str, &str)]) -> Upstream {
        if let Some(kube) = u.spec.kube.as_mut() {
            kube.selector = Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            );
        }
        u
    }

    fn with_annotations(mut u: Upstream, pairs: &[(&str, &str)]) -> Upstream {
        u.metadata.annotations = (!pairs.is_empty()).then(|| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        });
        u
    }

    fn with_http2(mut u: Upstream, value: Option<bool>) -> Upstream {
        u.spec.use_http2 = value;
        u
    }

    fn with_owner(mut u: Upstream, uid: Option<&str>) -> Upstream {
        u.metadata.owner_references = uid.map(|uid| vec![owner("petstore", uid)]);
        u
    }

    fn with_tls(mut u: Upstream, secret: Option<&str>) -> Upstream {
        u.spec.ssl_config = secret.map(|secret| UpstreamSslConfig {
            secret_ref: Some(ResourceRef {
                name: secret.to_string(),
                namespace: "default".to_string(),
            }),
            ..Default::default()
        });
        u
    }

    fn with_port(mut u: Upstream, port: u32) -> Upstream {
        if let Some(kube) = u.spec.kube.as_mut() {
            kube.service_port = Some(port);
        }
        u
    }

    /// (case, before, after, expected reason)
    fn changes() -> Vec<(&'static str, Upstream, Upstream, UpdateReason)> {
        let base = || upstream(8080);
        let differs = |keys: &[&str]| UpdateReason::Differs(p(keys));
        let dropped = |keys: &[&str]| UpdateReason::NoLongerSet(p(keys));
        vec![
            (
                "port",
                base(),
                with_port(base(), 8081),
                differs(&["spec", "kube", "servicePort"]),
            ),
            (
                "selector value",
                base(),
                with_selector(base(), &[("app", "petstore-v2"), ("tier", "web")]),
                differs(&["spec", "kube", "selector", "app"]),
            ),
            (
                "selector key added",
                base(),
                with_selector(
                    base(),
                    &[("app", "petstore"), ("tier", "web"), ("zone", "a")],
                ),
                differs(&["spec", "kube", "selector", "zone"]),
            ),
            (
                "annotation value",
                base(),
                with_annotations(base(), &[("team.example.com/owner", "cats")]),
                differs(&["metadata", "annotations", "team.example.com/owner"]),
            ),
            (
                "useHttp2 false to true",
                with_http2(base(), Some(false)),
                with_http2(base(), Some(true)),
                differs(&["spec", "useHttp2"]),
            ),
            (
                "useHttp2 unset to true",
                base(),
                with_http2(base(), Some(true)),
                differs(&["spec", "useHttp2"]),
            ),
            (
                "sslConfig added",
                base(),
                with_tls(base(), Some("petstore-tls")),
                differs(&["spec", "sslConfig"]),
            ),
            (
                "sslConfig secret changed",
                with_tls(base(), Some("petstore-tls")),
                with_tls(base(), Some("petstore-tls-2")),
                differs(&["spec", "sslConfig", "secretRef", "name"]),
            ),
            (
                "ownerReference added",
                base(),
                with_owner(base(), Some("svc-uid-1")),
                differs(&["metadata", "ownerReferences"]),
            ),
            (
                "Service re-created with a new uid",
                with_owner(base(), Some("svc-uid-1")),
                with_owner(base(), Some("svc-uid-2")),
                differs(&["metadata", "ownerReferences"]),
            ),
            (
                "annotation removed",
                with_annotations(base(), &[("team.example.com/owner", "pets"), ("note", "x")]),
                base(),
                dropped(&["metadata", "annotations", "note"]),
            ),
            (
                "all annotations removed",
                base(),
                with_annotations(base(), &[]),
                dropped(&["metadata", "annotations"]),
            ),
            (
                "selector key removed",
                base(),
                with_selector(base(), &[("app", "petstore")]),
                dropped(&["spec", "kube", "selector", "tier"]),
            ),
            (
                "useHttp2 removed",
                with_http2(base(), Some(true)),
                base(),
                dropped(&["spec", "useHttp2"]),
            ),
            (
                "port TLS removed",
                with_tls(base(), Some("petstore-tls")),
                base(),
                dropped(&["spec", "sslConfig"]),
            ),
        ]
    }

    #[test]
    fn changes_to_fields_we_manage_are_updated() {
        for (case, before, after, reason) in changes() {
            let observed = applied(&before);
            assert_eq!(update_reason(&after, &observed), Some(reason), "{case}");
            assert_eq!(
                plan(from_ref(&after), from_ref(&observed), true),
                Plan {
                    actions: vec![update_of(&after, &observed)],
                    ..Default::default()
                },
                "{case}"
            );
        }
    }

    fn in_mirrored_map(path: &FieldPath) -> bool {
        path.is_under(&["spec", "kube", "selector"])
            || path.is_under(&["spec", "discoveryMetadata", "labels"])
    }

    #[test]
    fn a_dropped_field_owned_by_someone_else_is_left_alone() {
        for (case, before, after, reason) in changes() {
            let UpdateReason::NoLongerSet(path) = &reason else {
                continue;
            };
            if in_mirrored_map(path) {
                continue;
            }
            for discovery_fields in [BTreeSet::new(), desired_leaf_paths(&after)] {
                let observed = observed_with(&before, discovery_fields);
                assert_eq!(
                    plan(from_ref(&after), &[observed], true),
                    unchanged(1),
                    "{case}"
                );
            }
        }
    }

    #[test]
    fn a_map_we_own_as_a_whole_counts_as_set_while_desired_has_keys_in_it() {
        let desired = upstream(8080);
        let mut discovery_fields = desired_leaf_paths(&desired);
        discovery_fields.insert(p(&["spec", "kube", "selector"]));
        discovery_fields.insert(p(&["spec", "discoveryMetadata"]));
        assert_eq!(
            plan(
                from_ref(&desired),
                &[observed_with(&desired, discovery_fields)],
                true
            ),
            unchanged(1)
        );
    }

    #[test]
    fn owned_fields_outside_what_we_manage_are_ignored() {
        let desired = upstream(8080);
        let mut discovery_fields = desired_leaf_paths(&desired);
        discovery_fields.insert(p(&["metadata", "finalizers"]));
        discovery_fields.insert(p(&["status", "reportedBy"]));
        discovery_fields.insert(p(&["metadata"]));
        assert_eq!(
            plan(
                from_ref(&desired),
                &[observed_with(&desired, discovery_fields)],
                true
            ),
            unchanged(1)
        );
    }

    #[test]
    fn an_owned_field_desired_dropped_while_someone_else_set_it_again_is_still_released() {
        // The value is still there (another manager set it too), but we must let go of it.
        let before = with_http2(upstream(8080), Some(true));
        let after = upstream(8080);
        let observed = applied(&before);
        assert_eq!(
            update_reason(&after, &observed),
            Some(UpdateReason::NoLongerSet(p(&["spec", "useHttp2"])))
        );
    }

    // ---- deletes ----

    #[test]
    fn owned_but_not_desired_is_deleted_only_once_deletes_are_allowed() {
        let kept = upstream(8080);
        let gone = applied(&upstream(9090));
        assert_eq!(
            plan(from_ref(&kept), &[applied(&kept), gone.clone()], true),
            Plan {
                actions: vec![delete_of(&gone)],
                unchanged: 1,
                ..Default::default()
            }
        );
        assert_eq!(
            plan(from_ref(&kept), &[applied(&kept), gone], false),
            Plan {
                unchanged: 1,
                deletes_held_back: 1,
                ..Default::default()
            }
        );
    }

    #[test]
    fn deletes_come_last_sorted_by_namespace_then_name() {
        let mut other_ns = upstream(1);
        other_ns.metadata.namespace = Some("aaa".to_string());
        let observed = vec![
            applied(&named(upstream(3), "c")),
            applied(&named(upstream(1), "a")),
            applied(&named(other_ns, "z")),
            applied(&named(upstream(2), "b")),
        ];
        let created = named(upstream(4), "d");
        let result = plan(from_ref(&created), &observed, true);
        let order: Vec<(String, String)> = result
            .actions
            .iter()
            .map(|action| match action {
                Action::Create(u) => (
                    u.metadata.namespace.clone().unwrap_or_default(),
                    u.metadata.name.clone().unwrap_or_default(),
                ),
                Action::Delete {
                    namespace, name, ..
                } => (namespace.clone(), name.clone()),
                Action::Update { .. } | Action::Grant(_) => unreachable!(),
            })
            .collect();
        let expect = |ns: &str, name: &str| (ns.to_string(), name.to_string());
        assert_eq!(
            order,
            [
                expect(WRITE_NS, "d"),
                expect("aaa", "z"),
                expect(WRITE_NS, "a"),
                expect(WRITE_NS, "b"),
                expect(WRITE_NS, "c"),
            ]
        );
    }

    #[test]
    fn same_name_in_another_namespace_is_a_different_object() {
        let desired = upstream(8080);
        let mut elsewhere = desired.clone();
        elsewhere.metadata.namespace = Some("default".to_string());
        let old = applied(&elsewhere);
        assert_eq!(
            plan(from_ref(&desired), from_ref(&old), true).actions,
            vec![Action::Create(desired), delete_of(&old)]
        );
    }

    #[test]
    fn names_held_by_others_are_blocked_and_never_written() {
        let mine = upstream(80);
        let foreign = upstream(8080);
        let collided = upstream(9090);
        let other = ServiceKey::new("default-petstore", "x");
        let claims = Held(vec![
            ("default-petstore-80", NameHolder::Service(petstore())),
            ("default-petstore-8080", NameHolder::Foreign),
            ("default-petstore-9090", NameHolder::Service(other.clone())),
        ]);
        let result = super::plan(
            &petstore(),
            &[mine.clone(), foreign, collided],
            &[],
            &claims,
            true,
        );
        assert_eq!(
            result.actions,
            vec![Action::Create(mine)],
            "only our own name"
        );
        let key = |name: &str| UpstreamKey::new(WRITE_NS, name);
        assert_eq!(
            result.blocked,
            vec![
                Blocked {
                    name: key("default-petstore-8080"),
                    by: BlockedBy::NotOwned
                },
                Blocked {
                    name: key("default-petstore-9090"),
                    by: BlockedBy::Service(other)
                },
            ]
        );
        assert_eq!(result.blocked[0].skip_reason(), SkipReason::NotOwned);
        assert_eq!(
            result.blocked[0].event_reason(),
            EventReason::UpstreamNotOwned
        );
        assert_eq!(result.blocked[1].skip_reason(), SkipReason::NameCollision);
        assert!(
            result.blocked[1].note().contains("default-petstore/x"),
            "{}",
            result.blocked[1].note()
        );
    }

    // ---- several at once ----

    #[test]
    fn several_upstreams_at_once() {
        let same = named(upstream(80), "same");
        let changed_before = named(upstream(81), "changed");
        let changed_after = with_port(changed_before.clone(), 8181);
        let new = named(upstream(82), "new");
        let gloos = named(upstream(83), "gloos");
        let stale_b = applied(&named(upstream(84), "stale-b"));
        let stale_a = applied(&named(upstream(85), "stale-a"));
        let changed_observed = applied(&changed_before);
        let desired = [
            new.clone(),
            changed_after.clone(),
            same.clone(),
            gloos.clone(),
        ];
        let observed = [
            stale_b.clone(),
            applied(&same),
            written_by_gloo(&gloos),
            changed_observed.clone(),
            stale_a.clone(),
        ];
        assert_eq!(
            plan(&desired, &observed, true),
            Plan {
                actions: vec![
                    Action::Create(new.clone()),
                    update_of(&changed_after, &changed_observed),
                    delete_of(&stale_a),
                    delete_of(&stale_b),
                ],
                unchanged: 2,
                ..Default::default()
            }
        );
        assert_eq!(
            plan(&desired, &observed, false),
            Plan {
                actions: vec![
                    Action::Create(new),
                    update_of(&changed_after, &changed_observed),
                ],
                unchanged: 2,
                deletes_held_back: 2,
                ..Default::default()
            }
        );
    }

    #[test]
    fn a_duplicate_desired_name_is_planned_once() {
        let desired = upstream(8080);
        assert_eq!(
            plan(&[desired.clone(), desired.clone()], &[], true).actions,
            vec![Action::Create(desired)]
        );
    }

    #[test]
    fn nothing_desired_and_nothing_owned_plans_nothing() {
        assert_eq!(plan(&[], &[], true), Plan::default());
    }

    // ---- observed objects from the API server ----

    /// What `kubectl get upstream -o json` shows after our apply, a kubectl edit and Gloo's
    /// own discovery (which used Update, as client-go does) touched it.
    fn served_upstream_json() -> Value {
        json!({
            "apiVersion": "gloo.solo.io/v1",
            "kind": "Upstream",
            "metadata": {
                "name": "default-petstore-8080",
                "namespace": "default",
                "uid": "b1d0c6a4-53a3-4a8a-9c9e-2f7f1c3c9a10",
                "resourceVersion": "88123",
                "generation": 3,
                "creationTimestamp": "2024-05-02T10:11:12Z",
                "labels": {"discovered_by": "kubernetesplugin"},
                "annotations": {"gloo.solo.io/h2_service": "true", "note": "edited"},
                "ownerReferences": [{
                    "apiVersion": "v1", "kind": "Service", "name": "petstore",
                    "uid": "0c4c2f54-2d7e-4c43-bd0e-6d8fa5f7a0b1"
                }],
                "managedFields": [
                    {
                        "apiVersion": "gloo.solo.io/v1",
                        "fieldsType": "FieldsV1",
                        "fieldsV1": {
                            "f:metadata": {
                                "f:annotations": {".": {}, "f:gloo.solo.io/h2_service": {}},
                                "f:labels": {".": {}, "f:discovered_by": {}},
                                "f:ownerReferences": {
                                    ".": {},
                                    "k:{\"uid\":\"0c4c2f54-2d7e-4c43-bd0e-6d8fa5f7a0b1\"}": {
                                        ".": {}, "f:apiVersion": {}, "f:kind": {},
                                        "f:name": {}, "f:uid": {}
                                    }
                                }
                            },
                            "f:spec": {
                                ".": {},
                                "f:discoveryMetadata": {".": {}, "f:labels": {".": {}, "f:app": {}}},
                                "f:kube": {
                                    ".": {},
                                    "f:selector": {".": {}, "f:app": {}},
                                    "f:serviceName": {},
                                    "f:serviceNamespace": {},
                                    "f:servicePort": {}
                                },
                                "f:useHttp2": {}
                            }
                        },
                        "manager": "upstream-discovery",
                        "operation": "Apply",
                        "time": "2024-05-02T10:11:12Z"
                    },
                    {
                        "apiVersion": "gloo.solo.io/v1",
                        "fieldsType": "FieldsV1",
                        "fieldsV1": {
                            "f:metadata": {"f:annotations": {"f:note": {}}},
                            "f:spec": {
                                "f:healthChecks": {},
                                "f:kube": {"f:subsetSpec": {".": {}, "f:selectors": {}}}
                            }
                        },
                        "manager": "kubectl-edit",
                        "operation": "Update",
                        "time": "2024-05-03T08:00:00Z"
                    },
                    {
                        "apiVersion": "gloo.solo.io/v1",
                        "fieldsType": "FieldsV1",
                        "fieldsV1": {"f:spec": {"f:sslConfig": {".": {}, "f:sni": {}}}},
                        "manager": "upstream-discovery",
                        "operation": "Update",
                        "time": "2024-05-01T00:00:00Z"
                    },
                    {
                        "apiVersion": "gloo.solo.io/v1",
                        "fieldsType": "FieldsV1",
                        "fieldsV1": {"f:metadata": {"f:finalizers": {".": {}, "v:\"x\"": {}}}},
                        "manager": "upstream-discovery",
                        "operation": "Apply",
                        "subresource": "status",
                        "time": "2024-05-01T00:00:00Z"
                    }
                ]
            },
            "spec": {
                "discoveryMetadata": {"labels": {"app": "petstore"}},
                "kube": {
                    "serviceName": "petstore",
                    "serviceNamespace": "default",
                    "servicePort": 8080,
                    "selector": {"app": "petstore"},
                    "subsetSpec": {"selectors": [{"keys": ["version"]}]}
                },
                "useHttp2": true,
                "healthChecks": [{"timeout": "1s", "httpHealthCheck": {"path": "/healthz"}}]
            }
        })
    }

    #[test]
    fn from_upstream_reads_every_operation_of_discovery_managers_but_no_subresource() {
        let served: Upstream = serde_json::from_value(served_upstream_json()).expect("parses");
        let observed = ObservedUpstream::from_upstream(&served, &[MANAGER]).expect("complete");
        assert_eq!(observed.namespace, "default");
        assert_eq!(observed.name, "default-petstore-8080");
        assert_eq!(observed.uid, "b1d0c6a4-53a3-4a8a-9c9e-2f7f1c3c9a10");
        assert_eq!(observed.resource_version, "88123");
        let expected: BTreeSet<FieldPath> = [
            p(&["metadata", "annotations", "gloo.solo.io/h2_service"]),
            p(&["metadata", "labels", "discovered_by"]),
            p(&["metadata", "ownerReferences"]),
            p(&["spec", "discoveryMetadata", "labels", "app"]),
            p(&["spec", "kube", "selector", "app"]),
            p(&["spec", "kube", "serviceName"]),
            p(&["spec", "kube", "serviceNamespace"]),
            p(&["spec", "kube", "servicePort"]),
            p(&["spec", "sslConfig", "sni"]),
            p(&["spec", "useHttp2"]),
        ]
        .into_iter()
        .collect();
        assert_eq!(observed.discovery_fields, expected);
        let mut expected_object = served_upstream_json();
        let metadata = expected_object["metadata"].as_object_mut().expect("object");
        metadata
            .retain(|key, _| ["labels", "annotations", "ownerReferences"].contains(&key.as_str()));
        expected_object
            .as_object_mut()
            .expect("object")
            .retain(|key, _| key == "metadata" || key == "spec");
        assert_eq!(observed.object, expected_object);
    }

    #[test]
    fn a_served_object_as_desired_needs_no_write_and_an_edit_of_ours_does() {
        let served: Upstream = serde_json::from_value(served_upstream_json()).expect("parses");
        let observed = ObservedUpstream::from_upstream(&served, &[MANAGER]).expect("complete");
        let mut desired = upstream(8080);
        desired.metadata.namespace = Some("default".to_string());
        desired.metadata.annotations = Some(BTreeMap::from([(
            "gloo.solo.io/h2_service".to_string(),
            "true".to_string(),
        )]));
        desired.metadata.owner_references = Some(vec![owner(
            "petstore",
            "0c4c2f54-2d7e-4c43-bd0e-6d8fa5f7a0b1",
        )]);
        desired = with_http2(with_selector(desired, &[("app", "petstore")]), Some(true));
        assert_eq!(
            plan(from_ref(&desired), from_ref(&observed), true),
            unchanged(1)
        );

        // The h2 annotation was removed from the Service, so useHttp2 is unset again.
        let mut dropped = with_http2(desired, None);
        dropped.metadata.annotations = None;
        assert_eq!(
            update_reason(&dropped, &observed),
            Some(UpdateReason::NoLongerSet(p(&[
                "metadata",
                "annotations",
                "gloo.solo.io/h2_service"
            ])))
        );
    }

    #[test]
    fn from_upstream_without_managed_fields_owns_nothing() {
        let mut served: Upstream = serde_json::from_value(served_upstream_json()).expect("parses");
        served.metadata.managed_fields = None;
        let observed = ObservedUpstream::from_upstream(&served, &[MANAGER]).expect("complete");
        assert!(observed.discovery_fields.is_empty());
        let served: Upstream = serde_json::from_value(served_upstream_json()).expect("parses");
        let observed =
            ObservedUpstream::from_upstream(&served, &["someone-else"]).expect("complete");
        assert!(observed.discovery_fields.is_empty());
    }

    #[test]
    fn from_upstream_needs_identity_and_version() {
        let served: Upstream = serde_json::from_value(served_upstream_json()).expect("parses");
        let edits: [fn(&mut ObjectMeta); 4] = [
            |m| m.name = None,
            |m| m.namespace = None,
            |m| m.uid = None,
            |m| m.resource_version = None,
        ];
        for edit in edits {
            let mut incomplete = served.clone();
            edit(&mut incomplete.metadata);
            assert_eq!(
                ObservedUpstream::from_upstream(&incomplete, &[MANAGER]),
                None
            );
        }
    }

    #[test]
    fn from_upstream_of_a_minimal_object() {
        let mut minimal = Upstream::new("u", UpstreamSpec::default());
        minimal.metadata.namespace = Some("ns".to_string());
        minimal.metadata.uid = Some("uid".to_string());
        minimal.metadata.resource_version = Some("1".to_string());
        let observed = ObservedUpstream::from_upstream(&minimal, &[MANAGER]).expect("complete");
        assert_eq!(observed.object, json!({"metadata": {}, "spec": {}}));
    }

    #[test]
    fn fields_v1_parsing() {
        let cases = [
            ("empty", json!({}), vec![]),
            (
                "one field",
                json!({"f:spec": {"f:useHttp2": {}}}),
                vec![p(&["spec", "useHttp2"])],
            ),
            (
                "a node with only a dot is a leaf",
                json!({"f:spec": {".": {}, "f:kube": {".": {}, "f:selector": {".": {}}}}}),
                vec![p(&["spec", "kube", "selector"])],
            ),
            (
                "keyed items own the list",
                json!({"f:metadata": {"f:ownerReferences": {
                    ".": {},
                    "k:{\"uid\":\"a\"}": {".": {}, "f:uid": {}},
                    "k:{\"uid\":\"b\"}": {".": {}, "f:uid": {}}
                }}}),
                vec![p(&["metadata", "ownerReferences"])],
            ),
            (
                "set and index items own the list",
                json!({"f:spec": {
                    "f:alpn": {"v:\"h2\"": {}, "v:\"http/1.1\"": {}},
                    "f:healthChecks": {"i:0": {"f:timeout": {}}}
                }}),
                vec![p(&["spec", "alpn"]), p(&["spec", "healthChecks"])],
            ),
            (
                "dotted keys stay one key",
                json!({"f:metadata": {"f:annotations": {"f:gloo.solo.io/sslService.secret": {}}}}),
                vec![p(&[
                    "metadata",
                    "annotations",
                    "gloo.solo.io/sslService.secret",
                ])],
            ),
            ("not an object", json!("garbage"), vec![]),
        ];
        for (case, fields, expected) in cases {
            assert_eq!(
                fields_v1_leaf_paths(&fields),
                expected.into_iter().collect::<BTreeSet<_>>(),
                "{case}"
            );
        }
    }

    #[test]
    fn desired_leaf_paths_of_a_translated_upstream() {
        let mut desired = with_owner(with_tls(upstream(8080), Some("tls")), Some("svc-uid"));
        if let Some(kube) = desired.spec.kube.as_mut() {
            kube.selector = Some(BTreeMap::new());
        }
        let expected: BTreeSet<FieldPath> = [
            p(&["metadata", "annotations", "team.example.com/owner"]),
            p(&["metadata", "labels", "discovered_by"]),
            p(&["metadata", "ownerReferences"]),
            p(&["spec", "discoveryMetadata", "labels", "app"]),
            p(&["spec", "kube", "selector"]),
            p(&["spec", "kube", "serviceName"]),
            p(&["spec", "kube", "serviceNamespace"]),
            p(&["spec", "kube", "servicePort"]),
            p(&["spec", "sslConfig", "secretRef", "name"]),
            p(&["spec", "sslConfig", "secretRef", "namespace"]),
        ]
        .into_iter()
        .collect();
        assert_eq!(desired_leaf_paths(&desired), expected);
    }

    #[test]
    fn field_paths_render_with_dots_and_know_what_we_manage() {
        let path = p(&["spec", "kube", "selector", "app"]);
        assert_eq!(path.to_string(), "spec.kube.selector.app");
        assert!(path.is_managed());
        assert!(p(&["metadata", "labels"]).is_managed());
        assert!(p(&["metadata", "ownerReferences"]).is_managed());
        assert!(!p(&["metadata", "finalizers"]).is_managed());
        assert!(!p(&["metadata"]).is_managed());
        assert!(!p(&["status"]).is_managed());
        assert!(!FieldPath::default().is_managed());
    }

    // ---- properties ----

    fn string_map(keys: &'static str) -> impl Strategy<Value = BTreeMap<String, String>> {
        prop::collection::btree_map(keys, "[a-z0-9.-]{0,8}", 0..4)
    }

    fn json_leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<bool>().prop_map(Value::from),
            any::<i32>().prop_map(Value::from),
            "[a-z]{0,6}".prop_map(Value::from),
        ]
    }

    fn json_value() -> impl Strategy<Value = Value> {
        json_leaf().prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
                prop::collection::btree_map("[a-z]{1,5}", inner, 0..3)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    prop_compose! {
        fn arbitrary_upstream(index: usize)(
            annotations in prop::option::of(string_map("[a-z]{1,4}(\\.[a-z]{1,3})?(/[a-z_]{1,6})?")),
            service_labels in prop::option::of(string_map("[a-z]{1,5}")),
            selector in prop::option::of(string_map("[a-z]{1,5}")),
            port in prop::option::of(any::<u32>()),
            use_http2 in prop::option::of(any::<bool>()),
            tls in prop::option::of(("[a-z]{1,6}", prop::option::of(any::<bool>()))),
            owner_uid in prop::option::of("[a-f0-9]{8}"),
            other in prop::collection::btree_map(
                prop_oneof![Just("healthChecks"), Just("circuitBreakers"), Just("connectionConfig")]
                    .prop_map(String::from),
                json_value(),
                0..3,
            ),
        ) -> Upstream {
            Upstream {
                metadata: ObjectMeta {
                    name: Some(format!("upstream-{index}")),
                    namespace: Some(WRITE_NS.to_string()),
                    labels: Some(BTreeMap::from([(
                        DISCOVERED_BY_LABEL.to_string(),
                        KUBERNETES_PLUGIN.to_string(),
                    )])),
                    annotations,
                    owner_references: owner_uid.map(|uid| vec![owner("svc", &uid)]),
                    ..Default::default()
                },
                spec: UpstreamSpec {
                    discovery_metadata: Some(DiscoveryMetadata { labels: service_labels }),
                    kube: Some(KubeUpstream {
                        service_name: Some("svc".to_string()),
                        service_namespace: Some("default".to_string()),
                        service_port: port,
                        selector,
                        ..Default::default()
                    }),
                    ssl_config: tls.map(|(secret, one_way)| UpstreamSslConfig {
                        secret_ref: Some(ResourceRef { name: secret, namespace: "default".to_string() }),
                        one_way_tls: one_way,
                        ..Default::default()
                    }),
                    use_http2,
                    other,
                    ..Default::default()
                },
                status: None,
            }
        }
    }

    /// `base` with the fields whose bit is set in `mask` taken from `other`.
    fn mix(base: &Upstream, other: &Upstream, mask: u8) -> Upstream {
        let mut mixed = base.clone();
        let take = |bit: u8| mask & (1 << bit) != 0;
        if take(0) {
            mixed.metadata.annotations = other.metadata.annotations.clone();
        }
        if take(1) {
            mixed.metadata.owner_references = other.metadata.owner_references.clone();
        }
        if take(2) {
            mixed.spec.discovery_metadata = other.spec.discovery_metadata.clone();
        }
        if take(3) {
            mixed.spec.ssl_config = other.spec.ssl_config.clone();
        }
        if take(4) {
            mixed.spec.use_http2 = other.spec.use_http2;
        }
        if take(5) {
            mixed.spec.other = other.spec.other.clone();
        }
        if let (Some(kube), Some(other_kube)) = (mixed.spec.kube.as_mut(), other.spec.kube.as_ref())
        {
            if take(6) {
                kube.selector = other_kube.selector.clone();
            }
            if take(7) {
                kube.service_port = other_kube.service_port;
            }
        }
        mixed
    }

    fn arbitrary_upstreams() -> impl Strategy<Value = Vec<Upstream>> {
        (0usize..5).prop_flat_map(|count| (0..count).map(arbitrary_upstream).collect::<Vec<_>>())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// What we applied, read back through managedFields, is exactly what we want: no write.
        #[test]
        fn applying_what_is_desired_converges(desired in arbitrary_upstreams(), may_delete in any::<bool>()) {
            let observed: Vec<ObservedUpstream> = desired
                .iter()
                .map(|u| ObservedUpstream::from_upstream(&served_after_apply(u), &[MANAGER]).expect("complete"))
                .collect();
            for (u, o) in desired.iter().zip(&observed) {
                prop_assert_eq!(&o.discovery_fields, &desired_leaf_paths(u));
            }
            prop_assert_eq!(plan(&desired, &observed, may_delete), unchanged(desired.len()));
        }

        /// Fields someone else adds at any depth (not owned by us) never cause a write.
        #[test]
        fn additions_by_others_never_cause_a_write(
            desired in arbitrary_upstreams(),
            extra_key in "[a-z]{1,5}",
            extra in json_value(),
            depth in 0usize..4,
        ) {
            let observed: Vec<ObservedUpstream> = desired
                .iter()
                .map(|u| {
                    let mut o = applied(u);
                    // Walk down through maps desired set, then add a key it did not (except in
                    // the maps that mirror the Service, where any other key is removed).
                    let mut node = &mut o.object["spec"];
                    let mut path = vec!["spec".to_string()];
                    for _ in 0..depth {
                        let next = node
                            .as_object()
                            .and_then(|m| m.iter().find(|(_, v)| v.is_object()).map(|(k, _)| k.clone()));
                        match next {
                            Some(key) => {
                                node = &mut node[key.as_str()];
                                path.push(key);
                            }
                            None => break,
                        }
                    }
                    let mirrored = in_mirrored_map(&FieldPath::new(path.iter().cloned().chain(["x".to_string()])));
                    if let Some(map) = node.as_object_mut().filter(|_| !mirrored) {
                        map.entry(format!("zz{extra_key}")).or_insert(extra.clone());
                    }
                    o
                })
                .collect();
            prop_assert_eq!(plan(&desired, &observed, true), unchanged(desired.len()));
        }

        /// After we applied `before`, desiring `after` writes exactly when the managed content
        /// differs: no missed change, no needless write. `after` takes each field from `before`
        /// or from another random Upstream, so that near misses are common.
        #[test]
        fn a_write_exactly_when_managed_content_changed(
            before in arbitrary_upstream(0),
            other in arbitrary_upstream(0),
            mask in any::<u8>(),
        ) {
            let after = mix(&before, &other, mask);
            let observed = applied(&before);
            let after_object = applied(&after).object;
            let result = plan(from_ref(&after), from_ref(&observed), true);
            let mut before_object = observed.object.clone();
            if after_object["metadata"].get("ownerReferences").is_none() {
                // Dropping an ownerReference is no change: it is never removed (a merge patch
                // would replace other controllers' references too).
                if let Some(metadata) = before_object["metadata"].as_object_mut() {
                    metadata.remove("ownerReferences");
                }
            }
            if json_equal(&after_object, &before_object) {
                prop_assert_eq!(result, unchanged(1));
            } else {
                prop_assert_eq!(result.actions, vec![update_of(&after, &observed)]);
            }
        }

        /// With nothing observed, everything is created, in desired order.
        #[test]
        fn nothing_observed_creates_all_in_order(desired in arbitrary_upstreams()) {
            let expected: Vec<Action> = desired.iter().cloned().map(Action::Create).collect();
            prop_assert_eq!(plan(&desired, &[], true).actions, expected);
        }

        /// With nothing desired, every owned object is deleted (or held back), sorted by name.
        #[test]
        fn nothing_desired_deletes_all(existing in arbitrary_upstreams(), may_delete in any::<bool>()) {
            let observed: Vec<ObservedUpstream> = existing.iter().rev().map(applied).collect();
            let result = plan(&[], &observed, may_delete);
            if may_delete {
                let mut sorted = observed.clone();
                sorted.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
                prop_assert_eq!(result.actions, sorted.iter().map(delete_of).collect::<Vec<_>>());
            } else {
                prop_assert!(result.actions.is_empty());
                prop_assert_eq!(result.deletes_held_back, observed.len());
            }
        }
    }
}
