//! Writes to the Kubernetes API: server-side apply and deletes of Upstreams, rate limited,
//! each classified into an outcome the engine can act on. No retry loop here: the engine
//! re-plans from fresh state before trying again, which is what a conflict needs anyway.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Client};

use crate::admission::{Refusal, RefusedWrite};
use crate::crd::{LambdaFunction, ReferenceGrant, Upstream};
use crate::metrics::WriteOp;
use crate::model::{
    is_owned, ErrorKind, UpstreamKey, DISCOVERY_MANAGERS, FIELD_MANAGER, LAMBDA_FIELD_MANAGER,
};
use crate::plan::{plan_fresh, removal_patch, Action, FieldPath, Fresh, GrantAction, UpdateReason};
use crate::reconcile::{Fence, NotLeader};

/// What became of one planned action.
#[derive(Debug)]
pub enum Outcome {
    /// The API server accepted the write and returned the object as stored.
    Written {
        op: WriteOp,
        upstream: Box<Upstream>,
    },
    /// The object is gone (deleted by us, or already gone).
    Deleted(UpstreamKey),
    /// An object of that name exists without our label: never touched.
    NotOwned(UpstreamKey),
    /// The object changed since we planned (HTTP 409, or a precondition failed): re-plan.
    Conflict(UpstreamKey),
    /// As `Conflict`, with the object as it is now: re-plan from it rather than wait for the
    /// watch to bring it (a lagging watch would otherwise repeat the same stale plan).
    Stale(Box<Upstream>),
    /// Read fresh because its fingerprint differed, and already as desired: nothing written;
    /// the object as it is, so the cache's fingerprint catches up.
    Unchanged(Box<Upstream>),
    /// `--dry-run`: logged, not written.
    DryRun,
    /// Not written, or abandoned in flight, because this replica's leadership is not current
    /// (see [`Fence`]): the new leader writes it, or this one once it leads again.
    Fenced,
    /// The write failed; `retry_after` is the server's hint (HTTP 429/503).
    Failed {
        op: WriteOp,
        kind: ErrorKind,
        retry_after: Option<Duration>,
        message: String,
        /// Set when admission control refused it (`kind` says how).
        refused: Option<Box<RefusedWrite>>,
    },
    /// What became of a ReferenceGrant write.
    Grant(GrantOutcome),
}

/// What became of a ReferenceGrant write: the same cases as an Upstream's, told apart so that
/// grant writes are never counted as Upstream writes.
#[derive(Debug)]
pub enum GrantOutcome {
    Written {
        op: WriteOp,
        grant: Box<ReferenceGrant>,
    },
    /// Gone (deleted by us, or already gone).
    Deleted(UpstreamKey),
    /// A grant of that name exists without our label: never touched.
    NotOwned(UpstreamKey),
    /// Changed or gone since planned: re-plan.
    Conflict(UpstreamKey),
    Failed {
        op: WriteOp,
        kind: ErrorKind,
        retry_after: Option<Duration>,
        message: String,
    },
}

/// Carries out planned actions against the API server.
#[derive(Clone)]
pub struct Applier {
    client: Client,
    limiter: Arc<DefaultDirectRateLimiter>,
    dry_run: bool,
    fence: Fence,
}

impl Applier {
    /// A writer limited to `qps` (bursts of `burst`) whose every request checks `fence`.
    pub fn new(
        client: Client,
        qps: NonZeroU32,
        burst: NonZeroU32,
        dry_run: bool,
        fence: Fence,
    ) -> Self {
        let quota = Quota::per_second(qps).allow_burst(burst);
        Self {
            client,
            limiter: Arc::new(RateLimiter::direct(quota)),
            dry_run,
            fence,
        }
    }

