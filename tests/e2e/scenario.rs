//! One test's world on the API server, and the daemon in it, built step by step:
//!
//! ```ignore
//! let scenario = Scenario::builder(env, "follow").build().await;
//! let daemon = scenario.daemon().args(&["--dry-run"]).ready().await;
//! // ... create Services in scenario.service_ns, check Upstreams in scenario.write_ns ...
//! daemon.terminate(EXIT_LIMIT);
//! scenario.cleanup().await;
//! ```
//!
//! A scenario has its own namespaces (so tests run side by side), the Upstream CRD installed,
//! and, unless the test installs the chart's own, the daemon's ServiceAccount with the rights the
//! chart grants and its token; the daemon runs as that ServiceAccount, not as admin.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use crate::daemon::Daemon;
use crate::support::{
    delete_namespace, fixed_namespace, fresh_namespace, install_crd, service_account_token,
};
use crate::test_env::TestEnv;

/// What [`Scenario::builder`] builds; see the builder's methods for the choices.
pub struct ScenarioBuilder {
    env: Arc<TestEnv>,
    purpose: String,
    account: Option<Rights>,
    others: Vec<String>,
    fixed: Option<(String, Vec<String>)>,
    keep_crd: bool,
}

/// Where the daemon's ServiceAccount may write Upstreams.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Rights {
    /// In the write namespace, as the chart grants in `fixed` write mode.
    WriteNamespace,
    /// Everywhere, as the chart grants in `service` write mode.
    ClusterWide,
}

/// The namespaces and identity of one test's daemon(s).
pub struct Scenario {
    pub env: Arc<TestEnv>,
    pub admin: Client,
    /// Where the daemon runs and writes Upstreams (its POD_NAMESPACE).
    pub write_ns: String,
    /// Where the test's Services live (the namespace the daemon watches).
    pub service_ns: String,
    /// The namespaces asked for with [`ScenarioBuilder::another_namespace`], in that order.
    pub others: Vec<String>,
    account: Option<Account>,
    _dir: tempfile::TempDir,
}

/// The scenario's ServiceAccount `upstream-discovery` in the write namespace.
struct Account {
    /// Bound to it, cluster-wide; deleted with the scenario.
    cluster_role: String,
    /// Its bearer token.
    token: String,
    /// A kubeconfig with that token for the API server.
    kubeconfig: PathBuf,
}

impl Scenario {
    /// A scenario named after the test's `purpose` (namespaces `e2e-<purpose>-w-…` and
    /// `e2e-<purpose>-s-…`), with the daemon's ServiceAccount holding the rights the chart
    /// grants in `fixed` write mode.
    pub fn builder(env: Arc<TestEnv>, purpose: &str) -> ScenarioBuilder {
        ScenarioBuilder {
            env,
            purpose: purpose.to_string(),
            account: Some(Rights::WriteNamespace),
            others: Vec::new(),
            fixed: None,
            keep_crd: false,
        }
    }
}

impl ScenarioBuilder {
    /// Rights on Upstreams everywhere, as the chart grants them in `service` write mode.
    pub fn upstreams_cluster_wide(mut self) -> Self {
        self.account = Some(Rights::ClusterWide);
        self
    }

    /// No ServiceAccount of the scenario's own: the test installs the chart, which brings one.
    pub fn without_account(mut self) -> Self {
        self.account = None;
        self
    }

    /// One more fresh namespace, `e2e-<purpose>-<suffix>-…`, in [`Scenario::others`].
    pub fn another_namespace(mut self, suffix: &str) -> Self {
        self.others.push(suffix.to_string());
        self
    }

    /// These namespaces instead of fresh ones (the conformance cases name theirs): `write` is
    /// the write namespace, the first of `watched` the service namespace and the rest
    /// [`Scenario::others`]; each is created, or emptied of Services and Upstreams an earlier run
    /// left, and function discovery's rights are granted in every watched one.
    pub fn fixed_namespaces(mut self, write: &str, watched: &[String]) -> Self {
        assert!(!watched.is_empty(), "at least one watched namespace");
        self.fixed = Some((write.to_string(), watched.to_vec()));
        self
    }

    /// Leaves the Upstream CRD as the test installed it (e.g. one shaped like Gloo's).
    pub fn keep_crd(mut self) -> Self {
        self.keep_crd = true;
        self
    }

