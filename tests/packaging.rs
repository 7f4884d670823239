//! The container image and the Helm chart, checked without an API server: `helm lint`, what
//! `helm template` renders for several value sets, the plain manifests kept in sync, the values
//! schema, hadolint, and the Dockerfile's own build command run outside Docker. (Applying the
//! rendered manifests and running the daemon with them is in tests/e2e/chart.rs.)
//!
//! helm and hadolint come from the cache tests/env/setup.sh fills; a test fails, never skips,
//! when they are missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const CHART: &str = "deploy/helm/upstream-discovery";
const MANIFESTS: &str = "deploy/manifests/upstream-discovery.yaml";
/// The plain manifests are the chart rendered with default values, as this release in this
/// namespace.
const RELEASE: &str = "upstream-discovery";
const NAMESPACE: &str = "gloo-system";
/// Flags the chart passes only with function discovery on (`fdsMode` not DISABLED).
const LAMBDA_FLAGS: &[&str] = &[
    "--lambda-poll-interval",
    "--lambda-api-rps",
    "--lambda-aliases",
    "--lambda-max-functions",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn cache_dir() -> PathBuf {
    match std::env::var_os("UD_CACHE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
            .join(".cache/upstream-discovery"),
    }
}

/// A tool from the test environment's cache; panics (the test fails) when it is not there.
fn tool(relative: &str) -> PathBuf {
    let path = cache_dir().join(relative);
    assert!(
        path.is_file(),
        "{} not found: run tests/env/setup.sh first (it installs helm, kubectl and hadolint)",
        path.display()
    );
    path
}

fn helm() -> PathBuf {
    tool("kubectl-layer-2.2.2/bin/helm")
}

fn hadolint() -> PathBuf {
    tool("hadolint-2.15.1/bin/hadolint")
}

fn run(command: &mut Command) -> Output {
    command
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `helm template` of the chart: stdout, or stderr when it fails.
fn try_template(release: &str, namespace: &str, args: &[&str]) -> Result<String, String> {
    let output = run(Command::new(helm())
        .args(["template", release, CHART, "--namespace", namespace])
        .args(args));
    if output.status.success() {
        Ok(text(&output.stdout))
    } else {
        Err(text(&output.stderr))
    }
}

fn template(args: &[&str]) -> Vec<Value> {
    let yaml = try_template("ud", "edge", args)
        .unwrap_or_else(|e| panic!("helm template {args:?} failed:\n{e}"));
    documents(&yaml)
}

/// The documents that hold something (empty ones are left out).
fn documents(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple(yaml).expect("helm renders valid YAML")
}

fn kinds(docs: &[Value]) -> Vec<String> {
    let mut kinds: Vec<String> = docs.iter().map(|d| str_at(d, "kind").to_string()).collect();
    kinds.sort();
    kinds
}

/// The value at a dotted path (`spec.template.spec`), numbers index lists.
fn at<'a>(value: &'a Value, path: &str) -> &'a Value {
    let mut current = value;
    for key in path.split('.') {
        current = match key.parse::<usize>() {
            Ok(index) => current.get(index),
            Err(_) => current.get(key),
        }
        .unwrap_or_else(|| panic!("no {path} (stopped at {key}) in {value:?}"));
    }
    current
}

fn str_at<'a>(value: &'a Value, path: &str) -> &'a str {
    at(value, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path} is not a string"))
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| str_at(d, "kind") == kind && str_at(d, "metadata.name") == name)
        .unwrap_or_else(|| panic!("no {kind} {name} among {:?}", kinds(docs)))
}

fn count(docs: &[Value], kind: &str) -> usize {
    docs.iter().filter(|d| str_at(d, "kind") == kind).count()
}

fn container(docs: &[Value]) -> &Value {
    let deployment = find(docs, "Deployment", "ud-upstream-discovery");
    at(deployment, "spec.template.spec.containers.0")
}

fn rendered_args(docs: &[Value]) -> Vec<String> {
    at(container(docs), "args")
        .as_array()
        .expect("args is a list")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_string())
        .collect()
}

/// The RBAC rules of a Role or ClusterRole as (group, resource, verbs) triples.
fn rules(role: &Value) -> Vec<(String, String, Vec<String>)> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|s| {
                s.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for rule in at(role, "rules").as_array().expect("rules") {
        for group in strings(at(rule, "apiGroups")) {
            for resource in strings(at(rule, "resources")) {
                out.push((group.clone(), resource, strings(at(rule, "verbs"))));
            }
        }
    }
    out
}

fn grants(role: &Value, group: &str, resource: &str) -> Vec<String> {
    let mut verbs: Vec<String> = rules(role)
        .into_iter()
        .filter(|(g, r, _)| g == group && r == resource)
        .flat_map(|(_, _, v)| v)
        .collect();
    verbs.sort();
    verbs
}

fn sorted(verbs: &[&str]) -> Vec<String> {
    let mut verbs: Vec<String> = verbs.iter().map(|v| v.to_string()).collect();
    verbs.sort();
    verbs
}

const UPSTREAM_VERBS: &[&str] = &[
    "get", "list", "watch", "create", "update", "patch", "delete",
];
/// Function discovery reads Upstreams and server-side applies their `spec.aws.lambdaFunctions`.
const FDS_UPSTREAM_VERBS: &[&str] = &["get", "list", "watch", "patch"];

/// The long flags `upstream-discovery run --help` documents.
fn daemon_flags() -> Vec<String> {
    let output = Command::new(env!("CARGO_BIN_EXE_upstream-discovery"))
        .args(["run", "--help"])
        .output()
        .expect("the binary runs");
    assert!(output.status.success());
    text(&output.stdout)
        .split_whitespace()
        .filter(|word| word.starts_with("--"))
        .map(|word| {
            word.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                .to_string()
        })
        .collect()
}

/// Every flag the chart renders is one the daemon knows.
fn assert_daemon_knows(args: &[String]) {
    let known = daemon_flags();
    assert_eq!(args.first().map(String::as_str), Some("run"), "{args:?}");
    for arg in &args[1..] {
        let flag = arg.split_once('=').map_or(arg.as_str(), |(flag, _)| flag);
        assert!(
            known.iter().any(|k| k == flag),
            "the chart passes {arg}, which `upstream-discovery run` does not take"
        );
    }
}

#[test]
fn helm_lint_passes_strictly() {
    let output = run(Command::new(helm()).args(["lint", "--strict", CHART]));
    assert!(
        output.status.success(),
        "helm lint failed:\n{}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    // Lint every shipped variant too, so a template error behind a flag is caught.
    for set in [
        "discovery.writeNamespaceMode=service",
        "replicas=3",
        "discovery.enabled=false",
        "discovery.fdsMode=BLACKLIST",
        "discovery.fdsMode=DISABLED",
        "discovery.watchNamespaces={shop,payments}",
        "metrics.serviceMonitor.enabled=true",
        "discovery.settings.enabled=false",
        "discovery.udsOptions.enabled=false",
        "discovery.udsOptions.watchLabels.team=edge",
        "discovery.deployment.floatingUserId=true",
        "discovery.deployment.replicas=2",
    ] {
        let output = run(Command::new(helm()).args(["lint", "--strict", CHART, "--set", set]));
        assert!(
            output.status.success(),
            "helm lint --set {set} failed:\n{}",
            text(&output.stdout)
        );
    }
}

#[test]
fn chart_follows_the_crate_version_and_ships_the_generated_crd() {
    let chart: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(repo().join(CHART).join("Chart.yaml")).expect("Chart.yaml"),
    )
    .expect("Chart.yaml is YAML");
    assert_eq!(str_at(&chart, "apiVersion"), "v2");
    assert_eq!(str_at(&chart, "appVersion"), env!("CARGO_PKG_VERSION"));
    assert_eq!(str_at(&chart, "version"), env!("CARGO_PKG_VERSION"));
    let shipped = std::fs::read_to_string(repo().join("deploy/crds/upstreams.gloo.solo.io.yaml"))
        .expect("deploy/crds");
    let in_chart =
        std::fs::read_to_string(repo().join(CHART).join("crds/upstreams.gloo.solo.io.yaml"))
            .expect("the chart's crds/");
    assert!(
        shipped == in_chart,
        "{CHART}/crds/upstreams.gloo.solo.io.yaml differs from deploy/crds/: copy it again \
         (cp deploy/crds/upstreams.gloo.solo.io.yaml {CHART}/crds/)"
    );
    assert_eq!(
        in_chart,
        upstream_discovery::crd::definition_yaml().expect("crd yaml"),
        "the chart's CRD is not what `upstream-discovery crd` prints"
    );
}

