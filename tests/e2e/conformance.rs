//! The conformance corpus (`tests/conformance/`) run through the daemon on the API server: one
//! trial per case file. For each case: its namespaces (fixed names, emptied of what an earlier
//! run left), the daemon's ServiceAccount with the chart's rights, then its steps in order, the
//! daemon started after the `beforeDaemon` ones. After each step the runner polls until every
//! Upstream of the write namespace is exactly what the case expects. `tests/gloo_crd.rs` runs
//! some of the same cases with a CRD shaped like Gloo's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use libtest_mimic::Trial;
use serde_json::Value;

use crate::corpus::{kind, Case, EventRef, Step};
use crate::daemon::Daemon;
use crate::scenario::Scenario;
use crate::support::compare::compare_upstreams;
use crate::support::{
    delete_namespace, event_reasons, fixed_namespace, list_upstreams, upstream_api,
    wait_until_within, DEADLINE,
};
use crate::test_env::TestEnv;

/// SIGTERM must end the daemon within this.
const EXIT_LIMIT: Duration = Duration::from_secs(5);
/// Gloo's field manager: how Gloo's discovery created the Upstreams it wrote.
const GLOO_MANAGER: &str = "discovery";

/// Which Upstream CRD the cases run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crd {
    /// The project's own, installed (or updated) by each case.
    Ours,
    /// Whatever the test binary installed (`tests/gloo_crd.rs`: one shaped like Gloo's).
    AsInstalled,
}

/// One trial per case of the corpus that runs on the daemon, named `conformance::<file>`;
/// `only` filters the cases. The `offlineOnly` ones are left out, not listed as ignored: they
/// run through `render` in `tests/conformance.rs`, where they can.
pub fn trials(crd: Crd, only: fn(&Case) -> bool) -> Vec<Trial> {
    let cases = match crate::corpus::load_all() {
        Ok(cases) => cases,
        Err(error) => {
            return vec![Trial::test("conformance::every_case_reads", move || {
                Err(error.into())
            })]
        }
    };
    cases
        .into_iter()
        .filter(|case| case.runs_on_the_daemon() && only(case))
        .map(|case| {
            Trial::test(format!("conformance::{}", case.name), move || {
                crate::run_test(move |env| run_case(env, case, crd))
            })
        })
        .collect()
}

/// What the runner last saw of each Upstream: (uid, resourceVersion).
type Seen = BTreeMap<String, (String, String)>;