    /// Sends one write only while leadership is current, and abandons it (drops the request)
    /// at the instant leadership lapses, so no write of this replica can land after another
    /// replica may have taken over. Checked per request, after the rate limiter's wait.
    async fn fenced<T>(
        &self,
        write: impl std::future::Future<Output = kube::Result<T>>,
    ) -> Result<kube::Result<T>, NotLeader> {
        match self.fence.deadline()? {
            None => Ok(write.await),
            Some(deadline) => tokio::time::timeout_at(deadline, write)
                .await
                .map_err(|_| NotLeader),
        }
    }

    pub async fn apply(&self, action: &Action) -> Outcome {
        if self.dry_run {
            log_dry_run(action);
            return Outcome::DryRun;
        }
        self.limiter.until_ready().await;
        match action {
            Action::Create(desired) => self.create(desired).await,
            Action::Update {
                desired,
                uid,
                resource_version,
                reason,
                remove,
            } => {
                let set_values = matches!(
                    reason,
                    UpdateReason::Differs(_) | UpdateReason::ValueChanged
                );
                self.update(desired, uid, resource_version, remove, set_values)
                    .await
            }
            Action::Delete {
                namespace,
                name,
                uid,
                resource_version,
            } => {
                self.delete(
                    UpstreamKey::new(namespace.as_str(), name.as_str()),
                    uid,
                    resource_version,
                )
                .await
            }
            Action::Grant(action) => match self.write_grant(action).await {
                Ok(outcome) => Outcome::Grant(outcome),
                Err(NotLeader) => Outcome::Fenced,
            },
        }
    }