#[test]
fn default_values_run_the_daemon_as_uid_10101_with_probes_and_least_privilege() {
    let docs = template(&[]);
    assert_eq!(
        kinds(&docs),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "Role",
            "Role",
            "Role",
            "RoleBinding",
            "RoleBinding",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ]
    );
    for doc in &docs {
        if !str_at(doc, "kind").starts_with("Cluster") {
            assert_eq!(str_at(doc, "metadata.namespace"), "edge", "{doc:?}");
        }
    }

    let deployment = find(&docs, "Deployment", "ud-upstream-discovery");
    let pod = at(deployment, "spec.template.spec");
    assert_eq!(at(deployment, "spec.replicas").as_u64(), Some(1));
    assert_eq!(str_at(pod, "serviceAccountName"), "ud-upstream-discovery");
    assert_eq!(at(pod, "securityContext.runAsUser").as_u64(), Some(10101));
    assert_eq!(
        at(pod, "securityContext.runAsNonRoot").as_bool(),
        Some(true)
    );
    let c = container(&docs);
    assert_eq!(str_at(c, "image"), "upstream-discovery:0.1.0");
    assert_eq!(at(c, "securityContext.runAsUser").as_u64(), Some(10101));
    assert_eq!(
        at(c, "securityContext.readOnlyRootFilesystem").as_bool(),
        Some(true)
    );
    assert_eq!(
        at(c, "securityContext.allowPrivilegeEscalation").as_bool(),
        Some(false)
    );
    assert_eq!(str_at(c, "securityContext.capabilities.drop.0"), "ALL");
    assert_eq!(str_at(c, "ports.0.name"), "metrics");
    assert_eq!(at(c, "ports.0.containerPort").as_u64(), Some(9091));
    assert_eq!(str_at(c, "livenessProbe.httpGet.path"), "/healthz");
    assert_eq!(str_at(c, "livenessProbe.httpGet.port"), "metrics");
    assert_eq!(str_at(c, "readinessProbe.httpGet.path"), "/readyz");
    assert_eq!(str_at(c, "readinessProbe.httpGet.port"), "metrics");
    for (index, (name, field)) in [
        ("POD_NAMESPACE", "metadata.namespace"),
        ("POD_NAME", "metadata.name"),
    ]
    .into_iter()
    .enumerate()
    {
        let env = at(c, &format!("env.{index}"));
        assert_eq!(str_at(env, "name"), name);
        assert_eq!(str_at(env, "valueFrom.fieldRef.fieldPath"), field);
    }
    let annotations = at(deployment, "spec.template.metadata.annotations");
    for (key, value) in [
        ("prometheus.io/scrape", "true"),
        ("prometheus.io/port", "9091"),
        ("prometheus.io/path", "/metrics"),
    ] {
        assert_eq!(
            annotations.get(key).and_then(Value::as_str),
            Some(value),
            "{key}"
        );
    }

    let args = rendered_args(&docs);
    assert_eq!(
        args,
        [
            "run",
            "--write-namespace-mode=fixed",
            "--resync-interval=10m",
            "--kube-api-qps=50",
            "--kube-api-burst=100",
            "--write-concurrency=16",
            "--metrics-addr=0.0.0.0:9091",
            "--leader-elect=true",
            "--lease-name=ud-upstream-discovery",
            "--log-level=info",
            "--log-format=json",
            "--lambda-poll-interval=30s",
            "--lambda-api-rps=5",
            "--lambda-max-functions=2000",
        ]
    );
    assert_daemon_knows(&args);
    // What Settings also holds is left to Settings (a flag given wins over it): no
    // --fds-mode, --uds-enabled, --service-selector, namespaces or global annotations.
    assert!(
        !args_contain_any(&args, SETTINGS_FLAGS),
        "{args:?} passes a flag that would hide Settings"
    );

    // RBAC: reads cluster-wide; every Upstream right in the write namespace only; function
    // discovery (on by default, every namespace watched) reads Secrets and reads and patches
    // Upstreams everywhere, never creates, updates or deletes them.
    let cluster_role = find(&docs, "ClusterRole", "ud-upstream-discovery");
    assert_eq!(
        grants(cluster_role, "", "services"),
        sorted(&["get", "list", "watch"])
    );
    assert_eq!(
        grants(cluster_role, "", "namespaces"),
        sorted(&["get", "list", "watch"])
    );
    assert_eq!(
        grants(cluster_role, "", "events"),
        sorted(&["create", "patch"])
    );
    assert_eq!(
        grants(cluster_role, "events.k8s.io", "events"),
        sorted(&["create", "patch"])
    );
    assert_eq!(
        grants(cluster_role, "gloo.solo.io", "upstreams"),
        sorted(FDS_UPSTREAM_VERBS)
    );
    assert_eq!(
        grants(cluster_role, "", "secrets"),
        sorted(&["get", "list", "watch"])
    );
    assert_eq!(rules(cluster_role).len(), 6, "{:?}", rules(cluster_role));
    let upstreams = find(&docs, "Role", "ud-upstream-discovery-upstreams");
    assert_eq!(str_at(upstreams, "metadata.namespace"), "edge");
    assert_eq!(
        grants(upstreams, "gloo.solo.io", "upstreams"),
        sorted(UPSTREAM_VERBS)
    );
    assert_eq!(rules(upstreams).len(), 1);
    let leases = find(&docs, "Role", "ud-upstream-discovery-leader-election");
    assert_eq!(
        grants(leases, "coordination.k8s.io", "leases"),
        sorted(&["get", "list", "watch", "create", "update", "patch"])
    );
    assert_eq!(rules(leases).len(), 1);
    let settings = find(&docs, "Role", "ud-upstream-discovery-settings");
    assert_eq!(
        grants(settings, "gloo.solo.io", "settings"),
        sorted(&["get", "list", "watch"])
    );
    assert_eq!(rules(settings).len(), 1);
    for binding in [
        "ud-upstream-discovery-upstreams",
        "ud-upstream-discovery-leader-election",
        "ud-upstream-discovery-settings",
    ] {
        let binding = find(&docs, "RoleBinding", binding);
        assert_eq!(str_at(binding, "subjects.0.name"), "ud-upstream-discovery");
        assert_eq!(str_at(binding, "subjects.0.namespace"), "edge");
    }
    let metrics = find(&docs, "Service", "ud-upstream-discovery-metrics");
    assert_eq!(at(metrics, "spec.ports.0.port").as_u64(), Some(9091));
}

#[test]
fn service_mode_grants_upstreams_cluster_wide_instead_of_in_one_namespace() {
    // Watched namespaces too: the ClusterRole covers them, no function-discovery Role is added.
    for extra in [
        &[][..],
        &["--set", "discovery.watchNamespaces={shop,payments}"][..],
    ] {
        let mut args = vec!["--set", "discovery.writeNamespaceMode=service"];
        args.extend_from_slice(extra);
        let docs = template(&args);
        let cluster_role = find(&docs, "ClusterRole", "ud-upstream-discovery");
        assert_eq!(
            grants(cluster_role, "gloo.solo.io", "upstreams"),
            sorted(UPSTREAM_VERBS),
            "one Upstream rule, the full one, with function discovery on: {:?}",
            rules(cluster_role)
        );
        assert_eq!(
            grants(cluster_role, "", "secrets"),
            sorted(&["get", "list", "watch"])
        );
        assert_eq!(rules(cluster_role).len(), 6, "{:?}", rules(cluster_role));
        // Only the leader-election and Settings Roles are left.
        assert_eq!(count(&docs, "Role"), 2, "{extra:?}: {:?}", kinds(&docs));
        assert_eq!(count(&docs, "RoleBinding"), 2, "{extra:?}");
        find(&docs, "Role", "ud-upstream-discovery-leader-election");
        find(&docs, "Role", "ud-upstream-discovery-settings");
        let args = rendered_args(&docs);
        assert!(
            args.contains(&"--write-namespace-mode=service".to_string()),
            "{args:?}"
        );
        assert!(!args.iter().any(|a| a.starts_with("--write-namespace=")));
        assert_daemon_knows(&args);
    }

    // Without function discovery: no Secrets, the same Upstream rights.
    let docs = template(&[
        "--set",
        "discovery.writeNamespaceMode=service",
        "--set",
        "discovery.fdsMode=DISABLED",
    ]);
    let cluster_role = find(&docs, "ClusterRole", "ud-upstream-discovery");
    assert_eq!(
        grants(cluster_role, "gloo.solo.io", "upstreams"),
        sorted(UPSTREAM_VERBS)
    );
    assert!(grants(cluster_role, "", "secrets").is_empty());
}

