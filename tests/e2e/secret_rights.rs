//! Secrets on a need-to-know basis (issue 25): the chart's `discovery.lambda.secrets` modes,
//! rendered with helm and applied, the daemon run as the chart's ServiceAccount against moto.
//! In each, `kubectl auth can-i` as that ServiceAccount is refused outside what was granted, the
//! Upstreams whose credentials it may read get their functions, and one whose Secret it may not
//! read gets a Warning Event naming the Secret and the right, a count, and its list untouched.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::{json, Value};
use upstream_discovery::crd::Upstream;

use crate::aws_fixture::{Moto, TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY};
use crate::chart::Release;
use crate::daemon::Daemon;
use crate::scenario::Scenario;
use crate::support::{service_account_token, wait_for, wait_for_event};
use crate::test_env::TestEnv;

const EXIT_LIMIT: Duration = Duration::from_secs(10);
const MISSING: &str = "upstream_discovery_errors_total{kind=\"lambda_credentials_missing\"}";

/// The list a user left in an Upstream: what must stay while its Secret cannot be read.
fn previous() -> Value {
    json!([{"lambdaFunctionName": "old", "qualifier": "$LATEST", "logicalName": "old"}])
}

fn listed(name: &str) -> Value {
    json!([{"lambdaFunctionName": name, "qualifier": "$LATEST", "logicalName": name}])
}

async fn credentials_secret(admin: &Client, namespace: &str, name: &str) {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": name},
        "stringData": {"aws_access_key_id": TEST_ACCESS_KEY_ID,
                       "aws_secret_access_key": TEST_SECRET_ACCESS_KEY},
    }))
    .expect("secret");
    Api::<Secret>::namespaced(admin.clone(), namespace)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create secret");
}

/// An aws Upstream in `namespace` with `aws` merged over `{region, lambdaFunctions: previous}`.
async fn aws_upstream(admin: &Client, namespace: &str, name: &str, region: &str, aws: Value) {
    let mut spec = json!({"region": region, "lambdaFunctions": previous()});
    for (key, value) in aws.as_object().cloned().unwrap_or_default() {
        spec[key] = value;
    }
    let upstream: Upstream = serde_json::from_value(json!({
        "apiVersion": "gloo.solo.io/v1", "kind": "Upstream",
        "metadata": {"name": name}, "spec": {"aws": spec},
    }))
    .expect("upstream");
    Api::<Upstream>::namespaced(admin.clone(), namespace)
        .create(&PostParams::default(), &upstream)
        .await
        .expect("create upstream");
}

async fn functions(admin: &Client, namespace: &str, name: &str) -> Value {
    let upstream = Api::<Upstream>::namespaced(admin.clone(), namespace)
        .get(name)
        .await
        .expect("get upstream");
    serde_json::to_value(upstream.spec.aws.and_then(|aws| aws.lambda_functions)).expect("json")
}

async fn wait_for_functions(admin: &Client, namespace: &str, name: &str, expected: &Value) {
    wait_for(&format!("{name}'s lambdaFunctions {expected}"), || async {
        (functions(admin, namespace, name).await == *expected).then_some(())
    })
    .await;
}

/// The chart rendered with `values` as release `<write_ns>`, applied; the daemon started with
/// the chart's arguments (but the harness's port and log format) as its ServiceAccount.
async fn chart_daemon(
    env: &Arc<TestEnv>,
    scenario: &Scenario,
    values: &[String],
    extra_env: &[(&str, String)],
    moto: &Moto,
) -> (Release, Daemon) {
    let mut all = vec![
        "--set".to_string(),
        format!("discovery.watchNamespaces={{{}}}", scenario.service_ns),
        "--set".to_string(),
        "discovery.settings.enabled=false".to_string(),
    ];
    all.extend(values.iter().cloned());
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let release = Release::render(env, &scenario.write_ns, &refs);
    release.apply();
    let token = service_account_token(&scenario.admin, &scenario.write_ns, &release.fullname).await;
    let mut daemon = scenario
        .daemon()
        .token(&token)
        .args(&[
            "--read-settings=false",
            "--uds-enabled=false",
            "--lambda-poll-interval",
            "2s",
        ])
        .env("AWS_ENDPOINT_URL", moto.url());
    for (name, value) in extra_env {
        daemon = daemon.env(name, value.clone());
    }
    (release, daemon.ready().await)
}

