//! Running the real `upstream-discovery run` binary in the tests: as a ServiceAccount with the
//! rights the chart grants (not as admin), with its own namespaces, metrics port and log file.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use crate::support::{
    delete_namespace, fresh_namespace, install_crd, service_account_token, wait_for,
};
use crate::test_env::TestEnv;

/// The namespaces and identity of one test's daemon(s).
pub struct Setup {
    pub admin: Client,
    /// Where the daemon runs and writes Upstreams (its POD_NAMESPACE).
    pub write_ns: String,
    /// Where the test's Services live.
    pub service_ns: String,
    pub kubeconfig: PathBuf,
    cluster_role: String,
    /// The ServiceAccount's bearer token.
    token: String,
    dir: tempfile::TempDir,
}

impl Setup {
    /// Namespaces, a ServiceAccount, and RBAC as the chart grants it: read Services and
    /// Namespaces, record Events, full rights on Upstreams in the write namespace only (or
    /// everywhere with `upstreams_cluster_wide`, as in `service` mode), Leases in its namespace;
    /// and for function discovery (on by default), read Secrets and read and patch Upstreams in
    /// the watched namespace.
    pub async fn new(env: Arc<TestEnv>, purpose: &str, upstreams_cluster_wide: bool) -> Self {
        let admin = env.admin_client().await;
        install_crd(&admin).await;
        let write_ns = fresh_namespace(&admin, &format!("{purpose}-w")).await;
        let service_ns = fresh_namespace(&admin, &format!("{purpose}-s")).await;
        let account: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": "upstream-discovery"}}))
                .expect("sa");
        Api::<ServiceAccount>::namespaced(admin.clone(), &write_ns)
            .create(&PostParams::default(), &account)
            .await
            .expect("create service account");
        let subject = json!([{"kind": "ServiceAccount", "name": "upstream-discovery", "namespace": write_ns}]);
        let upstream_rule = json!({"apiGroups": ["gloo.solo.io"], "resources": ["upstreams"],
            "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]});

        let cluster_role = format!("e2e-{write_ns}");
        let mut cluster_rules = vec![
            json!({"apiGroups": [""], "resources": ["services", "namespaces"], "verbs": ["get", "list", "watch"]}),
            json!({"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]}),
            json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]}),
        ];
        if upstreams_cluster_wide {
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
        ];
        if !upstreams_cluster_wide {
            namespaced_rules.push(upstream_rule);
        }
        create(
            Api::<Role>::namespaced(admin.clone(), &write_ns),
            json!({"metadata": {"name": "upstream-discovery"}, "rules": namespaced_rules}),
        )
        .await;
        create(Api::<RoleBinding>::namespaced(admin.clone(), &write_ns), json!({
            "metadata": {"name": "upstream-discovery"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "upstream-discovery"},
            "subjects": subject,
        }))
        .await;

        if !upstreams_cluster_wide {
            grant_function_discovery(&admin, &service_ns, &write_ns).await;
        }

        let token = service_account_token(&admin, &write_ns, "upstream-discovery").await;
        let dir = tempfile::tempdir().expect("temp dir");
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, env.kubeconfig_yaml(&token)).expect("write kubeconfig");
        Self {
            admin,
            write_ns,
            service_ns,
            kubeconfig,
            cluster_role,
            token,
            dir,
        }
    }

    /// Function discovery's rights (as the chart grants them per watched namespace) in another
    /// namespace the daemon will watch.
    #[allow(dead_code)] // Used by the benchmark, whose daemon watches several namespaces.
    pub async fn grant_function_discovery(&self, namespace: &str) {
        grant_function_discovery(&self.admin, namespace, &self.write_ns).await;
    }

    /// The daemon's ServiceAccount token (for a client that acts as the daemon, e.g. a proxy).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Like [`Setup::start`], with the daemon talking to `server` (e.g. `http://127.0.0.1:PORT`,
    /// a fault proxy) instead of the API server, with the same ServiceAccount token.
    pub fn start_via(&self, server: &str, extra: &[&str]) -> Daemon {
        self.start_via_with_env(server, extra, &[])
    }

    /// [`Setup::start_via`] with environment variables, as [`Setup::start_with_env`].
    pub fn start_via_with_env(
        &self,
        server: &str,
        extra: &[&str],
        env: &[(String, String)],
    ) -> Daemon {
        let kubeconfig = self.dir.path().join(format!(
            "kubeconfig-{}",
            server.replace(|c: char| !c.is_ascii_alphanumeric(), "-")
        ));
        let yaml = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {server}\nusers:\n- name: user\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context: {{cluster: test, user: user}}\ncurrent-context: test\n",
            token = self.token,
        );
        std::fs::write(&kubeconfig, yaml).expect("write kubeconfig");
        Daemon::start_with_env(&kubeconfig, &self.write_ns, &self.run_args(extra), env)
    }

    /// Starts a daemon that watches the test's Service namespace and writes to its write
    /// namespace, with `extra` flags.
    pub fn start(&self, extra: &[&str]) -> Daemon {
        Daemon::start(&self.kubeconfig, &self.write_ns, &self.run_args(extra))
    }

    /// Like [`Setup::start`], with environment variables (e.g. `AWS_ENDPOINT_URL`).
    pub fn start_with_env(&self, extra: &[&str], env: &[(String, String)]) -> Daemon {
        Daemon::start_with_env(&self.kubeconfig, &self.write_ns, &self.run_args(extra), env)
    }

    fn run_args(&self, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "run".into(),
            "--watch-namespaces".into(),
            self.service_ns.clone(),
            "--lease-name".into(),
            "upstream-discovery".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    pub async fn cleanup(self) {
        let _ = Api::<ClusterRoleBinding>::all(self.admin.clone())
            .delete(&self.cluster_role, &DeleteParams::default())
            .await;
        let _ = Api::<ClusterRole>::all(self.admin.clone())
            .delete(&self.cluster_role, &DeleteParams::default())
            .await;
        delete_namespace(&self.admin, &self.service_ns).await;
        delete_namespace(&self.admin, &self.write_ns).await;
    }
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
    api.create(&PostParams::default(), &object)
        .await
        .expect("create RBAC object");
}

