//! Pure planning of the ReferenceGrants kept beside discovered Upstreams (`--reference-grants`):
//! desired grants against the owned ones at the same names → creates, updates, deletes, and the
//! names an unlabelled grant holds. As for Upstreams, a grant is written only when its spec
//! differs (both lists are atomic, so they are compared whole), created with a plain create,
//! and never touched without our label.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use super::{Action, Blocked, BlockedBy};
use crate::crd::{ReferenceGrant, ReferenceGrantSpec};
use crate::model::{is_owned, UpstreamKey};

/// What the daemon remembers of a grant it owns.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedGrant {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub resource_version: String,
    pub spec: ReferenceGrantSpec,
    /// Its ownerReferences (ours names its Upstream).
    pub owners: Vec<OwnerReference>,
}

impl ObservedGrant {
    /// `None` for a grant without our label (someone else's) or without the fields the API
    /// server always returns.
    pub fn owned(grant: &ReferenceGrant) -> Option<Self> {
        let meta = &grant.metadata;
        if !is_owned(meta.labels.as_ref()) {
            return None;
        }
        Some(Self {
            namespace: meta.namespace.clone()?,
            name: meta.name.clone()?,
            uid: meta.uid.clone()?,
            resource_version: meta.resource_version.clone()?,
            spec: grant.spec.clone(),
            owners: meta.owner_references.clone().unwrap_or_default(),
        })
    }

    /// Whether it already is `desired`: the same spec (both lists are atomic: compared whole),
    /// and every ownerReference desired present (others someone added do not count).
    fn matches(&self, desired: &ReferenceGrant) -> bool {
        self.spec == desired.spec
            && desired
                .metadata
                .owner_references
                .iter()
                .flatten()
                .all(|owner| self.owners.contains(owner))
    }

    pub fn key(&self) -> UpstreamKey {
        UpstreamKey::new(self.namespace.as_str(), self.name.as_str())
    }

    fn delete(&self) -> Action {
        Action::Grant(GrantAction::Delete {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            resource_version: self.resource_version.clone(),
        })
    }
}

/// One write of a grant.
#[derive(Debug, Clone, PartialEq)]
pub enum GrantAction {
    /// A plain create: it fails on any existing object, so it never merges into another's.
    Create(ReferenceGrant),
    /// Server-side apply of the whole spec, guarded by the observed uid and resourceVersion.
    Update {
        desired: ReferenceGrant,
        uid: String,
        resource_version: String,
    },
    Delete {
        namespace: String,
        name: String,
        uid: String,
        resource_version: String,
    },
}

/// The grant writes of one Service (or of one unclaimed name).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GrantPlan {
    pub actions: Vec<Action>,
    pub blocked: Vec<Blocked>,
    pub unchanged: usize,
    pub deletes_held_back: usize,
}

/// Plans `desired` (one grant per Upstream the Service holds) against `observed` (the owned
/// grants at the names it is responsible for); `foreign` says which names an unlabelled grant
/// holds. Observed grants not desired are deleted once `may_delete`.
pub fn plan_grants(
    desired: &[ReferenceGrant],
    observed: &[ObservedGrant],
    foreign: impl Fn(&UpstreamKey) -> bool,
    may_delete: bool,
) -> GrantPlan {
    let mut observed: BTreeMap<UpstreamKey, &ObservedGrant> =
        observed.iter().map(|grant| (grant.key(), grant)).collect();
    let mut result = GrantPlan::default();
    for grant in desired {
        let key = UpstreamKey::new(
            grant.metadata.namespace.as_deref().unwrap_or_default(),
            grant.metadata.name.as_deref().unwrap_or_default(),
        );
        if foreign(&key) {
            result.blocked.push(Blocked {
                name: key,
                by: BlockedBy::GrantNotOwned,
            });
            continue;
        }
        match observed.remove(&key) {
            None => result
                .actions
                .push(Action::Grant(GrantAction::Create(grant.clone()))),
            Some(current) if current.matches(grant) => result.unchanged += 1,
            Some(current) => result.actions.push(Action::Grant(GrantAction::Update {
                desired: grant.clone(),
                uid: current.uid.clone(),
                resource_version: current.resource_version.clone(),
            })),
        }
    }
    for current in observed.into_values() {
        result.collect(current, may_delete);
    }
    result
}

