//! Function discovery's state, pure (docs/architecture.md): the aws Upstreams, the namespaces'
//! labels, the credentials and one group of Upstreams per sweep (account, role and region). Fed
//! watch events and sweep answers, it returns [`Decision`]s (re-check this Upstream, write this
//! list, report this problem, start or drop this sweep) for the loop to carry out; it never talks
//! to the network, records no Event and touches no metric.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;
use regex::Regex;

use super::functions::{self, Listing};
use super::problem::{Problem, SweepError};
use super::selection::{discovers, FdsMode};
use super::target::{AwsTarget, CredentialSource, SecretSeen, StaticKeys, SweepKey, WebIdentity};
use crate::crd::{LambdaFunction, Upstream};
use crate::model::{Scope, SecretKey, UpstreamKey, FUNCTION_DISCOVERY_LABEL};
use crate::reconcile::{Change, ListTracker, ReportOnce};

/// What the loop must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Evaluate this Upstream again (its content, its group or its sweep's answer changed).
    Recheck(UpstreamKey),
    /// No longer under function discovery: drop its bookkeeping and its metric series.
    Forget(UpstreamKey),
    /// A sweep key appeared (sweep it now) or has no Upstream left.
    SweepAdded(SweepKey),
    SweepRemoved(SweepKey),
    /// Watch exactly these credentials Secrets.
    WatchSecrets(BTreeSet<SecretKey>),
    /// An Upstream without `spec.aws.region`: ask the SDK's region chain, once, and pass the
    /// answer to [`LambdaState::on_default_region`].
    ResolveDefaultRegion,
    /// Upstreams under function discovery (`upstreams{source="lambda"}`).
    Selected(usize),
    /// A new problem: Warning Event and its counter.
    Report {
        upstream: UpstreamKey,
        uid: Option<String>,
        problem: Problem,
    },
    /// A problem is over: Normal Event.
    Recovered {
        upstream: UpstreamKey,
        uid: Option<String>,
    },
    /// The list is as it should be: `lambda_functions{namespace,upstream}`.
    Count {
        upstream: UpstreamKey,
        functions: usize,
    },
    /// Write this list, guarded by the uid and resourceVersion it was planned against.
    Write(WriteRequest),
}

#[derive(Debug, Clone, PartialEq)]
pub struct WriteRequest {
    pub upstream: UpstreamKey,
    pub uid: String,
    pub resource_version: String,
    pub functions: Vec<LambdaFunction>,
}

/// What is known of a Secret an Upstream names.
#[derive(Debug, Clone)]
enum SecretState {
    Missing,
    Unreadable(String),
    Present(Result<StaticKeys, Vec<&'static str>>),
}

/// The SDK's own region (`AWS_REGION`, profile, instance metadata), for Upstreams without one.
#[derive(Debug, Clone, PartialEq)]
enum DefaultRegion {
    /// No Upstream has needed it yet.
    NotAsked,
    Asked,
    Resolved(Option<String>),
}

/// The Upstreams of one sweep key and its last answer.
#[derive(Debug, Default)]
struct Group {
    members: BTreeSet<UpstreamKey>,
    listing: Option<Arc<Listing>>,
    /// The last failure, until a sweep succeeds.
    error: Option<SweepError>,
}

pub struct LambdaState {
    mode: FdsMode,
    max_functions: usize,
    targets: BTreeMap<UpstreamKey, AwsTarget>,
    upstream_lists: ListTracker<UpstreamKey>,
    namespace_labels: HashMap<String, Option<String>>,
    namespace_list: ListTracker<String>,
    secrets: HashMap<SecretKey, SecretState>,
    /// IRSA mode: the pod's token and role.
    web_identity: Option<WebIdentity>,
    default_region: DefaultRegion,
    groups: HashMap<SweepKey, Group>,
    membership: HashMap<UpstreamKey, SweepKey>,
    regroup_needed: bool,
    reported: ReportOnce<UpstreamKey, Problem>,
}

impl LambdaState {
    /// `scopes`: the namespaces whose Upstreams are watched; `web_identity`: IRSA mode.
    pub fn new(
        mode: FdsMode,
        max_functions: usize,
        scopes: &[Scope],
        web_identity: Option<WebIdentity>,
    ) -> Self {
        Self {
            mode,
            max_functions,
            targets: BTreeMap::new(),
            upstream_lists: ListTracker::new(scopes.iter().cloned()),
            namespace_labels: HashMap::new(),
            namespace_list: ListTracker::new([Scope::All]),
            secrets: HashMap::new(),
            web_identity,
            default_region: DefaultRegion::NotAsked,
            groups: HashMap::new(),
            membership: HashMap::new(),
            regroup_needed: false,
            reported: ReportOnce::default(),
        }
    }

    /// True once the Upstreams and the namespaces have been listed: only then is anything
    /// grouped, swept or written.
    pub fn synced(&self) -> bool {
        self.namespace_list.all_completed() && self.upstream_lists.all_completed()
    }

    pub fn on_upstream(&mut self, scope: &Scope, event: watcher::Event<Upstream>) -> Vec<Decision> {
        match event {
            watcher::Event::Init => {
                self.upstream_lists.started(scope);
                Vec::new()
            }
            watcher::Event::InitApply(upstream) | watcher::Event::Apply(upstream) => {
                let key = UpstreamKey::of(&upstream.metadata);
                if let Some(key) = &key {
                    self.upstream_lists.saw(scope, key);
                }
                match (AwsTarget::from_upstream(&upstream), key) {
                    (Some(target), _) => self.upsert(target),
                    (None, Some(key)) => self.remove(&key),
                    (None, None) => Vec::new(),
                }
            }
            watcher::Event::Delete(upstream) => match UpstreamKey::of(&upstream.metadata) {
                Some(key) => self.remove(&key),
                None => Vec::new(),
            },
            watcher::Event::InitDone => {
                let Some(gone) = self.upstream_lists.finished(scope, self.targets.keys()) else {
                    return Vec::new();
                };
                self.regroup_needed = true;
                gone.iter().flat_map(|key| self.remove(key)).collect()
            }
        }
    }

