//! The loop's side of `--reference-grants`: planning each Service's grants beside its Upstreams
//! (`translate::grants` decides their content, `plan::grants` the writes) and reporting what
//! became of them. Grant writes count in their own metrics, never as Upstream writes.

use std::collections::HashSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;

use super::Engine;
use crate::apply::GrantOutcome;
use crate::crd::{ReferenceGrant, Upstream};
use crate::metrics::{WriteOp, WriteResult};
use crate::model::{ErrorKind, ServiceKey, UpstreamKey};
use crate::plan::{self, plan_grants, Blocked, BlockedBy, Plan};
use crate::source::GRANT_CRD_RECHECK;
use crate::translate::{desired_grant, route_namespaces, TranslateWarning};

use super::state::Job;

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
    /// (the names blocked for its Upstreams get none), once the grants are listed.
    pub(super) fn plan_grants_for(
        &self,
        key: &ServiceKey,
        upstreams: &[Upstream],
        namespaces: &[String],
        plan: &mut Plan,
    ) {
        let (Some(settings), Some(grants)) = (&self.config.grants, self.state.grants()) else {
            return;
        };
        let blocked: HashSet<&UpstreamKey> = plan.blocked.iter().map(|b| &b.name).collect();
        let desired: Vec<ReferenceGrant> = upstreams
            .iter()
            .filter(|upstream| {
                UpstreamKey::of(&upstream.metadata).is_some_and(|name| !blocked.contains(&name))
            })
            .map(|upstream| desired_grant(upstream, namespaces, settings))
            .collect();
        let observed = self.state.grants_for(key);
        let grant_plan = plan_grants(
            &desired,
            &observed,
            |name| grants.is_foreign(name),
            self.state.synced(),
        );
        plan.actions.extend(grant_plan.actions);
        plan.blocked.extend(grant_plan.blocked);
        plan.unchanged += grant_plan.unchanged;
        plan.deletes_held_back += grant_plan.deletes_held_back;
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
