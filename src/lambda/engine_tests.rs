//! The engine's decisions without any server: which Upstreams share a sweep, what is reported,
//! what waits. The client points nowhere and the engine is a follower, so nothing is sent.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use serde_json::json;

use super::*;
use crate::lambda::functions::FunctionVersion;
use crate::lambda::secrets::SecretUpdate;

fn engine() -> LambdaEngine {
    let config = kube::Config::new("http://127.0.0.1:9".parse().expect("url"));
    let client = Client::try_from(config).expect("client");
    let metrics = Metrics::new().expect("metrics");
    let applier = Applier::new(client.clone(), NonZeroU32::MIN, NonZeroU32::MIN, true);
    let (_, leader) = watch::channel(false);
    LambdaEngine::new(
        LambdaConfig {
            mode: FdsMode::Whitelist,
            poll_interval: Duration::from_secs(30),
            api_rps: NonZeroU32::MIN,
            aliases: false,
            max_functions: 2000,
        },
        client,
        &[None],
        applier,
        metrics,
        EventSink::log_only(),
        leader,
    )
}

fn upstream(
    namespace: &str,
    name: &str,
    aws: serde_json::Value,
    labels: serde_json::Value,
) -> Upstream {
    serde_json::from_value(json!({
        "apiVersion": "gloo.solo.io/v1", "kind": "Upstream",
        "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{name}"),
                     "resourceVersion": "1", "labels": labels},
        "spec": {"aws": aws},
    }))
    .expect("upstream")
}

fn keys(id: &str) -> Result<StaticKeys, Vec<&'static str>> {
    let data: BTreeMap<String, ByteString> = [
        ("aws_access_key_id", id),
        ("aws_secret_access_key", "very-secret-value"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
    .collect();
    let secret = Secret {
        data: Some(data),
        ..Default::default()
    };
    crate::lambda::target::keys_from_secret(secret.data.as_ref())
}

fn secret(namespace: &str, name: &str) -> SecretKey {
    SecretKey {
        namespace: namespace.into(),
        name: name.into(),
    }
}

fn key(namespace: &str, name: &str) -> UpstreamKey {
    UpstreamKey {
        namespace: namespace.into(),
        name: name.into(),
    }
}

/// Lists `upstreams` and the namespaces (name, function_discovery label), then steps.
fn synced(
    engine: &mut LambdaEngine,
    upstreams: Vec<Upstream>,
    namespaces: &[(&str, Option<&str>)],
) {
    engine.on_input(Input::Upstream(0, Box::new(watcher::Event::Init)));
    for upstream in upstreams {
        engine.on_input(Input::Upstream(
            0,
            Box::new(watcher::Event::InitApply(upstream)),
        ));
    }
    engine.on_input(Input::Upstream(0, Box::new(watcher::Event::InitDone)));
    engine.on_input(Input::Namespace(Box::new(watcher::Event::Init)));
    for (name, label) in namespaces {
        let labels = label
            .map(|l| json!({FUNCTION_DISCOVERY_LABEL: l}))
            .unwrap_or(json!({}));
        let ns: PartialObjectMeta<Namespace> = serde_json::from_value(json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": {"name": name, "labels": labels},
        }))
        .expect("namespace");
        engine.on_input(Input::Namespace(Box::new(watcher::Event::InitApply(ns))));
    }
    engine.on_input(Input::Namespace(Box::new(watcher::Event::InitDone)));
    engine.step();
}

fn members(engine: &LambdaEngine) -> Vec<(String, Vec<String>)> {
    let mut groups: Vec<(String, Vec<String>)> = engine
        .groups
        .iter()
        .map(|(key, group)| {
            (
                key.describe(),
                group.members.iter().map(ToString::to_string).collect(),
            )
        })
        .collect();
    groups.sort();
    groups
}