/// A running daemon process; killed if still running when dropped.
pub struct Daemon {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

impl Daemon {
    pub fn start(kubeconfig: &std::path::Path, namespace: &str, args: &[String]) -> Self {
        Self::start_with_env(kubeconfig, namespace, args, &[])
    }

    /// Like [`Daemon::start`], with `env` added to an environment cleared of every `AWS_*`
    /// variable of the test run (and of the instance metadata service), so that function
    /// discovery sees only what the test gives it.
    pub fn start_with_env(
        kubeconfig: &std::path::Path,
        namespace: &str,
        args: &[String],
        env: &[(String, String)],
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("daemon.log");
        let port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_upstream-discovery"));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("AWS_") {
                command.env_remove(name);
            }
        }
        let nowhere = dir.path().join("no-such-file");
        command
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", &nowhere)
            .env("AWS_SHARED_CREDENTIALS_FILE", &nowhere)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let child = command
            .args(args)
            .args([
                "--metrics-addr",
                &format!("127.0.0.1:{port}"),
                "--log-format",
                "json",
            ])
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAMESPACE", namespace)
            .env("POD_NAME", format!("daemon-{port}"))
            .env("RUST_LOG", "info,upstream_discovery=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("the daemon starts");
        Self {
            child,
            port,
            log,
            _dir: dir,
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET a path of the daemon's HTTP endpoint: (status, body), or None while it is not up.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        crate::support::http_get(&format!("127.0.0.1:{}", self.port), path).await
    }

    pub async fn wait_ready(&self) {
        wait_for(
            &format!("the daemon to be ready; its log:\n{}", self.logs()),
            || async { matches!(self.get("/readyz").await, Some((200, _))).then_some(()) },
        )
        .await;
    }

    /// The daemon's metrics as (name with labels → value).
    pub async fn metrics(&self) -> BTreeMap<String, f64> {
        let (status, body) = self.get("/metrics").await.expect("metrics endpoint up");
        assert_eq!(status, 200);
        body.lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.rsplit_once(' '))
            .filter_map(|(name, value)| Some((name.to_string(), value.parse().ok()?)))
            .collect()
    }

    /// Sum of every sample whose name (with labels) starts with `prefix`.
    pub async fn metric_sum(&self, prefix: &str) -> f64 {
        self.metrics()
            .await
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    }

    /// Writes the daemon made (all ops, successful ones).
    pub async fn writes(&self) -> f64 {
        let metrics = self.metrics().await;
        metrics
            .iter()
            .filter(|(name, _)| {
                name.starts_with("upstream_discovery_writes_total{")
                    && name.contains("result=\"success\"")
            })
            .map(|(_, v)| v)
            .sum()
    }

    /// p50 and p99 of `lag_seconds{source="kubernetes"}`, read off the histogram buckets (the
    /// upper bound of the bucket the quantile falls in, as Prometheus would bound it).
    pub async fn lag_quantiles(&self) -> (f64, f64) {
        let metrics = self.metrics().await;
        let mut buckets: Vec<(f64, f64)> = metrics
            .iter()
            .filter(|(name, _)| {
                name.starts_with("upstream_discovery_lag_seconds_bucket{")
                    && name.contains("source=\"kubernetes\"")
            })
            .filter_map(|(name, count)| {
                let le = name.split("le=\"").nth(1)?.split('"').next()?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, *count))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let total = buckets.last().map(|(_, count)| *count).unwrap_or_default();
        let quantile = |q: f64| {
            buckets
                .iter()
                .find(|(_, count)| *count >= q * total)
                .map(|(le, _)| *le)
                .unwrap_or(f64::NAN)
        };
        (quantile(0.5), quantile(0.99))
    }

    /// Waits until the daemon has nothing pending (after it is ready).
    pub async fn wait_idle(&self) {
        wait_for("the daemon to have no pending changes", || async {
            let metrics = self.metrics().await;
            (metrics.get("upstream_discovery_pending_changes") == Some(&0.0)).then_some(())
        })
        .await;
    }

    /// SIGTERM, and the time it took to exit; panics if it takes over `limit`.
    pub fn terminate(mut self, limit: Duration) -> Duration {
        let started = Instant::now();
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(
                    status.success(),
                    "exit status {status}; log:\n{}",
                    self.logs()
                );
                return started.elapsed();
            }
            assert!(
                started.elapsed() < limit,
                "still running {limit:?} after SIGTERM; log:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: the process dies without releasing anything.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
