//! Function discovery (issue 4) end to end: the real daemon, as its ServiceAccount, against the
//! API server and moto, through the paging and fault-injecting proxy. Each test has its own
//! AWS region, since moto is shared by the tests running side by side.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{json, Value};
use upstream_discovery::crd::{LambdaFunction, Upstream};

use crate::aws_fixture::{Moto, TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY};
use crate::aws_proxy::{AwsFault, AwsRule, LambdaProxy};
use crate::daemon::Daemon;
use crate::fault_proxy::{Fault, FaultProxy, Rule};
use crate::leaks::{assert_no_credentials_leaked, Credentials};
use crate::scenario::Scenario;
use crate::support::{wait_for, wait_for_event, wait_until};
use crate::test_env::TestEnv;

/// Short, so the tests see several sweeps; the default is 30 s.
const POLL: &str = "2s";
const POLL_INTERVAL: Duration = Duration::from_secs(2);
const SECRET: &str = "aws-credentials";
/// The access key id the daemon finds in its environment, where a test gives it one.
const ENV_ACCESS_KEY_ID: &str = "AKIDENVIRONMENT00001";

/// A test's scenario (namespaces and daemon identity), its moto region and its proxy.
///
/// Every credential the rig hands a daemon (Secrets, environment, the web identity token, its
/// Kubernetes token, what STS issues through the proxy) is collected, and each daemon it starts
/// must be ended with [`Rig::stop`], which checks that none of them came out of it; `cleanup`
/// fails the test when a daemon was not.
struct Rig {
    scenario: Scenario,
    moto: Moto,
    proxy: LambdaProxy,
    credentials: Credentials,
    started: AtomicUsize,
    stopped: AtomicUsize,
}

impl Rig {
    async fn new(env: Arc<TestEnv>, purpose: &str, region: &str) -> Self {
        let moto = Moto::new(&env, region).await;
        moto.clean_region().await;
        let proxy = LambdaProxy::start(env.get("MOTO_URL")).await;
        let scenario = Scenario::builder(env, purpose).build().await;
        let credentials = Credentials::default();
        credentials.add(scenario.token());
        Self {
            scenario,
            moto,
            proxy,
            credentials,
            started: AtomicUsize::new(0),
            stopped: AtomicUsize::new(0),
        }
    }

    fn admin(&self) -> &Client {
        &self.scenario.admin
    }

    fn ns(&self) -> &str {
        &self.scenario.service_ns
    }

    fn region(&self) -> &str {
        self.moto.region()
    }

    /// The daemon, with AWS's endpoint pointed at the proxy and `extra` flags.
    fn start(&self, extra: &[&str], env: &[(&str, String)]) -> Daemon {
        self.start_via(None, extra, env)
    }

    /// [`Rig::start`], talking to Kubernetes through `kube_proxy` when given.
    fn start_via(
        &self,
        kube_proxy: Option<&FaultProxy>,
        extra: &[&str],
        env: &[(&str, String)],
    ) -> Daemon {
        let mut daemon = self
            .scenario
            .daemon()
            .args(extra)
            .env("AWS_ENDPOINT_URL", self.proxy.url());
        if !extra.contains(&"--lambda-poll-interval") {
            daemon = daemon.args(&["--lambda-poll-interval", POLL]);
        }
        for (name, value) in env {
            daemon = daemon.env(name, value.clone());
        }
        if let Some(proxy) = kube_proxy {
            daemon = daemon.via(&proxy.url());
        }
        self.credentials
            .add_environment(env.iter().map(|(name, value)| (*name, value.as_str())));
        self.started.fetch_add(1, Ordering::Relaxed);
        daemon.start()
    }

    /// Ends a daemon of this rig, after checking that no credential it was handed appears in
    /// its log, its metrics or an Event of the test's namespaces.
    async fn stop(&self, daemon: Daemon) {
        for issued in self.proxy.issued_credentials() {
            self.credentials.add(&issued);
        }
        let scenario = &self.scenario;
        let mut namespaces = vec![scenario.write_ns.as_str(), scenario.service_ns.as_str()];
        namespaces.extend(scenario.others.iter().map(String::as_str));
        assert_no_credentials_leaked(&daemon, self.admin(), &namespaces, &self.credentials).await;
        drop(daemon);
        self.stopped.fetch_add(1, Ordering::Relaxed);
    }

