//! The benchmark's cluster: the test environment, the daemon's namespaces, ServiceAccount and
//! RBAC (the e2e tests' `Scenario`, as the chart grants them), the Services, and what the daemon
//! should write for them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::{stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Service;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde::de::DeserializeOwned;
use serde_json::json;
use upstream_discovery::crd::Upstream;
use upstream_discovery::translate::{translate_service, TranslateSettings};

use crate::prom::{RequestCounts, Samples};
use crate::scenario::Scenario;
use crate::support::fresh_namespace;
use crate::test_env::TestEnv;

/// Namespaces the Services are spread over.
pub const SERVICE_NAMESPACES: usize = 4;
/// Requests in flight while setting up (not measured): 50,000 Services in about a minute.
const SETUP_CONCURRENCY: usize = 64;
/// Objects per page of the benchmark's own lists (the daemon's page size too).
const LIST_PAGE: u32 = 500;
/// The annotation churn changes; its value is a revision number, unique in a run.
pub const REVISION_ANNOTATION: &str = "bench.upstream-discovery/revision";

pub struct Cluster {
    pub env: Arc<TestEnv>,
    pub setup: Scenario,
    /// The first is the Scenario's own.
    pub service_namespaces: Vec<String>,
}

impl Cluster {
    pub async fn start() -> Result<Self, String> {
        let env = Arc::new(tokio::task::block_in_place(TestEnv::start)?);
        let setup = Scenario::builder(env.clone(), "bench").build().await;
        let mut service_namespaces = vec![setup.service_ns.clone()];
        for _ in 1..SERVICE_NAMESPACES {
            let namespace = fresh_namespace(&setup.admin, "bench-s").await;
            setup.grant_function_discovery(&namespace).await;
            service_namespaces.push(namespace);
        }
        Ok(Self {
            env,
            setup,
            service_namespaces,
        })
    }

    pub fn admin(&self) -> &Client {
        &self.setup.admin
    }

    pub fn write_namespace(&self) -> &str {
        &self.setup.write_ns
    }

    /// A client that authenticates as the daemon's ServiceAccount.
    pub async fn daemon_client(&self) -> Client {
        self.env.client_with_token(self.setup.token()).await
    }

    /// LIST requests of one pass over what the daemon watches, pages of [`LIST_PAGE`]: its
    /// Upstreams (the write namespace's `upstreams`, and one empty page per Services namespace)
    /// and its Services (`services` spread over the Services namespaces, and the write
    /// namespace's one empty page).
    pub fn one_list_pass(&self, upstreams: usize, services: usize) -> ListPass {
        let pages = |objects: usize| objects.div_ceil(LIST_PAGE as usize).max(1);
        let spread = self.service_namespaces.len().max(1);
        ListPass {
            upstreams: pages(upstreams) + self.service_namespaces.len(),
            services: (0..spread)
                .map(|index| pages(services / spread + usize::from(index < services % spread)))
                .sum::<usize>()
                + 1,
        }
    }

    /// The arguments every daemon of the run gets, before the write limits.
    pub fn daemon_args(&self) -> Vec<String> {
        vec![
            "run".into(),
            "--watch-namespaces".into(),
            self.service_namespaces.join(","),
            "--lease-name".into(),
            "upstream-discovery".into(),
        ]
    }

    /// Creates `count` Services with two ports each, spread over the namespaces. What the API
    /// server adds and translation does not read (managedFields) is dropped: at 50,000 Services
    /// it would be most of what the benchmark holds.
    pub async fn create_services(&self, count: usize) -> Result<Vec<Service>, String> {
        let mut services: Vec<Service> = stream::iter(0..count)
            .map(|index| {
                let namespace = &self.service_namespaces[index % self.service_namespaces.len()];
                let api = Api::<Service>::namespaced(self.admin().clone(), namespace);
                async move {
                    let service = bench_service(index)?;
                    api.create(&PostParams::default(), &service)
                        .await
                        .map(slim)
                        .map_err(|e| format!("create Service {index}: {e}"))
                }
            })
            .buffer_unordered(SETUP_CONCURRENCY)
            .try_collect()
            .await?;
        services.sort_by_key(service_key);
        Ok(services)
    }

    /// The Services as they are now.
    pub async fn list_services(&self) -> Result<Vec<Service>, String> {
        let mut services = Vec::new();
        for namespace in &self.service_namespaces {
            let api = Api::<Service>::namespaced(self.admin().clone(), namespace);
            for_each_page(&api, "Services", |page| {
                services.extend(page.into_iter().map(slim));
            })
            .await?;
        }
        Ok(services)
    }

    /// What the daemon writes for `services` (the same translation, the same settings).
    pub fn desired_upstreams(&self, services: &[Service]) -> Vec<Upstream> {
        let settings = TranslateSettings::new(self.write_namespace());
        services
            .iter()
            .flat_map(|service| translate_service(service, &settings).upstreams)
            .collect()
    }

    fn upstream_api(&self) -> Api<Upstream> {
        Api::<Upstream>::namespaced(self.admin().clone(), self.write_namespace())
    }

    /// How many Upstreams the write namespace holds (a page at a time, nothing kept).
    pub async fn count_upstreams(&self) -> Result<usize, String> {
        let mut count = 0;
        for_each_page(&self.upstream_api(), "Upstreams", |page| {
            count += page.len()
        })
        .await?;
        Ok(count)
    }

