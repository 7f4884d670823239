//! Planning from what the daemon keeps of its Upstreams: identity and a [`Fingerprint`] of the
//! fields discovery owns, not the objects. A desired Upstream whose fingerprint matches is
//! unchanged, with nothing read; a name nobody holds is created; an owned name no longer
//! desired is deleted (guarded by uid and resourceVersion). Only an Upstream whose fingerprint
//! differs is read fresh from the API server, and [`plan_fresh`] plans its exact write from
//! what it holds now, with the same rules as [`super::plan`].

use std::collections::BTreeMap;

use super::fingerprint::{self, Fingerprint};
use super::{
    changes, Action, Blocked, BlockedBy, Identity, NameClaims, NameHolder, ObservedUpstream, Plan,
    UpdateReason,
};
use crate::crd::Upstream;
use crate::model::{is_owned, ServiceKey, UpstreamKey};

/// An owned Upstream as the daemon's cache knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedUpstream {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub resource_version: String,
    pub fingerprint: Fingerprint,
}

impl OwnedUpstream {
    pub fn of(observed: &ObservedUpstream) -> Self {
        Self {
            namespace: observed.namespace.clone(),
            name: observed.name.clone(),
            uid: observed.uid.clone(),
            resource_version: observed.resource_version.clone(),
            fingerprint: fingerprint::observed(observed),
        }
    }

    pub(super) fn identity(&self) -> Identity<'_> {
        (
            &self.namespace,
            &self.name,
            &self.uid,
            &self.resource_version,
        )
    }
}

/// Why `service` may not write `name`, if it may not.
pub(super) fn blocked_by(
    service: &ServiceKey,
    name: &UpstreamKey,
    claims: &impl NameClaims,
) -> Option<BlockedBy> {
    match claims.holder(name) {
        NameHolder::Free => None,
        NameHolder::Foreign => Some(BlockedBy::NotOwned),
        NameHolder::Service(holder) if &holder == service => None,
        NameHolder::Service(holder) => Some(BlockedBy::Service(holder)),
    }
}

/// Plans the collection of an owned Upstream that no in-scope Service maps to: by name, whatever
/// its spec says (an override may have replaced its `kube`).
pub fn collect(unclaimed: &OwnedUpstream, may_delete: bool) -> Plan {
    let mut result = Plan::default();
    result.delete(unclaimed.identity(), may_delete);
    result
}

/// A plan from the cache, and the desired Upstreams to read fresh before their write is known.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CachedPlan {
    pub plan: Plan,
    pub to_read: Vec<Upstream>,
}

impl CachedPlan {
    pub fn is_empty(&self) -> bool {
        self.plan.actions.is_empty() && self.to_read.is_empty()
    }
}

/// Plans Service `service` as [`super::plan`] does, from `owned`, the cache's Upstreams at the
/// names it holds.
pub fn plan_cached(
    service: &ServiceKey,
    desired: &[Upstream],
    owned: &[OwnedUpstream],
    claims: &impl NameClaims,
    may_delete: bool,
) -> CachedPlan {
    let mut owned_by_key: BTreeMap<(&str, &str), &OwnedUpstream> = BTreeMap::new();
    for upstream in owned {
        owned_by_key
            .entry((upstream.namespace.as_str(), upstream.name.as_str()))
            .or_insert(upstream);
    }
    let mut result = CachedPlan::default();
    let mut seen = std::collections::BTreeSet::new();
    for upstream in desired {
        let key = (
            upstream.metadata.namespace.as_deref().unwrap_or_default(),
            upstream.metadata.name.as_deref().unwrap_or_default(),
        );
        if !seen.insert(key) {
            continue;
        }
        let name = UpstreamKey::new(key.0, key.1);
        if let Some(by) = blocked_by(service, &name, claims) {
            result.plan.blocked.push(Blocked { name, by });
            continue;
        }
        let Some(current) = owned_by_key.get(&key) else {
            result.plan.actions.push(Action::Create(upstream.clone()));
            continue;
        };
        match fingerprint::desired(upstream) {
            Some(want) if want == current.fingerprint => result.plan.unchanged += 1,
            // The same fields, other values: applying desired is the whole write (nothing to
            // remove), guarded by the uid and resourceVersion the cache saw.
            Some(want) if want.paths == current.fingerprint.paths => {
                result.plan.actions.push(Action::Update {
                    desired: upstream.clone(),
                    uid: current.uid.clone(),
                    resource_version: current.resource_version.clone(),
                    reason: UpdateReason::ValueChanged,
                    remove: Vec::new(),
                });
            }
            _ => result.to_read.push(upstream.clone()),
        }
    }
    for (key, current) in owned_by_key {
        if !seen.contains(&key) {
            result.plan.delete(current.identity(), may_delete);
        }
    }
    result
}

/// What to do with a desired Upstream once it has been read fresh.
#[derive(Debug, Clone, PartialEq)]
pub enum Fresh {
    Write(Box<Action>),
    /// It already holds what is desired (its fingerprint differed for another reason).
    Same,
    /// The name is now held by an object without our label: never touched.
    NotOwned,
}