    async fn secret(&self, name: &str, data: &[(&str, &str)]) {
        self.credentials.add_secret_data(data.iter().copied());
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": name},
            "stringData": data.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        }))
        .expect("secret");
        Api::<Secret>::namespaced(self.admin().clone(), self.ns())
            .patch(
                name,
                &PatchParams::apply("e2e").force(),
                &Patch::Apply(&secret_with_kind(secret)),
            )
            .await
            .expect("apply secret");
    }

    /// `spec.aws` naming the test Secret.
    fn by_test_secret(&self) -> Value {
        json!({"secretRef": {"name": SECRET, "namespace": self.ns()}})
    }

    async fn test_secret(&self) {
        self.secret(
            SECRET,
            &[
                ("aws_access_key_id", TEST_ACCESS_KEY_ID),
                ("aws_secret_access_key", TEST_SECRET_ACCESS_KEY),
            ],
        )
        .await;
    }

    /// Creates an aws Upstream as a user would, with `aws` merged into its `spec.aws`.
    async fn upstream(&self, name: &str, aws: Value, metadata: Value) {
        let mut spec_aws = json!({"region": self.region()});
        merge(&mut spec_aws, aws);
        let mut object = json!({
            "apiVersion": "gloo.solo.io/v1", "kind": "Upstream",
            "metadata": {"name": name},
            "spec": {"aws": spec_aws},
        });
        merge(&mut object["metadata"], metadata);
        let upstream: Upstream = serde_json::from_value(object).expect("upstream");
        self.upstreams()
            .create(&PostParams::default(), &upstream)
            .await
            .expect("create upstream");
    }

    fn upstreams(&self) -> Api<Upstream> {
        Api::namespaced(self.admin().clone(), self.ns())
    }

    async fn functions(&self, name: &str) -> Option<Vec<LambdaFunction>> {
        self.upstreams()
            .get(name)
            .await
            .ok()
            .and_then(|u| u.spec.aws)
            .and_then(|aws| aws.lambda_functions)
    }

    /// Waits until the Upstream holds exactly `expected`, in order.
    async fn wait_for_functions(&self, name: &str, expected: &[LambdaFunction], daemon: &Daemon) {
        wait_until(&format!("lambdaFunctions of {name}"), || async {
            let got = self.functions(name).await;
            if got.as_deref() == Some(expected) {
                Ok(())
            } else {
                Err(format!(
                    "want {} entries, have {:?} entries\nfirst wanted: {:?}\ndaemon log tail:\n{}",
                    expected.len(),
                    got.as_ref().map(Vec::len),
                    expected.first(),
                    tail(&daemon.logs(), 15)
                ))
            }
        })
        .await;
    }

    /// What the Upstream should hold: every version of every function in the region (and
    /// `aliases`), sorted byte-wise by logicalName.
    async fn expected(&self, filter: impl Fn(&str) -> bool) -> Vec<LambdaFunction> {
        let mut entries: Vec<LambdaFunction> = self
            .moto
            .list_all_versions()
            .await
            .into_iter()
            .filter(|(name, _)| filter(name))
            .map(|(name, version)| entry(&name, &version))
            .collect();
        entries.sort_by(|a, b| a.logical_name.as_bytes().cmp(b.logical_name.as_bytes()));
        entries
    }

    async fn cleanup(self) {
        assert_eq!(
            self.stopped.load(Ordering::Relaxed),
            self.started.load(Ordering::Relaxed),
            "every daemon of a Lambda test ends with Rig::stop (the credential check)"
        );
        self.proxy.shutdown().await;
        self.moto.clean_region().await;
        self.scenario.cleanup().await;
    }
}

fn secret_with_kind(secret: Secret) -> Value {
    let mut value = serde_json::to_value(secret).expect("secret");
    value["apiVersion"] = json!("v1");
    value["kind"] = json!("Secret");
    value
}

fn entry(name: &str, version: &str) -> LambdaFunction {
    LambdaFunction {
        lambda_function_name: name.to_string(),
        qualifier: version.to_string(),
        logical_name: if version == "$LATEST" {
            name.to_string()
        } else {
            format!("{name}:{version}")
        },
    }
}

fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                merge(target.entry(key).or_insert(Value::Null), value);
            }
        }
        (target, patch) => *target = patch,
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn function_names(count: usize) -> Vec<String> {
    // Mixed case and digits, so byte-wise order is not the creation order.
    (0..count)
        .map(|i| match i % 3 {
            0 => format!("orders-{i:03}"),
            1 => format!("Billing-{i:03}"),
            _ => format!("auth_{i:03}"),
        })
        .collect()
}

async fn metric(daemon: &Daemon, name: &str) -> f64 {
    daemon.metrics().await.get(name).copied().unwrap_or(0.0)
}

async fn lambda_writes(daemon: &Daemon) -> f64 {
    daemon
        .metric_sum(
            "upstream_discovery_writes_total{op=\"update\",result=\"success\",source=\"lambda\"}",
        )
        .await
}

/// Waits until the daemon has counted at least `at_least` lambda writes; returns the count.
async fn wait_for_lambda_writes(daemon: &Daemon, at_least: f64) -> f64 {
    wait_for(&format!("{at_least} lambda writes counted"), || async {
        let writes = lambda_writes(daemon).await;
        (writes >= at_least).then_some(writes)
    })
    .await
}