#[tokio::test]
async fn upstreams_with_the_same_credentials_and_region_share_one_sweep() {
    let mut engine = engine();
    let by_secret = |name: &str, region: &str| json!({"region": region, "secretRef": {"name": name, "namespace": "team"}});
    synced(
        &mut engine,
        vec![
            upstream("team", "a", by_secret("creds", "eu-west-1"), json!({})),
            upstream("team", "b", by_secret("creds", "eu-west-1"), json!({})),
            upstream("team", "c", by_secret("creds", "us-east-1"), json!({})),
            // Another Secret with the same keys: the same account.
            upstream("team", "d", by_secret("copy", "eu-west-1"), json!({})),
            upstream("team", "e", json!({"region": "eu-west-1"}), json!({})),
            upstream(
                "team",
                "f",
                json!({"region": "eu-west-1", "roleArn": "arn:aws:iam::1:role/r"}),
                json!({}),
            ),
        ],
        &[("team", None)],
    );
    assert!(
        engine.groups.len() == 2 && engine.membership.len() == 2,
        "Secrets not read yet: only the default-chain Upstreams have a sweep: {:?}",
        members(&engine)
    );
    engine.on_secret(SecretUpdate::Present(
        secret("team", "creds"),
        keys("AKIDSAME0001"),
    ));
    engine.on_secret(SecretUpdate::Present(
        secret("team", "copy"),
        keys("AKIDSAME0001"),
    ));
    engine.step();
    assert_eq!(
        members(&engine),
        [
            (
                "eu-west-1 (StaticKeys(…0001))".to_string(),
                vec!["team/a".into(), "team/b".into(), "team/d".into()]
            ),
            (
                "eu-west-1 (default chain)".to_string(),
                vec!["team/e".into()]
            ),
            (
                "eu-west-1 as arn:aws:iam::1:role/r (default chain)".to_string(),
                vec!["team/f".into()]
            ),
            (
                "us-east-1 (StaticKeys(…0001))".to_string(),
                vec!["team/c".into()]
            ),
        ]
    );
    assert_eq!(engine.metrics.upstreams(Source::Lambda), 6);

    // A rotated Secret is a new sweep key; the old one goes when nobody uses it.
    engine.on_secret(SecretUpdate::Present(
        secret("team", "copy"),
        keys("AKIDROTATED2"),
    ));
    engine.step();
    assert_eq!(engine.groups.len(), 5);
    engine.on_secret(SecretUpdate::Present(
        secret("team", "creds"),
        keys("AKIDROTATED2"),
    ));
    engine.step();
    assert_eq!(engine.groups.len(), 4, "{:?}", members(&engine));
}

#[tokio::test]
async fn nothing_is_grouped_before_every_first_list() {
    let mut engine = engine();
    engine.on_input(Input::Upstream(0, Box::new(watcher::Event::Init)));
    engine.on_input(Input::Upstream(
        0,
        Box::new(watcher::Event::InitApply(upstream(
            "team",
            "a",
            json!({"region": "r"}),
            json!({}),
        ))),
    ));
    engine.on_input(Input::Upstream(0, Box::new(watcher::Event::InitDone)));
    engine.step();
    assert!(engine.groups.is_empty(), "namespaces not listed yet");
    engine.on_input(Input::Namespace(Box::new(watcher::Event::Init)));
    engine.on_input(Input::Namespace(Box::new(watcher::Event::InitDone)));
    engine.step();
    assert_eq!(engine.groups.len(), 1);
}

