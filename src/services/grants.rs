//! The loop's side of `--reference-grants`: planning each Service's grants beside its Upstreams
//! (`translate::grants` decides their content, `plan::grants` the writes) and reporting what
//! became of them. Grant writes count in their own metrics, never as Upstream writes.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;

use super::Engine;
use crate::apply::GrantOutcome;
use crate::crd::{ReferenceGrant, Upstream};
use crate::metrics::{WriteOp, WriteResult};
use crate::model::{ErrorKind, ServiceKey, UpstreamKey};
use crate::plan::grants::GrantPlan;
use crate::plan::{self, plan_grants, Blocked, BlockedBy, Plan};
use crate::source::GRANT_CRD_RECHECK;
use crate::translate::{desired_grant, route_namespaces, GrantSettings, TranslateWarning};

use super::state::{Job, State};

impl Engine {
    /// The namespaces whose routes may use `service`'s Upstreams, with grants on; the
    /// annotation's problems join the Service's other warnings.
    pub(super) fn route_namespaces(
        &self,
        service: Option<&Service>,
        warnings: &mut Vec<TranslateWarning>,
    ) -> Vec<String> {
        let (Some(settings), Some(service)) = (&self.config.grants, service) else {
            return Vec::new();
        };
        let (namespaces, problems) = route_namespaces(service, settings);
        warnings.extend(problems);
        namespaces
    }

    /// Adds the grant writes of Service `key` to its plan: one grant per Upstream it holds
    /// (the names blocked for its Upstreams get none), once the grants are listed. A grant
    /// names its Upstream as owner, so it is written once the Upstream exists (has a uid): an
    /// Upstream created by this plan gets its grant when the Service is planned again right
    /// after ([`Engine::grants_follow`]); a grant already there meanwhile is left as it is.
    pub(super) fn plan_grants_for(
        &self,
        key: &ServiceKey,
        upstreams: &[Upstream],
        namespaces: &[String],
        plan: &mut Plan,
    ) {
        let Some(settings) = &self.config.grants else {
            return;
        };
        let Some(grant_plan) = plan_service_grants(
            &self.state,
            key,
            upstreams,
            namespaces,
            settings,
            &plan.blocked,
            false,
        ) else {
            return;
        };
        plan.actions.extend(grant_plan.actions);
        plan.blocked.extend(grant_plan.blocked);
        plan.unchanged += grant_plan.unchanged;
        plan.deletes_held_back += grant_plan.deletes_held_back;
    }

    /// Whether a Service whose writes just went through must be planned again for its grants:
    /// it created an Upstream, whose grant waited for the Upstream's uid.
    pub(super) fn grants_follow(&self, op: WriteOp) -> bool {
        op == WriteOp::Create && self.config.grants.is_some() && self.state.grants().is_some()
    }

    /// The collection of an owned grant whose name no in-scope Service maps to.
    pub(super) fn collect_grant(&self, name: &UpstreamKey) -> Vec<plan::Action> {
        let Some(unclaimed) = self.state.unclaimed_grant(name) else {
            return Vec::new();
        };
        let mut grant_plan = plan::grants::GrantPlan::default();
        grant_plan.collect(&unclaimed, self.state.synced());
        grant_plan.actions
    }

    pub(super) fn on_grants_unavailable(&self) {
        tracing::warn!(
            recheck_s = GRANT_CRD_RECHECK.as_secs(),
            "--reference-grants: the API server serves no ReferenceGrant (gateway.networking.k8s.io/v1beta1; is Gateway API's CRD installed?): no grant is kept and Upstream discovery goes on; looking again periodically"
        );
        self.metrics.error(ErrorKind::ReferenceGrantCrdMissing);
    }