/// 120 functions, ten with published versions: the Upstream gets every `$LATEST` and version
/// in Gloo's order, through a sweep that crosses pages; the user's own fields stay.
pub async fn functions_of_an_account_are_listed_in_gloo_order(env: Arc<TestEnv>) {
    let rig = Rig::new(env, "fn-list", "eu-north-1").await;
    let names = function_names(120);
    rig.moto.create_functions(&names).await;
    for name in names.iter().take(10) {
        rig.moto.publish_version(name).await;
    }
    rig.moto.publish_version(&names[0]).await;
    rig.test_secret().await;
    rig.upstream(
        "lambdas",
        json!({"secretRef": {"name": SECRET, "namespace": rig.ns()},
               "destinationOverrides": {"invocationStyle": "ASYNC"},
               "awsAccountId": "123456789012"}),
        json!({"labels": {"team": "payments"}, "annotations": {"owner": "alice"}}),
    )
    .await;

    let daemon = rig.start(&[], &[]);
    let expected = rig.expected(|_| true).await;
    assert_eq!(expected.len(), 131, "120 $LATEST and 11 versions in moto");
    rig.wait_for_functions("lambdas", &expected, &daemon).await;

    // One sweep is 3 pages of at most 50 (131 entries): pagination crossed twice.
    let calls = rig.proxy.requests();
    let pages: Vec<_> = calls
        .iter()
        .filter(|c| c.operation == "ListFunctions" && c.region == rig.region())
        .collect();
    assert!(pages.len() >= 3, "{} ListFunctions calls", pages.len());
    let sweep = &pages[..3];
    println!(
        "one sweep of 120 functions (131 entries): {} ListFunctions calls, {:?} from first to last answer",
        sweep.len(),
        sweep[2].at.duration_since(sweep[0].at)
    );

    let stored = rig.upstreams().get("lambdas").await.expect("upstream");
    let aws = stored.spec.aws.as_ref().expect("aws");
    assert_eq!(
        aws.other.get("destinationOverrides"),
        Some(&json!({"invocationStyle": "ASYNC"}))
    );
    assert_eq!(aws.other.get("awsAccountId"), Some(&json!("123456789012")));
    assert_eq!(
        aws.secret_ref.as_ref().map(|r| r.name.as_str()),
        Some(SECRET)
    );
    let labels = stored.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("team").map(String::as_str), Some("payments"));
    assert!(
        !labels.contains_key("discovered_by"),
        "a user's Upstream is not taken over"
    );
    assert_eq!(
        stored
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("owner"))
            .map(String::as_str),
        Some("alice")
    );
    // Our manager owns lambdaFunctions and nothing else.
    let ours: Vec<Value> = stored
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.manager.as_deref() == Some("upstream-discovery-lambda"))
        .map(|m| {
            m.fields_v1
                .as_ref()
                .map(|f| f.0.clone())
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(ours.len(), 1, "{:?}", stored.metadata.managed_fields);
    assert_eq!(
        ours[0],
        json!({"f:spec": {"f:aws": {"f:lambdaFunctions": {}}}}),
        "the field manager owns only spec.aws.lambdaFunctions"
    );
    // The daemon counts a write when the API server's answer reaches it, which may be just
    // after the test sees the object.
    let series = format!(
        "upstream_discovery_lambda_functions{{namespace=\"{}\",upstream=\"lambdas\"}}",
        rig.ns()
    );
    wait_for("lambda_functions of the Upstream", || async {
        (metric(&daemon, &series).await == 131.0).then_some(())
    })
    .await;
    assert!(
        metric(
            &daemon,
            "upstream_discovery_last_sync_timestamp_seconds{source=\"lambda\"}"
        )
        .await
            > 0.0
    );
    assert!(
        daemon
            .metric_sum("upstream_discovery_lambda_api_calls_total{operation=\"ListFunctions\",result=\"success\"}")
            .await
            >= 3.0
    );
    assert_eq!(
        daemon
            .metric_sum("upstream_discovery_lag_seconds_count{source=\"lambda\"}")
            .await,
        lambda_writes(&daemon).await,
        "one lag sample per write"
    );
    rig.stop(daemon).await;
    rig.cleanup().await;
}

/// The list follows a new function, a published version and a deleted function within two
/// poll intervals, and an unchanged account makes no writes over several sweeps.
pub async fn the_list_follows_changes_and_an_unchanged_account_writes_nothing(env: Arc<TestEnv>) {
    let rig = Rig::new(env, "fn-follow", "eu-south-1").await;
    rig.moto
        .create_functions(&["alpha".into(), "beta".into()])
        .await;
    rig.test_secret().await;
    rig.upstream("lambdas", rig.by_test_secret(), json!({}))
        .await;
    let daemon = rig.start(&[], &[]);
    rig.wait_for_functions("lambdas", &rig.expected(|_| true).await, &daemon)
        .await;

    // Idle: several sweeps, zero writes.
    // The first write is counted when its answer reaches the daemon, maybe just after the
    // test sees the object.
    let writes = wait_for_lambda_writes(&daemon, 1.0).await;
    let sweeps_before = rig.proxy.count_in("ListFunctions", rig.region());
    wait_for("three more sweeps", || async {
        (rig.proxy.count_in("ListFunctions", rig.region()) >= sweeps_before + 3).then_some(())
    })
    .await;
    assert_eq!(lambda_writes(&daemon).await, writes, "no change, no write");

    for (what, change) in [
        ("a new function", 0),
        ("a published version", 1),
        ("a deleted function", 2),
    ] {
        match change {
            0 => rig.moto.create_function("gamma").await,
            1 => {
                rig.moto.publish_version("alpha").await;
            }
            _ => rig.moto.delete_function("beta").await,
        }
        let changed = Instant::now();
        let expected = rig.expected(|_| true).await;
        rig.wait_for_functions("lambdas", &expected, &daemon).await;
        let took = changed.elapsed();
        println!("{what}: in the Upstream after {took:?}");
        assert!(
            took <= POLL_INTERVAL * 2 + Duration::from_secs(2),
            "{what} took {took:?}, more than two poll intervals"
        );
    }
    assert_eq!(
        wait_for_lambda_writes(&daemon, writes + 3.0).await,
        writes + 3.0,
        "one write per change"
    );
    rig.stop(daemon).await;
    rig.cleanup().await;
}

/// Upstreams on the same account and region share one sweep; another region has its own. The
/// filter annotation narrows one list, the cap cuts another with an Event.
pub async fn upstreams_on_one_account_share_a_sweep(env: Arc<TestEnv>) {
    let rig = Rig::new(env.clone(), "fn-share", "ap-northeast-3").await;
    let other = Moto::new(&env, "sa-east-1").await;
    other.clean_region().await;
    rig.moto.create_functions(&function_names(5)).await;
    other.create_function("elsewhere").await;
    rig.test_secret().await;
    let secret = rig.by_test_secret();
    rig.upstream("all", secret.clone(), json!({})).await;
    rig.upstream(
        "orders-only",
        secret.clone(),
        json!({"annotations": {"upstream-discovery.io/lambda-function-filter": "^orders-"}}),
    )
    .await;
    rig.upstream("third", secret.clone(), json!({})).await;
    let mut elsewhere = secret.clone();
    elsewhere["region"] = json!("sa-east-1");
    rig.upstream("elsewhere", elsewhere, json!({})).await;

    // A long poll interval: only the first sweep of each account and region happens.
    let daemon = rig.start(
        &[
            "--lambda-poll-interval",
            "1h",
            "--lambda-max-functions",
            "4",
        ],
        &[],
    );
    let all = rig.expected(|_| true).await;
    assert_eq!(all.len(), 5);
    rig.wait_for_functions("all", &all[..4], &daemon).await;
    rig.wait_for_functions("third", &all[..4], &daemon).await;
    rig.wait_for_functions(
        "orders-only",
        &rig.expected(|name| name.starts_with("orders-")).await,
        &daemon,
    )
    .await;
    rig.wait_for_functions("elsewhere", &[entry("elsewhere", "$LATEST")], &daemon)
        .await;
    assert_eq!(
        rig.proxy.count_in("ListFunctions", rig.region()),
        1,
        "three Upstreams, one account and region: one sweep"
    );
    assert_eq!(rig.proxy.count_in("ListFunctions", "sa-east-1"), 1);

    let capped = wait_for_event(
        rig.admin(),
        rig.ns(),
        "Upstream",
        "all",
        "LambdaFunctionsCapped",
    )
    .await;
    assert!(
        capped
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("1 of 5"),
        "{:?}",
        capped.message
    );
    assert_eq!(
        metric(
            &daemon,
            "upstream_discovery_skipped_total{reason=\"lambda_functions_capped\"}"
        )
        .await,
        2.0,
        "the two capped Upstreams, each counted once"
    );
    rig.stop(daemon).await;
    other.clean_region().await;
    rig.cleanup().await;
}

/// A missing Secret, a Secret without the keys, refused credentials (from a Secret, with a
/// session token, and from the environment) and throttling each give an Event, a metric and a
/// retry, and lose nothing: the list stays as it was until it can be listed again. No
/// credential comes out of the daemon meanwhile.
pub async fn credential_problems_and_throttling_are_reported_and_lose_nothing(env: Arc<TestEnv>) {
    let rig = Rig::new(env, "fn-faults", "ca-central-1").await;
    rig.moto
        .create_functions(&["one".into(), "two".into()])
        .await;
    let previous =
        json!([{"lambdaFunctionName": "old", "qualifier": "$LATEST", "logicalName": "old"}]);
    rig.upstream(
        "no-secret",
        json!({"secretRef": {"name": "nowhere", "namespace": rig.ns()}, "lambdaFunctions": previous}),
        json!({}),
    )
    .await;
    rig.secret(
        "wrong-keys",
        &[
            ("accessKey", TEST_ACCESS_KEY_ID),
            ("secretKey", "wrong-keys-secret-0000000002"),
        ],
    )
    .await;
    rig.upstream(
        "wrong-keys",
        json!({"secretRef": {"name": "wrong-keys", "namespace": rig.ns()}, "lambdaFunctions": previous}),
        json!({}),
    )
    .await;
    rig.secret(
        "refused",
        &[
            ("aws_access_key_id", "AKIDREFUSED000000001"),
            ("aws_secret_access_key", "refused-secret-0000000003"),
            ("aws_session_token", "refused-session-token-0000000004"),
        ],
    )
    .await;
    rig.upstream(
        "refused",
        json!({"secretRef": {"name": "refused", "namespace": rig.ns()}, "lambdaFunctions": previous}),
        json!({}),
    )
    .await;
    // No secretRef: the SDK's chain, here the daemon's environment.
    rig.upstream("from-env", json!({"lambdaFunctions": previous}), json!({}))
        .await;
    rig.test_secret().await;
    rig.upstream(
        "throttled",
        json!({"secretRef": {"name": SECRET, "namespace": rig.ns()}, "lambdaFunctions": previous}),
        json!({}),
    )
    .await;
    let refused = rig.proxy.rules.inject(
        AwsRule::new("ListFunctions", AwsFault::Forbidden).access_key_id("AKIDREFUSED000000001"),
    );
    let env_refused = rig.proxy.rules.inject(
        AwsRule::new("ListFunctions", AwsFault::Forbidden).access_key_id(ENV_ACCESS_KEY_ID),
    );
    // More than the SDK's three attempts: the sweep fails, then succeeds on a later retry.
    let throttle = rig.proxy.rules.inject(
        AwsRule::new("ListFunctions", AwsFault::TooManyRequests)
            .access_key_id(TEST_ACCESS_KEY_ID)
            .times(4),
    );
    let daemon = rig.start(
        &[],
        &[
            ("AWS_ACCESS_KEY_ID", ENV_ACCESS_KEY_ID.to_string()),
            (
                "AWS_SECRET_ACCESS_KEY",
                "environment-secret-0000000006".to_string(),
            ),
            (
                "AWS_SESSION_TOKEN",
                "environment-session-token-0000000007".to_string(),
            ),
        ],
    );

    for (upstream, reason) in [
        ("no-secret", "LambdaCredentialsMissing"),
        ("wrong-keys", "LambdaCredentialsMissing"),
        ("refused", "LambdaCredentialsRefused"),
        ("from-env", "LambdaCredentialsRefused"),
        ("throttled", "LambdaThrottled"),
    ] {
        let event = wait_for_event(rig.admin(), rig.ns(), "Upstream", upstream, reason).await;
        let message = event.message.unwrap_or_default();
        assert_eq!(event.type_.as_deref(), Some("Warning"), "{message}");
        for secret in [TEST_SECRET_ACCESS_KEY, "AKIDREFUSED000000001"] {
            assert!(!message.contains(secret), "{message}");
        }
    }
    // Throttling is absorbed by retries: the list arrives once the fault is spent.
    let expected = rig.expected(|_| true).await;
    rig.wait_for_functions("throttled", &expected, &daemon)
        .await;
    assert_eq!(rig.proxy.rules.remaining(throttle), Some(0));
    let metrics = daemon.metrics().await;
    let value = |name: &str| metrics.get(name).copied().unwrap_or(0.0);
    assert!(value("upstream_discovery_lambda_api_calls_total{operation=\"ListFunctions\",result=\"throttled\"}") >= 4.0);
    assert!(value("upstream_discovery_errors_total{kind=\"lambda_throttled\"}") >= 1.0);
    assert!(value("upstream_discovery_errors_total{kind=\"lambda_credentials_refused\"}") >= 1.0);
    assert_eq!(
        value("upstream_discovery_errors_total{kind=\"lambda_credentials_missing\"}"),
        2.0,
        "the missing Secret and the one without keys, each counted once"
    );
    assert!(value("upstream_discovery_lambda_api_calls_total{operation=\"ListFunctions\",result=\"error\"}") >= 1.0);

    // Nothing lost while the credentials are wrong; retried, and fixed by fixing them.
    let refused_calls = rig
        .proxy
        .requests()
        .iter()
        .filter(|r| r.access_key_id == "AKIDREFUSED000000001")
        .count();
    wait_for("the refused sweep to be retried", || async {
        (rig.proxy
            .requests()
            .iter()
            .filter(|r| r.access_key_id == "AKIDREFUSED000000001")
            .count()
            > refused_calls)
            .then_some(())
    })
    .await;
    let kept: Vec<LambdaFunction> = serde_json::from_value(previous.clone()).expect("entries");
    for name in ["no-secret", "wrong-keys", "refused", "from-env"] {
        assert_eq!(
            rig.functions(name).await,
            Some(kept.clone()),
            "{name} keeps its list"
        );
    }
    let logs = daemon.logs();
    assert!(
        !logs.contains(TEST_SECRET_ACCESS_KEY),
        "a secret in the log"
    );
    rig.proxy.rules.remove(refused);
    rig.proxy.rules.remove(env_refused);
    rig.test_secret().await;
    rig.secret(
        "wrong-keys",
        &[
            ("aws_access_key_id", TEST_ACCESS_KEY_ID),
            ("aws_secret_access_key", TEST_SECRET_ACCESS_KEY),
        ],
    )
    .await;
    rig.secret(
        "nowhere",
        &[
            ("aws_access_key_id", TEST_ACCESS_KEY_ID),
            ("aws_secret_access_key", TEST_SECRET_ACCESS_KEY),
        ],
    )
    .await;
    for name in ["no-secret", "wrong-keys", "refused", "from-env"] {
        rig.wait_for_functions(name, &expected, &daemon).await;
    }
    rig.stop(daemon).await;
    rig.cleanup().await;
}

/// The role a temporary access key was issued for, as moto's STS knows it
/// (`arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`); moto checks no signature.
async fn assumed_role_of(moto_url: &str, access_key_id: &str) -> String {
    let config = aws_sdk_sts::Config::builder()
        .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
        .region(aws_sdk_sts::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sts::config::Credentials::new(
            access_key_id,
            "unchecked",
            None,
            None,
            "e2e",
        ))
        .endpoint_url(moto_url)
        .build();
    aws_sdk_sts::Client::from_conf(config)
        .get_caller_identity()
        .send()
        .await
        .unwrap_or_else(|e| panic!("GetCallerIdentity of {access_key_id}: {e:?}"))
        .arn()
        .unwrap_or_default()
        .to_string()
}

/// IRSA mode (docs/behaviour.md, as EKS sets it up): with `AWS_WEB_IDENTITY_TOKEN_FILE` and
/// `AWS_ROLE_ARN` in the pod, every Upstream's functions are listed with the web identity
/// token, for its `roleArn` or else the pod's role, even when it names a Secret (which must still
/// exist; its keys are not used). moto gives credentials of the role's account, so the account
/// listed shows the role used: the functions live in 123456789012, the pod's role is in
/// 111111111111, where the region is empty.
pub async fn irsa_mode_lists_with_the_upstreams_role_or_the_pods(env: Arc<TestEnv>) {
    let rig = Rig::new(env.clone(), "fn-irsa", "us-west-1").await;
    rig.moto.create_functions(&["irsa".into()]).await;
    rig.test_secret().await;
    let previous =
        json!([{"lambdaFunctionName": "old", "qualifier": "$LATEST", "logicalName": "old"}]);
    let upstream_role = "arn:aws:iam::123456789012:role/lambda-reader";
    let pod_role = "arn:aws:iam::111111111111:role/irsa";
    let secret = |name: &str| json!({"name": name, "namespace": rig.ns()});
    rig.upstream(
        "secret-and-role",
        json!({"secretRef": secret(SECRET), "roleArn": upstream_role, "lambdaFunctions": previous}),
        json!({}),
    )
    .await;
    rig.upstream(
        "role-only",
        json!({"roleArn": upstream_role, "lambdaFunctions": previous}),
        json!({}),
    )
    .await;
    rig.upstream(
        "secret-only",
        json!({"secretRef": secret(SECRET), "lambdaFunctions": previous}),
        json!({}),
    )
    .await;
    rig.upstream(
        "missing-secret",
        json!({"secretRef": secret("nowhere"), "roleArn": upstream_role, "lambdaFunctions": previous}),
        json!({}),
    )
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "eyJhbGciOiJSUzI1NiJ9.e30.c2lnbmF0dXJl").expect("token");
    let daemon = rig.start(
        &["--lambda-poll-interval", "1h"],
        &[
            (
                "AWS_WEB_IDENTITY_TOKEN_FILE",
                token_file.display().to_string(),
            ),
            ("AWS_ROLE_ARN", pod_role.to_string()),
            ("AWS_ENDPOINT_URL_STS", rig.proxy.url()),
        ],
    );
    let expected = vec![entry("irsa", "$LATEST")];
    rig.wait_for_functions("secret-and-role", &expected, &daemon)
        .await;
    rig.wait_for_functions("role-only", &expected, &daemon)
        .await;
    rig.wait_for_functions("secret-only", &[], &daemon).await;
    let missing = wait_for_event(
        rig.admin(),
        rig.ns(),
        "Upstream",
        "missing-secret",
        "LambdaCredentialsMissing",
    )
    .await;
    assert!(
        missing.message.unwrap_or_default().contains("nowhere"),
        "a named Secret must exist, even in IRSA mode"
    );
    let kept: Vec<LambdaFunction> = serde_json::from_value(previous).expect("entries");
    assert_eq!(rig.functions("missing-secret").await, Some(kept));

    let lists: Vec<_> = rig
        .proxy
        .requests()
        .into_iter()
        .filter(|r| r.operation == "ListFunctions" && r.region == rig.region())
        .collect();
    assert_eq!(
        lists.len(),
        2,
        "one sweep per role, shared by the Upstreams with it: {lists:?}"
    );
    let mut roles = BTreeSet::new();
    for list in &lists {
        assert_ne!(
            list.access_key_id, TEST_ACCESS_KEY_ID,
            "the Secret's keys are not used"
        );
        roles.insert(assumed_role_of(rig.moto.url(), &list.access_key_id).await);
    }
    assert_eq!(
        roles,
        BTreeSet::from([
            "arn:aws:sts::111111111111:assumed-role/irsa/upstream-discovery".to_string(),
            "arn:aws:sts::123456789012:assumed-role/lambda-reader/upstream-discovery".to_string(),
        ])
    );
    assert!(rig.proxy.count("AssumeRoleWithWebIdentity") >= 2);
    assert!(
        rig.proxy.issued_credentials().len() >= 4,
        "the proxy saw the secret key and session token STS issued for each role, for the leak check"
    );
    assert_eq!(
        rig.proxy.count("AssumeRole"),
        0,
        "no role is assumed on top"
    );
    assert!(
        daemon
            .metric_sum("upstream_discovery_lambda_api_calls_total{operation=\"AssumeRoleWithWebIdentity\",result=\"success\"}")
            .await
            >= 2.0
    );
    let stored = rig
        .upstreams()
        .get("secret-and-role")
        .await
        .expect("upstream");
    assert_eq!(
        stored.spec.aws.and_then(|aws| aws.role_arn).as_deref(),
        Some(upstream_role),
        "the user's roleArn survives our write"
    );
    rig.stop(daemon).await;
    rig.cleanup().await;
}