    pub fn on_namespace(&mut self, event: watcher::Event<PartialObjectMeta<Namespace>>) {
        let label_of = |ns: &PartialObjectMeta<Namespace>| {
            ns.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(FUNCTION_DISCOVERY_LABEL))
                .cloned()
        };
        match event {
            watcher::Event::Init => self.namespace_list.started(&Scope::All),
            watcher::Event::InitApply(ns) | watcher::Event::Apply(ns) => {
                let Some(name) = ns.metadata.name.clone() else {
                    return;
                };
                self.namespace_list.saw(&Scope::All, &name);
                let label = label_of(&ns);
                if self.namespace_labels.get(&name) != Some(&label) {
                    self.namespace_labels.insert(name, label);
                    self.regroup_needed = true;
                }
            }
            watcher::Event::Delete(ns) => {
                if let Some(name) = ns.metadata.name.as_ref() {
                    self.namespace_labels.remove(name);
                    self.regroup_needed = true;
                }
            }
            watcher::Event::InitDone => {
                if let Some(gone) = self
                    .namespace_list
                    .finished(&Scope::All, self.namespace_labels.keys())
                {
                    for name in gone {
                        self.namespace_labels.remove(&name);
                    }
                }
                self.regroup_needed = true;
            }
        }
    }

    pub fn on_secret(&mut self, key: SecretKey, seen: SecretSeen) {
        let state = match seen {
            SecretSeen::Present(keys) => SecretState::Present(keys),
            SecretSeen::Missing => SecretState::Missing,
            // Keys already read stay in use; only a Secret never read is reported.
            SecretSeen::WatchError(_) if self.secrets.contains_key(&key) => return,
            SecretSeen::WatchError(error) => SecretState::Unreadable(error),
        };
        self.secrets.insert(key, state);
        self.regroup_needed = true;
    }

    /// The SDK's region chain answered (`None`: it knows no region).
    pub fn on_default_region(&mut self, region: Option<String>) {
        self.default_region = DefaultRegion::Resolved(region.filter(|r| !r.is_empty()));
        self.regroup_needed = true;
    }

    /// Everything that follows from the events since the last call: regroups once the lists are
    /// complete. Called by the loop after each input.
    pub fn settle(&mut self) -> Vec<Decision> {
        if !self.synced() || !std::mem::take(&mut self.regroup_needed) {
            return Vec::new();
        }
        self.regroup()
    }

    /// A sweep ended. Success re-checks every member (a stored list may have been edited, so
    /// changed answer or not); failure leaves every list as it is and reports on each member.
    pub fn on_sweep(
        &mut self,
        key: &SweepKey,
        result: Result<Listing, SweepError>,
    ) -> Vec<Decision> {
        let Some(group) = self.groups.get_mut(key) else {
            return Vec::new();
        };
        let members: Vec<UpstreamKey> = group.members.iter().cloned().collect();
        match result {
            Ok(listing) => {
                group.error = None;
                group.listing = Some(Arc::new(listing));
                members.into_iter().map(Decision::Recheck).collect()
            }
            Err(error) => {
                group.error = Some(error.clone());
                let problem = Problem::SweepFailed(error);
                members
                    .iter()
                    .filter_map(|member| self.report(member, Some(problem.clone())))
                    .collect()
            }
        }
    }

    /// Whether an Upstream's list must be written. `may_write`: this replica leads.
    pub fn evaluate(&mut self, key: &UpstreamKey, may_write: bool) -> Vec<Decision> {
        let Some(target) = self.targets.get(key) else {
            return Vec::new();
        };
        let Some(group) = self
            .membership
            .get(key)
            .and_then(|sweep| self.groups.get(sweep))
        else {
            return Vec::new();
        };
        if group.error.is_some() {
            return Vec::new();
        }
        let Some(listing) = group.listing.clone() else {
            return Vec::new();
        };
        let filter = match target.filter.as_deref().map(Regex::new).transpose() {
            Ok(filter) => filter,
            Err(error) => {
                let problem = Problem::InvalidFilter(error.to_string());
                return self.report(key, Some(problem)).into_iter().collect();
            }
        };
        let desired = functions::desired(&listing, filter.as_ref(), self.max_functions);
        let problem = (desired.left_out > 0).then_some(Problem::Capped {
            left_out: desired.left_out,
            kept: desired.functions.len(),
            cap: self.max_functions,
        });
        let unchanged = functions::unchanged(target.functions.as_deref(), &desired.functions);
        if !unchanged && !may_write {
            return Vec::new();
        }
        let request = WriteRequest {
            upstream: key.clone(),
            uid: target.uid.clone(),
            resource_version: target.resource_version.clone(),
            functions: desired.functions,
        };
        let mut decisions: Vec<Decision> = self.report(key, problem).into_iter().collect();
        if unchanged {
            decisions.push(Decision::Count {
                upstream: key.clone(),
                functions: request.functions.len(),
            });
        } else {
            decisions.push(Decision::Write(request));
        }
        decisions
    }