    /// Records what became of one grant write; `retry_after` as for Upstream writes.
    pub(super) fn on_grant_outcome(
        &mut self,
        job: &Job,
        outcome: GrantOutcome,
        retry_after: &mut Option<Option<Duration>>,
    ) {
        match outcome {
            GrantOutcome::Written { op, grant } => {
                self.forbidden.clear();
                self.state.on_grant_written(&grant);
                self.metrics.record_grant_write(op, WriteResult::Success);
                tracing::info!(%job, grant = ?grant.metadata.name, op = op.as_str(), "reference grant written");
            }
            GrantOutcome::Deleted(name) => {
                self.state.on_grant_deleted(&name);
                self.metrics
                    .record_grant_write(WriteOp::Delete, WriteResult::Success);
                tracing::info!(%job, grant = %name, op = "delete", "reference grant deleted");
            }
            GrantOutcome::NotOwned(name) => {
                self.metrics
                    .record_grant_write(WriteOp::Create, WriteResult::Skipped);
                self.state.mark_foreign_grant(name.clone());
                self.report_not_owned(job, name, BlockedBy::GrantNotOwned);
            }
            GrantOutcome::Conflict(name) => {
                tracing::debug!(%job, grant = %name, "reference grant changed since planned; re-planning");
                self.metrics
                    .record_grant_write(WriteOp::Update, WriteResult::Conflict);
                retry_after.get_or_insert(None);
            }
            GrantOutcome::Failed {
                op,
                kind,
                retry_after: hint,
                message,
            } => {
                self.metrics.record_grant_write(op, WriteResult::Error);
                self.metrics.error(kind);
                if kind != ErrorKind::Forbidden || self.forbidden.first() {
                    tracing::warn!(%job, op = op.as_str(), kind = kind.as_str(), error = %message, "reference grant write failed; will retry");
                } else {
                    tracing::debug!(%job, op = op.as_str(), error = %message, "reference grant write forbidden again; will retry");
                }
                let slot = retry_after.get_or_insert(None);
                *slot = (*slot).max(hint);
            }
        }
        self.metrics
            .set_reference_grants(self.state.owned_grant_count());
    }

    /// A create found `name` taken by an object without our label: the Service that wanted it
    /// gets one Warning Event and one count, as for a name held before it planned.
    pub(super) fn report_not_owned(&mut self, job: &Job, name: UpstreamKey, by: BlockedBy) {
        let Job::Service(key) = job else {
            return;
        };
        let uid = self
            .state
            .service_in_scope(key)
            .and_then(|service: Service| service.metadata.uid);
        let mut blocked = self.reported_blocked.get(key).cloned().unwrap_or_default();
        blocked.insert(name.clone(), Blocked { name, by });
        self.report_blocked(key, uid, blocked);
    }
}

/// The grant writes of Service `key` (its Upstreams `upstreams`, `blocked` the names its plan
/// leaves alone), once the grants are listed: what the loop writes, and what `diff` shows. An
/// Upstream not created yet has no uid to own its grant by: the loop plans that grant once the
/// Upstream exists (`preview` false: nothing is planned at that name meanwhile); `diff`
/// (`preview` true) shows it as a create, without its ownerReference.
pub fn plan_service_grants(
    state: &State,
    key: &ServiceKey,
    upstreams: &[Upstream],
    namespaces: &[String],
    settings: &GrantSettings,
    blocked: &[Blocked],
    preview: bool,
) -> Option<GrantPlan> {
    let grants = state.grants()?;
    let blocked: HashSet<&UpstreamKey> = blocked.iter().map(|b| &b.name).collect();
    let uids: HashMap<UpstreamKey, String> = state
        .owned_for(key)
        .into_iter()
        .map(|observed| {
            let name = UpstreamKey::new(observed.namespace.as_str(), observed.name.as_str());
            (name, observed.uid)
        })
        .collect();
    let mut waiting: HashSet<UpstreamKey> = HashSet::new();
    let mut desired: Vec<ReferenceGrant> = Vec::new();
    for upstream in upstreams {
        let Some(name) = UpstreamKey::of(&upstream.metadata) else {
            continue;
        };
        if blocked.contains(&name) {
            continue;
        }
        match uids.get(&name) {
            Some(uid) => desired.push(desired_grant(upstream, Some(uid), namespaces, settings)),
            None if preview => desired.push(desired_grant(upstream, None, namespaces, settings)),
            None => {
                waiting.insert(name);
            }
        }
    }
    let observed: Vec<_> = state
        .grants_for(key)
        .into_iter()
        .filter(|grant| !waiting.contains(&grant.key()))
        .collect();
    Some(plan_grants(
        &desired,
        &observed,
        |name| grants.is_foreign(name),
        state.synced(),
    ))
}

#[cfg(test)]
mod tests {
    use kube::runtime::watcher::Event;
    use serde_json::json;
    use tokio::sync::watch;

    use super::*;
    use crate::events::EventSink;
    use crate::health::LoopHealth;
    use crate::metrics::Metrics;
    use crate::model::Scope;
    use crate::plan::{Action, GrantAction};
    use crate::reconcile::{Fence, LeaderGate};
    use crate::selector::LabelSelector;
    use crate::services::state::State;
    use crate::services::EngineConfig;
    use crate::source::ServiceInput;
    use crate::translate::{GrantSettings, RouteKind, TranslateSettings, WriteNamespace};