/// Outside IRSA mode `spec.aws.roleArn` plays no part: the Secret's keys list the functions
/// directly. An Upstream with an empty or no `spec.aws.region` is listed in the SDK's region
/// (`AWS_REGION`), in the same sweep as those naming that region; only when the SDK knows no
/// region either is it an error (Event and metric). Gloo's `status` on an Upstream survives
/// the write of its list.
pub async fn without_irsa_role_arn_is_ignored_and_the_sdk_region_fills_in(env: Arc<TestEnv>) {
    let rig = Rig::new(env, "fn-region", "eu-west-2").await;
    rig.moto
        .create_functions(&["alpha".into(), "beta".into()])
        .await;
    rig.test_secret().await;
    let by_secret = rig.by_test_secret();
    let status = json!({"statuses": {rig.ns(): {"state": 1, "reportedBy": "gloo"}}});
    let mut explicit: Upstream = serde_json::from_value(json!({
        "apiVersion": "gloo.solo.io/v1", "kind": "Upstream",
        "metadata": {"name": "explicit"},
        "spec": {"aws": {"region": rig.region(), "secretRef": by_secret["secretRef"]}},
        "status": status,
    }))
    .expect("upstream");
    explicit.metadata.namespace = Some(rig.ns().to_string());
    rig.upstreams()
        .create(&PostParams::default(), &explicit)
        .await
        .expect("create with status");
    let mut empty = by_secret.clone();
    empty["region"] = json!("");
    rig.upstream("empty-region", empty, json!({})).await;
    let mut absent = by_secret.clone();
    absent["region"] = Value::Null;
    rig.upstream("no-region", absent, json!({})).await;
    let mut with_role = by_secret.clone();
    with_role["roleArn"] = json!("arn:aws:iam::111111111111:role/elsewhere");
    rig.upstream("with-role", with_role, json!({})).await;
    let stored = rig.upstreams().get("no-region").await.expect("upstream");
    assert_eq!(
        stored.spec.aws.and_then(|aws| aws.region),
        None,
        "no region key at all"
    );

    let daemon = rig.start(
        &["--lambda-poll-interval", "1h"],
        &[("AWS_REGION", rig.region().to_string())],
    );
    let expected = rig.expected(|_| true).await;
    for name in ["explicit", "empty-region", "no-region", "with-role"] {
        rig.wait_for_functions(name, &expected, &daemon).await;
    }
    assert_eq!(
        rig.proxy.count_in("ListFunctions", rig.region()),
        1,
        "one sweep for the four: the SDK's region is theirs, and roleArn makes no other"
    );
    let lists: Vec<_> = rig
        .proxy
        .requests()
        .into_iter()
        .filter(|r| r.operation == "ListFunctions")
        .collect();
    assert!(lists.iter().all(|r| r.access_key_id == TEST_ACCESS_KEY_ID));
    assert_eq!(
        rig.proxy.count("AssumeRole"),
        0,
        "outside IRSA no role is assumed"
    );
    assert_eq!(rig.proxy.count("AssumeRoleWithWebIdentity"), 0);
    let explicit = rig.upstreams().get("explicit").await.expect("upstream");
    assert_eq!(
        serde_json::to_value(&explicit.status).expect("status"),
        status,
        "Gloo's status is left as it is"
    );
    assert_eq!(
        daemon
            .metric_sum("upstream_discovery_errors_total{kind=\"lambda_invalid_upstream\"}")
            .await,
        0.0
    );
    rig.stop(daemon).await;

    // No AWS_REGION (the daemon's environment has no AWS_* variable, no profile and no
    // instance metadata): the region-less Upstreams are reported, the others still listed.
    rig.moto.create_function("gamma").await;
    let daemon = rig.start(&["--lambda-poll-interval", "1h"], &[]);
    let expected = rig.expected(|_| true).await;
    rig.wait_for_functions("explicit", &expected, &daemon).await;
    for name in ["empty-region", "no-region"] {
        let event = wait_for_event(
            rig.admin(),
            rig.ns(),
            "Upstream",
            name,
            "InvalidAwsUpstream",
        )
        .await;
        assert!(
            event.message.unwrap_or_default().contains("region"),
            "{name}"
        );
    }
    wait_for("the region-less Upstreams counted once each", || async {
        let errors = daemon
            .metric_sum("upstream_discovery_errors_total{kind=\"lambda_invalid_upstream\"}")
            .await;
        (errors == 2.0).then_some(())
    })
    .await;
    assert_ne!(rig.functions("no-region").await, Some(expected));
    rig.stop(daemon).await;
    rig.cleanup().await;
}