/// The Warning Event on `upstream` names `secret` and the right the daemon lacks.
async fn assert_refused(admin: &Client, namespace: &str, upstream: &str, secret: &str) {
    let event = wait_for_event(
        admin,
        namespace,
        "Upstream",
        upstream,
        "LambdaCredentialsMissing",
    )
    .await;
    let note = event.message.unwrap_or_default();
    assert!(
        note.contains(&format!("Secret {secret}"))
            && note.contains("forbidden")
            && note.contains("get/list/watch on secrets"),
        "{note}"
    );
}

/// `access: namespaces` with `names`: only `aws-creds` of the service namespace may be read; the
/// API server authorizes the daemon's watch of that one Secret by name (resourceNames).
pub async fn only_the_listed_secret_names_are_readable_and_others_are_reported(env: Arc<TestEnv>) {
    let scenario = Scenario::builder(env.clone(), "sec-names")
        .without_account()
        .build()
        .await;
    let (admin, ns, write) = (&scenario.admin, &scenario.service_ns, &scenario.write_ns);
    let moto = Moto::new(&env, "ap-northeast-2").await;
    moto.clean_region().await;
    moto.create_functions(&["by-name".into()]).await;
    credentials_secret(admin, ns, "aws-creds").await;
    credentials_secret(admin, ns, "other-creds").await;
    let secret = |name: &str| json!({"secretRef": {"name": name, "namespace": ns}});
    aws_upstream(admin, ns, "allowed", moto.region(), secret("aws-creds")).await;
    aws_upstream(admin, ns, "refused", moto.region(), secret("other-creds")).await;
    let values = [
        "--set",
        "discovery.lambda.secrets.access=namespaces",
        "--set",
        &format!("discovery.lambda.secrets.namespaces={{{ns}}}"),
        "--set",
        "discovery.lambda.secrets.names={aws-creds}",
    ]
    .map(String::from);
    let (release, daemon) = chart_daemon(&env, &scenario, &values, &[], &moto).await;
    release.assert_rights(
        true,
        &[
            ("get", "secrets/aws-creds", Some(ns.as_str())),
            ("watch", "secrets/aws-creds", Some(ns.as_str())),
        ],
    );
    release.assert_rights(
        false,
        &[
            ("get", "secrets/other-creds", Some(ns.as_str())),
            ("list", "secrets", Some(ns.as_str())),
            ("get", "secrets", Some(write.as_str())),
            ("get", "secrets", None),
        ],
    );
    wait_for_functions(admin, ns, "allowed", &listed("by-name")).await;
    assert_refused(admin, ns, "refused", &format!("{ns}/other-creds")).await;
    assert!(daemon.metric_sum(MISSING).await >= 1.0);
    assert_eq!(functions(admin, ns, "refused").await, previous());
    daemon.terminate(EXIT_LIMIT);
    release.delete();
    scenario.cleanup().await;
}

