//! The Helm chart against the real API server: its rendered manifests applied with
//! `kubectl apply --server-side` (real schema validation), the rights they give the daemon's
//! ServiceAccount checked with `kubectl auth can-i --as`, and the daemon run with the chart's
//! arguments and that ServiceAccount's token, discovering a Service end to end.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Service;
use kube::api::PostParams;
use kube::Api;
use serde_json::{json, Value};
use upstream_discovery::crd::Upstream;

use crate::scenario::Scenario;
use crate::support::{service_account_token, wait_for};
use crate::test_env::TestEnv;

const CHART: &str = "deploy/helm/upstream-discovery";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One release of the chart in a test namespace: rendered with the API server's own
/// capabilities (`--dry-run=server`), applied server-side, deleted at the end.
pub struct Release {
    env: Arc<TestEnv>,
    /// The release (and ServiceAccount) namespace.
    pub namespace: String,
    /// The release's full name: ServiceAccount, ClusterRole, Lease.
    pub fullname: String,
    yaml: String,
    file: tempfile::NamedTempFile,
}

impl Release {
    /// Renders the chart as release `<namespace>` in `namespace` with `values` (helm flags).
    pub fn render(env: &Arc<TestEnv>, namespace: &str, values: &[&str]) -> Self {
        let output = Command::new(env.get("HELM"))
            .current_dir(repo())
            .args(["template", namespace, CHART, "--namespace", namespace])
            .args(["--kubeconfig", env.get("KUBECONFIG"), "--dry-run=server"])
            .args(values)
            .output()
            .expect("helm runs");
        assert!(
            output.status.success(),
            "helm template {values:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let yaml = String::from_utf8(output.stdout).expect("utf-8");
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        std::io::Write::write_all(&mut file, yaml.as_bytes()).expect("write manifests");
        Self {
            env: env.clone(),
            namespace: namespace.to_string(),
            fullname: format!("{namespace}-upstream-discovery"),
            yaml,
            file,
        }
    }

    fn path(&self) -> &str {
        self.file.path().to_str().expect("utf-8 path")
    }

    /// `kubectl apply --server-side`, as the admin.
    pub fn apply(&self) {
        self.env.kubectl(&[
            "apply",
            "--server-side",
            "--field-manager=e2e-chart",
            "-f",
            self.path(),
        ]);
    }

    /// The documents that hold something (empty ones are left out).
    fn documents(&self) -> Vec<Value> {
        serde_saphyr::from_multiple(&self.yaml).expect("YAML")
    }

    fn find(&self, kind: &str) -> Value {
        self.documents()
            .into_iter()
            .find(|d| d["kind"].as_str() == Some(kind))
            .unwrap_or_else(|| panic!("no {kind} rendered"))
    }

    /// `kubectl auth can-i VERB RESOURCE` as the release's ServiceAccount; `namespace` None is
    /// `--all-namespaces`.
    fn can_i(&self, verb: &str, resource: &str, namespace: Option<&str>) -> bool {
        let who = format!("system:serviceaccount:{}:{}", self.namespace, self.fullname);
        let mut command = Command::new(self.env.kubectl_path());
        command
            .args(["--kubeconfig", self.env.get("KUBECONFIG")])
            .args(["auth", "can-i", verb, resource, "--as", &who]);
        match namespace {
            Some(namespace) => command.args(["--namespace", namespace]),
            None => command.arg("--all-namespaces"),
        };
        let output = command.output().expect("kubectl runs");
        let answer = String::from_utf8_lossy(&output.stdout).trim().to_string();
        match (output.status.code(), answer.as_str()) {
            (Some(0), "yes") => true,
            (Some(1), "no") => false,
            _ => panic!(
                "kubectl auth can-i {verb} {resource}: {:?} {answer} {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ),
        }
    }

    /// Asserts each (verb, resource, namespace) is allowed (`expected` true) or refused.
    pub fn assert_rights(&self, expected: bool, checks: &[(&str, &str, Option<&str>)]) {
        let wrong: Vec<String> = checks
            .iter()
            .filter(|(verb, resource, namespace)| {
                self.can_i(verb, resource, *namespace) != expected
            })
            .map(|(verb, resource, namespace)| {
                format!(
                    "{verb} {resource} in {}",
                    namespace.unwrap_or("all namespaces")
                )
            })
            .collect();
        assert!(
            wrong.is_empty(),
            "the chart's ServiceAccount {} {wrong:#?}",
            if expected { "cannot" } else { "can" }
        );
    }

    pub fn delete(&self) {
        let _ = Command::new(self.env.kubectl_path())
            .args(["--kubeconfig", self.env.get("KUBECONFIG")])
            .args([
                "delete",
                "--ignore-not-found",
                "--wait=false",
                "-f",
                self.path(),
            ])
            .output();
    }
}

const UPSTREAM_VERBS: [&str; 7] = [
    "get", "list", "watch", "create", "update", "patch", "delete",
];
/// Function discovery reads Upstreams and server-side applies their `spec.aws.lambdaFunctions`.
const FDS_UPSTREAM_VERBS: [&str; 4] = ["get", "list", "watch", "patch"];
/// What function discovery never does to an Upstream outside the write namespace.
const NOT_FDS_UPSTREAM_VERBS: [&str; 3] = ["create", "update", "delete"];

pub async fn default_values_apply_server_side_and_grant_only_what_the_daemon_needs(
    env: Arc<TestEnv>,
) {
    // The release in the write namespace; the Service namespace is any other one.
    let scenario = Scenario::builder(env.clone(), "chart-def")
        .without_account()
        .build()
        .await;
    let (namespace, other) = (&scenario.write_ns, &scenario.service_ns);
    // `kubectl auth can-i` resolves `settings.gloo.solo.io` through discovery: the CRD must be
    // served, as in a cluster running Gloo.
    crate::gloo_pod::install_settings_crd(&scenario.admin).await;
    let release = Release::render(&env, namespace, &[]);
    // The same release with function discovery off, applied over it below. Rendered first:
    // `helm template --dry-run=server` refuses objects that exist without Helm's annotations.
    let disabled = Release::render(&env, namespace, &["--set", "discovery.fdsMode=DISABLED"]);
    release.apply();
    let applied = env.kubectl(&[
        "get",
        "deployment,serviceaccount,service,role,rolebinding",
        "-n",
        namespace,
        "-o",
        "name",
    ]);
    for object in [
        format!("deployment.apps/{}", release.fullname),
        format!(
            "role.rbac.authorization.k8s.io/{}-settings",
            release.fullname
        ),
        format!("serviceaccount/{}", release.fullname),
        format!("service/{}-metrics", release.fullname),
        format!(
            "role.rbac.authorization.k8s.io/{}-upstreams",
            release.fullname
        ),
        format!(
            "role.rbac.authorization.k8s.io/{}-leader-election",
            release.fullname
        ),
    ] {
        assert!(
            applied.lines().any(|l| l == object),
            "{object} not in\n{applied}"
        );
    }
    let ns = Some(namespace.as_str());
    let elsewhere = Some(other.as_str());
    // Rights that do not depend on function discovery.
    let mut allowed = vec![
        ("get", "services", None),
        ("list", "services", None),
        ("watch", "services", None),
        ("get", "namespaces", None),
        ("list", "namespaces", None),
        ("watch", "namespaces", None),
        ("create", "events", elsewhere),
        ("patch", "events", elsewhere),
        ("create", "events.events.k8s.io", elsewhere),
        ("patch", "events.events.k8s.io", elsewhere),
    ];
    for verb in ["get", "list", "watch", "create", "update", "patch"] {
        allowed.push((verb, "leases.coordination.k8s.io", ns));
    }
    for verb in UPSTREAM_VERBS {
        allowed.push((verb, "upstreams.gloo.solo.io", ns));
    }
    // Gloo's Settings: read in the release namespace only, never written.
    for verb in ["get", "list", "watch"] {
        allowed.push((verb, "settings.gloo.solo.io", ns));
    }
    let mut refused = vec![
        ("get", "settings.gloo.solo.io", elsewhere),
        ("list", "settings.gloo.solo.io", None),
        ("create", "settings.gloo.solo.io", ns),
        ("update", "settings.gloo.solo.io", ns),
        ("patch", "settings.gloo.solo.io", ns),
        ("delete", "settings.gloo.solo.io", ns),
        ("create", "secrets", ns),
        ("update", "secrets", elsewhere),
        ("delete", "secrets", elsewhere),
        ("create", "services", elsewhere),
        ("update", "services", elsewhere),
        ("delete", "namespaces", None),
        ("create", "leases.coordination.k8s.io", elsewhere),
        ("delete", "leases.coordination.k8s.io", ns),
        ("delete", "events", elsewhere),
        ("create", "pods", ns),
        (
            "update",
            "customresourcedefinitions.apiextensions.k8s.io",
            None,
        ),
    ];
    for verb in NOT_FDS_UPSTREAM_VERBS {
        refused.push((verb, "upstreams.gloo.solo.io", elsewhere));
        refused.push((verb, "upstreams.gloo.solo.io", None));
    }

    // Function discovery on (WHITELIST, the default) watching every namespace: Secrets read
    // anywhere, Upstreams read and patched anywhere.
    let mut fds_allowed = vec![
        ("get", "secrets", ns),
        ("get", "secrets", elsewhere),
        ("list", "secrets", None),
        ("watch", "secrets", None),
    ];
    for verb in FDS_UPSTREAM_VERBS {
        fds_allowed.push((verb, "upstreams.gloo.solo.io", elsewhere));
        fds_allowed.push((verb, "upstreams.gloo.solo.io", None));
    }
    release.assert_rights(true, &allowed);
    release.assert_rights(true, &fds_allowed);
    release.assert_rights(false, &refused);

    // The same release with fdsMode=DISABLED, applied over it: none of those.
    assert_eq!(disabled.fullname, release.fullname);
    let args =
        disabled.find("Deployment")["spec"]["template"]["spec"]["containers"][0]["args"].clone();
    let args: Vec<&str> = args
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(args.contains(&"--fds-mode=DISABLED"), "{args:?}");
    assert!(!args.iter().any(|a| a.starts_with("--lambda-")), "{args:?}");
    disabled.apply();
    // The authorizer's cache follows the ClusterRole a moment later.
    wait_for("the ClusterRole without function discovery", || async {
        (!disabled.can_i("list", "secrets", None)).then_some(())
    })
    .await;
    release.assert_rights(true, &allowed);
    release.assert_rights(false, &fds_allowed);
    release.assert_rights(false, &refused);

    disabled.delete();
    scenario.cleanup().await;
}

pub async fn service_mode_with_lambda_and_replicas_applies_and_grants_upstreams_and_secrets(
    env: Arc<TestEnv>,
) {
    let scenario = Scenario::builder(env.clone(), "chart-svc")
        .without_account()
        .build()
        .await;
    let (namespace, other) = (&scenario.write_ns, &scenario.service_ns);
    let role_arn = "arn:aws:iam::123456789012:role/lambda-discovery";
    let release = Release::render(
        &env,
        namespace,
        &[
            "--set",
            "discovery.writeNamespaceMode=service",
            "--set",
            "discovery.fdsMode=BLACKLIST",
            "--set",
            "replicas=3",
            "--set",
            &format!("serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn={role_arn}"),
        ],
    );
    // Rendered with the server's capabilities: 1.20 has no policy/v1.
    let pdb = release.find("PodDisruptionBudget");
    assert_eq!(pdb["apiVersion"].as_str(), Some("policy/v1beta1"));
    release.apply();
    let pdb = env.kubectl(&[
        "get",
        "poddisruptionbudgets.v1beta1.policy",
        &release.fullname,
        "-n",
        namespace,
        "-o",
        "jsonpath={.spec.minAvailable}",
    ]);
    assert_eq!(pdb, "1");
    let annotation = env.kubectl(&[
        "get",
        "serviceaccount",
        &release.fullname,
        "-n",
        namespace,
        "-o",
        "jsonpath={.metadata.annotations.eks\\.amazonaws\\.com/role-arn}",
    ]);
    assert_eq!(annotation, role_arn);

    let ns = Some(namespace.as_str());
    let elsewhere = Some(other.as_str());
    let mut allowed = vec![
        ("get", "secrets", elsewhere),
        ("list", "secrets", None),
        ("watch", "secrets", None),
        ("create", "leases.coordination.k8s.io", ns),
    ];
    for verb in UPSTREAM_VERBS {
        allowed.push((verb, "upstreams.gloo.solo.io", elsewhere));
        allowed.push((verb, "upstreams.gloo.solo.io", None));
    }
    release.assert_rights(true, &allowed);
    release.assert_rights(
        false,
        &[
            ("create", "secrets", elsewhere),
            ("update", "secrets", ns),
            ("create", "leases.coordination.k8s.io", elsewhere),
            ("create", "services", elsewhere),
        ],
    );

    release.delete();
    scenario.cleanup().await;
}

pub async fn the_daemon_with_the_charts_arguments_and_token_discovers_a_service(env: Arc<TestEnv>) {
    // A second watched namespace, with no Service: function discovery's Role is there too.
    let scenario = Scenario::builder(env.clone(), "chart")
        .without_account()
        .another_namespace("q")
        .build()
        .await;
    let (admin, write_ns, service_ns, quiet_ns) = (
        &scenario.admin,
        &scenario.write_ns,
        &scenario.service_ns,
        &scenario.others[0],
    );
    let release = Release::render(
        &env,
        write_ns,
        &[
            "--set",
            &format!("discovery.watchNamespaces={{{service_ns},{quiet_ns}}}"),
        ],
    );
    release.apply();

    // Function discovery (on by default) reads and patches Upstreams in the watched namespaces
    // only, every right stays in the write namespace, Secrets are read anywhere.
    let mut allowed = vec![
        ("get", "secrets", Some(service_ns.as_str())),
        ("list", "secrets", None),
        ("watch", "secrets", None),
    ];
    let mut refused = vec![
        ("list", "upstreams.gloo.solo.io", None),
        ("patch", "upstreams.gloo.solo.io", Some("default")),
    ];
    for watched in [service_ns.as_str(), quiet_ns.as_str()] {
        for verb in FDS_UPSTREAM_VERBS {
            allowed.push((verb, "upstreams.gloo.solo.io", Some(watched)));
        }
        for verb in NOT_FDS_UPSTREAM_VERBS {
            refused.push((verb, "upstreams.gloo.solo.io", Some(watched)));
        }
    }
    for verb in UPSTREAM_VERBS {
        allowed.push((verb, "upstreams.gloo.solo.io", Some(write_ns.as_str())));
    }
    release.assert_rights(true, &allowed);
    release.assert_rights(false, &refused);

    // The Deployment's container: its arguments and the downward-API environment.
    let deployment = release.find("Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let account = pod["serviceAccountName"]
        .as_str()
        .expect("serviceAccountName");
    assert_eq!(account, release.fullname);
    let container = &pod["containers"][0];
    let env_vars: Vec<(String, String)> = container["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap_or_default().to_string(),
                e["valueFrom"]["fieldRef"]["fieldPath"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    assert!(env_vars.contains(&("POD_NAMESPACE".into(), "metadata.namespace".into())));
    assert!(env_vars.contains(&("POD_NAME".into(), "metadata.name".into())));
    let chart_args: Vec<String> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string").to_string())
        .collect();
    assert!(chart_args.contains(&format!("--watch-namespaces={service_ns},{quiet_ns}")));
    // fdsMode is left to Settings (else the daemon's WHITELIST): the chart passes none.
    assert!(!chart_args.iter().any(|a| a.starts_with("--fds-mode")));
    // The harness picks a free loopback port and JSON logs for every daemon it starts; the
    // chart's --metrics-addr (0.0.0.0:9091) and --log-format are replaced by those.
    let args: Vec<String> = chart_args
        .into_iter()
        .filter(|a| !a.starts_with("--metrics-addr=") && !a.starts_with("--log-format="))
        .collect();

    // As the chart's ServiceAccount, with its token (what the pod would mount).
    let token = service_account_token(admin, write_ns, account).await;
    let daemon = scenario
        .daemon()
        .token(&token)
        .exact_args(args)
        .ready()
        .await;

    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "petstore", "labels": {"app": "petstore"}},
        "spec": {"selector": {"app": "petstore"}, "ports": [{"name": "http", "port": 8080}]},
    }))
    .expect("service");
    Api::<Service>::namespaced(admin.clone(), service_ns)
        .create(&PostParams::default(), &service)
        .await
        .expect("create service");
    let name = format!("{service_ns}-petstore-8080");
    let upstreams = Api::<Upstream>::namespaced(admin.clone(), write_ns);
    let upstream = wait_for(
        &format!("Upstream {write_ns}/{name}; daemon log:\n{}", daemon.logs()),
        || async { upstreams.get(&name).await.ok() },
    )
    .await;
    let labels = upstream.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("discovered_by").map(String::as_str),
        Some("kubernetesplugin")
    );
    let spec = serde_json::to_value(&upstream.spec).expect("spec");
    assert_eq!(spec["kube"]["serviceName"], "petstore");
    assert_eq!(spec["kube"]["serviceNamespace"], service_ns.as_str());
    assert_eq!(spec["kube"]["servicePort"], 8080);

    // The leader's Lease, named by the chart, in the release namespace.
    let lease = Api::<Lease>::namespaced(admin.clone(), write_ns)
        .get(&release.fullname)
        .await
        .expect("the chart's Lease exists");
    let holder = lease
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    assert_eq!(holder, format!("daemon-{}", daemon.port));

    let logs = daemon.logs();
    assert!(
        !logs.to_lowercase().contains("forbidden"),
        "the chart's RBAC refused the daemon something:\n{logs}"
    );
    daemon.terminate(Duration::from_secs(10));

    release.delete();
    scenario.cleanup().await;
}