/// DISABLED, and the opt-out labels: nothing is listed or written for those Upstreams.
pub async fn opted_out_upstreams_are_left_alone(env: Arc<TestEnv>) {
    let rig = Rig::new(env, "fn-optout", "eu-west-3").await;
    rig.moto.create_functions(&["f".into()]).await;
    rig.test_secret().await;
    let secret = rig.by_test_secret();
    rig.upstream(
        "opted-out",
        secret.clone(),
        json!({"labels": {"discovery.solo.io/function_discovery": "disabled"}}),
    )
    .await;
    // Two daemons side by side, so no leader election: each does its own work.
    let disabled = rig.start(&["--fds-mode", "DISABLED", "--leader-elect", "false"], &[]);
    disabled.wait_ready().await;
    rig.upstream("listed", secret.clone(), json!({})).await;
    // The DISABLED daemon never calls AWS; the default one lists only the one not opted out.
    let daemon = rig.start(&["--leader-elect", "false"], &[]);
    rig.wait_for_functions("listed", &[entry("f", "$LATEST")], &daemon)
        .await;
    assert_eq!(rig.functions("opted-out").await, None);
    assert_eq!(
        disabled
            .metric_sum("upstream_discovery_lambda_api_calls_total")
            .await,
        0.0
    );
    // Labelling the namespace disabled stops discovery there: its Upstreams are dropped from
    // the daemon's work (and metrics), their lists left as they are.
    let listed_series = format!(
        "upstream_discovery_lambda_functions{{namespace=\"{}\",upstream=\"listed\"}}",
        rig.ns()
    );
    wait_for("lambda_functions of the listed Upstream", || async {
        (metric(&daemon, &listed_series).await == 1.0).then_some(())
    })
    .await;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(rig.admin().clone());
    namespaces
        .patch(
            rig.ns(),
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"discovery.solo.io/function_discovery": "disabled"}}})),
        )
        .await
        .expect("label namespace");
    wait_for("the daemon to drop the namespace's Upstreams", || async {
        let metrics = daemon.metrics().await;
        (metrics.get("upstream_discovery_upstreams{source=\"lambda\"}") == Some(&0.0)
            && !metrics.contains_key(&listed_series))
        .then_some(())
    })
    .await;
    assert_eq!(
        rig.functions("listed").await,
        Some(vec![entry("f", "$LATEST")])
    );
    let _ = rig
        .upstreams()
        .delete("opted-out", &DeleteParams::default())
        .await;
    rig.stop(disabled).await;
    rig.stop(daemon).await;
    rig.cleanup().await;
}