#[test]
fn function_discovery_with_watched_namespaces_reads_and_patches_upstreams_only_there() {
    // fdsMode empty (the default): the mode comes from Settings, where function discovery may
    // be on, so it is granted as for WHITELIST.
    let docs = template(&["--set", "discovery.watchNamespaces={a,b}"]);
    assert!(!args_contain_any(&rendered_args(&docs), &["--fds-mode"]));
    // Not cluster-wide: no Upstream rule in the ClusterRole; Secrets still anywhere (the
    // secretRef of an Upstream may name any namespace).
    let cluster_role = find(&docs, "ClusterRole", "ud-upstream-discovery");
    assert!(
        grants(cluster_role, "gloo.solo.io", "upstreams").is_empty(),
        "{:?}",
        rules(cluster_role)
    );
    assert_eq!(
        grants(cluster_role, "", "secrets"),
        sorted(&["get", "list", "watch"])
    );
    let in_namespace = |kind: &str, namespace: &str| -> Vec<Value> {
        docs.iter()
            .filter(|d| {
                str_at(d, "kind") == kind
                    && str_at(d, "metadata.name") == "ud-upstream-discovery-function-discovery"
                    && str_at(d, "metadata.namespace") == namespace
            })
            .cloned()
            .collect()
    };
    for namespace in ["a", "b"] {
        let roles = in_namespace("Role", namespace);
        assert_eq!(
            roles.len(),
            1,
            "one Role in {namespace}: {:?}",
            kinds(&docs)
        );
        assert_eq!(
            grants(&roles[0], "gloo.solo.io", "upstreams"),
            sorted(FDS_UPSTREAM_VERBS)
        );
        assert_eq!(rules(&roles[0]).len(), 1);
        let bindings = in_namespace("RoleBinding", namespace);
        assert_eq!(bindings.len(), 1, "one RoleBinding in {namespace}");
        let binding = &bindings[0];
        assert_eq!(str_at(binding, "roleRef.kind"), "Role");
        assert_eq!(
            str_at(binding, "roleRef.name"),
            "ud-upstream-discovery-function-discovery"
        );
        assert_eq!(str_at(binding, "subjects.0.name"), "ud-upstream-discovery");
        assert_eq!(str_at(binding, "subjects.0.namespace"), "edge");
    }
    // The write namespace keeps its own Role, every right.
    let upstreams = find(&docs, "Role", "ud-upstream-discovery-upstreams");
    assert_eq!(str_at(upstreams, "metadata.namespace"), "edge");
    assert_eq!(
        grants(upstreams, "gloo.solo.io", "upstreams"),
        sorted(UPSTREAM_VERBS)
    );
    assert_eq!(count(&docs, "Role"), 5, "{:?}", kinds(&docs));
    assert_eq!(count(&docs, "RoleBinding"), 5, "{:?}", kinds(&docs));

    // A watched namespace that is the write namespace gets no second Role: the write
    // namespace's one already grants every right there.
    let docs = template(&[
        "--set",
        "discovery.watchNamespaces={a,edge}",
        "--set",
        "discovery.writeNamespace=edge",
    ]);
    let names: Vec<(String, String)> = docs
        .iter()
        .filter(|d| str_at(d, "kind") == "Role")
        .map(|d| {
            (
                str_at(d, "metadata.namespace").to_string(),
                str_at(d, "metadata.name").to_string(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("edge".into(), "ud-upstream-discovery-upstreams".into()),
            (
                "a".into(),
                "ud-upstream-discovery-function-discovery".into()
            ),
            ("edge".into(), "ud-upstream-discovery-settings".into()),
            (
                "edge".into(),
                "ud-upstream-discovery-leader-election".into()
            ),
        ],
        "{names:?}"
    );
    assert_eq!(count(&docs, "RoleBinding"), 4);

    // DISABLED: no function-discovery Role, nothing beyond the write namespace.
    let docs = template(&[
        "--set",
        "discovery.watchNamespaces={a,b}",
        "--set",
        "discovery.fdsMode=DISABLED",
    ]);
    assert_eq!(count(&docs, "Role"), 3, "{:?}", kinds(&docs));
    assert_eq!(count(&docs, "RoleBinding"), 3);
    assert!(docs
        .iter()
        .all(|d| !str_at(d, "metadata.name").ends_with("-function-discovery")));
    let cluster_role = find(&docs, "ClusterRole", "ud-upstream-discovery");
    assert!(grants(cluster_role, "gloo.solo.io", "upstreams").is_empty());
    assert!(grants(cluster_role, "", "secrets").is_empty());
}

#[test]
fn a_write_namespace_other_than_the_release_namespace_gets_the_upstreams_role() {
    let docs = template(&["--set", "discovery.writeNamespace=gateways"]);
    let role = find(&docs, "Role", "ud-upstream-discovery-upstreams");
    assert_eq!(str_at(role, "metadata.namespace"), "gateways");
    let binding = find(&docs, "RoleBinding", "ud-upstream-discovery-upstreams");
    assert_eq!(str_at(binding, "metadata.namespace"), "gateways");
    assert_eq!(str_at(binding, "subjects.0.namespace"), "edge");
    let leases = find(&docs, "Role", "ud-upstream-discovery-leader-election");
    assert_eq!(str_at(leases, "metadata.namespace"), "edge");
    assert!(rendered_args(&docs).contains(&"--write-namespace=gateways".to_string()));
}

/// `discovery.lambda.secrets`: every Secret (the default), only those of listed namespaces (a
/// Role and RoleBinding each; none listed: the write namespace), optionally only listed names,
/// or none at all.
#[test]
fn secrets_are_granted_cluster_wide_per_namespace_by_name_or_not_at_all() {
    let read = sorted(&["get", "list", "watch"]);
    let secret_roles = |docs: &[Value]| -> Vec<(String, Vec<String>, Value)> {
        docs.iter()
            .filter(|d| str_at(d, "kind") == "Role")
            .filter(|d| str_at(d, "metadata.name") == "ud-upstream-discovery-secrets")
            .map(|role| {
                let rule = at(role, "rules.0");
                (
                    str_at(role, "metadata.namespace").to_string(),
                    grants(role, "", "secrets"),
                    rule.get("resourceNames").cloned().unwrap_or(Value::Null),
                )
            })
            .collect()
    };
    let cluster_secrets = |docs: &[Value]| {
        grants(
            find(docs, "ClusterRole", "ud-upstream-discovery"),
            "",
            "secrets",
        )
    };

    let default = template(&[]);
    assert_eq!(cluster_secrets(&default), read);
    assert!(secret_roles(&default).is_empty());

    let own = template(&["--set", "discovery.lambda.secrets.access=namespaces"]);
    assert!(cluster_secrets(&own).is_empty());
    assert_eq!(
        secret_roles(&own),
        [("edge".to_string(), read.clone(), Value::Null)]
    );
    let binding = find(&own, "RoleBinding", "ud-upstream-discovery-secrets");
    assert_eq!(str_at(binding, "subjects.0.name"), "ud-upstream-discovery");
    assert_eq!(str_at(binding, "subjects.0.namespace"), "edge");

    let listed = template(&[
        "--set",
        "discovery.lambda.secrets.access=namespaces",
        "--set",
        "discovery.lambda.secrets.namespaces={team-a,team-b}",
        "--set",
        "discovery.lambda.secrets.names={aws-creds}",
    ]);
    let names = serde_json::json!(["aws-creds"]);
    assert_eq!(
        secret_roles(&listed),
        [
            ("team-a".to_string(), read.clone(), names.clone()),
            ("team-b".to_string(), read.clone(), names),
        ]
    );
    assert_eq!(
        count(&listed, "RoleBinding"),
        count(&own, "RoleBinding") + 1
    );

    let none = template(&["--set", "discovery.lambda.secrets.access=none"]);
    assert!(cluster_secrets(&none).is_empty());
    assert!(secret_roles(&none).is_empty());
    assert!(
        try_template(
            "ud",
            "edge",
            &["--set", "discovery.lambda.secrets.access=some"]
        )
        .is_err(),
        "an unknown mode is refused"
    );
    // Function discovery off: no Secret right whatever the mode.
    let off = template(&[
        "--set",
        "discovery.fdsMode=DISABLED",
        "--set",
        "discovery.lambda.secrets.access=namespaces",
    ]);
    assert!(secret_roles(&off).is_empty());
}

#[test]
fn reference_grants_off_by_default_pass_no_flag_and_grant_nothing_on_them() {
    let docs = template(&[]);
    let args = rendered_args(&docs);
    assert!(!args_contain_any(
        &args,
        &["--reference-grants", "--reference-grant-kinds"]
    ));
    assert!(docs
        .iter()
        .all(|d| !str_at(d, "metadata.name").ends_with("-reference-grants")));
    for doc in docs
        .iter()
        .filter(|d| matches!(str_at(d, "kind"), "Role" | "ClusterRole"))
    {
        assert!(
            grants(doc, "gateway.networking.k8s.io", "referencegrants").is_empty(),
            "{doc:?}"
        );
    }
}

#[test]
fn reference_grants_enabled_pass_the_flags_and_grant_referencegrants_in_the_write_namespace_only() {
    let docs = template(&[
        "--set",
        "discovery.referenceGrants.enabled=true",
        "--set",
        "discovery.referenceGrants.kinds={HTTPRoute,GRPCRoute}",
        "--set",
        "discovery.writeNamespace=gateways",
    ]);
    let args = rendered_args(&docs);
    assert!(args.contains(&"--reference-grants".to_string()), "{args:?}");
    assert!(args.contains(&"--reference-grant-kinds=HTTPRoute,GRPCRoute".to_string()));
    assert_daemon_knows(&args);
    let role = find(&docs, "Role", "ud-upstream-discovery-reference-grants");
    assert_eq!(str_at(role, "metadata.namespace"), "gateways");
    assert_eq!(
        rules(role),
        [(
            "gateway.networking.k8s.io".to_string(),
            "referencegrants".to_string(),
            UPSTREAM_VERBS
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
        )]
    );
    let binding = find(
        &docs,
        "RoleBinding",
        "ud-upstream-discovery-reference-grants",
    );
    assert_eq!(str_at(binding, "metadata.namespace"), "gateways");
    assert_eq!(
        str_at(binding, "roleRef.name"),
        "ud-upstream-discovery-reference-grants"
    );
    assert_eq!(str_at(binding, "subjects.0.namespace"), "edge");
    // Nowhere else: not cluster-wide, not in another Role.
    for doc in docs
        .iter()
        .filter(|d| matches!(str_at(d, "kind"), "Role" | "ClusterRole"))
    {
        if str_at(doc, "metadata.name") != "ud-upstream-discovery-reference-grants" {
            assert!(grants(doc, "gateway.networking.k8s.io", "referencegrants").is_empty());
        }
    }

    // The default kind.
    let docs = template(&["--set", "discovery.referenceGrants.enabled=true"]);
    assert!(rendered_args(&docs).contains(&"--reference-grant-kinds=HTTPRoute".to_string()));

    // Refused: service mode, and a kind Gateway API does not have.
    let error = try_template(
        "ud",
        "edge",
        &[
            "--set",
            "discovery.referenceGrants.enabled=true",
            "--set",
            "discovery.writeNamespaceMode=service",
        ],
    )
    .expect_err("grants in service mode were accepted");
    assert!(
        error.contains("discovery.referenceGrants.enabled needs writeNamespaceMode fixed"),
        "{error}"
    );
    let error = try_template(
        "ud",
        "edge",
        &["--set", "discovery.referenceGrants.kinds={Gateway}"],
    )
    .expect_err("an unknown kind was accepted");
    assert!(
        error.contains("/discovery/referenceGrants/kinds/0"),
        "{error}"
    );
}

#[test]
fn replicas_above_one_get_a_pod_disruption_budget_of_the_servers_api_version() {
    assert_eq!(
        count(&template(&["--set", "replicas=1"]), "PodDisruptionBudget"),
        0
    );
    for (kube_version, api_version) in [
        ("1.20.2", "policy/v1beta1"),
        ("1.21.0", "policy/v1"),
        ("1.30.0", "policy/v1"),
    ] {
        let docs = template(&["--set", "replicas=3", "--kube-version", kube_version]);
        let deployment = find(&docs, "Deployment", "ud-upstream-discovery");
        assert_eq!(at(deployment, "spec.replicas").as_u64(), Some(3));
        let pdb = find(&docs, "PodDisruptionBudget", "ud-upstream-discovery");
        assert_eq!(
            str_at(pdb, "apiVersion"),
            api_version,
            "Kubernetes {kube_version}"
        );
        assert_eq!(at(pdb, "spec.minAvailable").as_u64(), Some(1));
        assert_eq!(
            at(pdb, "spec.selector.matchLabels"),
            at(deployment, "spec.selector.matchLabels")
        );
    }
}

#[test]
fn discovery_disabled_renders_nothing_but_the_crd() {
    let docs = template(&["--set", "discovery.enabled=false"]);
    assert!(docs.is_empty(), "rendered {:?}", kinds(&docs));
    let docs = template(&[
        "--set",
        "discovery.enabled=false",
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "replicas=3",
        "--include-crds",
    ]);
    assert_eq!(kinds(&docs), ["CustomResourceDefinition"]);
    assert_eq!(str_at(&docs[0], "metadata.name"), "upstreams.gloo.solo.io");
}

#[test]
fn lambda_with_irsa_reads_secrets_and_passes_the_lambda_flags() {
    let role_arn = "arn:aws:iam::123456789012:role/lambda-discovery";
    let docs = template(&[
        "--set",
        "discovery.fdsMode=BLACKLIST",
        "--set",
        &format!("serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn={role_arn}"),
        "--set",
        "discovery.lambda.pollInterval=1m",
        "--set",
        "discovery.lambda.apiRps=10",
        "--set",
        "discovery.lambda.aliases=true",
        "--set",
        "discovery.lambda.maxFunctions=500",
        "--set-json",
        r#"extraEnv=[{"name":"AWS_REGION","value":"eu-west-1"}]"#,
    ]);
    let account = find(&docs, "ServiceAccount", "ud-upstream-discovery");
    let annotations = at(account, "metadata.annotations");
    assert_eq!(
        annotations
            .get("eks.amazonaws.com/role-arn")
            .and_then(Value::as_str),
        Some(role_arn)
    );
    let cluster_role = find(&docs, "ClusterRole", "ud-upstream-discovery");
    assert_eq!(
        grants(cluster_role, "", "secrets"),
        sorted(&["get", "list", "watch"])
    );
    assert_eq!(
        grants(cluster_role, "gloo.solo.io", "upstreams"),
        sorted(FDS_UPSTREAM_VERBS)
    );
    let args = rendered_args(&docs);
    let tail: Vec<&str> = args[args.len() - 5..].iter().map(String::as_str).collect();
    assert_eq!(
        tail,
        [
            "--fds-mode=BLACKLIST",
            "--lambda-poll-interval=1m",
            "--lambda-api-rps=10",
            "--lambda-aliases",
            "--lambda-max-functions=500"
        ]
    );
    assert_daemon_knows(&args);
    let env = at(container(&docs), "env.2");
    assert_eq!(str_at(env, "name"), "AWS_REGION");

    // maxFunctions null: the flag is left out, the daemon's default applies.
    let docs = template(&["--set", "discovery.lambda.maxFunctions=null"]);
    let args = rendered_args(&docs);
    assert!(args.contains(&"--lambda-api-rps=5".to_string()), "{args:?}");
    assert!(
        !args_contain_any(&args, &["--lambda-max-functions"]),
        "{args:?}"
    );

    // DISABLED is passed (Settings or the daemon's default may say otherwise), without the
    // Lambda flags, and
    // grants no Secrets and no Upstreams outside the write namespace.
    let docs = template(&["--set", "discovery.fdsMode=DISABLED"]);
    let args = rendered_args(&docs);
    assert_eq!(
        args.iter().filter(|a| a.starts_with("--fds-mode")).count(),
        1,
        "{args:?}"
    );
    assert_eq!(args.last().map(String::as_str), Some("--fds-mode=DISABLED"));
    assert!(!args_contain_any(&args, LAMBDA_FLAGS), "{args:?}");
    assert_daemon_knows(&args);
    let cluster_role = find(&docs, "ClusterRole", "ud-upstream-discovery");
    assert!(grants(cluster_role, "", "secrets").is_empty());
    assert!(grants(cluster_role, "gloo.solo.io", "upstreams").is_empty());
    assert_eq!(rules(cluster_role).len(), 4, "{:?}", rules(cluster_role));
    assert_eq!(count(&docs, "Role"), 3, "{:?}", kinds(&docs));
}

/// The flags whose values Settings also holds: the chart passes them only when set.
const SETTINGS_FLAGS: &[&str] = &[
    "--write-namespace",
    "--watch-namespaces",
    "--namespace-selector",
    "--service-selector",
    "--global-annotations",
    "--fds-mode",
    "--uds-enabled",
    "--read-settings",
    "--settings-name",
];

fn args_contain_any(args: &[String], flags: &[&str]) -> bool {
    args.iter().any(|a| {
        flags
            .iter()
            .any(|f| a == f || a.starts_with(&format!("{f}=")))
    })
}

#[test]
fn every_daemon_flag_has_a_value() {
    let docs = template(&[
        "--set",
        "discovery.settings.name=edge-settings",
        "--set",
        "discovery.udsOptions.enabled=false",
        "--set",
        "discovery.writeNamespace=gateways",
        "--set",
        "discovery.watchNamespaces={shop,payments}",
        "--set",
        "discovery.namespaceSelector=team=edge",
        "--set",
        "discovery.serviceSelector=discovery!=disabled",
        "--set-json",
        r#"discovery.globalAnnotations={"gloo.solo.io/h2_service":"true","gloo.solo.io/upstream_config":"{\"connectionConfig\": {\"maxRequestsPerConnection\": 1}}"}"#,
        "--set",
        "discovery.resyncInterval=1h30m",
        "--set",
        "discovery.kubeApiQps=7",
        "--set",
        "discovery.kubeApiBurst=9",
        "--set",
        "discovery.writeConcurrency=3",
        "--set",
        "discovery.dryRun=true",
        "--set",
        "discovery.logLevel=upstream_discovery=debug\\,kube=info",
        "--set",
        "discovery.logFormat=text",
        "--set",
        "discovery.leaderElection.leaseName=my-lease",
        "--set",
        "metrics.port=9100",
        "--set",
        "discovery.fdsMode=BLACKLIST",
        "--set",
        "discovery.lambda.pollInterval=2m",
        "--set",
        "discovery.lambda.apiRps=3",
        "--set",
        "discovery.lambda.aliases=true",
        "--set",
        "discovery.lambda.maxFunctions=100",
        "--set",
        "extraArgs={--write-concurrency=4}",
    ]);
    let args = rendered_args(&docs);
    assert_eq!(
        args,
        [
            "run",
            "--settings-name=edge-settings",
            "--write-namespace=gateways",
            "--write-namespace-mode=fixed",
            "--watch-namespaces=shop,payments",
            "--namespace-selector=team=edge",
            "--uds-enabled=false",
            "--service-selector=discovery!=disabled",
            "--global-annotations=gloo.solo.io/h2_service=true",
            r#"--global-annotations=gloo.solo.io/upstream_config={"connectionConfig": {"maxRequestsPerConnection": 1}}"#,
            "--resync-interval=1h30m",
            "--kube-api-qps=7",
            "--kube-api-burst=9",
            "--write-concurrency=3",
            "--metrics-addr=0.0.0.0:9100",
            "--leader-elect=true",
            "--lease-name=my-lease",
            "--dry-run",
            "--log-level=upstream_discovery=debug,kube=info",
            "--log-format=text",
            "--fds-mode=BLACKLIST",
            "--lambda-poll-interval=2m",
            "--lambda-api-rps=3",
            "--lambda-aliases",
            "--lambda-max-functions=100",
            "--write-concurrency=4",
        ]
    );
    assert_daemon_knows(&args);
    let c = container(&docs);
    assert_eq!(at(c, "ports.0.containerPort").as_u64(), Some(9100));

    let docs = template(&["--set", "discovery.leaderElection.enabled=false"]);
    let args = rendered_args(&docs);
    assert!(args.contains(&"--leader-elect=false".to_string()));
    assert!(!args.iter().any(|a| a.starts_with("--lease-name")));
    assert_eq!(
        count(&docs, "Role"),
        2,
        "no Lease rights without leader election"
    );
    assert!(docs
        .iter()
        .all(|d| !str_at(d, "metadata.name").ends_with("-leader-election")));
}

#[test]
fn pod_settings_image_digest_and_service_monitor_render() {
    let digest = format!("sha256:{}", "0123456789abcdef".repeat(4));
    let docs = template(&[
        "--set",
        "image.repository=registry.example.com/edge/upstream-discovery",
        "--set",
        &format!("image.digest={digest}"),
        "--set",
        "image.pullSecrets={regcred}",
        "--set",
        "nodeSelector.kubernetes\\.io/os=linux",
        "--set-json",
        r#"tolerations=[{"key":"edge","operator":"Exists","effect":"NoSchedule"}]"#,
        "--set-json",
        r#"affinity={"podAntiAffinity":{"preferredDuringSchedulingIgnoredDuringExecution":[]}}"#,
        "--set",
        "podAnnotations.team=edge",
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "metrics.serviceMonitor.labels.release=prometheus",
        "--set",
        "metrics.scrapeAnnotations=false",
    ]);
    let c = container(&docs);
    assert_eq!(
        str_at(c, "image"),
        format!("registry.example.com/edge/upstream-discovery@{digest}")
    );
    let deployment = find(&docs, "Deployment", "ud-upstream-discovery");
    let pod = at(deployment, "spec.template.spec");
    assert_eq!(str_at(pod, "imagePullSecrets.0.name"), "regcred");
    assert_eq!(
        at(pod, "nodeSelector")
            .get("kubernetes.io/os")
            .and_then(Value::as_str),
        Some("linux")
    );
    assert_eq!(str_at(pod, "tolerations.0.key"), "edge");
    at(pod, "affinity.podAntiAffinity");
    let annotations = at(deployment, "spec.template.metadata.annotations");
    assert_eq!(
        annotations.get("team").and_then(Value::as_str),
        Some("edge")
    );
    assert!(annotations.get("prometheus.io/scrape").is_none());

    let monitor = find(&docs, "ServiceMonitor", "ud-upstream-discovery");
    assert_eq!(str_at(monitor, "apiVersion"), "monitoring.coreos.com/v1");
    assert_eq!(str_at(monitor, "metadata.labels.release"), "prometheus");
    assert_eq!(str_at(monitor, "spec.endpoints.0.port"), "metrics");
    assert_eq!(str_at(monitor, "spec.endpoints.0.path"), "/metrics");
    let service = find(&docs, "Service", "ud-upstream-discovery-metrics");
    assert_eq!(
        at(monitor, "spec.selector.matchLabels"),
        at(service, "spec.selector")
    );

    // A tag instead of a digest.
    let docs = template(&["--set", "image.tag=dev", "--set", "image.pullPolicy=Always"]);
    assert_eq!(str_at(container(&docs), "image"), "upstream-discovery:dev");
    assert_eq!(str_at(container(&docs), "imagePullPolicy"), "Always");
}

// ---- Gloo's Settings and Gloo's names for the same values -------------------------------

/// A Gloo chart values file (tests/packaging/gloo-values.yaml); its `discovery:` block is reused
/// as it is.
const GLOO_VALUES: &str = "tests/packaging/gloo-values.yaml";

/// `helm template` with a values file holding only the `discovery:` block of Gloo's values.
fn template_with_gloos_discovery_block(extra: &[&str]) -> Vec<Value> {
    let gloo: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(repo().join(GLOO_VALUES)).expect("the Gloo values file"),
    )
    .expect("YAML");
    let block = serde_json::json!({ "discovery": at(&gloo, "discovery") });
    let mut file = tempfile::NamedTempFile::new().expect("a temporary file");
    // JSON is YAML: helm reads it as a values file.
    std::io::Write::write_all(&mut file, block.to_string().as_bytes()).expect("write values");
    let path = file.path().to_str().expect("utf-8 path").to_string();
    let mut args = vec!["-f", path.as_str()];
    args.extend_from_slice(extra);
    template(&args)
}

#[test]
fn a_gloo_values_discovery_block_renders_as_the_same_settings_under_our_names() {
    let gloo = template_with_gloos_discovery_block(&[]);
    let ours = template(&[
        "--set",
        "discovery.fdsMode=BLACKLIST",
        "--set",
        "discovery.serviceSelector=team=edge",
        "--set",
        "discovery.logLevel=debug",
        "--set",
        "replicas=2",
        "--set-json",
        r#"resources={"requests":{"cpu":"100m","memory":"128Mi"},"limits":{"cpu":"1","memory":"512Mi"}}"#,
        "--set-json",
        r#"extraEnv=[{"name":"AWS_REGION","value":"eu-west-1"},{"name":"NODE_NAME","valueFrom":{"fieldRef":{"fieldPath":"spec.nodeName"}}}]"#,
        "--set",
        "serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::123456789012:role/lambda-discovery",
        "--set-string",
        "podAnnotations.sidecar\\.istio\\.io/inject=false",
        "--set",
        "nodeSelector.kubernetes\\.io/os=linux",
    ]);

    // The daemon's command line, written out: Gloo's watchLabels are our --service-selector,
    // udsOptions.enabled true is the default (not passed), Settings read (nothing passed).
    let expected = [
        "run",
        "--write-namespace-mode=fixed",
        "--service-selector=team=edge",
        "--resync-interval=10m",
        "--kube-api-qps=50",
        "--kube-api-burst=100",
        "--write-concurrency=16",
        "--metrics-addr=0.0.0.0:9091",
        "--leader-elect=true",
        "--lease-name=ud-upstream-discovery",
        "--log-level=debug",
        "--log-format=json",
        "--fds-mode=BLACKLIST",
        "--lambda-poll-interval=30s",
        "--lambda-api-rps=5",
        "--lambda-max-functions=2000",
    ];
    assert_eq!(rendered_args(&gloo), expected);
    assert_eq!(rendered_args(&ours), expected);
    assert_daemon_knows(&rendered_args(&gloo));

    let c = container(&gloo);
    let env: Vec<&str> = at(c, "env")
        .as_array()
        .expect("env")
        .iter()
        .map(|e| str_at(e, "name"))
        .collect();
    assert_eq!(
        env,
        ["POD_NAMESPACE", "POD_NAME", "AWS_REGION", "NODE_NAME"]
    );
    assert_eq!(str_at(c, "env.2.value"), "eu-west-1");
    assert_eq!(
        str_at(c, "env.3.valueFrom.fieldRef.fieldPath"),
        "spec.nodeName"
    );
    assert_eq!(str_at(c, "resources.requests.cpu"), "100m");
    assert_eq!(str_at(c, "resources.requests.memory"), "128Mi");
    assert_eq!(str_at(c, "resources.limits.cpu"), "1");
    assert_eq!(str_at(c, "resources.limits.memory"), "512Mi");
    // Gloo's discovery image (deployment.image) is not taken: the image is this chart's.
    assert_eq!(str_at(c, "image"), "upstream-discovery:0.1.0");
    let deployment = find(&gloo, "Deployment", "ud-upstream-discovery");
    assert_eq!(at(deployment, "spec.replicas").as_u64(), Some(2));
    let account = find(&gloo, "ServiceAccount", "ud-upstream-discovery");
    assert_eq!(
        at(account, "metadata.annotations")
            .get("eks.amazonaws.com/role-arn")
            .and_then(Value::as_str),
        Some("arn:aws:iam::123456789012:role/lambda-discovery")
    );
    // Two replicas: a PodDisruptionBudget, as with `replicas: 2`.
    find(&gloo, "PodDisruptionBudget", "ud-upstream-discovery");

    // Everything else is the same too: the Deployment, ServiceAccount, RBAC, Services, PDB.
    assert_eq!(
        gloo.len(),
        ours.len(),
        "{:?} {:?}",
        kinds(&gloo),
        kinds(&ours)
    );
    for (from_gloo, from_ours) in gloo.iter().zip(&ours) {
        assert_eq!(
            from_gloo,
            from_ours,
            "{} {} differs",
            str_at(from_gloo, "kind"),
            str_at(from_gloo, "metadata.name")
        );
    }
}

#[test]
fn settings_are_read_with_a_role_in_the_release_namespace_unless_turned_off() {
    // Default: read, one Role with get/list/watch on settings in the release namespace, bound to
    // the ServiceAccount; nothing on settings anywhere else; no flag (the daemon's default).
    let docs = template(&[]);
    let role = find(&docs, "Role", "ud-upstream-discovery-settings");
    assert_eq!(str_at(role, "metadata.namespace"), "edge");
    assert_eq!(
        rules(role),
        [(
            "gloo.solo.io".to_string(),
            "settings".to_string(),
            vec!["get".to_string(), "list".to_string(), "watch".to_string()]
        )]
    );
    let binding = find(&docs, "RoleBinding", "ud-upstream-discovery-settings");
    assert_eq!(str_at(binding, "metadata.namespace"), "edge");
    assert_eq!(str_at(binding, "roleRef.kind"), "Role");
    assert_eq!(
        str_at(binding, "roleRef.name"),
        "ud-upstream-discovery-settings"
    );
    assert_eq!(str_at(binding, "subjects.0.name"), "ud-upstream-discovery");
    assert_eq!(str_at(binding, "subjects.0.namespace"), "edge");
    let settings_grants = |docs: &[Value]| -> usize {
        docs.iter()
            .filter(|d| str_at(d, "kind").ends_with("Role"))
            .flat_map(rules)
            .filter(|(_, resource, _)| resource == "settings")
            .count()
    };
    assert_eq!(settings_grants(&docs), 1);
    let args = rendered_args(&docs);
    assert!(
        !args_contain_any(&args, &["--read-settings", "--settings-name"]),
        "{args:?}"
    );

    // Another name: passed; the same Role (the object's name is not in the rule).
    let docs = template(&["--set", "discovery.settings.name=edge-settings"]);
    assert_eq!(rendered_args(&docs)[1], "--settings-name=edge-settings");
    find(&docs, "Role", "ud-upstream-discovery-settings");
    // `default` spelt out is not passed.
    let docs = template(&["--set", "discovery.settings.name=default"]);
    assert!(!args_contain_any(
        &rendered_args(&docs),
        &["--settings-name"]
    ));

    // Off: --read-settings=false, no rights on settings at all, no name passed.
    let docs = template(&[
        "--set",
        "discovery.settings.enabled=false",
        "--set",
        "discovery.settings.name=edge-settings",
    ]);
    let args = rendered_args(&docs);
    assert_eq!(args[..2], ["run", "--read-settings=false"]);
    assert!(!args_contain_any(&args, &["--settings-name"]), "{args:?}");
    assert_daemon_knows(&args);
    assert_eq!(settings_grants(&docs), 0);
    assert!(docs
        .iter()
        .all(|d| !str_at(d, "metadata.name").ends_with("-settings")));
    assert_eq!(count(&docs, "Role"), 2, "{:?}", kinds(&docs));
    assert_eq!(count(&docs, "RoleBinding"), 2, "{:?}", kinds(&docs));
}

#[test]
fn gloo_uds_options_turn_service_discovery_off_and_give_a_sorted_service_selector() {
    // enabled false is passed; true (the default of the daemon and of Gloo) and unset are not.
    let docs = template(&["--set", "discovery.udsOptions.enabled=false"]);
    let args = rendered_args(&docs);
    assert_eq!(
        args.iter()
            .filter(|a| a.starts_with("--uds-enabled"))
            .collect::<Vec<_>>(),
        ["--uds-enabled=false"]
    );
    assert_daemon_knows(&args);
    for set in [
        "discovery.udsOptions.enabled=true",
        "discovery.udsOptions.enabled=null",
    ] {
        let args = rendered_args(&template(&["--set", set]));
        assert!(
            !args_contain_any(&args, &["--uds-enabled"]),
            "{set}: {args:?}"
        );
    }
    // watchLabels: one equality selector, keys sorted.
    let docs = template(&[
        "--set-json",
        r#"discovery.udsOptions.watchLabels={"tier":"backend","app":"shop","team":"edge"}"#,
    ]);
    let args = rendered_args(&docs);
    let selectors: Vec<&String> = args
        .iter()
        .filter(|a| a.starts_with("--service-selector"))
        .collect();
    assert_eq!(
        selectors,
        ["--service-selector=app=shop,team=edge,tier=backend"]
    );
    // An empty map is no selector.
    let args = rendered_args(&template(&[
        "--set-json",
        "discovery.udsOptions.watchLabels={}",
    ]));
    assert!(
        !args_contain_any(&args, &["--service-selector"]),
        "{args:?}"
    );
}

#[test]
fn a_service_selector_and_gloos_watch_labels_together_fail_with_a_message() {
    let error = try_template(
        "ud",
        "edge",
        &[
            "--set",
            "discovery.serviceSelector=discovery!=disabled",
            "--set",
            "discovery.udsOptions.watchLabels.team=edge",
        ],
    )
    .expect_err("both selectors were accepted");
    assert!(
        error.contains(
            "discovery.serviceSelector and discovery.udsOptions.watchLabels are both set"
        ) && error.contains("keep one"),
        "{error}"
    );
}

#[test]
fn gloo_log_levels_and_pod_settings_under_gloos_names() {
    // Gloo's zap levels above error are error here; empty passes nothing (LOG_LEVEL or info).
    for (level, expected) in [
        ("fatal", Some("--log-level=error")),
        ("panic", Some("--log-level=error")),
        ("dpanic", Some("--log-level=error")),
        ("warn", Some("--log-level=warn")),
        ("", None),
    ] {
        let args = rendered_args(&template(&[
            "--set",
            &format!("discovery.logLevel={level}"),
        ]));
        let found: Vec<&str> = args
            .iter()
            .filter(|a| a.starts_with("--log-level"))
            .map(String::as_str)
            .collect();
        assert_eq!(found, expected.into_iter().collect::<Vec<_>>(), "{level:?}");
    }

    // deployment.* wins over ours when set; lists are appended, maps merged.
    let docs = template(&[
        "--set",
        "replicas=3",
        "--set",
        "discovery.deployment.replicas=0",
        "--set",
        "resources.requests.cpu=1",
        "--set-json",
        r#"discovery.deployment.resources={"requests":{"cpu":"250m"}}"#,
        "--set-json",
        r#"extraEnv=[{"name":"A","value":"1"}]"#,
        "--set-json",
        r#"discovery.deployment.customEnv=[{"name":"B","value":"2"}]"#,
        "--set-string",
        "serviceAccount.annotations.ours=1",
        "--set-string",
        "discovery.serviceAccount.extraAnnotations.gloos=2",
        "--set",
        "discovery.deployment.priorityClassName=system-cluster-critical",
        "--set",
        "discovery.deployment.extraDiscoveryLabels.team=edge",
        "--set",
        "discovery.deployment.runAsUser=20000",
        "--set",
        "discovery.deployment.fsGroup=20001",
        "--set",
        "discovery.deployment.image.repository=discovery",
        "--set",
        "discovery.deployment.stats.enabled=true",
    ]);
    let deployment = find(&docs, "Deployment", "ud-upstream-discovery");
    assert_eq!(at(deployment, "spec.replicas").as_u64(), Some(0));
    assert_eq!(count(&docs, "PodDisruptionBudget"), 0);
    let pod = at(deployment, "spec.template.spec");
    assert_eq!(str_at(pod, "priorityClassName"), "system-cluster-critical");
    assert_eq!(
        str_at(deployment, "spec.template.metadata.labels.team"),
        "edge"
    );
    assert_eq!(at(pod, "securityContext.runAsUser").as_u64(), Some(20000));
    assert_eq!(at(pod, "securityContext.fsGroup").as_u64(), Some(20001));
    let c = container(&docs);
    assert_eq!(str_at(c, "image"), "upstream-discovery:0.1.0");
    assert_eq!(at(c, "securityContext.runAsUser").as_u64(), Some(20000));
    assert_eq!(
        at(c, "resources"),
        &serde_json::json!({"requests": {"cpu": "250m"}})
    );
    let env: Vec<&str> = at(c, "env")
        .as_array()
        .expect("env")
        .iter()
        .map(|e| str_at(e, "name"))
        .collect();
    assert_eq!(env, ["POD_NAMESPACE", "POD_NAME", "A", "B"]);
    let account = find(&docs, "ServiceAccount", "ud-upstream-discovery");
    assert_eq!(str_at(account, "metadata.annotations.ours"), "1");
    assert_eq!(str_at(account, "metadata.annotations.gloos"), "2");

    // floatingUserId: the platform picks the IDs (OpenShift); the rest of the context stays.
    let docs = template(&["--set", "discovery.deployment.floatingUserId=true"]);
    let pod = at(
        find(&docs, "Deployment", "ud-upstream-discovery"),
        "spec.template.spec",
    );
    for key in ["runAsUser", "runAsGroup", "fsGroup"] {
        assert!(at(pod, "securityContext").get(key).is_none(), "{key}");
        assert!(
            at(container(&docs), "securityContext").get(key).is_none(),
            "{key}"
        );
    }
    assert_eq!(
        at(pod, "securityContext.runAsNonRoot").as_bool(),
        Some(true)
    );
    assert_eq!(
        at(container(&docs), "securityContext.readOnlyRootFilesystem").as_bool(),
        Some(true)
    );
}

/// The plain manifests: a header, then exactly what `helm template` renders with default values.
fn expected_manifests() -> String {
    let rendered = try_template(RELEASE, NAMESPACE, &["--include-crds"])
        .unwrap_or_else(|e| panic!("helm template failed:\n{e}"));
    format!(
        "# upstream-discovery for users without Helm: the chart {CHART} rendered with its\n\
         # default values as release {RELEASE} in namespace {NAMESPACE}, CRD included.\n\
         #\n\
         #   kubectl create namespace {NAMESPACE}\n\
         #   kubectl apply --server-side -f {MANIFESTS}\n\
         #\n\
         # Generated; do not edit. tests/packaging.rs checks it is in sync; to regenerate:\n\
         #   UPDATE_MANIFESTS=1 cargo test --test packaging plain_manifests\n\
         # (that runs: helm template {RELEASE} {CHART} --namespace {NAMESPACE} --include-crds)\n\
         {rendered}"
    )
}

#[test]
fn plain_manifests_are_the_chart_rendered_with_default_values() {
    let expected = expected_manifests();
    let path = repo().join(MANIFESTS);
    if std::env::var_os("UPDATE_MANIFESTS").is_some() {
        std::fs::write(&path, &expected).expect("write the manifests");
    }
    let actual = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        actual == expected,
        "{MANIFESTS} is not the chart rendered with default values; regenerate it with\n  \
         UPDATE_MANIFESTS=1 cargo test --test packaging plain_manifests"
    );
    let docs = documents(&actual);
    assert!(kinds(&docs).contains(&"CustomResourceDefinition".to_string()));
    assert!(kinds(&docs).contains(&"Deployment".to_string()));
}