    const WRITE: &str = "gloo-system";

    /// A leading engine with grants on, whose lists of Services and Upstreams (`upstreams`)
    /// are complete; `grants` are the grants its first grant list finds (`None`: not listed).
    fn engine(
        services: &[Service],
        upstreams: &[Upstream],
        grants: Option<Vec<ReferenceGrant>>,
    ) -> Engine {
        let (_, applier) = crate::apply::offline();
        let (_, leader) = watch::channel(true);
        let mut state = State::new(
            &[Scope::All],
            &[Scope::All],
            LabelSelector::default(),
            WriteNamespace::Fixed(WRITE.into()),
        );
        state.enable_grants(&[WRITE.to_string()]);
        let mut engine = Engine::new(
            EngineConfig {
                translate: TranslateSettings::new(WRITE),
                grants: Some(GrantSettings::new(&[RouteKind::HttpRoute])),
                resync_interval: Duration::from_secs(600),
                write_concurrency: 1,
            },
            state,
            applier,
            Metrics::new().expect("metrics"),
            EventSink::log_only(),
            LoopHealth::default(),
            LeaderGate::new(leader, Fence::always()),
        );
        let mut inputs = vec![
            ServiceInput::Service(Scope::All, Event::Init),
            ServiceInput::Upstream(Scope::All, Event::Init),
        ];
        inputs.extend(
            upstreams
                .iter()
                .map(|u| ServiceInput::Upstream(Scope::All, Event::InitApply(u.clone()))),
        );
        inputs.push(ServiceInput::Upstream(Scope::All, Event::InitDone));
        inputs.extend(
            services
                .iter()
                .map(|s| ServiceInput::Service(Scope::All, Event::InitApply(s.clone()))),
        );
        inputs.push(ServiceInput::Service(Scope::All, Event::InitDone));
        if let Some(grants) = grants {
            let scope = || Scope::Namespace(WRITE.into());
            inputs.push(ServiceInput::Grant(scope(), Event::Init));
            inputs.extend(
                grants
                    .into_iter()
                    .map(|g| ServiceInput::Grant(scope(), Event::InitApply(g))),
            );
            inputs.push(ServiceInput::Grant(scope(), Event::InitDone));
        }
        for input in inputs {
            engine.on_input(input);
        }
        engine
    }