    /// A ReferenceGrant write: a plain create, a forced server-side apply of the whole spec, or
    /// a delete, each guarded like an Upstream's (uid and resourceVersion).
    async fn write_grant(&self, action: &GrantAction) -> Result<GrantOutcome, NotLeader> {
        let key = match action {
            GrantAction::Create(desired) | GrantAction::Update { desired, .. } => {
                UpstreamKey::of(&desired.metadata)
            }
            GrantAction::Delete {
                namespace, name, ..
            } => Some(UpstreamKey::new(namespace.as_str(), name.as_str())),
        };
        let Some(key) = key else {
            return Ok(GrantOutcome::Failed {
                op: WriteOp::Create,
                kind: ErrorKind::Invalid,
                retry_after: None,
                message: "the desired ReferenceGrant has no name or namespace".into(),
            });
        };
        let api: Api<ReferenceGrant> = Api::namespaced(self.client.clone(), &key.namespace);
        let (op, result) = match action {
            GrantAction::Create(desired) => {
                let params = PostParams {
                    field_manager: Some(FIELD_MANAGER.to_string()),
                    ..Default::default()
                };
                match self.fenced(api.create(&params, desired)).await? {
                    Err(error) if status_code(&error) == Some(409) => {
                        return Ok(match api.get_opt(&key.name).await {
                            Ok(Some(existing)) if !is_owned(existing.metadata.labels.as_ref()) => {
                                GrantOutcome::NotOwned(key)
                            }
                            _ => GrantOutcome::Conflict(key),
                        });
                    }
                    result => (WriteOp::Create, result.map(Some)),
                }
            }
            GrantAction::Update {
                desired,
                uid,
                resource_version,
            } => {
                let mut guarded = desired.clone();
                guarded.metadata.uid = Some(uid.clone());
                guarded.metadata.resource_version = Some(resource_version.clone());
                let params = PatchParams::apply(FIELD_MANAGER).force();
                let body = Patch::Apply(&guarded);
                let result = self.fenced(api.patch(&key.name, &params, &body)).await?;
                (WriteOp::Update, result.map(Some))
            }
            GrantAction::Delete {
                uid,
                resource_version,
                ..
            } => {
                let params = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: Some(uid.clone()),
                        resource_version: Some(resource_version.clone()),
                    }),
                    ..Default::default()
                };
                let result = self.fenced(api.delete(&key.name, &params)).await?;
                (WriteOp::Delete, result.map(|_| None))
            }
        };
        Ok(match result {
            Ok(Some(stored)) => GrantOutcome::Written {
                op,
                grant: Box::new(stored),
            },
            Ok(None) => GrantOutcome::Deleted(key),
            Err(error) if op == WriteOp::Delete && status_code(&error) == Some(404) => {
                GrantOutcome::Deleted(key)
            }
            Err(error) if matches!(status_code(&error), Some(404 | 409)) => {
                GrantOutcome::Conflict(key)
            }
            Err(error) => {
                let (kind, retry_after) = classify(&error);
                GrantOutcome::Failed {
                    op,
                    kind,
                    retry_after,
                    message: error.to_string(),
                }
            }
        })
    }

    /// Writes `spec.aws.lambdaFunctions` of an aws Upstream (usually a user's) and nothing else:
    /// a forced server-side apply under a field manager of its own, whose body holds only that
    /// list, so every other field keeps its value and its manager. Guarded by the uid and
    /// resourceVersion it was planned against: a deleted Upstream is never re-created, and a
    /// changed one is re-planned (`Conflict`).
    pub async fn apply_lambda_functions(
        &self,
        key: &UpstreamKey,
        uid: &str,
        resource_version: &str,
        functions: &[LambdaFunction],
    ) -> Outcome {
        let body = serde_json::json!({
            "apiVersion": "gloo.solo.io/v1",
            "kind": "Upstream",
            "metadata": {
                "name": &*key.name,
                "namespace": &*key.namespace,
                "uid": uid,
                "resourceVersion": resource_version,
            },
            "spec": {"aws": {"lambdaFunctions": functions}},
        });
        if self.dry_run {
            tracing::info!(op = "update", upstream = %key, %body, "dry run: would apply");
            return Outcome::DryRun;
        }
        self.limiter.until_ready().await;
        let params = PatchParams::apply(LAMBDA_FIELD_MANAGER).force();
        let api = self.api(&key.namespace);
        let Ok(result) = self
            .fenced(api.patch(&key.name, &params, &Patch::Apply(&body)))
            .await
        else {
            return Outcome::Fenced;
        };
        match result {
            Ok(stored) => Outcome::Written {
                op: WriteOp::Update,
                upstream: Box::new(stored),
            },
            Err(error) if matches!(status_code(&error), Some(404 | 409)) => {
                Outcome::Conflict(key.clone())
            }
            Err(error) => failed_from(WriteOp::Update, key, Some(uid), &error),
        }
    }

    /// Reads the object `desired` would be written over, fresh from the API server, and plans
    /// its exact write from it ([`plan_fresh`]): the cache keeps fingerprints, not objects.
    /// `Err` carries what became of it when there is nothing to write.
    pub async fn read_for_write(&self, desired: &Upstream) -> Result<Action, Outcome> {
        let Some(key) = UpstreamKey::of(&desired.metadata) else {
            return Ok(Action::Create(desired.clone()));
        };
        self.limiter.until_ready().await;
        let current = self
            .api(&key.namespace)
            .get_opt(&key.name)
            .await
            .map_err(|error| failed_from(WriteOp::Update, &key, None, &error))?;
        match plan_fresh(desired, current.as_ref(), &DISCOVERY_MANAGERS) {
            Fresh::Write(action) => Ok(*action),
            Fresh::NotOwned => Err(Outcome::NotOwned(key)),
            Fresh::Same => Err(match current {
                Some(current) => Outcome::Unchanged(Box::new(current)),
                None => Outcome::Conflict(key),
            }),
        }
    }

    fn api(&self, namespace: &str) -> Api<Upstream> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// A plain create (POST): it fails with 409 when any object of that name exists, so it never
    /// merges into an object that appeared after the cache last saw the name. Server-side apply
    /// would: an unlabelled object whose fields do not overlap ours raises no conflict.
    async fn create(&self, desired: &Upstream) -> Outcome {
        let Some(key) = UpstreamKey::of(&desired.metadata) else {
            return failed(
                WriteOp::Create,
                ErrorKind::Invalid,
                None,
                "the desired Upstream has no name or namespace".into(),
            );
        };
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..Default::default()
        };
        let api = self.api(&key.namespace);
        let Ok(result) = self.fenced(api.create(&params, desired)).await else {
            return Outcome::Fenced;
        };
        match result {
            Ok(stored) => Outcome::Written {
                op: WriteOp::Create,
                upstream: Box::new(stored),
            },
            Err(error) if status_code(&error) == Some(409) => self.classify_conflict(key).await,
            Err(error) => failed_from(WriteOp::Create, &key, None, &error),
        }
    }

    /// Removes the stale fields (a JSON merge patch with nulls), then, when a value differs,
    /// server-side applies `desired` with force (we take back the fields we manage, which is how
    /// an Upstream written by Gloo's discovery is adopted). Both are guarded by the uid and the
    /// resourceVersion we planned against, so an object replaced or changed in the meantime is
    /// never overwritten but re-planned.
    async fn update(
        &self,
        desired: &Upstream,
        uid: &str,
        resource_version: &str,
        remove: &[FieldPath],
        set_values: bool,
    ) -> Outcome {
        let Some(key) = UpstreamKey::of(&desired.metadata) else {
            return failed(
                WriteOp::Update,
                ErrorKind::Invalid,
                None,
                "the desired Upstream has no name or namespace".into(),
            );
        };
        let mut resource_version = resource_version.to_string();
        if !remove.is_empty() {
            let mut patch = removal_patch(remove);
            if let Some(object) = patch.as_object_mut() {
                let metadata = object
                    .entry("metadata")
                    .or_insert_with(|| serde_json::json!({}));
                if let Some(metadata) = metadata.as_object_mut() {
                    metadata.insert("uid".into(), uid.into());
                    metadata.insert("resourceVersion".into(), resource_version.clone().into());
                }
            }
            let params = PatchParams {
                field_manager: Some(FIELD_MANAGER.to_string()),
                ..Default::default()
            };
            let api = self.api(&key.namespace);
            let Ok(result) = self
                .fenced(api.patch(&key.name, &params, &Patch::Merge(&patch)))
                .await
            else {
                return Outcome::Fenced;
            };
            match result {
                Ok(patched) if !set_values => {
                    return Outcome::Written {
                        op: WriteOp::Update,
                        upstream: Box::new(patched),
                    }
                }
                Ok(patched) => {
                    resource_version = patched.metadata.resource_version.unwrap_or_default();
                }
                Err(error) if status_code(&error) == Some(404) => return Outcome::Conflict(key),
                Err(error) if status_code(&error) == Some(409) => return self.refreshed(key).await,
                Err(error) => return failed_from(WriteOp::Update, &key, Some(uid), &error),
            }
            self.limiter.until_ready().await;
        }
        let mut guarded = desired.clone();
        guarded.metadata.uid = Some(uid.to_string());
        guarded.metadata.resource_version = Some(resource_version);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let api = self.api(&key.namespace);
        let Ok(result) = self
            .fenced(api.patch(&key.name, &params, &Patch::Apply(&guarded)))
            .await
        else {
            return Outcome::Fenced;
        };
        match result {
            Ok(stored) => Outcome::Written {
                op: WriteOp::Update,
                upstream: Box::new(stored),
            },
            Err(error) if status_code(&error) == Some(404) => Outcome::Conflict(key),
            Err(error) if status_code(&error) == Some(409) => self.refreshed(key).await,
            Err(error) => failed_from(WriteOp::Update, &key, Some(uid), &error),
        }
    }

    async fn delete(&self, key: UpstreamKey, uid: &str, resource_version: &str) -> Outcome {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: Some(resource_version.to_string()),
            }),
            ..Default::default()
        };
        let api = self.api(&key.namespace);
        let Ok(result) = self.fenced(api.delete(&key.name, &params)).await else {
            return Outcome::Fenced;
        };
        match result {
            Ok(_) => Outcome::Deleted(key),
            Err(error) if status_code(&error) == Some(404) => Outcome::Deleted(key),
            Err(error) if status_code(&error) == Some(409) => self.refreshed(key).await,
            Err(error) => failed_from(WriteOp::Delete, &key, Some(uid), &error),
        }
    }

    /// A write refused on its precondition: the object as it is now, to re-plan from.
    async fn refreshed(&self, key: UpstreamKey) -> Outcome {
        match self.api(&key.namespace).get_opt(&key.name).await {
            Ok(Some(current)) => Outcome::Stale(Box::new(current)),
            Ok(None) | Err(_) => Outcome::Conflict(key),
        }
    }

    /// A refused create: either someone else's object holds the name, or ours raced with us.
    async fn classify_conflict(&self, key: UpstreamKey) -> Outcome {
        match self.api(&key.namespace).get_opt(&key.name).await {
            Ok(Some(existing)) if !is_owned(existing.metadata.labels.as_ref()) => {
                Outcome::NotOwned(key)
            }
            Ok(_) => Outcome::Conflict(key),
            Err(error) => failed_from(WriteOp::Create, &key, None, &error),
        }
    }
}