/// `--lambda-aliases`: `name:alias` entries, listed again only for functions that changed.
pub async fn aliases_are_listed_for_changed_functions_only(env: Arc<TestEnv>) {
    let rig = Rig::new(env, "fn-alias", "eu-central-2").await;
    rig.moto
        .create_functions(&["api".into(), "worker".into()])
        .await;
    let version = rig.moto.publish_version("api").await;
    rig.moto.create_alias("api", "live", &version).await;
    rig.test_secret().await;
    rig.upstream("lambdas", rig.by_test_secret(), json!({}))
        .await;
    let daemon = rig.start(&["--lambda-aliases"], &[]);
    let mut expected = rig.expected(|_| true).await;
    expected.push(entry("api", "live"));
    expected.sort_by(|a, b| a.logical_name.as_bytes().cmp(b.logical_name.as_bytes()));
    assert!(expected
        .iter()
        .any(|e| e.logical_name == "api:live" && e.qualifier == "live"));
    rig.wait_for_functions("lambdas", &expected, &daemon).await;
    let aliases_listed = rig.proxy.count_in("ListAliases", rig.region());
    assert_eq!(aliases_listed, 2, "one ListAliases per function at first");
    let sweeps = rig.proxy.count_in("ListFunctions", rig.region());
    wait_for("two more sweeps", || async {
        (rig.proxy.count_in("ListFunctions", rig.region()) >= sweeps + 2).then_some(())
    })
    .await;
    assert_eq!(
        rig.proxy.count_in("ListAliases", rig.region()),
        aliases_listed,
        "unchanged functions: no ListAliases"
    );
    rig.moto.update_function_code("worker").await;
    let version = rig.moto.publish_version("worker").await;
    rig.moto.create_alias("worker", "canary", &version).await;
    let mut expected = rig.expected(|_| true).await;
    expected.push(entry("api", "live"));
    expected.push(entry("worker", "canary"));
    expected.sort_by(|a, b| a.logical_name.as_bytes().cmp(b.logical_name.as_bytes()));
    rig.wait_for_functions("lambdas", &expected, &daemon).await;
    assert_eq!(
        rig.proxy.count_in("ListAliases", rig.region()),
        aliases_listed + 1,
        "only the changed function's aliases are listed again"
    );
    rig.stop(daemon).await;
    rig.cleanup().await;
}

