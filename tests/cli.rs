//! The `upstream-discovery` binary, run as a user would run it.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use upstream_discovery::crd::Upstream;

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_upstream-discovery"))
}

fn run(args: &[&str]) -> Output {
    binary().args(args).output().expect("the binary runs")
}

fn run_with_stdin(args: &[&str], stdin: &str) -> Output {
    let mut child = binary()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("the binary ends")
}

fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("read {}: {e}", full.display()))
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("utf-8 stdout")
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).expect("utf-8 stderr")
}

fn upstreams(yaml: &str) -> Vec<Upstream> {
    serde_saphyr::from_multiple(yaml).expect("each document is an Upstream")
}

fn by_name<'a>(upstreams: &'a [Upstream], name: &str) -> &'a Upstream {
    upstreams
        .iter()
        .find(|u| u.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no Upstream {name}"))
}

#[test]
fn shipped_crd_is_exactly_what_the_crd_command_prints() {
    let output = run(&["crd"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        repo_file("deploy/crds/upstreams.gloo.solo.io.yaml"),
        "deploy/crds/upstreams.gloo.solo.io.yaml drifted: regenerate it with `cargo run -- crd > deploy/crds/upstreams.gloo.solo.io.yaml`"
    );
}

#[test]
fn help_lists_every_subcommand() {
    let output = run(&["--help"]);
    assert!(output.status.success());
    let help = stdout(&output);
    for subcommand in ["run", "render", "crd", "version"] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(subcommand)),
            "{subcommand} missing from:\n{help}"
        );
    }
}

#[test]
fn version_prints_the_crate_version() {
    let output = run(&["version"]);
    assert!(output.status.success());
    assert_eq!(
        stdout(&output),
        format!("upstream-discovery {}\n", env!("CARGO_PKG_VERSION"))
    );
}