#[tokio::test]
async fn opted_out_upstreams_and_namespaces_get_no_sweep() {
    let mut engine = engine();
    let aws = json!({"region": "eu-west-1"});
    synced(
        &mut engine,
        vec![
            upstream("team", "on", aws.clone(), json!({})),
            upstream(
                "team",
                "off",
                aws.clone(),
                json!({FUNCTION_DISCOVERY_LABEL: "disabled"}),
            ),
            upstream(
                "quiet",
                "x",
                aws.clone(),
                json!({FUNCTION_DISCOVERY_LABEL: "enabled"}),
            ),
            upstream("kube-system", "y", aws.clone(), json!({})),
            upstream("kube-public", "z", aws.clone(), json!({})),
        ],
        &[
            ("team", None),
            ("quiet", Some("disabled")),
            ("kube-system", None),
            ("kube-public", Some("enabled")),
        ],
    );
    let mut selected: Vec<String> = engine.membership.keys().map(ToString::to_string).collect();
    selected.sort();
    assert_eq!(selected, ["kube-public/z", "team/on"]);
    assert_eq!(engine.metrics.upstreams(Source::Lambda), 2);
}

#[tokio::test]
async fn credential_problems_are_reported_once_and_never_show_secret_values() {
    let mut engine = engine();
    let by_secret = |name: &str| json!({"region": "eu-west-1", "secretRef": {"name": name, "namespace": "team"}});
    synced(
        &mut engine,
        vec![
            upstream("team", "missing", by_secret("gone"), json!({})),
            upstream("team", "keyless", by_secret("partial"), json!({})),
            upstream("team", "forbidden", by_secret("hidden"), json!({})),
            upstream(
                "team",
                "regionless",
                json!({"secretRef": {"name": "gone", "namespace": "team"}}),
                json!({}),
            ),
        ],
        &[("team", None)],
    );
    engine.on_secret(SecretUpdate::Missing(secret("team", "gone")));
    let partial = crate::lambda::target::keys_from_secret(Some(
        &[(
            "aws_secret_access_key".to_string(),
            ByteString(b"very-secret-value".to_vec()),
        )]
        .into_iter()
        .collect(),
    ));
    engine.on_secret(SecretUpdate::Present(secret("team", "partial"), partial));
    engine.on_secret(SecretUpdate::WatchError(
        secret("team", "hidden"),
        "secrets \"hidden\" is forbidden".into(),
    ));
    engine.step();
    let reason = |name: &str| engine.reported.get(&key("team", name)).map(|p| p.reason);
    assert_eq!(reason("missing"), Some("LambdaCredentialsMissing"));
    assert_eq!(reason("keyless"), Some("LambdaCredentialsMissing"));
    assert_eq!(reason("forbidden"), Some("LambdaCredentialsMissing"));
    assert_eq!(reason("regionless"), Some("InvalidAwsUpstream"));
    let note = |name: &str| engine.reported[&key("team", name)].note.clone();
    assert!(
        note("keyless").contains("aws_access_key_id"),
        "{}",
        note("keyless")
    );
    assert!(
        note("forbidden").contains("forbidden"),
        "{}",
        note("forbidden")
    );
    for problem in engine.reported.values() {
        assert!(
            !problem.note.contains("very-secret-value"),
            "{}",
            problem.note
        );
    }
    assert!(engine.membership.is_empty(), "nothing to sweep with");
    // Counted once per problem, like the Event, not once per look.
    engine.regroup = true;
    engine.step();
    assert_eq!(engine.metrics.errors("lambda_credentials_missing"), 3);
    assert_eq!(engine.metrics.errors("lambda_invalid_upstream"), 1);

    // Fixed: the problem is over and the Upstream joins a sweep.
    engine.on_secret(SecretUpdate::Present(
        secret("team", "gone"),
        keys("AKIDFIXED001"),
    ));
    engine.step();
    assert!(engine.membership.contains_key(&key("team", "missing")));
}