impl GrantPlan {
    /// Deletes an owned grant no longer desired (held back before the first full list).
    pub fn collect(&mut self, current: &ObservedGrant, may_delete: bool) {
        if may_delete {
            self.actions.push(current.delete());
        } else {
            self.deletes_held_back += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ReferenceGrantFrom, ReferenceGrantTo};

    fn spec(namespaces: &[&str], name: &str) -> ReferenceGrantSpec {
        ReferenceGrantSpec {
            from: namespaces
                .iter()
                .map(|namespace| ReferenceGrantFrom {
                    group: "gateway.networking.k8s.io".into(),
                    kind: "HTTPRoute".into(),
                    namespace: namespace.to_string(),
                })
                .collect(),
            to: vec![ReferenceGrantTo {
                group: "gloo.solo.io".into(),
                kind: "Upstream".into(),
                name: Some(name.into()),
            }],
        }
    }

    fn desired(name: &str, namespaces: &[&str]) -> ReferenceGrant {
        let mut grant = ReferenceGrant::new(name, spec(namespaces, name));
        grant.metadata.namespace = Some("gloo-system".into());
        grant.metadata.labels = Some([("discovered_by".into(), "kubernetesplugin".into())].into());
        grant
    }

    fn observed(name: &str, namespaces: &[&str]) -> ObservedGrant {
        ObservedGrant {
            namespace: "gloo-system".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            resource_version: "7".into(),
            spec: spec(namespaces, name),
            owners: Vec::new(),
        }
    }

    fn owner(uid: &str) -> OwnerReference {
        OwnerReference {
            api_version: "gloo.solo.io/v1".into(),
            kind: "Upstream".into(),
            name: "a-web-80".into(),
            uid: uid.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_grant_without_the_owner_desired_is_updated_and_other_owners_do_not_count() {
        let mut wanted = desired("a-web-80", &["a"]);
        wanted.metadata.owner_references = Some(vec![owner("u-1")]);
        let plan = plan_grants(
            std::slice::from_ref(&wanted),
            &[observed("a-web-80", &["a"])],
            |_| false,
            true,
        );
        assert!(
            matches!(&plan.actions[..], [Action::Grant(GrantAction::Update { desired, .. })] if *desired == wanted)
        );
        let mut current = observed("a-web-80", &["a"]);
        current.owners = vec![owner("someone-else"), owner("u-1")];
        let plan = plan_grants(&[wanted], &[current], |_| false, true);
        assert!(plan.actions.is_empty());
        assert_eq!(plan.unchanged, 1);
    }

    #[test]
    fn creates_what_is_missing_updates_what_differs_and_leaves_the_rest() {
        let plan = plan_grants(
            &[
                desired("a-web-80", &["a"]),
                desired("a-web-81", &["a", "edge"]),
                desired("a-web-82", &["a"]),
            ],
            &[observed("a-web-81", &["a"]), observed("a-web-82", &["a"])],
            |_| false,
            true,
        );
        assert_eq!(
            plan.actions,
            [
                Action::Grant(GrantAction::Create(desired("a-web-80", &["a"]))),
                Action::Grant(GrantAction::Update {
                    desired: desired("a-web-81", &["a", "edge"]),
                    uid: "uid-a-web-81".into(),
                    resource_version: "7".into(),
                }),
            ]
        );
        assert_eq!(plan.unchanged, 1);
    }

    #[test]
    fn an_owned_grant_no_longer_desired_is_deleted_once_lists_are_complete() {
        let observed = [observed("a-web-80", &["a"])];
        let plan = plan_grants(&[], &observed, |_| false, true);
        assert_eq!(
            plan.actions,
            [Action::Grant(GrantAction::Delete {
                namespace: "gloo-system".into(),
                name: "a-web-80".into(),
                uid: "uid-a-web-80".into(),
                resource_version: "7".into(),
            })]
        );
        let held = plan_grants(&[], &observed, |_| false, false);
        assert!(held.actions.is_empty());
        assert_eq!(held.deletes_held_back, 1);
    }

    #[test]
    fn a_name_held_by_an_unlabelled_grant_is_blocked_and_never_written() {
        let plan = plan_grants(
            &[desired("a-web-80", &["a"])],
            &[],
            |key| &*key.name == "a-web-80",
            true,
        );
        assert!(plan.actions.is_empty());
        assert_eq!(
            plan.blocked,
            [Blocked {
                name: UpstreamKey::new("gloo-system", "a-web-80"),
                by: BlockedBy::GrantNotOwned
            }]
        );
        assert_eq!(
            plan.blocked[0].skip_reason(),
            crate::model::SkipReason::NotOwned
        );
    }

    #[test]
    fn only_grants_with_our_label_are_observed() {
        let mut grant = desired("a-web-80", &["a"]);
        grant.metadata.uid = Some("u".into());
        grant.metadata.resource_version = Some("1".into());
        assert!(ObservedGrant::owned(&grant).is_some());
        grant.metadata.labels = None;
        assert_eq!(ObservedGrant::owned(&grant), None);
    }
}