/// For the loops' unit tests: a client pointed at a closed local port and a dry-run writer on
/// it, so that nothing is ever sent.
#[cfg(test)]
pub(crate) fn offline() -> (Client, Applier) {
    let config = kube::Config::new("http://127.0.0.1:9".parse().expect("url"));
    let client = Client::try_from(config).expect("client");
    let applier = Applier::new(
        client.clone(),
        NonZeroU32::MIN,
        NonZeroU32::MIN,
        true,
        Fence::always(),
    );
    (client, applier)
}

fn log_dry_run(action: &Action) {
    match action {
        Action::Create(desired) => {
            let body = serde_json::to_string(desired).unwrap_or_default();
            tracing::info!(op = "create", namespace = ?desired.metadata.namespace, name = ?desired.metadata.name, %body, "dry run: would apply");
        }
        Action::Update {
            desired,
            reason,
            remove,
            ..
        } => {
            let body = serde_json::to_string(desired).unwrap_or_default();
            let removed: Vec<String> = remove.iter().map(ToString::to_string).collect();
            tracing::info!(op = "update", namespace = ?desired.metadata.namespace, name = ?desired.metadata.name, ?reason, ?removed, %body, "dry run: would apply");
        }
        Action::Delete {
            namespace, name, ..
        } => {
            tracing::info!(op = "delete", %namespace, %name, "dry run: would delete");
        }
        Action::Grant(GrantAction::Create(desired) | GrantAction::Update { desired, .. }) => {
            let body = serde_json::to_string(desired).unwrap_or_default();
            tracing::info!(namespace = ?desired.metadata.namespace, name = ?desired.metadata.name, %body, "dry run: would apply ReferenceGrant");
        }
        Action::Grant(GrantAction::Delete {
            namespace, name, ..
        }) => {
            tracing::info!(%namespace, %name, "dry run: would delete ReferenceGrant");
        }
    }
}