    /// The API server stored a list: take the stored version now (the watch may bring it
    /// later), so the next evaluation compares against what is there.
    pub fn on_written(&mut self, key: &UpstreamKey, stored: &Upstream) -> Vec<Decision> {
        let Some(target) = self.targets.get_mut(key) else {
            return Vec::new();
        };
        let functions = match AwsTarget::from_upstream(stored) {
            Some(stored) if stored.uid == target.uid => {
                *target = stored;
                target.functions.as_ref().map_or(0, Vec::len)
            }
            _ => return Vec::new(),
        };
        vec![Decision::Count {
            upstream: key.clone(),
            functions,
        }]
    }

    /// `--dry-run`: what would have been written counts as written.
    pub fn on_dry_run(&mut self, key: &UpstreamKey, functions: Vec<LambdaFunction>) {
        if let Some(target) = self.targets.get_mut(key) {
            target.functions = Some(functions);
        }
    }

    /// The last answer of a sweep key (for the next sweep's alias re-use).
    pub fn listing(&self, key: &SweepKey) -> Option<Arc<Listing>> {
        self.groups.get(key)?.listing.clone()
    }

    pub fn has_sweep(&self, key: &SweepKey) -> bool {
        self.groups.contains_key(key)
    }

    pub fn sweep_keys(&self) -> impl Iterator<Item = &SweepKey> {
        self.groups.keys()
    }

    /// Entries kept about Upstreams (targets, memberships, reported problems), for tests of
    /// bounded memory: zero once every Upstream is gone.
    pub fn tracked(&self) -> usize {
        self.targets.len() + self.membership.len() + self.reported.len()
    }

    fn upsert(&mut self, target: AwsTarget) -> Vec<Decision> {
        let key = target.key.clone();
        let Some(old) = self.targets.get(&key) else {
            self.targets.insert(key.clone(), target);
            self.regroup_needed = true;
            return vec![Decision::Recheck(key)];
        };
        if old == &target {
            return Vec::new();
        }
        if old.region != target.region
            || old.secret != target.secret
            || old.role_arn != target.role_arn
            || old.discovery_label != target.discovery_label
        {
            self.regroup_needed = true;
        }
        self.targets.insert(key.clone(), target);
        vec![Decision::Recheck(key)]
    }

    fn remove(&mut self, key: &UpstreamKey) -> Vec<Decision> {
        if self.targets.remove(key).is_none() {
            return Vec::new();
        }
        self.regroup_needed = true;
        self.forget(key)
    }

    /// Drops what is kept about an Upstream no longer under function discovery.
    fn forget(&mut self, key: &UpstreamKey) -> Vec<Decision> {
        self.reported.forget(key);
        vec![Decision::Forget(key.clone())]
    }

    fn selected(&self, target: &AwsTarget) -> bool {
        let namespace_label = self
            .namespace_labels
            .get(&*target.key.namespace)
            .and_then(Option::as_deref);
        discovers(
            self.mode,
            target.discovery_label.as_deref(),
            &target.key.namespace,
            namespace_label,
        )
    }

    /// The sweep an Upstream belongs to, `None` while its Secret's watch or the SDK's region
    /// chain has not answered, or why it has none. In IRSA mode the Secret is not used but
    /// must still be there with its keys, as in Gloo.
    fn sweep_key(&self, target: &AwsTarget) -> Result<Option<SweepKey>, Problem> {
        let region = match (&target.region, &self.default_region) {
            (Some(region), _) => region.clone(),
            (None, DefaultRegion::Resolved(Some(region))) => region.clone(),
            (None, DefaultRegion::Resolved(None)) => return Err(Problem::NoRegion),
            (None, _) => return Ok(None),
        };
        let keys = match &target.secret {
            None => None,
            Some(secret) => match self.secrets.get(secret) {
                None => return Ok(None),
                Some(SecretState::Missing) => return Err(Problem::SecretMissing(secret.clone())),
                Some(SecretState::Present(Err(missing))) => {
                    return Err(Problem::SecretKeysMissing {
                        secret: secret.clone(),
                        missing: missing.clone(),
                    })
                }
                Some(SecretState::Unreadable(error)) => {
                    return Err(Problem::SecretUnreadable {
                        secret: secret.clone(),
                        error: error.clone(),
                    })
                }
                Some(SecretState::Present(Ok(keys))) => Some(keys),
            },
        };
        Ok(Some(SweepKey {
            credentials: CredentialSource::choose(
                self.web_identity.as_ref(),
                target.role_arn.as_deref(),
                keys,
            ),
            region,
        }))
    }

    /// Recomputes which Upstreams share which sweep, which Secrets to watch and what to forget.
    fn regroup(&mut self) -> Vec<Decision> {
        let mut decisions = Vec::new();
        let mut membership = HashMap::new();
        let mut wanted_secrets = BTreeSet::new();
        let mut unselected = Vec::new();
        let mut problems = Vec::new();
        let mut needs_default_region = false;
        for target in self.targets.values() {
            if !self.selected(target) {
                unselected.push(target.key.clone());
                continue;
            }
            if let Some(secret) = &target.secret {
                wanted_secrets.insert(secret.clone());
            }
            needs_default_region |= target.region.is_none();
            match self.sweep_key(target) {
                Ok(Some(key)) => {
                    membership.insert(target.key.clone(), key);
                }
                Ok(None) => {}
                Err(problem) => problems.push((target.key.clone(), problem)),
            }
        }
        if needs_default_region && self.default_region == DefaultRegion::NotAsked {
            self.default_region = DefaultRegion::Asked;
            decisions.push(Decision::ResolveDefaultRegion);
        }
        let selected = self.targets.len() - unselected.len();
        for key in unselected {
            decisions.extend(self.forget(&key));
        }
        for (key, problem) in problems {
            decisions.extend(self.report(&key, Some(problem)));
        }
        self.secrets.retain(|key, _| wanted_secrets.contains(key));
        decisions.push(Decision::WatchSecrets(wanted_secrets));

        for group in self.groups.values_mut() {
            group.members.clear();
        }
        for (upstream, key) in &membership {
            let group = self.groups.entry(key.clone()).or_insert_with(|| {
                decisions.push(Decision::SweepAdded(key.clone()));
                Group::default()
            });
            group.members.insert(upstream.clone());
            if self.membership.get(upstream) != Some(key) {
                decisions.push(Decision::Recheck(upstream.clone()));
            }
        }
        let empty: Vec<SweepKey> = self
            .groups
            .iter()
            .filter(|(_, group)| group.members.is_empty())
            .map(|(key, _)| key.clone())
            .collect();
        for key in empty {
            self.groups.remove(&key);
            decisions.push(Decision::SweepRemoved(key));
        }
        self.membership = membership;
        decisions.push(Decision::Selected(selected));
        decisions
    }

