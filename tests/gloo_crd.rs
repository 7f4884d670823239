//! The adoption and key-removal cases of the conformance corpus (those marked `glooCrd: true`)
//! against an Upstream CRD shaped like Gloo's (`tests/conformance/gloo-crd.yaml`): a cluster
//! that switches from Gloo's discovery keeps Gloo's CRD.
//!
//! The CRD is cluster-wide, so this is a test binary of its own with its own test environment
//! (the end-to-end tests' binary never runs at the same time). On first use it starts the
//! environment and puts Gloo's CRD in place of ours, updated in place (never deleted: that
//! would delete every Upstream); at the end it puts ours back, whatever the trials did.

#[allow(dead_code)]
#[path = "e2e/conformance.rs"]
mod conformance;
#[allow(dead_code)]
#[path = "conformance/corpus.rs"]
mod corpus;
#[allow(dead_code)]
#[path = "e2e/daemon.rs"]
mod daemon;
#[allow(dead_code)]
#[path = "e2e/scenario.rs"]
mod scenario;
#[allow(dead_code)]
#[path = "e2e/support.rs"]
mod support;
#[allow(dead_code)]
#[path = "e2e/test_env.rs"]
mod test_env;

use std::future::Future;
use std::sync::{Arc, OnceLock};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use libtest_mimic::{Arguments, Failed};
use serde_json::json;

use test_env::TestEnv;

static ENV: OnceLock<Result<Arc<TestEnv>, String>> = OnceLock::new();
static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();

const CRD_NAME: &str = "upstreams.gloo.solo.io";
/// Where the swap is checked: Gloo's CRD keeps an Upstream's status.
const PROBE_NAMESPACE: &str = "cf-gloo-crd-probe";

fn runtime() -> &'static tokio::runtime::Runtime {
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

/// The environment, started on first use with Gloo's CRD in place.
fn environment() -> Result<Arc<TestEnv>, String> {
    ENV.get_or_init(|| {
        let env = Arc::new(TestEnv::start()?);
        runtime().block_on(async {
            let admin = env.admin_client().await;
            put_gloo_crd(&admin).await
        })?;
        Ok(env)
    })
    .clone()
}

/// Runs one async test against the environment (the runner's entry point, as in tests/e2e).
fn run_test<F, Fut>(test: F) -> Result<(), Failed>
where
    F: FnOnce(Arc<TestEnv>) -> Fut,
    Fut: Future<Output = ()>,
{
    let env = environment()?;
    runtime().block_on(test(env));
    Ok(())
}

fn main() {
    let mut args = Arguments::from_args();
    args.test_threads.get_or_insert(4);
    let trials = conformance::trials(conformance::Crd::AsInstalled, |case| case.gloo_crd);
    let conclusion = libtest_mimic::run(&args, trials);
    let mut restored = Ok(());
    if let Some(Ok(env)) = ENV.get() {
        restored = runtime().block_on(async {
            let admin = env.admin_client().await;
            put_our_crd(&admin).await
        });
        env.stop();
        // The environment lives in a static, never dropped: its state directory (etcd's data)
        // would outlive the run.
        let _ = std::fs::remove_dir_all(&env.state_dir);
    }
    if let Err(error) = restored {
        eprintln!("error: could not put the project's CRD back: {error}");
        std::process::exit(1);
    }
    conclusion.exit();
}

/// Replaces the CRD in place (or creates it), never deleting it.
async fn replace_crd(
    admin: &Client,
    mut definition: CustomResourceDefinition,
) -> Result<(), String> {
    let crds = Api::<CustomResourceDefinition>::all(admin.clone());
    let existing = crds
        .get_opt(CRD_NAME)
        .await
        .map_err(|e| format!("get the CRD: {e}"))?;
    match existing {
        Some(existing) => {
            definition.metadata.resource_version = existing.metadata.resource_version;
            crds.replace(CRD_NAME, &PostParams::default(), &definition)
                .await
                .map_err(|e| format!("replace the CRD: {e}"))?;
        }
        None => {
            crds.create(&PostParams::default(), &definition)
                .await
                .map_err(|e| format!("create the CRD: {e}"))?;
        }
    }
    support::wait_until("the Upstream CRD to be established", || async {
        let crd = crds.get(CRD_NAME).await.map_err(|e| e.to_string())?;
        let established = crd
            .status
            .and_then(|status| status.conditions)
            .unwrap_or_default()
            .into_iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        established
            .then_some(())
            .ok_or_else(|| "not yet".to_string())
    })
    .await;
    Ok(())
}

/// Gloo's CRD in place, and served: an Upstream written with a status keeps it.
async fn put_gloo_crd(admin: &Client) -> Result<(), String> {
    let path = corpus::cases_dir().join("../gloo-crd.yaml");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let definition: CustomResourceDefinition =
        serde_saphyr::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    replace_crd(admin, definition).await?;

    support::fixed_namespace(admin, PROBE_NAMESPACE).await;
    let probes = support::upstream_api(admin, PROBE_NAMESPACE);
    let status = json!({"statuses": {PROBE_NAMESPACE: {"state": 1, "reportedBy": "gloo"}}});
    support::wait_until("Gloo's CRD to be served (a status kept)", || async {
        let _ = probes.delete("probe", &DeleteParams::default()).await;
        let probe = serde_json::from_value(json!({
            "apiVersion": "gloo.solo.io/v1", "kind": "Upstream",
            "metadata": {"name": "probe"},
            "spec": {"static": {"hosts": [{"addr": "10.0.0.1", "port": 80}]}},
            "status": status,
        }))
        .map_err(|e| e.to_string())?;
        let created = probes
            .create(&PostParams::default(), &probe)
            .await
            .map_err(|e| e.to_string())?;
        (created.data.get("status") == Some(&status))
            .then_some(())
            .ok_or_else(|| format!("the status was not kept: {:?}", created.data))
    })
    .await;
    support::delete_namespace(admin, PROBE_NAMESPACE).await;
    Ok(())
}

/// The project's own CRD back in place.
async fn put_our_crd(admin: &Client) -> Result<(), String> {
    replace_crd(admin, upstream_discovery::crd::definition()).await
}