#[test]
fn values_schema_rejects_misspelt_and_mistyped_values_with_the_path() {
    for (set, expected) in [
        (
            "discovery.writeNamespaceMod=service",
            "additional properties 'writeNamespaceMod' not allowed",
        ),
        (
            "discoverry.enabled=true",
            "additional properties 'discoverry' not allowed",
        ),
        ("replicas=three", "at '/replicas': got string, want integer"),
        (
            "discovery.enabled=yes",
            "at '/discovery/enabled': got string, want boolean",
        ),
        (
            "discovery.writeNamespaceMode=sideways",
            "at '/discovery/writeNamespaceMode'",
        ),
        ("discovery.fdsMode=ENABLED", "at '/discovery/fdsMode'"),
        ("discovery.fdsMode=whitelist", "at '/discovery/fdsMode'"),
        (
            "discovery.lambda.maxFunctions=0",
            "at '/discovery/lambda/maxFunctions'",
        ),
        (
            "discovery.lambda.pollInterval=often",
            "at '/discovery/lambda/pollInterval'",
        ),
        (
            "discovery.resyncInterval=soon",
            "at '/discovery/resyncInterval'",
        ),
        ("discovery.kubeApiQps=0", "at '/discovery/kubeApiQps'"),
        ("discovery.logFormat=xml", "at '/discovery/logFormat'"),
        (
            "discovery.watchNamespaces=shop",
            "at '/discovery/watchNamespaces'",
        ),
        ("image.digest=latest", "at '/image/digest'"),
        ("metrics.port=99999", "at '/metrics/port'"),
        (
            "metrics.serviceMonitor.enable=true",
            "additional properties 'enable' not allowed",
        ),
        (
            "serviceAccount.annotations=arn",
            "at '/serviceAccount/annotations'",
        ),
        (
            "discovery.settings.enable=false",
            "additional properties 'enable' not allowed",
        ),
        (
            "discovery.settings.enabled=no",
            "at '/discovery/settings/enabled'",
        ),
        (
            "discovery.udsOptions.enabled=yes",
            "at '/discovery/udsOptions/enabled'",
        ),
        (
            "discovery.udsOptions.watchLabel.team=edge",
            "additional properties 'watchLabel' not allowed",
        ),
        (
            "discovery.deployment.replica=2",
            "additional properties 'replica' not allowed",
        ),
        (
            "discovery.deployment.replicas=two",
            "at '/discovery/deployment/replicas'",
        ),
        (
            "discovery.serviceAccount.extraAnnotation.a=b",
            "additional properties 'extraAnnotation' not allowed",
        ),
    ] {
        let error = try_template("ud", "edge", &["--set", set])
            .err()
            .unwrap_or_else(|| panic!("--set {set} was accepted"));
        assert!(
            error.contains("values don't meet the specifications of the schema")
                && error.contains(expected),
            "--set {set}: expected an error with {expected:?}, got:\n{error}"
        );
    }
}