/// Kubernetes refusing a write (409, 500) and AWS failing (500) are retried; an Upstream
/// deleted while its write is on the way is not re-created.
pub async fn failed_writes_are_retried_and_a_deleted_upstream_stays_deleted(env: Arc<TestEnv>) {
    let rig = Rig::new(env.clone(), "fn-writes", "ap-southeast-2").await;
    rig.moto.create_functions(&["f".into()]).await;
    rig.test_secret().await;
    let aws = rig.by_test_secret();
    rig.upstream("refused", aws.clone(), json!({})).await;
    rig.upstream("doomed", aws.clone(), json!({})).await;
    let kube = FaultProxy::start(&env, rig.scenario.token()).await;
    kube.rules
        .inject(Rule::new("PATCH", &["/upstreams/refused"], Fault::conflict()).times(1));
    kube.rules
        .inject(Rule::new("PATCH", &["/upstreams/refused"], Fault::internal_error()).times(1));
    let held = kube.rules.inject(
        Rule::new(
            "PATCH",
            &["/upstreams/doomed"],
            Fault::Delay(Duration::from_secs(3)),
        )
        .times(1),
    );
    let aws_error = rig.proxy.rules.inject(
        AwsRule::new("ListFunctions", AwsFault::ServerError)
            .access_key_id(TEST_ACCESS_KEY_ID)
            .times(3),
    );
    let daemon = rig.start_via(Some(&kube), &[], &[]);

    let failed = wait_for_event(
        rig.admin(),
        rig.ns(),
        "Upstream",
        "refused",
        "LambdaDiscoveryFailed",
    )
    .await;
    assert!(failed
        .message
        .unwrap_or_default()
        .contains("ServiceException"));
    // The doomed Upstream's write is held by the proxy: delete it meanwhile.
    wait_for("the held write", || async {
        (kube.rules.remaining(held) == Some(0)).then_some(())
    })
    .await;
    rig.upstreams()
        .delete("doomed", &DeleteParams::default())
        .await
        .expect("delete");
    rig.wait_for_functions("refused", &[entry("f", "$LATEST")], &daemon)
        .await;
    assert_eq!(rig.proxy.rules.remaining(aws_error), Some(0));
    wait_for("the held write to be refused", || async {
        let conflicts = daemon
            .metric_sum("upstream_discovery_writes_total{op=\"update\",result=\"conflict\",source=\"lambda\"}")
            .await;
        // One injected 409 for "refused", one precondition failure for "doomed".
        (conflicts >= 2.0).then_some(())
    })
    .await;
    assert!(
        daemon
            .metric_sum(
                "upstream_discovery_writes_total{op=\"update\",result=\"error\",source=\"lambda\"}"
            )
            .await
            >= 1.0
    );
    assert!(
        rig.upstreams()
            .get_opt("doomed")
            .await
            .expect("get")
            .is_none(),
        "a deleted Upstream must not come back from a late write"
    );
    rig.stop(daemon).await;
    kube.shutdown().await;
    rig.cleanup().await;
}