async fn run_case(env: Arc<TestEnv>, case: Case, crd: Crd) {
    let watched = case.watched_namespaces();
    let mut builder =
        Scenario::builder(env, &case.name).fixed_namespaces(&case.write_namespace, &watched);
    if crd == Crd::AsInstalled {
        builder = builder.keep_crd();
    }
    let scenario = builder.build().await;
    let admin = scenario.admin.clone();
    let unwatched: Vec<String> = case
        .namespaces()
        .into_iter()
        .filter(|ns| ns != &case.write_namespace && !watched.contains(ns))
        .collect();
    for namespace in &unwatched {
        fixed_namespace(&admin, namespace).await;
    }

    let mut args = vec![
        "run".to_string(),
        "--write-namespace".into(),
        case.write_namespace.clone(),
        "--watch-namespaces".into(),
        watched.join(","),
        "--lease-name".into(),
        "upstream-discovery".into(),
    ];
    for (key, value) in &case.global_annotations {
        args.push("--global-annotations".into());
        args.push(format!("{key}={value}"));
    }
    args.extend(case.daemon_args.iter().cloned());

    let mut daemon: Option<Daemon> = None;
    let mut seen = Seen::new();
    for (index, step) in case.steps.iter().enumerate() {
        if !step.before_daemon && daemon.is_none() {
            daemon = Some(scenario.daemon().exact_args(args.clone()).ready().await);
        }
        let context = format!(
            "case {} step {} (rule: {})",
            case.name,
            index + 1,
            case.rule
        );
        let log = || log_tail(daemon.as_ref());
        let written = make_changes(&admin, step).await;
        let changed_at = std::time::Instant::now();
        let deadline = step.deadline_seconds.map_or(DEADLINE, Duration::from_secs);
        // Events first, then the Upstreams, in each poll: a step whose Upstreams are right from
        // the start (an object left alone) is checked after the daemon has said it saw it.
        let what = format!(
            "{context}: {}exactly the expected Upstreams in {}",
            if step.events.is_empty() {
                ""
            } else {
                "the expected Events and "
            },
            case.write_namespace
        );
        let found = wait_until_within(deadline, &what, || async {
            let mut missing = Vec::new();
            for event in &step.events {
                if let Err(reason) = event_recorded(&admin, event).await {
                    missing.push(reason);
                }
            }
            let found = list_upstreams(&admin, &case.write_namespace, None).await?;
            let difference = compare_upstreams(&found, &step.expect).err();
            if missing.is_empty() && difference.is_none() {
                return Ok(found);
            }
            missing.extend(difference);
            Err(format!(
                "{}\n{}",
                missing.join("\n"),
                log_tail(daemon.as_ref())
            ))
        })
        .await;
        // How fast each step converged, for the README's figures (polled every 250 ms).
        eprintln!(
            "conformance {} step {}: converged {:?} after its changes",
            case.name,
            index + 1,
            changed_at.elapsed()
        );
        let now: Seen = found
            .iter()
            .map(|u| {
                let field = |pointer: &str| {
                    u.pointer(pointer)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string()
                };
                (
                    field("/metadata/name"),
                    (field("/metadata/uid"), field("/metadata/resourceVersion")),
                )
            })
            .collect();
        for name in &step.same_uid {
            assert_eq!(
                seen.get(name).map(|(uid, _)| uid),
                now.get(name).map(|(uid, _)| uid),
                "{context}: {name} must keep its UID (updated in place, not re-created)\n{}",
                log()
            );
        }
        let mut before = seen.clone();
        before.extend(written);
        for name in &step.unchanged {
            assert_eq!(
                before.get(name),
                now.get(name),
                "{context}: {name} must not be written at all\n{}",
                log()
            );
        }
        seen = now;
    }
    if let Some(daemon) = daemon {
        daemon.terminate(EXIT_LIMIT);
    }
    for namespace in &unwatched {
        delete_namespace(&admin, namespace).await;
    }
    scenario.cleanup().await;
}

/// Applies, patches and deletes what the step says, in that order; returns what the writes of
/// Upstreams left (uid, resourceVersion), by name.
async fn make_changes(admin: &Client, step: &Step) -> Seen {
    let mut written = Seen::new();
    let manager = step.field_manager.as_deref().unwrap_or(GLOO_MANAGER);
    for object in &step.apply {
        let namespace = object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default();
        match kind(object) {
            "Namespace" => {
                // The runner made it already: this sets its labels and annotations.
                let namespace: Namespace = from_case(object);
                Api::<Namespace>::all(admin.clone())
                    .patch(
                        namespace.metadata.name.as_deref().unwrap_or_default(),
                        &PatchParams::default(),
                        &Patch::Merge(&namespace),
                    )
                    .await
                    .unwrap_or_else(|e| panic!("label the namespace {object}: {e}"));
            }
            "Service" => create_or_replace_service(admin, namespace, from_case(object)).await,
            "Upstream" => {
                // Gloo's discovery writes with a plain create (POST), under its own manager.
                let upstream: DynamicObject = from_case(object);
                let params = PostParams {
                    field_manager: Some(manager.to_string()),
                    ..Default::default()
                };
                let created = upstream_api(admin, namespace)
                    .create(&params, &upstream)
                    .await
                    .unwrap_or_else(|e| panic!("create Upstream {object}: {e}"));
                record(&mut written, &created);
            }
            other => panic!("the runner cannot apply a {other}"),
        }
    }
    for patch in &step.patch {
        let params = PatchParams {
            field_manager: Some(patch.field_manager.clone()),
            ..Default::default()
        };
        match patch.kind.as_str() {
            "Upstream" => {
                let patched = upstream_api(admin, &patch.namespace)
                    .patch(&patch.name, &params, &Patch::Merge(&patch.merge))
                    .await
                    .unwrap_or_else(|e| panic!("patch Upstream {}: {e}", patch.name));
                record(&mut written, &patched);
            }
            "Service" => {
                Api::<Service>::namespaced(admin.clone(), &patch.namespace)
                    .patch(&patch.name, &params, &Patch::Merge(&patch.merge))
                    .await
                    .unwrap_or_else(|e| panic!("patch Service {}: {e}", patch.name));
            }
            other => panic!("the runner cannot patch a {other}"),
        }
    }
    for object in &step.delete {
        let deleted = match object.kind.as_str() {
            "Service" => Api::<Service>::namespaced(admin.clone(), &object.namespace)
                .delete(&object.name, &DeleteParams::default())
                .await
                .map(|_| ()),
            "Upstream" => upstream_api(admin, &object.namespace)
                .delete(&object.name, &DeleteParams::default())
                .await
                .map(|_| ()),
            other => panic!("the runner cannot delete a {other}"),
        };
        deleted.unwrap_or_else(|e| panic!("delete {} {}: {e}", object.kind, object.name));
    }
    written
}