/// The write that turns `current` (read just now; `None`: there is none) into `desired`.
/// `managers` are discovery's field managers.
pub fn plan_fresh(desired: &Upstream, current: Option<&Upstream>, managers: &[&str]) -> Fresh {
    let Some(current) = current else {
        return Fresh::Write(Box::new(Action::Create(desired.clone())));
    };
    if !is_owned(current.metadata.labels.as_ref()) {
        return Fresh::NotOwned;
    }
    let Some(observed) = ObservedUpstream::from_upstream(current, managers) else {
        return Fresh::Write(Box::new(Action::Create(desired.clone())));
    };
    match changes(desired, &observed) {
        Some((reason, remove)) => Fresh::Write(Box::new(Action::Update {
            desired: desired.clone(),
            uid: observed.uid,
            resource_version: observed.resource_version,
            reason,
            remove,
        })),
        None => Fresh::Same,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::NoClaims;
    use serde_json::json;

    const MANAGER: &str = "upstream-discovery";

    fn desired(port: u64) -> Upstream {
        serde_json::from_value(json!({
            "metadata": {"name": "shop-web-80", "namespace": "gloo-system",
                         "labels": {"discovered_by": "kubernetesplugin"}},
            "spec": {"kube": {"serviceName": "web", "serviceNamespace": "shop", "servicePort": port}},
        }))
        .expect("upstream")
    }

    /// The object as the API server returns it after our apply of `port`.
    fn served(port: u64, labels: serde_json::Value) -> Upstream {
        serde_json::from_value(json!({
            "metadata": {"name": "shop-web-80", "namespace": "gloo-system", "uid": "u-1",
                         "resourceVersion": "9", "labels": labels,
                         "managedFields": [{"manager": MANAGER, "operation": "Apply", "fieldsType": "FieldsV1",
                           "fieldsV1": {"f:metadata": {"f:labels": {"f:discovered_by": {}}},
                                        "f:spec": {"f:kube": {"f:serviceName": {}, "f:serviceNamespace": {},
                                                              "f:servicePort": {}}}}}]},
            "spec": {"kube": {"serviceName": "web", "serviceNamespace": "shop", "servicePort": port}},
        }))
        .expect("upstream")
    }

    fn owned(port: u64) -> OwnedUpstream {
        let observed = ObservedUpstream::from_upstream(
            &served(port, json!({"discovered_by": "kubernetesplugin"})),
            &[MANAGER],
        )
        .expect("complete");
        OwnedUpstream::of(&observed)
    }

    fn shop_web() -> ServiceKey {
        ServiceKey::new("shop", "web")
    }

    #[test]
    fn an_upstream_as_applied_is_unchanged_with_nothing_to_read() {
        let plan = plan_cached(&shop_web(), &[desired(80)], &[owned(80)], &NoClaims, true);
        assert!(plan.is_empty(), "{plan:?}");
        assert_eq!(plan.plan.unchanged, 1);
    }

    #[test]
    fn a_changed_value_is_applied_a_changed_set_of_fields_read_first() {
        let changed = plan_cached(&shop_web(), &[desired(8080)], &[owned(80)], &NoClaims, true);
        assert!(changed.to_read.is_empty());
        assert_eq!(
            changed.plan.actions,
            [Action::Update {
                desired: desired(8080),
                uid: "u-1".into(),
                resource_version: "9".into(),
                reason: UpdateReason::ValueChanged,
                remove: Vec::new(),
            }]
        );
        let mut with_http2 = desired(80);
        with_http2.spec.use_http2 = Some(true);
        let more = plan_cached(
            &shop_web(),
            &[with_http2.clone()],
            &[owned(80)],
            &NoClaims,
            true,
        );
        assert_eq!(
            more.to_read,
            [with_http2],
            "a field more: read, then planned whole"
        );
    }

    #[test]
    fn a_missing_upstream_is_created_an_undesired_one_deleted() {
        let missing = plan_cached(&shop_web(), &[desired(80)], &[], &NoClaims, true);
        assert_eq!(missing.plan.actions, [Action::Create(desired(80))]);
        let gone = plan_cached(&shop_web(), &[], &[owned(80)], &NoClaims, true);
        assert!(matches!(
            gone.plan.actions.as_slice(),
            [Action::Delete { uid, resource_version, .. }] if uid == "u-1" && resource_version == "9"
        ));
        let held_back = plan_cached(&shop_web(), &[], &[owned(80)], &NoClaims, false);
        assert_eq!(held_back.plan.deletes_held_back, 1);
    }

    #[test]
    fn a_name_held_elsewhere_is_blocked_before_anything_is_read() {
        struct Foreign;
        impl NameClaims for Foreign {
            fn holder(&self, _: &UpstreamKey) -> NameHolder {
                NameHolder::Foreign
            }
        }
        let plan = plan_cached(&shop_web(), &[desired(8080)], &[owned(80)], &Foreign, true);
        assert!(plan.to_read.is_empty());
        assert_eq!(plan.plan.blocked.len(), 1);
    }

    #[test]
    fn a_fresh_read_plans_the_exact_write() {
        let current = served(80, json!({"discovered_by": "kubernetesplugin"}));
        let Fresh::Write(action) = plan_fresh(&desired(8080), Some(&current), &[MANAGER]) else {
            panic!("a write");
        };
        match *action {
            Action::Update {
                uid,
                resource_version,
                reason: UpdateReason::Differs(path),
                ..
            } => {
                assert_eq!((uid.as_str(), resource_version.as_str()), ("u-1", "9"));
                assert_eq!(path.to_string(), "spec.kube.servicePort");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            plan_fresh(&desired(80), Some(&current), &[MANAGER]),
            Fresh::Same
        );
        assert_eq!(
            plan_fresh(&desired(80), None, &[MANAGER]),
            Fresh::Write(Box::new(Action::Create(desired(80))))
        );
        let foreign = served(80, json!({"team": "x"}));
        assert_eq!(
            plan_fresh(&desired(80), Some(&foreign), &[MANAGER]),
            Fresh::NotOwned
        );
    }
}