// ---- the Dockerfile ----------------------------------------------------------------------

#[test]
fn dockerfile_passes_hadolint() {
    let output = run(Command::new(hadolint()).args(["--no-color", "Dockerfile"]));
    assert!(
        output.status.success(),
        "hadolint Dockerfile:\n{}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    assert!(
        !dockerfile.contains("hadolint ignore"),
        "no hadolint ignores without a justification"
    );
}

/// The Dockerfile's instructions (continuation lines joined, comments dropped) as (KEYWORD, rest).
fn instructions(dockerfile: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in dockerfile.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && pending.is_empty()) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(trimmed);
        let (keyword, rest) = pending
            .split_once(char::is_whitespace)
            .unwrap_or((&pending, ""));
        out.push((keyword.to_uppercase(), rest.trim().to_string()));
        pending.clear();
    }
    out
}

#[test]
fn dockerfile_is_multi_stage_non_root_and_caches_dependencies_apart() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    let steps = instructions(&dockerfile);
    let froms: Vec<&String> = steps
        .iter()
        .filter(|(k, _)| k == "FROM")
        .map(|(_, r)| r)
        .collect();
    assert_eq!(froms.len(), 2, "two stages: {froms:?}");
    assert!(froms[0].ends_with(" AS build"), "{froms:?}");
    assert!(froms[1].contains("distroless"), "{froms:?}");
    let position = |keyword: &str, needle: &str| {
        steps
            .iter()
            .position(|(k, r)| k == keyword && r.contains(needle))
            .unwrap_or_else(|| panic!("no {keyword} with {needle:?}"))
    };
    // Cargo.toml/Cargo.lock, a dependency build, then the sources and the real build.
    let manifests = position("COPY", "Cargo.lock");
    let dependencies = position("RUN", "cargo build");
    let sources = position("COPY", "src");
    assert!(
        manifests < dependencies && dependencies < sources,
        "{steps:?}"
    );
    let runtime = steps.iter().rposition(|(k, _)| k == "FROM").unwrap();
    let user = position("USER", "10101");
    assert!(user > runtime, "USER 10101 in the final stage");
    assert!(steps.iter().any(|(k, r)| k == "EXPOSE" && r == "9091"));
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).expect(".dockerignore");
    for needed in ["!Cargo.toml", "!Cargo.lock", "!src/"] {
        assert!(
            ignore.lines().any(|l| l.trim() == needed),
            ".dockerignore lacks {needed}"
        );
    }
}

