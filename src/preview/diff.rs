//! `upstream-discovery diff`: what `run` would do to the cluster, from the daemon's own cache,
//! translation and planner, job by job as its loop plans them after the first full lists.
//!
//! The JSON document (`-o json`) has these fields, all always present:
//! - `writeNamespace` (string, or null with `--write-namespace-mode service`),
//!   `serviceDiscovery` (false when `udsOptions.enabled`/`--uds-enabled` turns it off),
//!   `notes` (strings: where the configuration came from);
//! - `create`: `{namespace, name, service, upstream}` (`upstream` the object run would create);
//! - `update`: `{namespace, name, service, reason, remove, deliberate, onlyDeliberate, diff}`:
//!   `reason` the planner's first difference, `remove` the stale fields it removes first,
//!   `deliberate` which of the deliberate differences from Gloo (docs/behaviour.md) the update
//!   holds (`ownerReference`, `lastAppliedAnnotation`), `onlyDeliberate` true when that is all
//!   it does, `diff` a unified diff of the YAML of the managed fields (labels, annotations,
//!   ownerReferences, spec), live then after the write;
//! - `delete`: `{namespace, name, service, reason}` (`service` null for an Upstream no Service
//!   in scope maps to);
//! - `unchanged`: `{namespace, name, service}`;
//! - `leftAlone`: `{namespace, name, service, reason, heldBy, message}`: `reason` is
//!   `not_owned` (no `discovered_by: kubernetesplugin` label; `service` null when no Service
//!   wants the name) or `name_collision` (`heldBy` the Service that keeps the name);
//! - `warnings`: `{service, reason, message}`, annotations ignored (the Upstream is written
//!   without them), `reason` as in `skipped_total{reason}`;
//! - `grants`: the ReferenceGrants with `--reference-grants` (`super::grants`), else null;
//! - `summary`: `{create, update, updateOnlyDeliberate, delete, unchanged, leftAlone}` counts
//!   of the Upstreams (`updateOnlyDeliberate`: the updates whose `onlyDeliberate` is true).

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::{Map, Value};

use super::cluster::Snapshot;
use super::grants::GrantReport;
use crate::crd::{yaml_document, Upstream};
use crate::model::{ServiceKey, UpstreamKey, LAST_APPLIED_ANNOTATION};
use crate::plan::{self, Action, BlockedBy, FieldPath, ObservedUpstream, UpdateReason};
use crate::services::grants::plan_service_grants;
use crate::services::state::Job;
use crate::translate::{
    route_namespaces, translate_service, GrantSettings, TranslateSettings, WriteNamespace,
};

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub write_namespace: Option<String>,
    pub service_discovery: bool,
    pub notes: Vec<String>,
    pub create: Vec<Create>,
    pub update: Vec<Update>,
    pub delete: Vec<Delete>,
    pub unchanged: Vec<Entry>,
    pub left_alone: Vec<LeftAlone>,
    pub warnings: Vec<Warning>,
    pub grants: Option<GrantReport>,
    pub summary: Summary,
}