    /// Reports an Upstream's problem when it changed (not on every sweep), and its end.
    fn report(&mut self, key: &UpstreamKey, problem: Option<Problem>) -> Option<Decision> {
        let uid = self.targets.get(key).map(|t| t.uid.clone());
        match self.reported.update(key, problem.clone()) {
            Change::Unchanged => None,
            Change::Raised { .. } => Some(Decision::Report {
                upstream: key.clone(),
                uid,
                problem: problem?,
            }),
            Change::Cleared(previous) => previous.recovery_is_news().then(|| Decision::Recovered {
                upstream: key.clone(),
                uid,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The state's decisions as plain function calls: no server, no client, no metrics.

    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::Secret;
    use k8s_openapi::ByteString;
    use serde_json::json;

    use super::*;
    use crate::lambda::functions::FunctionVersion;
    use crate::lambda::problem::Counter;
    use crate::lambda::target::keys_from_secret;
    use crate::model::{ErrorKind, EventReason, SkipReason};

    const ALL: &Scope = &Scope::All;

    fn state() -> LambdaState {
        LambdaState::new(FdsMode::Whitelist, 2000, &[Scope::All], None)
    }

    fn upstream(
        namespace: &str,
        name: &str,
        aws: serde_json::Value,
        labels: serde_json::Value,
    ) -> Upstream {
        serde_json::from_value(json!({
            "apiVersion": "gloo.solo.io/v1", "kind": "Upstream",
            "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{name}"),
                         "resourceVersion": "1", "labels": labels},
            "spec": {"aws": aws},
        }))
        .expect("upstream")
    }

    fn keys(id: &str) -> SecretSeen {
        let data: BTreeMap<String, ByteString> = [
            ("aws_access_key_id", id),
            ("aws_secret_access_key", "very-secret-value"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
        .collect();
        let secret = Secret {
            data: Some(data),
            ..Default::default()
        };
        SecretSeen::Present(keys_from_secret(secret.data.as_ref()))
    }

    fn secret(name: &str) -> SecretKey {
        SecretKey::new("team", name)
    }

    fn key(namespace: &str, name: &str) -> UpstreamKey {
        UpstreamKey::new(namespace, name)
    }

    fn namespace(name: &str, label: Option<&str>) -> PartialObjectMeta<Namespace> {
        let labels = label
            .map(|l| json!({FUNCTION_DISCOVERY_LABEL: l}))
            .unwrap_or(json!({}));
        serde_json::from_value(json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": {"name": name, "labels": labels},
        }))
        .expect("namespace")
    }

    fn with_discovery_labels(mut upstream: Upstream, labels: serde_json::Value) -> Upstream {
        upstream.spec.discovery_metadata =
            Some(serde_json::from_value(json!({"labels": labels})).expect("labels"));
        upstream
    }

    /// Lists `upstreams` and the namespaces (name, function_discovery label), then settles.
    fn synced(
        state: &mut LambdaState,
        upstreams: Vec<Upstream>,
        namespaces: &[(&str, Option<&str>)],
    ) -> Vec<Decision> {
        let mut decisions = state.on_upstream(ALL, watcher::Event::Init);
        for upstream in upstreams {
            decisions.extend(state.on_upstream(ALL, watcher::Event::InitApply(upstream)));
        }
        decisions.extend(state.on_upstream(ALL, watcher::Event::InitDone));
        state.on_namespace(watcher::Event::Init);
        for (name, label) in namespaces {
            state.on_namespace(watcher::Event::InitApply(namespace(name, *label)));
        }
        state.on_namespace(watcher::Event::InitDone);
        decisions.extend(state.settle());
        decisions
    }

    fn members(state: &LambdaState) -> Vec<(String, Vec<String>)> {
        let mut groups: Vec<(String, Vec<String>)> = state
            .groups
            .iter()
            .map(|(key, group)| {
                (
                    key.describe(),
                    group.members.iter().map(ToString::to_string).collect(),
                )
            })
            .collect();
        groups.sort();
        groups
    }

    fn reports(decisions: &[Decision]) -> Vec<(String, EventReason)> {
        decisions
            .iter()
            .filter_map(|d| match d {
                Decision::Report {
                    upstream, problem, ..
                } => Some((upstream.to_string(), problem.event_reason())),
                _ => None,
            })
            .collect()
    }

    fn sweep_of(state: &LambdaState, upstream: &UpstreamKey) -> SweepKey {
        state.membership[upstream].clone()
    }

    fn listing(names: &[&str]) -> Listing {
        Listing {
            versions: names
                .iter()
                .map(|name| FunctionVersion {
                    name: name.to_string(),
                    version: "$LATEST".into(),
                    last_modified: "t".into(),
                })
                .collect(),
            aliases: BTreeMap::new(),
        }
    }

    #[test]
    fn upstreams_with_the_same_credentials_and_region_share_one_sweep() {
        let mut state = state();
        let by_secret = |name: &str, region: &str| json!({"region": region, "secretRef": {"name": name, "namespace": "team"}});
        let decisions = synced(
            &mut state,
            vec![
                upstream("team", "a", by_secret("creds", "eu-west-1"), json!({})),
                upstream("team", "b", by_secret("creds", "eu-west-1"), json!({})),
                upstream("team", "c", by_secret("creds", "us-east-1"), json!({})),
                // Another Secret with the same keys: the same account.
                upstream("team", "d", by_secret("copy", "eu-west-1"), json!({})),
                upstream("team", "e", json!({"region": "eu-west-1"}), json!({})),
                // Outside IRSA mode roleArn plays no part: the same sweep as "e".
                upstream(
                    "team",
                    "f",
                    json!({"region": "eu-west-1", "roleArn": "arn:aws:iam::1:role/r"}),
                    json!({}),
                ),
            ],
            &[("team", None)],
        );
        assert!(decisions.contains(&Decision::WatchSecrets(
            [secret("copy"), secret("creds")].into()
        )));
        assert!(decisions.contains(&Decision::Selected(6)));
        assert_eq!(
            decisions
                .iter()
                .filter(|d| matches!(d, Decision::SweepAdded(_)))
                .count(),
            1,
            "Secrets not read yet: only the default-chain Upstreams have a sweep: {decisions:?}"
        );
        state.on_secret(secret("creds"), keys("AKIDSAME0001"));
        state.on_secret(secret("copy"), keys("AKIDSAME0001"));
        let decisions = state.settle();
        assert_eq!(
            members(&state),
            [
                (
                    "eu-west-1 (StaticKeys(…0001))".to_string(),
                    vec!["team/a".into(), "team/b".into(), "team/d".into()]
                ),
                (
                    "eu-west-1 (default chain)".to_string(),
                    vec!["team/e".into(), "team/f".into()]
                ),
                (
                    "us-east-1 (StaticKeys(…0001))".to_string(),
                    vec!["team/c".into()]
                ),
            ]
        );
        assert_eq!(
            decisions
                .iter()
                .filter(|d| matches!(d, Decision::SweepAdded(_)))
                .count(),
            2
        );
        for upstream in ["a", "b", "c", "d"] {
            assert!(
                decisions.contains(&Decision::Recheck(key("team", upstream))),
                "{upstream}"
            );
        }

        // A rotated Secret is a new sweep key; the old one goes when nobody uses it.
        state.on_secret(secret("copy"), keys("AKIDROTATED2"));
        state.settle();
        assert_eq!(state.groups.len(), 4);
        state.on_secret(secret("creds"), keys("AKIDROTATED2"));
        let decisions = state.settle();
        assert_eq!(state.groups.len(), 3, "{:?}", members(&state));
        assert!(decisions
            .iter()
            .any(|d| matches!(d, Decision::SweepRemoved(_))));
    }

    #[test]
    fn nothing_is_grouped_before_every_first_list() {
        let mut state = state();
        state.on_upstream(ALL, watcher::Event::Init);
        state.on_upstream(
            ALL,
            watcher::Event::InitApply(upstream("team", "a", json!({"region": "r"}), json!({}))),
        );
        state.on_upstream(ALL, watcher::Event::InitDone);
        assert!(state.settle().is_empty(), "namespaces not listed yet");
        assert!(state.groups.is_empty());
        state.on_namespace(watcher::Event::Init);
        state.on_namespace(watcher::Event::InitDone);
        assert!(state
            .settle()
            .iter()
            .any(|d| matches!(d, Decision::SweepAdded(_))));
        assert_eq!(state.groups.len(), 1);
    }

    #[test]
    fn opted_out_upstreams_and_namespaces_get_no_sweep() {
        let mut state = state();
        let aws = json!({"region": "eu-west-1"});
        let decisions = synced(
            &mut state,
            vec![
                upstream("team", "on", aws.clone(), json!({})),
                upstream(
                    "team",
                    "off",
                    aws.clone(),
                    json!({FUNCTION_DISCOVERY_LABEL: "disabled"}),
                ),
                upstream(
                    "quiet",
                    "x",
                    aws.clone(),
                    json!({FUNCTION_DISCOVERY_LABEL: "enabled"}),
                ),
                upstream("quiet", "w", aws.clone(), json!({})),
                upstream("kube-system", "y", aws.clone(), json!({})),
                upstream("kube-public", "z", aws.clone(), json!({})),
                // The label in spec.discoveryMetadata.labels counts first.
                with_discovery_labels(
                    upstream("team", "dm-off", aws.clone(), json!({})),
                    json!({FUNCTION_DISCOVERY_LABEL: "disabled"}),
                ),
                with_discovery_labels(
                    upstream(
                        "quiet",
                        "dm-on",
                        aws.clone(),
                        json!({FUNCTION_DISCOVERY_LABEL: "disabled"}),
                    ),
                    json!({FUNCTION_DISCOVERY_LABEL: "enabled"}),
                ),
                with_discovery_labels(
                    upstream(
                        "team",
                        "dm-other",
                        aws.clone(),
                        json!({FUNCTION_DISCOVERY_LABEL: "disabled"}),
                    ),
                    json!({"app": "x"}),
                ),
            ],
            &[
                ("team", None),
                ("quiet", Some("disabled")),
                ("kube-system", None),
                ("kube-public", Some("enabled")),
            ],
        );
        let mut selected: Vec<String> = state.membership.keys().map(ToString::to_string).collect();
        selected.sort();
        assert_eq!(
            selected,
            ["kube-public/z", "quiet/dm-on", "quiet/x", "team/on"],
            "an Upstream labelled enabled is discovered in a disabled namespace"
        );
        assert!(decisions.contains(&Decision::Selected(4)));
        for gone in [
            key("team", "off"),
            key("quiet", "w"),
            key("kube-system", "y"),
            key("team", "dm-off"),
            key("team", "dm-other"),
        ] {
            assert!(
                decisions.contains(&Decision::Forget(gone.clone())),
                "{gone}"
            );
        }
    }

    #[test]
    fn credential_problems_are_reported_once_and_never_show_secret_values() {
        let mut state = state();
        let by_secret = |name: &str| json!({"region": "eu-west-1", "secretRef": {"name": name, "namespace": "team"}});
        let mut decisions = synced(
            &mut state,
            vec![
                upstream("team", "missing", by_secret("gone"), json!({})),
                upstream("team", "keyless", by_secret("partial"), json!({})),
                upstream("team", "forbidden", by_secret("hidden"), json!({})),
                upstream(
                    "team",
                    "regionless",
                    json!({"secretRef": {"name": "gone", "namespace": "team"}}),
                    json!({}),
                ),
            ],
            &[("team", None)],
        );
        state.on_secret(secret("gone"), SecretSeen::Missing);
        let partial = keys_from_secret(Some(
            &[(
                "aws_secret_access_key".to_string(),
                ByteString(b"very-secret-value".to_vec()),
            )]
            .into_iter()
            .collect(),
        ));
        state.on_secret(secret("partial"), SecretSeen::Present(partial));
        state.on_secret(
            secret("hidden"),
            SecretSeen::WatchError("secrets \"hidden\" is forbidden".into()),
        );
        // No region: the SDK's chain is asked first; the problem once it knows none too. The
        // Secrets' problems once their watches answer.
        assert!(reports(&decisions).is_empty(), "{decisions:?}");
        assert!(decisions.contains(&Decision::ResolveDefaultRegion));
        state.on_default_region(None);
        decisions.extend(state.settle());
        let mut reported = reports(&decisions);
        reported.sort();
        assert_eq!(
            reported,
            [
                (
                    "team/forbidden".to_string(),
                    EventReason::LambdaCredentialsMissing
                ),
                (
                    "team/keyless".to_string(),
                    EventReason::LambdaCredentialsMissing
                ),
                (
                    "team/missing".to_string(),
                    EventReason::LambdaCredentialsMissing
                ),
                (
                    "team/regionless".to_string(),
                    EventReason::InvalidAwsUpstream
                ),
            ]
        );
        for decision in &decisions {
            if let Decision::Report {
                upstream,
                problem,
                uid,
            } = decision
            {
                let note = problem.note();
                assert!(!note.contains("very-secret-value"), "{note}");
                assert_eq!(
                    uid.as_deref(),
                    Some(format!("uid-{}", upstream.name).as_str())
                );
                match &*upstream.name {
                    "keyless" => assert!(note.contains("aws_access_key_id"), "{note}"),
                    "forbidden" => assert!(note.contains("forbidden"), "{note}"),
                    "regionless" => assert_eq!(
                        problem.counter(),
                        Some(Counter::Error(ErrorKind::LambdaInvalidUpstream))
                    ),
                    _ => assert_eq!(
                        problem.counter(),
                        Some(Counter::Error(ErrorKind::LambdaCredentialsMissing))
                    ),
                }
            }
        }
        assert!(state.membership.is_empty(), "nothing to sweep with");
        // Reported once per problem, not once per look.
        state.regroup_needed = true;
        assert!(reports(&state.settle()).is_empty());

        // Fixed: the Upstream joins a sweep.
        state.on_secret(secret("gone"), keys("AKIDFIXED001"));
        let decisions = state.settle();
        assert!(state.membership.contains_key(&key("team", "missing")));
        assert!(decisions.contains(&Decision::Recheck(key("team", "missing"))));
    }

    #[test]
    fn a_failed_sweep_keeps_the_lists_and_reports_on_every_member_once() {
        let mut state = state();
        let aws = json!({"region": "eu-west-1", "lambdaFunctions": [
            {"lambdaFunctionName": "old", "qualifier": "$LATEST", "logicalName": "old"}]});
        synced(
            &mut state,
            vec![
                upstream("team", "a", aws.clone(), json!({})),
                upstream("team", "b", aws.clone(), json!({})),
            ],
            &[("team", None)],
        );
        let sweep = sweep_of(&state, &key("team", "a"));
        let throttled = || {
            Err(SweepError::Throttled {
                operation: "ListFunctions",
                code: "TooManyRequestsException".into(),
            })
        };
        let decisions = state.on_sweep(&sweep, throttled());
        assert_eq!(
            reports(&decisions),
            [
                ("team/a".to_string(), EventReason::LambdaThrottled),
                ("team/b".to_string(), EventReason::LambdaThrottled)
            ]
        );
        assert!(
            state.on_sweep(&sweep, throttled()).is_empty(),
            "the same problem is not news"
        );
        assert!(
            state.evaluate(&key("team", "a"), true).is_empty(),
            "nothing written after a failure"
        );
        assert_eq!(
            state.targets[&key("team", "a")]
                .functions
                .as_ref()
                .map(Vec::len),
            Some(1)
        );

        // Success: every member is re-checked, the problem is over, and the unchanged list is
        // counted without a write.
        let decisions = state.on_sweep(&sweep, Ok(listing(&["old"])));
        assert_eq!(
            decisions,
            [
                Decision::Recheck(key("team", "a")),
                Decision::Recheck(key("team", "b"))
            ]
        );
        let decisions = state.evaluate(&key("team", "a"), true);
        assert_eq!(
            decisions,
            [
                Decision::Recovered {
                    upstream: key("team", "a"),
                    uid: Some("uid-a".into())
                },
                Decision::Count {
                    upstream: key("team", "a"),
                    functions: 1
                },
            ]
        );
    }

    #[test]
    fn a_changed_list_is_written_by_the_leader_only_and_sorted() {
        let mut state = state();
        synced(
            &mut state,
            vec![upstream(
                "team",
                "a",
                json!({"region": "eu-west-1"}),
                json!({}),
            )],
            &[("team", None)],
        );
        let sweep = sweep_of(&state, &key("team", "a"));
        state.on_sweep(&sweep, Ok(listing(&["zeta", "alpha"])));
        assert!(
            state.evaluate(&key("team", "a"), false).is_empty(),
            "a follower does not write"
        );
        let decisions = state.evaluate(&key("team", "a"), true);
        let [Decision::Write(request)] = decisions.as_slice() else {
            panic!("one write: {decisions:?}");
        };
        assert_eq!(
            (request.uid.as_str(), request.resource_version.as_str()),
            ("uid-a", "1")
        );
        let names: Vec<&str> = request
            .functions
            .iter()
            .map(|f| f.logical_name.as_str())
            .collect();
        assert_eq!(names, ["alpha", "zeta"]);

        // What the API server stored counts as current: no second write.
        let mut stored = upstream("team", "a", json!({"region": "eu-west-1"}), json!({}));
        stored.spec.aws.as_mut().expect("aws").lambda_functions = Some(request.functions.clone());
        assert_eq!(
            state.on_written(&key("team", "a"), &stored),
            [Decision::Count {
                upstream: key("team", "a"),
                functions: 2
            }]
        );
        assert_eq!(
            state.evaluate(&key("team", "a"), true),
            [Decision::Count {
                upstream: key("team", "a"),
                functions: 2
            }]
        );
    }

    #[test]
    fn a_bad_filter_and_a_cap_are_reported_once() {
        let mut state = LambdaState::new(FdsMode::Blacklist, 1, &[Scope::All], None);
        let filtered = |filter: &str| {
            let mut u = upstream("team", "f", json!({"region": "eu-west-1"}), json!({}));
            u.metadata.annotations = Some(
                [(
                    crate::model::FUNCTION_FILTER_ANNOTATION.to_string(),
                    filter.to_string(),
                )]
                .into(),
            );
            u
        };
        synced(&mut state, vec![filtered("(")], &[("team", None)]);
        let sweep = sweep_of(&state, &key("team", "f"));
        state.on_sweep(&sweep, Ok(listing(&["a", "b"])));
        let decisions = state.evaluate(&key("team", "f"), true);
        assert_eq!(
            reports(&decisions),
            [("team/f".to_string(), EventReason::InvalidAnnotation)]
        );
        let Decision::Report { problem, .. } = &decisions[0] else {
            panic!()
        };
        assert_eq!(
            problem.counter(),
            Some(Counter::Skipped(SkipReason::InvalidFunctionFilter))
        );
        assert!(state.evaluate(&key("team", "f"), true).is_empty(), "once");

        // A valid filter that still leaves two: capped at one, reported, and written.
        state.on_upstream(ALL, watcher::Event::Apply(filtered("^[ab]$")));
        let decisions = state.evaluate(&key("team", "f"), true);
        assert_eq!(
            reports(&decisions),
            [("team/f".to_string(), EventReason::LambdaFunctionsCapped)]
        );
        assert!(
            matches!(decisions.last(), Some(Decision::Write(request)) if request.functions.len() == 1)
        );
    }

    #[test]
    fn a_relist_forgets_upstreams_that_are_gone() {
        let mut state = state();
        let aws = json!({"region": "eu-west-1"});
        synced(
            &mut state,
            vec![
                upstream("team", "a", aws.clone(), json!({})),
                upstream("team", "b", aws.clone(), json!({})),
            ],
            &[("team", None)],
        );
        state.on_upstream(ALL, watcher::Event::Init);
        state.on_upstream(
            ALL,
            watcher::Event::InitApply(upstream("team", "a", aws.clone(), json!({}))),
        );
        let decisions = state.on_upstream(ALL, watcher::Event::InitDone);
        assert_eq!(decisions, [Decision::Forget(key("team", "b"))]);
        assert!(state.settle().contains(&Decision::Selected(1)));
        // An Upstream that loses spec.aws is no longer a target either.
        let mut plain = upstream("team", "a", aws, json!({}));
        plain.spec.aws = None;
        assert_eq!(
            state.on_upstream(ALL, watcher::Event::Apply(plain)),
            [Decision::Forget(key("team", "a"))]
        );
        let decisions = state.settle();
        assert!(decisions
            .iter()
            .any(|d| matches!(d, Decision::SweepRemoved(_))));
        assert!(state.targets.is_empty() && state.groups.is_empty());
        assert_eq!(
            state.tracked(),
            0,
            "nothing kept of Upstreams that are gone"
        );
    }

    #[test]
    fn without_a_region_the_sdk_region_is_used_and_shares_sweeps() {
        let mut state = state();
        let decisions = synced(
            &mut state,
            vec![
                upstream(
                    "team",
                    "explicit",
                    json!({"region": "eu-west-1"}),
                    json!({}),
                ),
                upstream("team", "empty", json!({"region": ""}), json!({})),
                upstream("team", "absent", json!({}), json!({})),
            ],
            &[("team", None)],
        );
        assert_eq!(
            decisions
                .iter()
                .filter(|d| **d == Decision::ResolveDefaultRegion)
                .count(),
            1,
            "asked once: {decisions:?}"
        );
        assert!(
            reports(&decisions).is_empty(),
            "not an error: {decisions:?}"
        );
        assert_eq!(state.membership.len(), 1, "the others wait for the answer");

        state.on_default_region(Some("eu-west-1".into()));
        let decisions = state.settle();
        assert!(!decisions.contains(&Decision::ResolveDefaultRegion));
        assert!(reports(&decisions).is_empty(), "{decisions:?}");
        assert_eq!(
            members(&state),
            [(
                "eu-west-1 (default chain)".to_string(),
                vec![
                    "team/absent".into(),
                    "team/empty".into(),
                    "team/explicit".into()
                ]
            )],
            "the SDK's region is the Upstream's region: one sweep"
        );
        for upstream in ["absent", "empty"] {
            assert!(decisions.contains(&Decision::Recheck(key("team", upstream))));
        }
    }

    #[test]
    fn no_region_anywhere_is_reported_once() {
        let mut state = state();
        synced(
            &mut state,
            vec![upstream("team", "a", json!({}), json!({}))],
            &[("team", None)],
        );
        state.on_default_region(None);
        let decisions = state.settle();
        assert_eq!(
            reports(&decisions),
            [("team/a".to_string(), EventReason::InvalidAwsUpstream)]
        );
        assert!(state.groups.is_empty());
        // A region set on the Upstream fixes it.
        state.on_upstream(
            ALL,
            watcher::Event::Apply(upstream(
                "team",
                "a",
                json!({"region": "eu-west-1"}),
                json!({}),
            )),
        );
        state.settle();
        assert_eq!(state.groups.len(), 1);
    }

    fn irsa_state() -> LambdaState {
        let pod = WebIdentity {
            token_file: "/var/run/secrets/token".into(),
            role_arn: "arn:aws:iam::111111111111:role/pod".into(),
        };
        LambdaState::new(FdsMode::Whitelist, 2000, &[Scope::All], Some(pod))
    }

    #[test]
    fn in_irsa_mode_every_upstream_uses_the_token_with_its_role_or_the_pods() {
        let mut state = irsa_state();
        let role = "arn:aws:iam::222222222222:role/reader";
        let by_secret = |name: &str| json!({"region": "eu-west-1", "secretRef": {"name": name, "namespace": "team"}});
        let with_role = |mut aws: serde_json::Value| {
            aws["roleArn"] = json!(role);
            aws
        };
        synced(
            &mut state,
            vec![
                upstream(
                    "team",
                    "secret-and-role",
                    with_role(by_secret("creds")),
                    json!({}),
                ),
                upstream(
                    "team",
                    "other-secret-and-role",
                    with_role(by_secret("copy")),
                    json!({}),
                ),
                upstream(
                    "team",
                    "role-only",
                    with_role(json!({"region": "eu-west-1"})),
                    json!({}),
                ),
                upstream("team", "secret-only", by_secret("creds"), json!({})),
                upstream("team", "nothing", json!({"region": "eu-west-1"}), json!({})),
                upstream(
                    "team",
                    "missing-secret",
                    with_role(by_secret("gone")),
                    json!({}),
                ),
            ],
            &[("team", None)],
        );
        state.on_secret(secret("creds"), keys("AKIDCREDS0001"));
        state.on_secret(secret("copy"), keys("AKIDCOPY00002"));
        state.on_secret(secret("gone"), SecretSeen::Missing);
        let decisions = state.settle();
        assert_eq!(
            members(&state),
            [
                (
                    "eu-west-1 as arn:aws:iam::111111111111:role/pod (web identity)".to_string(),
                    vec!["team/nothing".into(), "team/secret-only".into()]
                ),
                (
                    "eu-west-1 as arn:aws:iam::222222222222:role/reader (web identity)".to_string(),
                    vec![
                        "team/other-secret-and-role".into(),
                        "team/role-only".into(),
                        "team/secret-and-role".into()
                    ]
                ),
            ],
            "the Secrets' keys are not used, so they do not split sweeps"
        );
        assert_eq!(
            reports(&decisions),
            [(
                "team/missing-secret".to_string(),
                EventReason::LambdaCredentialsMissing
            )],
            "a named Secret must still exist"
        );
        let sweep = sweep_of(&state, &key("team", "role-only"));
        assert_eq!(
            sweep.credentials,
            CredentialSource::WebIdentity {
                token_file: "/var/run/secrets/token".into(),
                role_arn: role.into()
            }
        );
        assert_eq!(sweep.role_arn(), Some(role));

        // A changed roleArn moves the Upstream to the other sweep.
        state.on_upstream(
            ALL,
            watcher::Event::Apply(upstream(
                "team",
                "role-only",
                json!({"region": "eu-west-1"}),
                json!({}),
            )),
        );
        let decisions = state.settle();
        assert!(decisions.contains(&Decision::Recheck(key("team", "role-only"))));
        assert_eq!(
            sweep_of(&state, &key("team", "role-only")).role_arn(),
            Some("arn:aws:iam::111111111111:role/pod")
        );
    }
}