    /// Installs the CRD, creates the namespaces and the ServiceAccount with its rights: read
    /// Services and Namespaces, record Events, full rights on Upstreams in the write namespace
    /// only (or everywhere, as in `service` mode), Leases in its namespace; and for function
    /// discovery (on by default), read Secrets, and read and patch Upstreams in the Service
    /// namespace.
    pub async fn build(self) -> Scenario {
        let Self {
            env,
            purpose,
            account,
            others,
            fixed,
            keep_crd,
        } = self;
        // Fresh namespaces other than the service namespace are the test's own business; fixed
        // ones are all watched.
        let watched_others = fixed.is_some();
        let admin = env.admin_client().await;
        if !keep_crd {
            install_crd(&admin).await;
        }
        let (write_ns, service_ns, other_namespaces) = match fixed {
            Some((write, watched)) => {
                for namespace in std::iter::once(&write).chain(&watched) {
                    fixed_namespace(&admin, namespace).await;
                }
                let mut watched = watched.into_iter();
                let service_ns = watched.next().expect("a watched namespace");
                (write, service_ns, watched.collect())
            }
            None => {
                let write_ns = fresh_namespace(&admin, &format!("{purpose}-w")).await;
                let service_ns = fresh_namespace(&admin, &format!("{purpose}-s")).await;
                let mut other_namespaces = Vec::new();
                for suffix in others {
                    other_namespaces
                        .push(fresh_namespace(&admin, &format!("{purpose}-{suffix}")).await);
                }
                (write_ns, service_ns, other_namespaces)
            }
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let account = match account {
            Some(rights) => {
                let cluster_role = grant_rights(&admin, &write_ns, rights).await;
                if rights == Rights::WriteNamespace {
                    grant_function_discovery(&admin, &service_ns, &write_ns).await;
                    if watched_others {
                        for namespace in &other_namespaces {
                            grant_function_discovery(&admin, namespace, &write_ns).await;
                        }
                    }
                }
                let token = service_account_token(&admin, &write_ns, "upstream-discovery").await;
                let kubeconfig = dir.path().join("kubeconfig");
                std::fs::write(&kubeconfig, env.kubeconfig_yaml(&token)).expect("write kubeconfig");
                Some(Account {
                    cluster_role,
                    token,
                    kubeconfig,
                })
            }
            None => None,
        };
        Scenario {
            env,
            admin,
            write_ns,
            service_ns,
            others: other_namespaces,
            account,
            _dir: dir,
        }
    }
}

impl Scenario {
    fn account(&self) -> &Account {
        self.account
            .as_ref()
            .expect("the scenario was built without_account: give the daemon a token")
    }

    /// The daemon's ServiceAccount token (for a client that acts as the daemon, e.g. a proxy).
    pub fn token(&self) -> &str {
        &self.account().token
    }

    /// A kubeconfig file for the API server with [`Scenario::token`].
    #[allow(dead_code)] // Used by the benchmark, which starts the daemon its own way.
    pub fn kubeconfig(&self) -> &Path {
        &self.account().kubeconfig
    }

    /// Function discovery's rights (as the chart grants them per watched namespace) in another
    /// namespace the daemon will watch.
    #[allow(dead_code)] // Used by the benchmark, whose daemon watches several namespaces.
    pub async fn grant_function_discovery(&self, namespace: &str) {
        grant_function_discovery(&self.admin, namespace, &self.write_ns).await;
    }

    /// A daemon of this scenario, to start: `upstream-discovery run --watch-namespaces
    /// <service_ns> --lease-name upstream-discovery` with POD_NAMESPACE the write namespace, as
    /// the scenario's ServiceAccount, talking to the API server.
    pub fn daemon(&self) -> DaemonBuilder<'_> {
        DaemonBuilder {
            scenario: self,
            args: vec![
                "run".into(),
                "--watch-namespaces".into(),
                self.service_ns.clone(),
                "--lease-name".into(),
                "upstream-discovery".into(),
            ],
            env: Vec::new(),
            server: None,
            token: None,
        }
    }

    /// Deletes what the scenario created: its ClusterRole and binding, and its namespaces (the
    /// controller manager collects what is in them).
    pub async fn cleanup(self) {
        if let Some(account) = &self.account {
            let _ = Api::<ClusterRoleBinding>::all(self.admin.clone())
                .delete(&account.cluster_role, &DeleteParams::default())
                .await;
            let _ = Api::<ClusterRole>::all(self.admin.clone())
                .delete(&account.cluster_role, &DeleteParams::default())
                .await;
        }
        for namespace in self.others.iter().rev() {
            delete_namespace(&self.admin, namespace).await;
        }
        delete_namespace(&self.admin, &self.service_ns).await;
        delete_namespace(&self.admin, &self.write_ns).await;
    }
}

/// A daemon to start; see [`Scenario::daemon`] for what it is by default.
pub struct DaemonBuilder<'a> {
    scenario: &'a Scenario,
    args: Vec<String>,
    env: Vec<(String, String)>,
    server: Option<String>,
    token: Option<String>,
}