/// The last lines of the daemon's log, for a failure message.
fn log_tail(daemon: Option<&Daemon>) -> String {
    let Some(daemon) = daemon else {
        return "(the daemon is not running yet)".to_string();
    };
    let logs = daemon.logs();
    let lines: Vec<&str> = logs.lines().collect();
    let tail = lines[lines.len().saturating_sub(40)..].join("\n");
    format!("--- the daemon's last log lines ---\n{tail}")
}

fn from_case<T: serde::de::DeserializeOwned>(object: &Value) -> T {
    serde_json::from_value(object.clone())
        .unwrap_or_else(|e| panic!("the case's object is not valid: {e}: {object}"))
}

fn record(written: &mut Seen, upstream: &DynamicObject) {
    written.insert(
        upstream.metadata.name.clone().unwrap_or_default(),
        (
            upstream.metadata.uid.clone().unwrap_or_default(),
            upstream
                .metadata
                .resource_version
                .clone()
                .unwrap_or_default(),
        ),
    );
}

/// Creates the Service, or replaces the one there with it (the case's object is the whole
/// Service: what it leaves out goes). The cluster IPs the server allocated are kept, since
/// they cannot change.
async fn create_or_replace_service(admin: &Client, namespace: &str, mut service: Service) {
    let services = Api::<Service>::namespaced(admin.clone(), namespace);
    let name = service.metadata.name.clone().unwrap_or_default();
    let existing = services
        .get_opt(&name)
        .await
        .unwrap_or_else(|e| panic!("get Service {name}: {e}"));
    let result = match existing {
        None => services.create(&PostParams::default(), &service).await,
        Some(existing) => {
            service.metadata.resource_version = existing.metadata.resource_version;
            if let (Some(spec), Some(old)) = (service.spec.as_mut(), existing.spec) {
                spec.cluster_ip = spec.cluster_ip.take().or(old.cluster_ip);
                spec.cluster_ips = spec.cluster_ips.take().or(old.cluster_ips);
            }
            services
                .replace(&name, &PostParams::default(), &service)
                .await
        }
    };
    result.unwrap_or_else(|e| panic!("create or replace Service {namespace}/{name}: {e}"));
}

/// Whether an Event `event.reason` about the object was recorded; if not, what there is.
async fn event_recorded(admin: &Client, event: &EventRef) -> Result<(), String> {
    let reasons = event_reasons(admin, &event.namespace, &event.kind, &event.name).await?;
    if reasons.contains(&event.reason) {
        Ok(())
    } else {
        Err(format!(
            "no {} Event on {} {}/{}; its Events: {reasons:?}",
            event.reason, event.kind, event.namespace, event.name
        ))
    }
}