#[tokio::test]
async fn a_failed_sweep_keeps_the_lists_backs_off_and_reports_on_every_member() {
    let mut engine = engine();
    let aws = json!({"region": "eu-west-1", "lambdaFunctions": [
        {"lambdaFunctionName": "old", "qualifier": "$LATEST", "logicalName": "old"}]});
    synced(
        &mut engine,
        vec![
            upstream("team", "a", aws.clone(), json!({})),
            upstream("team", "b", aws.clone(), json!({})),
        ],
        &[("team", None)],
    );
    let sweep = engine.membership[&key("team", "a")].clone();
    let before = Instant::now();
    engine.on_sweep(SweepDone {
        key: sweep.clone(),
        result: Err(SweepError::Throttled {
            operation: "ListFunctions",
            code: "TooManyRequestsException".into(),
        }),
    });
    let group = &engine.groups[&sweep];
    assert!(
        group.due > before && group.due < before + Duration::from_secs(2),
        "backoff starts near 1 s"
    );
    for name in ["a", "b"] {
        assert_eq!(
            engine.reported[&key("team", name)].reason,
            "LambdaThrottled"
        );
    }
    assert_eq!(engine.metrics.errors("lambda_throttled"), 1);
    engine.step();
    assert_eq!(
        engine.targets[&key("team", "a")]
            .functions
            .as_ref()
            .map(Vec::len),
        Some(1)
    );

    // Success: the problem is over, the new answer is counted (a follower does not write).
    engine.on_sweep(SweepDone {
        key: sweep.clone(),
        result: Ok(Listing {
            versions: vec![FunctionVersion {
                name: "old".into(),
                version: "$LATEST".into(),
                last_modified: "t".into(),
            }],
            aliases: BTreeMap::new(),
        }),
    });
    engine.step();
    assert!(engine.reported.is_empty(), "{:?}", engine.reported);
    assert!(engine.groups[&sweep].due >= before + Duration::from_secs(29));
    assert!(engine.writing.is_empty());
}

#[tokio::test]
async fn a_relist_forgets_upstreams_that_are_gone() {
    let mut engine = engine();
    let aws = json!({"region": "eu-west-1"});
    synced(
        &mut engine,
        vec![
            upstream("team", "a", aws.clone(), json!({})),
            upstream("team", "b", aws.clone(), json!({})),
        ],
        &[("team", None)],
    );
    engine.on_input(Input::Upstream(0, Box::new(watcher::Event::Init)));
    engine.on_input(Input::Upstream(
        0,
        Box::new(watcher::Event::InitApply(upstream(
            "team",
            "a",
            aws.clone(),
            json!({}),
        ))),
    ));
    engine.on_input(Input::Upstream(0, Box::new(watcher::Event::InitDone)));
    engine.step();
    assert_eq!(engine.targets.len(), 1);
    assert_eq!(engine.metrics.upstreams(Source::Lambda), 1);
    // An Upstream that loses spec.aws is no longer a target either.
    let mut plain = upstream("team", "a", aws, json!({}));
    plain.spec.aws = None;
    engine.on_input(Input::Upstream(0, Box::new(watcher::Event::Apply(plain))));
    engine.step();
    assert!(engine.targets.is_empty() && engine.groups.is_empty());
}

#[tokio::test]
async fn a_sweep_task_that_panicked_is_retried_later() {
    let mut engine = engine();
    synced(
        &mut engine,
        vec![upstream(
            "team",
            "a",
            json!({"region": "eu-west-1"}),
            json!({}),
        )],
        &[("team", None)],
    );
    let sweep = engine.membership[&key("team", "a")].clone();
    engine.groups.get_mut(&sweep).expect("group").running = true;
    let task = engine.sweeps.spawn(async { panic!("a bug in a sweep") });
    engine
        .task_keys
        .insert(task.id(), TaskKey::Sweep(sweep.clone()));
    let before = Instant::now();
    let Some(Err(error)) = engine.sweeps.join_next_with_id().await else {
        panic!("the task should have panicked");
    };
    engine.on_lost_task(error);
    let group = &engine.groups[&sweep];
    assert!(!group.running, "the sweep can run again");
    assert!(group.due > before, "after a backoff");
    assert_eq!(engine.metrics.errors("lambda_task_failed"), 1);
    assert!(engine.task_keys.is_empty());
}