/// `access: namespaces`: every Secret of the listed namespace, none elsewhere.
pub async fn a_namespace_scoped_role_reads_secrets_there_only(env: Arc<TestEnv>) {
    let scenario = Scenario::builder(env.clone(), "sec-ns")
        .without_account()
        .another_namespace("elsewhere")
        .build()
        .await;
    let (admin, ns, elsewhere) = (&scenario.admin, &scenario.service_ns, &scenario.others[0]);
    let moto = Moto::new(&env, "ap-east-1").await;
    moto.clean_region().await;
    moto.create_functions(&["in-namespace".into()]).await;
    credentials_secret(admin, ns, "aws-creds").await;
    credentials_secret(admin, elsewhere, "aws-creds").await;
    aws_upstream(
        admin,
        ns,
        "here",
        moto.region(),
        json!({"secretRef": {"name": "aws-creds", "namespace": ns}}),
    )
    .await;
    aws_upstream(
        admin,
        ns,
        "there",
        moto.region(),
        json!({"secretRef": {"name": "aws-creds", "namespace": elsewhere}}),
    )
    .await;
    let values = [
        "--set",
        "discovery.lambda.secrets.access=namespaces",
        "--set",
        &format!("discovery.lambda.secrets.namespaces={{{ns}}}"),
    ]
    .map(String::from);
    let (release, daemon) = chart_daemon(&env, &scenario, &values, &[], &moto).await;
    release.assert_rights(
        true,
        &[
            ("get", "secrets", Some(ns.as_str())),
            ("list", "secrets", Some(ns.as_str())),
            ("watch", "secrets", Some(ns.as_str())),
        ],
    );
    release.assert_rights(
        false,
        &[
            ("get", "secrets", Some(elsewhere.as_str())),
            ("list", "secrets", None),
            ("create", "secrets", Some(ns.as_str())),
        ],
    );
    wait_for_functions(admin, ns, "here", &listed("in-namespace")).await;
    assert_refused(admin, ns, "there", &format!("{elsewhere}/aws-creds")).await;
    assert_eq!(functions(admin, ns, "there").await, previous());
    daemon.terminate(EXIT_LIMIT);
    release.delete();
    scenario.cleanup().await;
}

/// `access: none` with IRSA: no Secret may be read anywhere, and an Upstream with a role (and
/// no Secret) is listed with the web identity token (moto's STS).
pub async fn no_secret_rights_with_web_identity_still_discover(env: Arc<TestEnv>) {
    let scenario = Scenario::builder(env.clone(), "sec-none")
        .without_account()
        .build()
        .await;
    let (admin, ns, write) = (&scenario.admin, &scenario.service_ns, &scenario.write_ns);
    let moto = Moto::new(&env, "me-south-1").await;
    moto.clean_region().await;
    moto.create_functions(&["irsa-only".into()]).await;
    credentials_secret(admin, ns, "aws-creds").await;
    aws_upstream(
        admin,
        ns,
        "by-role",
        moto.region(),
        json!({"roleArn": "arn:aws:iam::123456789012:role/lambda-reader"}),
    )
    .await;
    aws_upstream(
        admin,
        ns,
        "by-secret",
        moto.region(),
        json!({"secretRef": {"name": "aws-creds", "namespace": ns}}),
    )
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "eyJhbGciOiJSUzI1NiJ9.e30.c2lnbmF0dXJl").expect("token");
    let values = ["--set", "discovery.lambda.secrets.access=none"].map(String::from);
    let web_identity = [
        (
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            token_file.display().to_string(),
        ),
        (
            "AWS_ROLE_ARN",
            "arn:aws:iam::123456789012:role/irsa".to_string(),
        ),
        ("AWS_ENDPOINT_URL_STS", moto.url().to_string()),
    ];
    let (release, daemon) = chart_daemon(&env, &scenario, &values, &web_identity, &moto).await;
    release.assert_rights(
        false,
        &[
            ("get", "secrets", Some(ns.as_str())),
            ("get", "secrets", Some(write.as_str())),
            ("list", "secrets", None),
            ("watch", "secrets", None),
        ],
    );
    wait_for_functions(admin, ns, "by-role", &listed("irsa-only")).await;
    assert_refused(admin, ns, "by-secret", &format!("{ns}/aws-creds")).await;
    assert_eq!(functions(admin, ns, "by-secret").await, previous());
    daemon.terminate(EXIT_LIMIT);
    release.delete();
    scenario.cleanup().await;
}