    /// Checks that the write namespace holds exactly `expected`, with their labels, annotations
    /// and spec; the error names a few of the differences. Compared a page at a time, so the
    /// benchmark holds one page of what is stored, not 100,000 Upstreams.
    pub async fn check_upstreams(&self, expected: &[Upstream]) -> Result<(), String> {
        let mut wanted: HashMap<&str, &Upstream> = expected
            .iter()
            .filter_map(|upstream| Some((upstream.metadata.name.as_deref()?, upstream)))
            .collect();
        let mut problems = Vec::new();
        let mut unexpected = 0usize;
        for_each_page(&self.upstream_api(), "Upstreams", |page| {
            for got in page {
                let name = got.metadata.name.clone().unwrap_or_default();
                let problem = match wanted.remove(name.as_str()) {
                    None => {
                        unexpected += 1;
                        "not expected"
                    }
                    Some(want) if got.spec != want.spec => "spec",
                    Some(want) if got.metadata.labels != want.metadata.labels => "labels",
                    Some(want) if got.metadata.annotations != want.metadata.annotations => {
                        "annotations"
                    }
                    Some(_) => continue,
                };
                problems.push(format!("{name}: {problem}"));
            }
        })
        .await?;
        problems.extend(wanted.keys().map(|name| format!("{name}: missing")));
        if problems.is_empty() {
            return Ok(());
        }
        let shown: Vec<&str> = problems.iter().take(10).map(String::as_str).collect();
        Err(format!(
            "{} of {} Upstreams wrong ({unexpected} not expected): {}",
            problems.len(),
            expected.len(),
            shown.join("; ")
        ))
    }

    /// The API server's own metrics, read with the admin token.
    pub fn apiserver_requests(&self) -> Result<RequestCounts, String> {
        let output = std::process::Command::new(self.env.kubectl_path())
            .arg("--kubeconfig")
            .arg(self.env.get("KUBECONFIG"))
            .args(["get", "--raw", "/metrics"])
            .output()
            .map_err(|e| format!("kubectl get --raw /metrics: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "kubectl get --raw /metrics: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        let text = String::from_utf8_lossy(&output.stdout);
        Ok(RequestCounts::read(&Samples::parse(&text)))
    }
}

/// Changes one Service's revision annotation (a merge patch).
pub async fn set_revision(
    client: &Client,
    namespace: &str,
    name: &str,
    revision: u64,
) -> Result<(), String> {
    let patch = json!({"metadata": {"annotations": {REVISION_ANNOTATION: revision.to_string()}}});
    Api::<Service>::namespaced(client.clone(), namespace)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(|e| format!("patch Service {namespace}/{name}: {e}"))
}

/// Every object `api` lists, a page at a time: an unpaged list of 100,000 Upstreams is a
/// response of hundreds of MiB, in the API server and here.
async fn for_each_page<K>(
    api: &Api<K>,
    what: &str,
    mut each: impl FnMut(Vec<K>),
) -> Result<(), String>
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut params = ListParams::default().limit(LIST_PAGE);
    loop {
        let list = api
            .list(&params)
            .await
            .map_err(|e| format!("list {what}: {e}"))?;
        let next = list.metadata.continue_.filter(|token| !token.is_empty());
        each(list.items);
        match next {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(()),
        }
    }
}

/// A Service without its managedFields, which translation does not read.
fn slim(mut service: Service) -> Service {
    service.metadata.managed_fields = None;
    service
}

pub fn service_key(service: &Service) -> (String, String) {
    (
        service.metadata.namespace.clone().unwrap_or_default(),
        service.metadata.name.clone().unwrap_or_default(),
    )
}

/// A Service with an HTTP and a gRPC port, labels and annotations (copied into its Upstreams).
/// Headless and without a selector, so the controller manager's endpoints controllers do not
/// write 2 objects per Service in the background while the daemon is measured.
fn bench_service(index: usize) -> Result<Service, String> {
    let name = format!("svc-{index:05}");
    serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "labels": {"app": name, "tier": "bench"},
            "annotations": {REVISION_ANNOTATION: "0", "team": "bench"},
        },
        "spec": {
            "clusterIP": "None",
            "ports": [
                {"name": "http", "port": 80, "targetPort": 8080},
                {"name": "grpc", "port": 9000, "appProtocol": "grpc"},
            ],
        },
    }))
    .map_err(|e| format!("bench Service: {e}"))
}

/// Upstream names by Service, for the churn's bookkeeping.
pub fn upstream_names_by_service(
    upstreams: &[Upstream],
) -> BTreeMap<(String, String), Vec<String>> {
    let mut names: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for upstream in upstreams {
        let Some(kube) = upstream.spec.kube.as_ref() else {
            continue;
        };
        let key = (
            kube.service_namespace.clone().unwrap_or_default(),
            kube.service_name.clone().unwrap_or_default(),
        );
        names
            .entry(key)
            .or_default()
            .extend(upstream.metadata.name.clone());
    }
    names
}

/// LIST requests per resource: what one pass takes, or what a phase sent.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct ListPass {
    pub upstreams: usize,
    pub services: usize,
}