#[test]
fn dockerfile_build_command_builds_the_binary_its_entrypoint_names() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    let steps = instructions(&dockerfile);
    let runtime = steps.iter().rposition(|(k, _)| k == "FROM").unwrap();
    let (build, final_stage) = steps.split_at(runtime);
    let workdir = build
        .iter()
        .rev()
        .find(|(k, _)| k == "WORKDIR")
        .map(|(_, r)| r.clone())
        .expect("WORKDIR in the build stage");
    let command = build
        .iter()
        .rev()
        .find(|(k, r)| k == "RUN" && r.contains("cargo build"))
        .map(|(_, r)| r.clone())
        .expect("a RUN cargo build in the build stage");

    // What the final stage takes from the build stage, and what it runs.
    let copy = final_stage
        .iter()
        .find(|(k, r)| k == "COPY" && r.starts_with("--from=build "))
        .map(|(_, r)| r.clone())
        .expect("COPY --from=build");
    let parts: Vec<&str> = copy.split_whitespace().collect();
    let (source, destination) = (parts[1], parts[2]);
    let entrypoint: Vec<String> = final_stage
        .iter()
        .find(|(k, _)| k == "ENTRYPOINT")
        .map(|(_, r)| serde_json::from_str(r).expect("ENTRYPOINT in exec (JSON) form"))
        .expect("ENTRYPOINT");
    assert_eq!(
        entrypoint,
        [destination],
        "ENTRYPOINT runs the copied binary"
    );
    let cmd: Vec<String> = final_stage
        .iter()
        .find(|(k, _)| k == "CMD")
        .map(|(_, r)| serde_json::from_str(r).expect("CMD in exec form"))
        .expect("CMD");
    assert_eq!(cmd, ["run"]);

    // The command is one `cargo build` of the shipped profile (`dist`: release, built lean); the
    // binary it names is a bin target of this package and the one the final stage copies and
    // runs.
    let args: Vec<&str> = command.split_whitespace().collect();
    assert_eq!(
        args.get(..2),
        Some(&["cargo", "build"][..]),
        "one cargo build: {command}"
    );
    assert!(
        args.iter()
            .all(|arg| !arg.contains(['&', ';', '|', '$', '`'])),
        "nothing but cargo's own arguments: {command}"
    );
    let profile = args
        .windows(2)
        .find(|pair| pair[0] == "--profile")
        .map(|pair| pair[1])
        .expect("--profile names the shipped profile");
    assert_eq!(profile, "dist", "the lean profile: {command}");
    let manifest = std::fs::read_to_string(repo().join("Cargo.toml")).expect("Cargo.toml");
    let section = format!("[profile.{profile}]");
    let inherits = manifest
        .split(section.as_str())
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .and_then(|body| {
            body.lines()
                .find(|line| line.trim_start().starts_with("inherits"))
        })
        .map(|line| {
            line.split('=')
                .nth(1)
                .unwrap_or("")
                .trim()
                .trim_matches('"')
                .to_string()
        });
    assert_eq!(
        inherits.as_deref(),
        Some("release"),
        "Cargo.toml's {section} inherits release"
    );
    let bin = args
        .windows(2)
        .find(|pair| pair[0] == "--bin")
        .map(|pair| pair[1])
        .expect("--bin names the binary");
    let relative = Path::new(source)
        .strip_prefix(&workdir)
        .unwrap_or_else(|_| panic!("{source} is not under WORKDIR {workdir}"))
        .strip_prefix(format!("target/{profile}"))
        .unwrap_or_else(|_| panic!("the binary comes from target/{profile}/"));
    assert_eq!(
        relative,
        Path::new(bin),
        "the final stage copies the binary built"
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let metadata = run(Command::new(&cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--locked"])
        .current_dir(repo()));
    assert!(metadata.status.success(), "{}", text(&metadata.stderr));
    let metadata: Value = serde_json::from_slice(&metadata.stdout).expect("cargo metadata");
    let bins: Vec<String> = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .flat_map(|package| package["targets"].as_array().cloned().unwrap_or_default())
        .filter(|target| {
            target["kind"]
                .as_array()
                .is_some_and(|k| k.contains(&"bin".into()))
        })
        .map(|target| target["name"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        bins.iter().any(|name| name == bin),
        "--bin {bin} is none of the package's binaries {bins:?}"
    );

    // Then the very command but for its profile: run with the profile and the target directory
    // the test binaries were built in, it finds every crate compiled and builds nothing a
    // second time (a release build of the whole graph in a directory of its own took 14.5
    // minutes of a cold run on two cores). The dist profile changes only how the same code is
    // optimized and linked (LTO, codegen units, stripping, opt-level of cold crates).
    let target_dir = std::env::current_exe()
        .expect("the test binary")
        .ancestors()
        .nth(3)
        .expect("<target>/debug/deps/<test>")
        .to_path_buf();
    let dev_args: Vec<&str> = args[1..]
        .iter()
        .copied()
        .filter(|arg| *arg != "--profile" && *arg != profile)
        .collect();
    let output = run(Command::new(&cargo)
        .args(&dev_args)
        .current_dir(repo())
        .env("CARGO_TARGET_DIR", &target_dir));
    assert!(
        output.status.success(),
        "`cargo {}` failed:\n{}",
        dev_args.join(" "),
        text(&output.stderr)
    );
    let binary = target_dir.join("debug").join(bin);
    assert!(
        binary.is_file(),
        "{command} did not produce {}",
        binary.display()
    );
    assert_eq!(
        binary.file_name(),
        Path::new(destination).file_name(),
        "the ENTRYPOINT binary is the one built"
    );
    let version = Command::new(&binary)
        .arg("version")
        .output()
        .expect("it runs");
    assert_eq!(
        text(&version.stdout).trim(),
        format!("upstream-discovery {}", env!("CARGO_PKG_VERSION"))
    );
    // `run` (the image's CMD) is a subcommand it has.
    let help = Command::new(&binary)
        .args(["run", "--help"])
        .output()
        .expect("it runs");
    assert!(help.status.success(), "{}", text(&help.stderr));
}

#[test]
fn readme_shows_install_get_upstreams_and_scraping() {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    for needle in [
        "helm install upstream-discovery deploy/helm/upstream-discovery -n gloo-system --set discovery.enabled=true",
        "kubectl get upstreams -n gloo-system",
        "/metrics",
        MANIFESTS,
    ] {
        assert!(readme.contains(needle), "README.md lacks {needle:?}");
    }
}

/// The anchors GitHub makes of a Markdown page's headings: lower case, punctuation but `-` and
/// `_` dropped, spaces as `-`.
fn anchors(markdown: &str) -> Vec<String> {
    let mut in_code = false;
    markdown
        .lines()
        .filter(|line| {
            if line.trim_start().starts_with("```") {
                in_code = !in_code;
            }
            !in_code && line.starts_with('#')
        })
        .map(|line| {
            line.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect()
}

/// The README and every page of docs/ link only to pages and headings that exist.
#[test]
fn readme_and_docs_link_to_pages_and_headings_that_exist() {
    let mut pages = vec![PathBuf::from("README.md")];
    for entry in std::fs::read_dir(repo().join("docs")).expect("docs/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|ext| ext == "md") {
            pages.push(path.strip_prefix(repo()).expect("in repo").to_path_buf());
        }
    }
    let mut broken = Vec::new();
    for page in &pages {
        let text = read(&page.to_string_lossy());
        let dir = page.parent().unwrap_or(Path::new(""));
        for (at, _) in text.match_indices("](") {
            let rest = &text[at + 2..];
            let target = &rest[..rest.find(')').unwrap_or(rest.len())];
            if target.starts_with("http") || target.contains(' ') {
                continue;
            }
            let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
            let linked = if file.is_empty() {
                page.clone()
            } else {
                dir.join(file)
            };
            let path = repo().join(&linked);
            if !path.exists() {
                broken.push(format!(
                    "{}: {target} (no {})",
                    page.display(),
                    linked.display()
                ));
            } else if !anchor.is_empty() {
                let linked_text = std::fs::read_to_string(&path).unwrap_or_default();
                if !anchors(&linked_text).iter().any(|a| a == anchor) {
                    broken.push(format!("{}: {target} (no such heading)", page.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "{broken:#?}");
}

// ---- Alerts and dashboard (issue 14) ----------------------------------------------------

const ALERTS: &str = "deploy/prometheus/alerts.yaml";
const ALERTS_TEST: &str = "deploy/prometheus/alerts_test.yaml";
const DASHBOARD: &str = "deploy/grafana/upstream-discovery.json";
const OPERATIONS: &str = "docs/operations.md";

/// The alerts the issue asks for, in the file's order.
const ALERT_NAMES: &[&str] = &[
    "UpstreamDiscoveryLagHigh",
    "UpstreamDiscoveryWritesFailing",
    "UpstreamDiscoveryNoLeader",
    "UpstreamDiscoveryWatchRestarting",
    "UpstreamDiscoveryCachesNotSynced",
    "UpstreamDiscoveryFunctionDiscoveryFailing",
    "UpstreamDiscoveryFunctionDiscoveryThrottled",
];

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// Debian's promtool (tests/env/setup.sh installs the `prometheus` package); the test fails,
/// never skips, when it is missing.
fn promtool() -> Command {
    let found = Command::new("promtool").arg("--version").output();
    assert!(
        matches!(&found, Ok(output) if output.status.success()),
        "promtool not found ({found:?}): run tests/env/setup.sh first (it installs Debian's prometheus)"
    );
    Command::new("promtool")
}

fn alert_rules() -> Vec<Value> {
    let rules: Value = serde_saphyr::from_str(&read(ALERTS)).expect("alerts.yaml is YAML");
    rules["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|group| group["rules"].as_array().cloned().expect("rules"))
        .collect()
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let check = run(promtool().args(["check", "rules", ALERTS]));
    assert!(
        check.status.success(),
        "promtool check rules:\n{}{}",
        text(&check.stdout),
        text(&check.stderr)
    );
    let test = run(promtool().args(["test", "rules", ALERTS_TEST]));
    assert!(
        test.status.success(),
        "promtool test rules:\n{}{}",
        text(&test.stdout),
        text(&test.stderr)
    );
}

#[test]
fn every_alert_has_for_severity_summary_description_runbook_and_two_tests() {
    let rules = alert_rules();
    let names: Vec<&str> = rules.iter().map(|r| str_at(r, "alert")).collect();
    assert_eq!(names, ALERT_NAMES);
    let tests: Value = serde_saphyr::from_str(&read(ALERTS_TEST)).expect("alerts_test.yaml");
    // Each alert's runbook is a section of the operations page.
    let operations = read(OPERATIONS);
    for rule in &rules {
        let name = str_at(rule, "alert");
        assert!(!str_at(rule, "for").is_empty(), "{name}: for");
        assert!(
            ["warning", "critical"].contains(&str_at(rule, "labels.severity")),
            "{name}: severity"
        );
        assert!(!str_at(rule, "annotations.summary").is_empty(), "{name}");
        assert!(
            str_at(rule, "annotations.description").contains("Look at")
                || str_at(rule, "annotations.description").contains("look at"),
            "{name}: the description says what to look at"
        );
        assert_eq!(
            str_at(rule, "annotations.runbook_url"),
            format!("{OPERATIONS}#runbook-{}", name.to_lowercase()),
            "{name}: runbook anchor"
        );
        // The anchor GitHub makes of the heading `#### Runbook: <name>`.
        let heading = format!("#### Runbook: {name}\n");
        assert!(
            operations.contains(&heading),
            "{name}: {OPERATIONS} has no runbook section {heading:?}"
        );
        assert!(
            anchors(&operations).contains(&format!("runbook-{}", name.to_lowercase())),
            "{name}: no such anchor in {OPERATIONS}"
        );
        // A case where it fires (an expected alert) and one where it stays quiet (none).
        let cases: Vec<&Value> = tests["tests"]
            .as_array()
            .expect("tests")
            .iter()
            .flat_map(|t| t["alert_rule_test"].as_array().into_iter().flatten())
            .filter(|case| case["alertname"] == name)
            .collect();
        let fires = cases
            .iter()
            .any(|c| c["exp_alerts"].as_array().is_some_and(|a| !a.is_empty()));
        let quiet = cases
            .iter()
            .any(|c| c["exp_alerts"].as_array().is_some_and(Vec::is_empty));
        assert!(fires && quiet, "{name}: fires {fires}, quiet {quiet}");
    }
}

/// Each `upstream_discovery_*` name a query uses, without a histogram's suffixes.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("upstream_discovery_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        let base = name
            .strip_suffix("_bucket")
            .or_else(|| name.strip_suffix("_count"))
            .or_else(|| name.strip_suffix("_sum"))
            .unwrap_or(&name);
        names.push(base.to_string());
    }
    names
}

/// Every metric an alert or a panel uses is one the daemon registers (src/metrics/), so a
/// renamed metric cannot leave a silent alert behind.
#[test]
fn alerts_and_dashboard_use_only_metrics_the_daemon_exports() {
    // The metrics module is a directory (`mod.rs`, and the ReferenceGrant metrics apart).
    let source = ["src/metrics/mod.rs", "src/metrics/grants.rs"]
        .map(read)
        .concat();
    let known = |name: &str| {
        name.strip_prefix("upstream_discovery_")
            .is_some_and(|short| source.contains(&format!("\"{short}\"")))
    };
    let mut exprs: Vec<String> = alert_rules()
        .iter()
        .map(|r| str_at(r, "expr").to_string())
        .collect();
    let dashboard: Value = serde_json::from_str(&read(DASHBOARD)).expect("dashboard JSON");
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(str_at(target, "expr").to_string());
        }
    }
    let mut used = 0;
    for expr in &exprs {
        for name in metric_names(expr) {
            assert!(known(&name), "{name} (in {expr}) is not in src/metrics/");
            used += 1;
        }
    }
    assert!(used >= 20, "{used}");
}

#[test]
fn dashboard_has_the_panels_and_a_prometheus_datasource_variable() {
    let dashboard: Value = serde_json::from_str(&read(DASHBOARD)).expect("dashboard JSON");
    assert!(dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    let datasource = variables
        .iter()
        .find(|v| v["name"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(str_at(datasource, "type"), "datasource");
    assert_eq!(str_at(datasource, "query"), "prometheus");
    let panels: Vec<&Value> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .filter(|p| p["type"] != "row")
        .collect();
    let exprs: Vec<String> = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| str_at(&t, "expr").to_string())
        .collect();
    for panel in &panels {
        assert_eq!(
            str_at(panel, "datasource.uid"),
            "${datasource}",
            "{}",
            panel["title"]
        );
        for target in panel["targets"].as_array().expect("targets") {
            assert_eq!(str_at(target, "datasource.uid"), "${datasource}");
        }
    }
    for needle in [
        "histogram_quantile(0.5, sum by (source, le) (rate(upstream_discovery_lag_seconds_bucket",
        "histogram_quantile(0.9, sum by (source, le) (rate(upstream_discovery_lag_seconds_bucket",
        "histogram_quantile(0.99, sum by (source, le) (rate(upstream_discovery_lag_seconds_bucket",
        "sum by (source, op, result) (rate(upstream_discovery_writes_total",
        "upstream_discovery_pending_changes",
        "max by (source) (upstream_discovery_upstreams",
        "sum by (kind) (rate(upstream_discovery_errors_total",
        "sum by (reason) (rate(upstream_discovery_skipped_total",
        "upstream_discovery_is_leader",
        "sum by (operation, result) (rate(upstream_discovery_lambda_api_calls_total",
        "process_resident_memory_bytes",
        "rate(process_cpu_seconds_total",
    ] {
        assert!(
            exprs
                .iter()
                .any(|e| e.starts_with(needle) || e.contains(needle)),
            "no panel query with {needle:?}"
        );
    }
    // Panel ids are unique (Grafana links and edits panels by id).
    let mut ids: Vec<u64> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .map(|p| p["id"].as_u64().expect("id"))
        .collect();
    let count = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), count);
}

/// The chart renders the rules and the dashboard from copies inside the chart (helm reads only
/// the chart's own files); the copies must be the files of deploy/.
#[test]
fn the_charts_copies_of_the_alerts_and_the_dashboard_are_the_files_of_deploy() {
    for (original, copy) in [
        (ALERTS, format!("{CHART}/files/alerts.yaml")),
        (DASHBOARD, format!("{CHART}/files/upstream-discovery.json")),
    ] {
        assert!(
            read(original) == read(&copy),
            "{copy} differs from {original}: cp {original} {copy}"
        );
    }
}

#[test]
fn prometheus_rule_is_off_by_default_and_renders_the_alerts_file() {
    assert_eq!(count(&template(&[]), "PrometheusRule"), 0);
    let docs = template(&[
        "--set",
        "metrics.prometheusRule.enabled=true",
        "--set",
        "metrics.prometheusRule.labels.release=kube-prometheus-stack",
    ]);
    let rule = find(&docs, "PrometheusRule", "ud-upstream-discovery");
    assert_eq!(str_at(rule, "apiVersion"), "monitoring.coreos.com/v1");
    assert_eq!(str_at(rule, "metadata.namespace"), "edge");
    assert_eq!(
        str_at(rule, "metadata.labels.release"),
        "kube-prometheus-stack"
    );
    let plain: Value = serde_saphyr::from_str(&read(ALERTS)).expect("alerts.yaml");
    assert_eq!(at(rule, "spec"), &plain);
    // Off with the daemon.
    let docs = template(&[
        "--set",
        "metrics.prometheusRule.enabled=true",
        "--set",
        "discovery.enabled=false",
    ]);
    assert_eq!(count(&docs, "PrometheusRule"), 0);
}

#[test]
fn grafana_dashboard_config_map_is_off_by_default_and_holds_the_dashboard() {
    assert!(!template(&[])
        .iter()
        .any(|d| str_at(d, "metadata.name") == "ud-upstream-discovery-dashboard"));
    let dashboard: Value = serde_json::from_str(&read(DASHBOARD)).expect("dashboard JSON");
    let docs = template(&["--set", "metrics.grafanaDashboard.enabled=true"]);
    let map = find(&docs, "ConfigMap", "ud-upstream-discovery-dashboard");
    assert_eq!(str_at(map, "metadata.namespace"), "edge");
    assert_eq!(
        at(map, "metadata.labels")
            .get("grafana_dashboard")
            .and_then(Value::as_str),
        Some("1")
    );
    let held = at(map, "data")
        .get("upstream-discovery.json")
        .and_then(Value::as_str)
        .expect("the dashboard's key");
    let held: Value = serde_json::from_str(held).expect("the ConfigMap holds JSON");
    assert_eq!(held, dashboard);

    let docs = template(&[
        "--set",
        "metrics.grafanaDashboard.enabled=true",
        "--set",
        "metrics.grafanaDashboard.namespace=monitoring",
        "--set",
        "metrics.grafanaDashboard.annotations.grafana_folder=Gloo",
        "--set",
        "metrics.grafanaDashboard.labels.team=edge",
    ]);
    let map = find(&docs, "ConfigMap", "ud-upstream-discovery-dashboard");
    assert_eq!(str_at(map, "metadata.namespace"), "monitoring");
    assert_eq!(str_at(map, "metadata.annotations.grafana_folder"), "Gloo");
    assert_eq!(str_at(map, "metadata.labels.team"), "edge");
}