#[derive(Debug, Serialize)]
pub struct Entry {
    pub namespace: String,
    pub name: String,
    pub service: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Create {
    pub namespace: String,
    pub name: String,
    pub service: String,
    pub upstream: Upstream,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Update {
    pub namespace: String,
    pub name: String,
    pub service: String,
    pub reason: String,
    pub remove: Vec<String>,
    pub deliberate: Vec<&'static str>,
    pub only_deliberate: bool,
    pub diff: String,
}

#[derive(Debug, Serialize)]
pub struct Delete {
    pub namespace: String,
    pub name: String,
    pub service: Option<String>,
    pub reason: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LeftAlone {
    pub namespace: String,
    pub name: String,
    pub service: Option<String>,
    pub reason: &'static str,
    pub held_by: Option<String>,
    pub message: String,
}

#[derive(Debug, Serialize)]
pub struct Warning {
    pub service: String,
    pub reason: &'static str,
    pub message: String,
}

#[derive(Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub create: usize,
    pub update: usize,
    /// Of the updates, those that make only deliberate differences from Gloo.
    pub update_only_deliberate: usize,
    pub delete: usize,
    pub unchanged: usize,
    pub left_alone: usize,
}

impl Report {
    /// Whether `run` would write anything.
    pub fn has_changes(&self) -> bool {
        let grants = self.grants.as_ref().map_or(0, GrantReport::changes);
        self.summary.create + self.summary.update + self.summary.delete + grants > 0
    }

    /// An empty report for a configuration where `run` does no Service discovery.
    pub fn without_service_discovery(settings: &TranslateSettings, notes: Vec<String>) -> Self {
        Self {
            write_namespace: fixed(settings),
            notes,
            ..Self::default()
        }
    }
}

fn fixed(settings: &TranslateSettings) -> Option<String> {
    match &settings.write_namespace {
        WriteNamespace::Fixed(namespace) => Some(namespace.clone()),
        WriteNamespace::ServiceNamespace => None,
    }
}

/// Plans every job of a full pass over `snapshot`, exactly as the daemon's loop would once its
/// first lists are complete (deletes allowed), and gathers what each plan would do; `grants`
/// as `--reference-grants` asks (planned once the snapshot holds the grants).
pub fn build(
    snapshot: &Snapshot,
    settings: &TranslateSettings,
    grants: Option<&GrantSettings>,
    notes: Vec<String>,
) -> Report {
    let state = &snapshot.state;
    let grants = grants.filter(|_| state.grants().is_some());
    let mut report = Report {
        write_namespace: fixed(settings),
        service_discovery: true,
        notes,
        grants: grants.map(|_| GrantReport::default()),
        ..Report::default()
    };
    let mut wanted_foreign = BTreeSet::new();
    for job in state.all_jobs() {
        match job {
            Job::Service(key) => {
                let service = state.service_in_scope(&key);
                let mut translation = service
                    .as_ref()
                    .map(|service| translate_service(service, settings))
                    .unwrap_or_default();
                let route_namespaces = match (grants, &service) {
                    (Some(grants), Some(service)) => {
                        let (namespaces, problems) = route_namespaces(service, grants);
                        translation.warnings.extend(problems);
                        namespaces
                    }
                    _ => Vec::new(),
                };
                for warning in &translation.warnings {
                    report.warnings.push(Warning {
                        service: key.to_string(),
                        reason: warning.reason().as_str(),
                        message: warning.to_string(),
                    });
                }
                let observed = snapshot.observed_for(&key);
                let mut plan = plan::plan(&key, &translation.upstreams, &observed, state, true);
                if let Some(grants) = grants {
                    let grant_plan = plan_service_grants(
                        state,
                        &key,
                        &translation.upstreams,
                        &route_namespaces,
                        grants,
                        &plan.blocked,
                        true,
                    );
                    if let (Some(grant_plan), Some(report)) = (grant_plan, &mut report.grants) {
                        report.unchanged += grant_plan.unchanged;
                        for action in &grant_plan.actions {
                            if let Action::Grant(action) = action {
                                report.record(Some(&key), action);
                            }
                        }
                        plan.blocked.extend(grant_plan.blocked);
                    }
                }
                let mut written = BTreeSet::new();
                for action in &plan.actions {
                    if let Some(name) = report.action(Some(&key), action, &observed) {
                        written.insert(name);
                    }
                }
                for blocked in &plan.blocked {
                    // A grant left alone says nothing of its Upstream.
                    if blocked.by != BlockedBy::GrantNotOwned {
                        written.insert(blocked.name.clone());
                    }
                    if blocked.by == BlockedBy::NotOwned {
                        wanted_foreign.insert(blocked.name.clone());
                    }
                    report.left_alone.push(LeftAlone {
                        namespace: blocked.name.namespace.to_string(),
                        name: blocked.name.name.to_string(),
                        service: Some(key.to_string()),
                        reason: blocked.skip_reason().as_str(),
                        held_by: match &blocked.by {
                            BlockedBy::Service(holder) => Some(holder.to_string()),
                            BlockedBy::NotOwned | BlockedBy::GrantNotOwned => None,
                        },
                        message: blocked.note(),
                    });
                }
                for upstream in &translation.upstreams {
                    let Some(name) = UpstreamKey::of(&upstream.metadata) else {
                        continue;
                    };
                    if written.insert(name.clone()) {
                        report.unchanged.push(Entry {
                            namespace: name.namespace.to_string(),
                            name: name.name.to_string(),
                            service: Some(key.to_string()),
                        });
                    }
                }
            }
            Job::Orphan(name) => {
                if let (Some(grant), Some(report)) =
                    (state.unclaimed_grant(&name), &mut report.grants)
                {
                    let mut collect = plan::grants::GrantPlan::default();
                    collect.collect(&grant, true);
                    for action in &collect.actions {
                        if let Action::Grant(action) = action {
                            report.record(None, action);
                        }
                    }
                }
                if let Some(unclaimed) = state.unclaimed(&name) {
                    for action in plan::collect(&unclaimed, true).actions {
                        report.action(None, &action, &[]);
                    }
                }
            }
        }
    }
    for name in snapshot.foreign.difference(&wanted_foreign) {
        report.left_alone.push(LeftAlone {
            namespace: name.namespace.to_string(),
            name: name.name.to_string(),
            service: None,
            reason: crate::model::SkipReason::NotOwned.as_str(),
            held_by: None,
            message: "not written by discovery (no discovered_by=kubernetesplugin label) and no Service maps to it: never touched".to_string(),
        });
    }
    report.sort();
    report
}

impl Report {
    /// Records one planned action; returns the name it writes.
    fn action(
        &mut self,
        service: Option<&ServiceKey>,
        action: &Action,
        observed: &[ObservedUpstream],
    ) -> Option<UpstreamKey> {
        let service_name = service.map(ToString::to_string);
        match action {
            Action::Create(upstream) => {
                let name = UpstreamKey::of(&upstream.metadata)?;
                self.create.push(Create {
                    namespace: name.namespace.to_string(),
                    name: name.name.to_string(),
                    service: service_name.unwrap_or_default(),
                    upstream: upstream.clone(),
                });
                Some(name)
            }
            Action::Update {
                desired,
                reason,
                remove,
                ..
            } => {
                let name = UpstreamKey::of(&desired.metadata)?;
                let live = observed
                    .iter()
                    .find(|o| *o.namespace == *name.namespace && *o.name == *name.name);
                let change = live.map(|live| UpdateView::new(desired, live, remove));
                let (deliberate, only_deliberate, diff) = change
                    .map(|c| (c.deliberate, c.only_deliberate, c.diff))
                    .unwrap_or_default();
                self.update.push(Update {
                    namespace: name.namespace.to_string(),
                    name: name.name.to_string(),
                    service: service_name.unwrap_or_default(),
                    reason: reason_text(reason),
                    remove: remove.iter().map(ToString::to_string).collect(),
                    deliberate,
                    only_deliberate,
                    diff,
                });
                Some(name)
            }
            Action::Delete {
                namespace, name, ..
            } => {
                self.delete.push(Delete {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    reason: match &service_name {
                        Some(_) => "the Service no longer maps to it".to_string(),
                        None => "owned, and no Service in scope maps to it".to_string(),
                    },
                    service: service_name,
                });
                Some(UpstreamKey::new(namespace.clone(), name.clone()))
            }
            // Grants are not previewed (docs/behaviour.md, "Routing from your namespace").
            Action::Grant(_) => None,
        }
    }

    fn sort(&mut self) {
        let key = |namespace: &str, name: &str| (namespace.to_string(), name.to_string());
        self.create.sort_by_key(|c| key(&c.namespace, &c.name));
        self.update.sort_by_key(|u| key(&u.namespace, &u.name));
        self.delete.sort_by_key(|d| key(&d.namespace, &d.name));
        self.unchanged.sort_by_key(|u| key(&u.namespace, &u.name));
        self.left_alone.sort_by_key(|l| key(&l.namespace, &l.name));
        self.summary = Summary {
            create: self.create.len(),
            update: self.update.len(),
            update_only_deliberate: self.update.iter().filter(|u| u.only_deliberate).count(),
            delete: self.delete.len(),
            unchanged: self.unchanged.len(),
            left_alone: self.left_alone.len(),
        };
        if let Some(grants) = &mut self.grants {
            grants.sort();
        }
    }
}

pub fn reason_text(reason: &UpdateReason) -> String {
    match reason {
        UpdateReason::Differs(path) if path.keys().is_empty() => {
            "the desired Upstream cannot be compared".to_string()
        }
        UpdateReason::Differs(path) => format!("{path} differs"),
        UpdateReason::NoLongerSet(path) => format!("{path} is no longer given by the Service"),
        UpdateReason::ValueChanged => "a value discovery owns differs".to_string(),
    }
}

/// What an update changes, for people: the managed fields before and after, and which of the
/// deliberate differences from Gloo (docs/behaviour.md, "Deliberate differences from Gloo") it
/// holds.
pub struct UpdateView {
    pub deliberate: Vec<&'static str>,
    pub only_deliberate: bool,
    pub diff: String,
}

impl UpdateView {
    pub fn new(desired: &Upstream, live: &ObservedUpstream, remove: &[FieldPath]) -> Self {
        let before = &live.object;
        let desired = serde_json::to_value(desired).unwrap_or(Value::Null);
        let after = after_write(before, &desired, remove);
        let mut deliberate = Vec::new();
        let mut without = after.clone();
        let owners = |value: &Value| value.pointer("/metadata/ownerReferences").cloned();
        if owners(before) != owners(&after) {
            deliberate.push("ownerReference");
            set(
                &mut without,
                &["metadata", "ownerReferences"],
                owners(before),
            );
        }
        let last_applied = |value: &Value| {
            value
                .get("metadata")
                .and_then(|m| m.get("annotations"))
                .and_then(|a| a.get(LAST_APPLIED_ANNOTATION))
                .cloned()
        };
        if last_applied(before).is_some() && last_applied(&after).is_none() {
            deliberate.push("lastAppliedAnnotation");
            let path = ["metadata", "annotations", LAST_APPLIED_ANNOTATION];
            set(&mut without, &path, last_applied(before));
        }
        let only_deliberate = !deliberate.is_empty() && without == *before;
        Self {
            deliberate,
            only_deliberate,
            diff: unified_diff(before, &after),
        }
    }
}

/// A unified diff of the YAML of two objects (`live`, then `after run`); empty when equal.
pub fn unified_diff(before: &Value, after: &Value) -> String {
    let before = yaml_document(before).unwrap_or_default();
    let after = yaml_document(after).unwrap_or_default();
    if before == after {
        return String::new();
    }
    similar::TextDiff::from_lines(&before, &after)
        .unified_diff()
        .context_radius(3)
        .header("live", "after run")
        .to_string()
}

/// The managed fields as the write leaves them: the stale fields removed (the planner's merge
/// patch), then the desired values applied over the rest (server-side apply: maps merged key by
/// key, lists and values replaced, owner references merged by uid).
fn after_write(before: &Value, desired: &Value, remove: &[FieldPath]) -> Value {
    let mut after = before.clone();
    for path in remove {
        let keys: Vec<&str> = path.keys().iter().map(String::as_str).collect();
        set(&mut after, &keys, None);
    }
    for root in [
        &["metadata", "labels"][..],
        &["metadata", "annotations"],
        &["spec"],
    ] {
        if let Some(wanted) = get(desired, root) {
            let mut merged = get(&after, root).cloned().unwrap_or(Value::Null);
            merge(&mut merged, wanted);
            set(&mut after, root, Some(merged));
        }
    }
    if let Some(Value::Array(wanted)) = get(desired, &["metadata", "ownerReferences"]) {
        let mut owners = match get(&after, &["metadata", "ownerReferences"]) {
            Some(Value::Array(current)) => current.clone(),
            _ => Vec::new(),
        };
        for reference in wanted {
            let uid = reference.get("uid");
            owners.retain(|current| current.get("uid") != uid);
            owners.push(reference.clone());
        }
        set(
            &mut after,
            &["metadata", "ownerReferences"],
            Some(Value::Array(owners)),
        );
    }
    after
}

fn merge(target: &mut Value, wanted: &Value) {
    match (target, wanted) {
        (_, Value::Null) => {}
        (Value::Object(target), Value::Object(wanted)) => {
            for (key, value) in wanted {
                if value.is_null() {
                    continue;
                }
                let slot = target.entry(key.clone()).or_insert(Value::Null);
                merge(slot, value);
            }
        }
        (target, wanted) => *target = wanted.clone(),
    }
}

fn get<'a>(value: &'a Value, keys: &[&str]) -> Option<&'a Value> {
    keys.iter()
        .try_fold(value, |node, key| node.as_object()?.get(*key))
        .filter(|node| !node.is_null())
}