impl DaemonBuilder<'_> {
    /// More flags, after those given so far.
    pub fn args(mut self, extra: &[&str]) -> Self {
        self.args.extend(extra.iter().map(|s| s.to_string()));
        self
    }

    /// Exactly these arguments (e.g. the chart's), instead of the scenario's.
    pub fn exact_args(mut self, args: Vec<String>) -> Self {
        self.args = args;
        self
    }

    /// An environment variable (e.g. `AWS_ENDPOINT_URL`); see [`Daemon::start`] for the rest.
    pub fn env(mut self, name: &str, value: impl Into<String>) -> Self {
        self.env.push((name.to_string(), value.into()));
        self
    }

    /// Talks to `server` (e.g. `http://127.0.0.1:PORT`, a fault proxy) instead of the API server,
    /// with the same token.
    pub fn via(mut self, server: &str) -> Self {
        self.server = Some(server.to_string());
        self
    }

    /// Authenticates with `token` (e.g. the chart's ServiceAccount's) instead of the scenario's.
    pub fn token(mut self, token: &str) -> Self {
        self.token = Some(token.to_string());
        self
    }

    /// Starts the daemon, without waiting for it.
    pub fn start(self) -> Daemon {
        let token = match &self.token {
            Some(token) => token.as_str(),
            None => self.scenario.token(),
        };
        let kubeconfig = match &self.server {
            Some(server) => kubeconfig_via(server, token),
            None => self.scenario.env.kubeconfig_yaml(token),
        };
        Daemon::start(&kubeconfig, &self.scenario.write_ns, &self.args, &self.env)
    }

    /// Starts the daemon and waits until it is ready.
    pub async fn ready(self) -> Daemon {
        let daemon = self.start();
        daemon.wait_ready().await;
        daemon
    }
}

/// A kubeconfig for `server` over plain HTTP (a test proxy), authenticating with `token`.
pub fn kubeconfig_via(server: &str, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {server}\nusers:\n- name: user\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context: {{cluster: test, user: user}}\ncurrent-context: test\n"
    )
}

/// The ServiceAccount `upstream-discovery` in `write_ns` with the chart's rights (see
/// [`ScenarioBuilder::build`], function discovery's Role apart); returns its ClusterRole's name.
async fn grant_rights(admin: &Client, write_ns: &str, rights: Rights) -> String {
    let account: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "upstream-discovery"}})).expect("sa");
    match Api::<ServiceAccount>::namespaced(admin.clone(), write_ns)
        .create(&PostParams::default(), &account)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(response)) if response.code == 409 => {}
        Err(error) => panic!("create service account: {error}"),
    }
    let subject =
        json!([{"kind": "ServiceAccount", "name": "upstream-discovery", "namespace": write_ns}]);
    let upstream_rule = json!({"apiGroups": ["gloo.solo.io"], "resources": ["upstreams"],
        "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]});

    let cluster_role = format!("e2e-{write_ns}");
    let mut cluster_rules = vec![
        json!({"apiGroups": [""], "resources": ["services", "namespaces"], "verbs": ["get", "list", "watch"]}),
        json!({"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]}),
        json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]}),
    ];
    if rights == Rights::ClusterWide {
        cluster_rules.push(upstream_rule.clone());
    }
    create(
        Api::<ClusterRole>::all(admin.clone()),
        json!({"metadata": {"name": cluster_role}, "rules": cluster_rules}),
    )
    .await;
    create(Api::<ClusterRoleBinding>::all(admin.clone()), json!({
        "metadata": {"name": cluster_role},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role},
        "subjects": subject,
    }))
    .await;
    let mut namespaced_rules = vec![
        json!({"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
        "verbs": ["get", "list", "watch", "create", "update", "patch"]}),
        // Gloo's Settings, read by default (as the chart grants).
        json!({"apiGroups": ["gloo.solo.io"], "resources": ["settings"], "verbs": ["get", "list", "watch"]}),
    ];
    if rights == Rights::WriteNamespace {
        namespaced_rules.push(upstream_rule);
    }
    create(
        Api::<Role>::namespaced(admin.clone(), write_ns),
        json!({"metadata": {"name": "upstream-discovery"}, "rules": namespaced_rules}),
    )
    .await;
    create(Api::<RoleBinding>::namespaced(admin.clone(), write_ns), json!({
        "metadata": {"name": "upstream-discovery"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "upstream-discovery"},
        "subjects": subject,
    }))
    .await;
    cluster_role
}

/// Read and patch Upstreams in `namespace`, for the ServiceAccount of `account_ns`.
async fn grant_function_discovery(admin: &Client, namespace: &str, account_ns: &str) {
    let subject =
        json!([{"kind": "ServiceAccount", "name": "upstream-discovery", "namespace": account_ns}]);
    let rules = json!([{"apiGroups": ["gloo.solo.io"], "resources": ["upstreams"],
        "verbs": ["get", "list", "watch", "patch"]}]);
    create(
        Api::<Role>::namespaced(admin.clone(), namespace),
        json!({"metadata": {"name": "upstream-discovery-functions"}, "rules": rules}),
    )
    .await;
    create(Api::<RoleBinding>::namespaced(admin.clone(), namespace), json!({
        "metadata": {"name": "upstream-discovery-functions"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "upstream-discovery-functions"},
        "subjects": subject,
    }))
    .await;
}

async fn create<K>(api: Api<K>, object: serde_json::Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let object: K = serde_json::from_value(object).expect("valid object");
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => {}
        // Fixed namespaces (see `fixed_namespaces`) may hold it from an earlier run.
        Err(kube::Error::Api(response)) if response.code == 409 => {}
        Err(error) => panic!("create RBAC object: {error}"),
    }
}