pub fn status_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

fn failed(op: WriteOp, kind: ErrorKind, retry_after: Option<Duration>, message: String) -> Outcome {
    Outcome::Failed {
        op,
        kind,
        retry_after,
        message,
        refused: None,
    }
}

/// A failed write of Upstream `key` (`uid` when it exists), told apart from admission control's
/// refusals.
fn failed_from(op: WriteOp, key: &UpstreamKey, uid: Option<&str>, error: &kube::Error) -> Outcome {
    let (kind, retry_after) = classify(error);
    let refused = Refusal::from_error(error).map(|refusal| {
        Box::new(RefusedWrite {
            upstream: key.clone(),
            uid: uid.map(str::to_string),
            refusal,
        })
    });
    Outcome::Failed {
        op,
        kind,
        retry_after,
        message: error.to_string(),
        refused,
    }
}

/// The kind of a failed request, and the server's Retry-After hint. Admission control's
/// refusals come first: a webhook may answer 403 or 422, which is no missing right nor an
/// invalid object.
fn classify(error: &kube::Error) -> (ErrorKind, Option<Duration>) {
    let admission = Refusal::from_error(error).map(|refusal| refusal.kind);
    match error {
        kube::Error::Api(status) => {
            let hint = status
                .details
                .as_ref()
                .map(|details| details.retry_after_seconds)
                .filter(|seconds| *seconds > 0)
                .map(|seconds| Duration::from_secs(u64::from(seconds)));
            let kind = admission.unwrap_or(match status.code {
                429 => ErrorKind::Throttled,
                403 => ErrorKind::Forbidden,
                422 => ErrorKind::Invalid,
                code if code >= 500 => ErrorKind::ServerError,
                _ => ErrorKind::ApiError,
            });
            (kind, hint)
        }
        _ => (ErrorKind::Transport, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    fn applier(fence: Fence) -> Applier {
        let (client, _) = offline();
        Applier::new(client, NonZeroU32::MIN, NonZeroU32::MIN, false, fence)
    }

    fn api_error(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            message: message.into(),
            ..Default::default()
        }))
    }

    #[test]
    fn admission_refusals_are_told_apart_from_rbac_and_invalid_objects() {
        let rbac = api_error(403, "upstreams.gloo.solo.io \"a\" is forbidden: User \"u\" cannot delete resource \"upstreams\"");
        assert_eq!(classify(&rbac).0, ErrorKind::Forbidden);
        let webhook = api_error(
            403,
            "admission webhook \"w.example.com\" denied the request: no",
        );
        assert_eq!(classify(&webhook).0, ErrorKind::AdmissionDenied);
        let policy = api_error(422, "upstreams.gloo.solo.io \"a\" is invalid: ValidatingAdmissionPolicy 'p' with binding 'b' denied request: no");
        assert_eq!(classify(&policy).0, ErrorKind::AdmissionDenied);
        let down = api_error(500, "Internal error occurred: failed calling webhook \"w.example.com\": context deadline exceeded");
        assert_eq!(classify(&down).0, ErrorKind::AdmissionUnavailable);
        assert_eq!(
            classify(&api_error(500, "etcdserver: leader changed")).0,
            ErrorKind::ServerError
        );

        let key = UpstreamKey::new("gloo-system", "a");
        let Outcome::Failed {
            kind,
            refused: Some(refused),
            ..
        } = failed_from(WriteOp::Delete, &key, Some("u1"), &webhook)
        else {
            panic!("a refused write");
        };
        assert_eq!(kind, ErrorKind::AdmissionDenied);
        assert_eq!(
            (refused.upstream, refused.uid.as_deref()),
            (key.clone(), Some("u1"))
        );
        assert_eq!(refused.refusal.by, "w.example.com");
        let Outcome::Failed { refused: None, .. } = failed_from(WriteOp::Delete, &key, None, &rbac)
        else {
            panic!("RBAC's refusal is no admission's");
        };
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_needs_current_leadership_and_is_abandoned_when_it_lapses() {
        let fence = Fence::closed();
        let writer = applier(fence.clone());
        let never = || std::future::pending::<kube::Result<()>>();
        assert_eq!(writer.fenced(never()).await.err(), Some(NotLeader));

        let deadline = Instant::now() + Duration::from_secs(10);
        fence.extend_until(deadline);
        assert_eq!(
            writer
                .fenced(async { Ok(7) })
                .await
                .ok()
                .and_then(Result::ok),
            Some(7)
        );
        // A request that hangs is dropped at the instant leadership lapses, not later.
        assert_eq!(writer.fenced(never()).await.err(), Some(NotLeader));
        assert_eq!(Instant::now(), deadline);

        let unfenced = applier(Fence::always());
        assert!(unfenced.fenced(async { Ok(()) }).await.is_ok());
    }
}