    fn service(namespace: &str, name: &str, ports: &[i32]) -> Service {
        let ports: Vec<_> = ports.iter().map(|port| json!({"port": port})).collect();
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{name}")},
            "spec": {"ports": ports},
        }))
        .expect("service")
    }

    /// The Upstream discovered for port `port` of `namespace/name`, as the API server returns it.
    fn upstream(namespace: &str, name: &str, port: u16) -> Upstream {
        let upstream_name = format!("{namespace}-{name}-{port}");
        serde_json::from_value(json!({
            "metadata": {"name": upstream_name, "namespace": WRITE, "uid": format!("us-{upstream_name}"),
                         "resourceVersion": "2", "labels": {"discovered_by": "kubernetesplugin"}},
            "spec": {"kube": {"serviceName": name, "serviceNamespace": namespace, "servicePort": port}},
        }))
        .expect("upstream")
    }

    /// A grant as the API server returns it; `from` the namespaces, `to` the Upstream `name`;
    /// an owned one names the Upstream [`upstream`] gives as its owner.
    fn grant(name: &str, from: &[&str], owned: bool) -> ReferenceGrant {
        let from: Vec<_> = from
            .iter()
            .map(|ns| json!({"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": ns}))
            .collect();
        let labels = if owned {
            json!({"discovered_by": "kubernetesplugin"})
        } else {
            json!({"team": "x"})
        };
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": WRITE, "uid": format!("g-{name}"), "resourceVersion": "3", "labels": labels,
                         "ownerReferences": [{"apiVersion": "gloo.solo.io/v1", "kind": "Upstream", "name": name, "uid": format!("us-{name}")}]},
            "spec": {"from": from, "to": [{"group": "gloo.solo.io", "kind": "Upstream", "name": name}]},
        }))
        .expect("grant")
    }

    /// (operation, name) of each grant action, in order.
    fn grant_writes(actions: &[Action]) -> Vec<(&'static str, String)> {
        actions
            .iter()
            .filter_map(|action| match action {
                Action::Grant(GrantAction::Create(g)) => {
                    Some(("create", g.metadata.name.clone().unwrap_or_default()))
                }
                Action::Grant(GrantAction::Update { desired, .. }) => {
                    Some(("update", desired.metadata.name.clone().unwrap_or_default()))
                }
                Action::Grant(GrantAction::Delete { name, .. }) => Some(("delete", name.clone())),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn a_service_plans_the_grants_of_the_names_it_holds_and_leaves_unlabelled_ones_alone() {
        let mut engine = engine(
            &[service("shop", "web", &[80, 81, 82])],
            &[80, 81, 82].map(|port| upstream("shop", "web", port)),
            Some(vec![
                grant("shop-web-80", &["shop"], true),
                grant("shop-web-81", &["elsewhere"], true),
                grant("shop-web-82", &["shop"], false),
            ]),
        );
        let key = ServiceKey::new("shop", "web");
        let actions = engine.plan_for(&key).plan.actions;
        assert_eq!(
            grant_writes(&actions),
            [("update", "shop-web-81".to_string())]
        );
        let Some(Action::Grant(GrantAction::Update { desired, uid, .. })) =
            actions.iter().find(|a| matches!(a, Action::Grant(_)))
        else {
            panic!("an update");
        };
        assert_eq!(uid, "g-shop-web-81");
        assert_eq!(desired.spec.from[0].namespace, "shop");
        assert_eq!(desired.spec.from.len(), 1);
        let blocked = engine.reported_blocked.get(&key).expect("reported");
        assert_eq!(
            blocked.values().map(|b| b.by.clone()).collect::<Vec<_>>(),
            [BlockedBy::GrantNotOwned]
        );
        assert_eq!(engine.metrics.reference_grants(), 2);
    }

    #[tokio::test]
    async fn no_grant_is_planned_before_the_grants_are_listed() {
        let mut engine = engine(&[service("shop", "web", &[80])], &[], None);
        let actions = engine
            .plan_for(&ServiceKey::new("shop", "web"))
            .plan
            .actions;
        assert_eq!(actions.len(), 1, "the Upstream alone: {actions:?}");
        assert!(grant_writes(&actions).is_empty());
    }

    #[tokio::test]
    async fn an_owned_grant_no_service_maps_to_is_collected_and_only_the_holder_plans_a_name() {
        // `a-b/c` and `a/b-c` both map to `a-b-c-80`; with no Upstream yet the smaller key holds it.
        let mut engine = engine(
            &[service("a-b", "c", &[80]), service("a", "b-c", &[80])],
            &[],
            Some(vec![grant("gone-x-80", &["gone"], true)]),
        );
        let orphans: Vec<Job> = engine
            .state
            .all_jobs()
            .into_iter()
            .filter(|job| matches!(job, Job::Orphan(_)))
            .collect();
        let gone = UpstreamKey::new(WRITE, "gone-x-80");
        assert_eq!(orphans, [Job::Orphan(gone.clone())]);
        assert_eq!(
            grant_writes(&engine.plan_collection(&gone)),
            [("delete", "gone-x-80".to_string())]
        );

        // Its grant waits for the Upstream's uid: first the Upstream, then, planned again once
        // it is written, the grant that names it as owner.
        let holder = engine.plan_for(&ServiceKey::new("a", "b-c")).plan.actions;
        assert!(grant_writes(&holder).is_empty(), "{holder:?}");
        let Some(Action::Create(created)) = holder.first() else {
            panic!("the Upstream's create: {holder:?}");
        };
        let mut written = created.clone();
        written.metadata.uid = Some("us-1".into());
        written.metadata.resource_version = Some("1".into());
        engine.state.on_written(&written);
        assert!(engine.grants_follow(crate::metrics::WriteOp::Create));
        let holder = engine.plan_for(&ServiceKey::new("a", "b-c")).plan.actions;
        assert_eq!(grant_writes(&holder), [("create", "a-b-c-80".to_string())]);
        let Some(Action::Grant(GrantAction::Create(created))) =
            holder.iter().find(|a| matches!(a, Action::Grant(_)))
        else {
            panic!("a create");
        };
        assert_eq!(
            created.spec.from[0].namespace, "a",
            "the holder's namespace, not the other's"
        );
        let owners = created
            .metadata
            .owner_references
            .clone()
            .unwrap_or_default();
        assert_eq!(
            owners
                .iter()
                .map(|o| (
                    o.kind.as_str(),
                    o.name.as_str(),
                    o.uid.as_str(),
                    o.block_owner_deletion
                ))
                .collect::<Vec<_>>(),
            [("Upstream", "a-b-c-80", "us-1", None)]
        );
        let other = engine.plan_for(&ServiceKey::new("a-b", "c")).plan.actions;
        assert!(other.is_empty(), "{other:?}");
    }
}