/// Without a cluster to talk to, `run` stops at once with one error line saying why, rather
/// than waiting or crashing.
#[test]
fn run_without_a_cluster_fails_fast_and_says_why() {
    let output = binary()
        .args([
            "run",
            "--log-format",
            "json",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .output()
        .expect("the binary runs");
    assert_eq!(output.status.code(), Some(1));
    let log = stderr(&output);
    let line: serde_json::Value =
        serde_json::from_str(log.trim()).unwrap_or_else(|e| panic!("{e}: {log}"));
    assert_eq!(line["level"], "ERROR");
    let error = line["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("cannot configure the Kubernetes client"),
        "{error}"
    );
    assert!(error.contains("/nonexistent/kubeconfig"), "{error}");
}

#[test]
fn run_refuses_bad_flags_with_usage_exit_code() {
    for args in [
        &["run", "--resync-interval", "soon"][..],
        &["run", "--log-format", "xml"],
        &["run", "--bogus"],
    ] {
        let output = run(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(stderr(&output).contains("error:"), "{args:?}");
    }
}

#[test]
fn render_of_the_bundled_example_matches_its_golden_output() {
    let output = run(&["render", "-f", "examples/services.yaml"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        repo_file("examples/upstreams.yaml"),
        "render output changed: if intended, regenerate examples/upstreams.yaml"
    );
}

#[test]
fn render_of_the_bundled_example_covers_each_rule() {
    let output = run(&["render", "-f", "examples/services.yaml"]);
    let all = upstreams(&stdout(&output));
    assert_eq!(
        all.len(),
        11,
        "8 Services with ports give 11 Upstreams; the headless one gives none"
    );
    assert!(all
        .iter()
        .all(|u| u.metadata.namespace.as_deref() == Some("gloo-system")));
    assert!(all.iter().all(|u| u
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("discovered_by"))
        .map(String::as_str)
        == Some("kubernetesplugin")));

    let petstore = by_name(&all, "default-petstore-8080");
    assert_eq!(
        petstore.metadata.annotations, None,
        "last-applied-configuration is not copied"
    );
    assert_eq!(petstore.spec.use_http2, None);
    assert_eq!(
        by_name(&all, "shop-inventory-9000").spec.use_http2,
        Some(true)
    );
    assert_eq!(
        by_name(&all, "shop-recommendations-8081").spec.use_http2,
        Some(true)
    );
    assert_eq!(
        by_name(&all, "gloo-system-gateway-proxy-19000")
            .spec
            .use_http2,
        Some(true)
    );

    let tls = by_name(&all, "shop-checkout-443")
        .spec
        .ssl_config
        .clone()
        .expect("TLS on 443");
    assert_eq!(
        tls.secret_ref.map(|s| (s.name, s.namespace)),
        Some(("checkout-tls".into(), "shop".into()))
    );
    assert_eq!(tls.one_way_tls, Some(true));
    assert_eq!(
        by_name(&all, "shop-checkout-9102").spec.ssl_config,
        None,
        "scoped to port 443"
    );

    let search = &by_name(&all, "shop-search-80").spec;
    assert_eq!(
        search.other["initialStreamWindowSize"],
        serde_json::json!(2048)
    );
    assert_eq!(
        search.other["circuitBreakers"],
        serde_json::json!({"maxConnections": 100})
    );

    let reviews = by_name(&all, "shop-reviews-9080")
        .spec
        .kube
        .clone()
        .expect("kube");
    assert_eq!(
        reviews.service_name.as_deref(),
        Some("reviews"),
        "deep merge keeps discovered fields"
    );
    assert!(reviews.other.contains_key("subsetSpec"));

    by_name(
        &all,
        "payments-production-eu-west-tra-3280707d2beaa613e35a16dbfb55484",
    );
    let owned = by_name(&all, "gloo-system-gateway-proxy-80");
    assert_eq!(
        owned.metadata.owner_references.as_ref().map(Vec::len),
        Some(1),
        "same namespace: owned by the Service"
    );
    assert_eq!(
        petstore.metadata.owner_references, None,
        "never across namespaces"
    );
}

#[test]
fn render_reads_standard_input_and_takes_the_translation_flags() {
    let services = repo_file("examples/services.yaml");
    let output = run_with_stdin(
        &[
            "render",
            "-f",
            "-",
            "--write-namespace",
            "edge",
            "--service-selector",
            "app in (petstore,checkout)",
            "--global-annotations",
            "gloo.solo.io/h2_service=true",
        ],
        &services,
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let all = upstreams(&stdout(&output));
    let names: Vec<_> = all.iter().filter_map(|u| u.metadata.name.clone()).collect();
    assert_eq!(
        names,
        [
            "default-petstore-8080",
            "shop-checkout-443",
            "shop-checkout-9102"
        ]
    );
    assert!(all
        .iter()
        .all(|u| u.metadata.namespace.as_deref() == Some("edge")));
    assert!(
        all.iter().all(|u| u.spec.use_http2 == Some(true)),
        "global h2 annotation applies"
    );
}

#[test]
fn render_in_service_mode_writes_beside_each_service() {
    let output = run(&[
        "render",
        "-f",
        "examples/services.yaml",
        "--write-namespace-mode",
        "service",
    ]);
    let all = upstreams(&stdout(&output));
    for upstream in &all {
        let service_namespace = upstream
            .spec
            .kube
            .as_ref()
            .and_then(|k| k.service_namespace.clone());
        assert_eq!(upstream.metadata.namespace, service_namespace);
        assert_eq!(
            upstream.metadata.owner_references.as_ref().map(Vec::len),
            Some(1)
        );
    }
}

#[test]
fn bad_annotations_warn_on_stderr_and_keep_the_upstream() {
    let yaml = "kind: Service\napiVersion: v1\nmetadata:\n  name: api\n  namespace: shop\n  annotations:\n    gloo.solo.io/upstream_config: '{broken'\nspec:\n  ports: [{port: 80}]\n";
    let output = run_with_stdin(&["render", "-f", "-"], yaml);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(upstreams(&stdout(&output)).len(), 1);
    let warnings = stderr(&output);
    assert!(
        warnings.starts_with("warning: Service shop/api: annotation gloo.solo.io/upstream_config"),
        "{warnings}"
    );
}

#[test]
fn unparsable_input_is_one_clear_line_and_exit_code_2() {
    let cases = [
        (
            "kind: Service\nmetadata: {name: a}\nspec:\n  ports:\n  - port: http\n",
            "error: document 1: field spec.ports[0].port: ",
        ),
        (
            "---\nkind: Service\nmetadata: {name: a}\n---\n: : :\n",
            "error: document 2: invalid YAML",
        ),
    ];
    for (yaml, want) in cases {
        let output = run_with_stdin(&["render", "-f", "-"], yaml);
        assert_eq!(output.status.code(), Some(2), "{yaml}");
        let message = stderr(&output);
        assert!(message.starts_with(want), "{message}");
        assert_eq!(message.lines().count(), 1, "{message}");
        assert!(stdout(&output).is_empty());
    }
    let missing = run(&["render", "-f", "/nonexistent/services.yaml"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).starts_with("error: cannot read /nonexistent/services.yaml"));
}

/// Gloo's chart starts its discovery image with neither command nor arguments: that is `run`
/// (here it gets as far as the missing cluster), not a usage error.
#[test]
fn no_arguments_at_all_runs_the_daemon() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = binary()
        .env_clear()
        .env("KUBECONFIG", dir.path().join("no-such-kubeconfig"))
        .env("POD_NAMESPACE", "gloo-system")
        .env("START_STATS_SERVER", "true")
        .env("LOG_LEVEL", "debug")
        .output()
        .expect("the binary runs");
    let errors = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{errors}");
    assert!(
        errors.contains("cannot configure the Kubernetes client"),
        "{errors}"
    );
    assert!(!errors.contains("Usage:"), "{errors}");
}

#[test]
fn both_discoveries_off_is_a_start_up_error() {
    let output = run(&["run", "--uds-enabled=false", "--fds-mode=DISABLED"]);
    let errors = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{errors}");
    assert!(
        errors.contains("Service discovery and function discovery are both off"),
        "{errors}"
    );
}