/// Sets (or with `None` removes) the value at `keys`, creating the maps on the way to a value
/// set (the planner's removal paths already cover whole the maps they empty).
fn set(value: &mut Value, keys: &[&str], new: Option<Value>) {
    let Some((last, parents)) = keys.split_last() else {
        return;
    };
    if new.is_none() && get(value, parents).is_none() {
        return;
    }
    let mut node = value;
    for key in parents {
        if !node.is_object() {
            *node = Value::Object(Map::new());
        }
        let Value::Object(map) = node else { return };
        node = map
            .entry(key.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if let Value::Object(map) = node {
        match new {
            Some(new) => {
                map.insert(last.to_string(), new);
            }
            None => {
                map.remove(*last);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Scope;
    use crate::selector::LabelSelector;
    use crate::services::state::State;
    use k8s_openapi::api::core::v1::Service;
    use kube::runtime::watcher::Event;
    use serde_json::json;

    const WRITE: &str = "gloo-system";

    fn service(namespace: &str, name: &str, extra_meta: Value) -> Service {
        let mut metadata = json!({"name": name, "namespace": namespace, "uid": format!("uid-{name}"), "labels": {"app": name}});
        if let (Value::Object(meta), Value::Object(extra)) = (&mut metadata, extra_meta) {
            meta.extend(extra);
        }
        serde_json::from_value(json!({
            "metadata": metadata,
            "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80}]},
        }))
        .expect("service")
    }

    /// The Upstream docs/behaviour.md gives for port 80 of `service` above, as Gloo's discovery
    /// writes it: by its field manager `discovery`, which then owns every field it set.
    fn gloo_upstream(namespace: &str, name: &str, extra_meta: Value) -> Upstream {
        let mut metadata = json!({
            "name": format!("{namespace}-{name}-80"), "namespace": WRITE,
            "uid": format!("up-{name}"), "resourceVersion": "7",
            "labels": {"discovered_by": "kubernetesplugin"},
            "managedFields": [{
                "manager": "discovery", "operation": "Update", "apiVersion": "gloo.solo.io/v1",
                "fieldsType": "FieldsV1",
                "fieldsV1": {
                    "f:metadata": {"f:labels": {"f:discovered_by": {}}},
                    "f:spec": {"f:discoveryMetadata": {"f:labels": {"f:app": {}}}, "f:kube": {
                        "f:selector": {"f:app": {}}, "f:serviceName": {}, "f:serviceNamespace": {}, "f:servicePort": {}}},
                },
            }],
        });
        if let (Value::Object(meta), Value::Object(extra)) = (&mut metadata, extra_meta) {
            for (key, value) in extra {
                match (meta.get_mut(&key), value) {
                    (Some(Value::Array(fields)), Value::Array(more)) => fields.extend(more),
                    (_, value) => {
                        meta.insert(key, value);
                    }
                }
            }
        }
        serde_json::from_value(json!({
            "apiVersion": "gloo.solo.io/v1", "kind": "Upstream",
            "metadata": metadata,
            "spec": {
                "discoveryMetadata": {"labels": {"app": name}},
                "kube": {"serviceName": name, "serviceNamespace": namespace, "servicePort": 80, "selector": {"app": name}},
            },
            "status": {"statuses": {WRITE: {"state": 1, "reportedBy": "gloo"}}},
        }))
        .expect("upstream")
    }

    fn report(services: Vec<Service>, upstreams: Vec<Upstream>) -> Report {
        let all = [Scope::All];
        let write = [Scope::Namespace(WRITE.to_string())];
        let settings = TranslateSettings::new(WRITE);
        let mut state = State::new(
            &all,
            &write,
            LabelSelector::default(),
            settings.write_namespace.clone(),
        );
        state.on_service_event(&all[0], Event::Init);
        for service in services {
            state.on_service_event(&all[0], Event::InitApply(service));
        }
        state.on_service_event(&all[0], Event::InitDone);
        let mut snapshot = Snapshot {
            state,
            foreign: BTreeSet::new(),
            observed: Default::default(),
            services_listed: 0,
            upstreams_listed: 0,
        };
        snapshot.state.on_upstream_event(&write[0], Event::Init);
        for upstream in upstreams {
            if !crate::model::is_owned(upstream.metadata.labels.as_ref()) {
                snapshot.foreign.extend(UpstreamKey::of(&upstream.metadata));
            }
            snapshot.observe(&upstream);
            snapshot
                .state
                .on_upstream_event(&write[0], Event::InitApply(upstream));
        }
        snapshot.state.on_upstream_event(&write[0], Event::InitDone);
        build(&snapshot, &settings, None, Vec::new())
    }

    fn summary(
        create: usize,
        update: usize,
        delete: usize,
        unchanged: usize,
        left_alone: usize,
    ) -> Summary {
        Summary {
            create,
            update,
            update_only_deliberate: 0,
            delete,
            unchanged,
            left_alone,
        }
    }

    #[test]
    fn a_gloo_written_upstream_as_discovery_would_write_it_is_unchanged() {
        let got = report(
            vec![service("shop", "web", json!({}))],
            vec![gloo_upstream("shop", "web", json!({}))],
        );
        assert_eq!(got.summary, summary(0, 0, 0, 1, 0));
        assert!(!got.has_changes());
        assert_eq!(got.unchanged[0].name, "shop-web-80");
        assert_eq!(got.unchanged[0].service.as_deref(), Some("shop/web"));
    }

    #[test]
    fn a_changed_service_gives_one_update_with_its_diff() {
        let got = report(
            vec![service(
                "shop",
                "web",
                json!({"annotations": {"team": "payments"}}),
            )],
            vec![gloo_upstream("shop", "web", json!({}))],
        );
        assert_eq!(got.summary, summary(0, 1, 0, 0, 0));
        let update = &got.update[0];
        assert_eq!(update.reason, "metadata.annotations differs");
        assert!(update.deliberate.is_empty());
        assert!(!update.only_deliberate);
        assert!(
            update.diff.starts_with("--- live\n+++ after run\n"),
            "{}",
            update.diff
        );
        assert!(
            update
                .diff
                .contains("\n+  annotations:\n+    team: payments\n"),
            "{}",
            update.diff
        );
        assert_eq!(
            update
                .diff
                .lines()
                .filter(|l| l.starts_with('+') || l.starts_with('-'))
                .count(),
            4,
            "the headers and the two added lines only: {}",
            update.diff
        );
    }

    #[test]
    fn creates_deletes_and_names_left_alone() {
        let mut foreign = gloo_upstream("shop", "taken", json!({}));
        foreign.metadata.labels = None;
        let got = report(
            vec![
                service("shop", "new", json!({})),
                service("shop", "taken", json!({})),
            ],
            vec![gloo_upstream("shop", "gone", json!({})), foreign],
        );
        assert_eq!(got.summary, summary(1, 0, 1, 0, 1));
        assert_eq!(got.create[0].name, "shop-new-80");
        assert_eq!(got.delete[0].name, "shop-gone-80");
        assert_eq!(got.delete[0].service, None);
        let left = &got.left_alone[0];
        assert_eq!(
            (left.name.as_str(), left.reason, left.service.as_deref()),
            ("shop-taken-80", "not_owned", Some("shop/taken"))
        );
    }

    #[test]
    fn two_services_mapping_to_one_name_leave_it_to_the_first() {
        // `a-b/c` and `a/b-c` both give `a-b-c-80` (docs/behaviour.md); with no holder yet, the
        // Service whose namespace sorts first gets it.
        let got = report(
            vec![
                service("a-b", "c", json!({})),
                service("a", "b-c", json!({})),
            ],
            vec![],
        );
        assert_eq!(got.summary, summary(1, 0, 0, 0, 1));
        assert_eq!(got.create[0].service, "a/b-c");
        let left = &got.left_alone[0];
        assert_eq!(
            (
                left.name.as_str(),
                left.reason,
                left.service.as_deref(),
                left.held_by.as_deref()
            ),
            ("a-b-c-80", "name_collision", Some("a-b/c"), Some("a/b-c"))
        );
    }

    #[test]
    fn the_deliberate_differences_from_gloo_are_named() {
        // A Service in the write namespace: its Upstream gets an ownerReference Gloo never wrote.
        let owned_here = report(
            vec![service(WRITE, "local", json!({}))],
            vec![gloo_upstream(WRITE, "local", json!({}))],
        );
        assert_eq!(
            owned_here.summary,
            Summary {
                update_only_deliberate: 1,
                ..summary(0, 1, 0, 0, 0)
            }
        );
        assert_eq!(owned_here.update[0].deliberate, ["ownerReference"]);
        assert!(owned_here.update[0].only_deliberate);

        // Gloo copied kubectl's last-applied annotation; discovery here does not, and removes it.
        let last_applied = json!({
            "annotations": {LAST_APPLIED_ANNOTATION: "{}"},
            "managedFields": [{
                "manager": "discovery", "operation": "Update", "apiVersion": "gloo.solo.io/v1",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:annotations": {format!("f:{LAST_APPLIED_ANNOTATION}"): {}}}},
            }],
        });
        let got = report(
            vec![service(
                "shop",
                "web",
                json!({"annotations": {LAST_APPLIED_ANNOTATION: "{}"}}),
            )],
            vec![gloo_upstream("shop", "web", last_applied)],
        );
        assert_eq!(got.summary.update_only_deliberate, 1);
        let update = &got.update[0];
        // The annotation was the only one: the whole map goes, as the planner's patch removes it.
        assert_eq!(
            update.reason,
            "metadata.annotations is no longer given by the Service"
        );
        assert_eq!(update.deliberate, ["lastAppliedAnnotation"]);
        assert!(update.only_deliberate);
        assert_eq!(update.remove, ["metadata.annotations"]);
    }
}