/// Two Secrets with different keys of one account: two sweeps, one rate limit. With
/// `--lambda-api-rps 2` no two ListFunctions calls to the account and region come closer than
/// half a second, whichever keys make them.
pub async fn sweeps_of_one_account_share_its_rate_limit(env: Arc<TestEnv>) {
    let rig = Rig::new(env, "fn-pace", "us-east-2").await;
    rig.moto.create_functions(&function_names(120)).await;
    rig.test_secret().await;
    rig.secret(
        "second-user",
        &[
            ("aws_access_key_id", "AKIDSECONDUSER000001"),
            ("aws_secret_access_key", "second-user-secret-0000000005"),
        ],
    )
    .await;
    rig.upstream("first", rig.by_test_secret(), json!({})).await;
    rig.upstream(
        "second",
        json!({"secretRef": {"name": "second-user", "namespace": rig.ns()}}),
        json!({}),
    )
    .await;
    let daemon = rig.start(
        &["--lambda-poll-interval", "1h", "--lambda-api-rps", "2"],
        &[],
    );
    let expected = rig.expected(|_| true).await;
    rig.wait_for_functions("first", &expected, &daemon).await;
    rig.wait_for_functions("second", &expected, &daemon).await;
    let mut calls: Vec<_> = rig
        .proxy
        .requests()
        .into_iter()
        .filter(|r| r.operation == "ListFunctions" && r.region == rig.region())
        .collect();
    calls.sort_by_key(|c| c.at);
    let keys: BTreeSet<&str> = calls.iter().map(|c| c.access_key_id.as_str()).collect();
    assert_eq!(calls.len(), 6, "two sweeps of three pages");
    assert_eq!(keys.len(), 2, "{keys:?}");
    let closest = calls
        .windows(2)
        .map(|pair| pair[1].at.duration_since(pair[0].at))
        .min()
        .expect("calls");
    println!("two sweeps of one account at 2 calls/s: closest calls {closest:?} apart");
    assert!(
        closest >= Duration::from_millis(400),
        "calls {closest:?} apart: the account's limit is not shared"
    );
    assert!(rig.proxy.count_in("GetCallerIdentity", rig.region()) >= 2);
    rig.stop(daemon).await;
    rig.cleanup().await;
}
