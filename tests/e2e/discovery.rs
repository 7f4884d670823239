//! The daemon end to end (the discovery issue's acceptance list): the real binary, as a
//! ServiceAccount with the chart's rights, against the real API server and controller manager.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Service};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use upstream_discovery::crd::Upstream;

use crate::scenario::Scenario;
use crate::support::{essence, kube_upstream, wait_for, wait_for_exact_upstreams, with, without};
use crate::test_env::TestEnv;

/// SIGTERM must end the daemon within this.
const EXIT_LIMIT: Duration = Duration::from_secs(5);

fn service(name: &str, ports: &[(&str, i32)], extra: serde_json::Value) -> Service {
    let mut object = json!({
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "selector": {"app": name},
            "ports": ports.iter().map(|(port_name, port)| json!({"name": port_name, "port": port})).collect::<Vec<_>>(),
        },
    });
    merge(&mut object, extra);
    serde_json::from_value(object).expect("service")
}

fn merge(target: &mut serde_json::Value, extra: serde_json::Value) {
    match (target, extra) {
        (serde_json::Value::Object(target), serde_json::Value::Object(extra)) => {
            for (key, value) in extra {
                merge(target.entry(key).or_insert(serde_json::Value::Null), value);
            }
        }
        (target, extra) => *target = extra,
    }
}

async fn create_service(admin: &Client, namespace: &str, service: &Service) -> Service {
    Api::<Service>::namespaced(admin.clone(), namespace)
        .create(&PostParams::default(), service)
        .await
        .expect("create service")
}

async fn patch_service(admin: &Client, namespace: &str, name: &str, patch: serde_json::Value) {
    Api::<Service>::namespaced(admin.clone(), namespace)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch service");
}

/// The Upstream of port `port` of a Service made by [`service`] with no annotations
/// (docs/behaviour.md, written out by hand in `kube_upstream`).
fn plain(ns: &str, name: &str, port: u16) -> serde_json::Value {
    kube_upstream(ns, name, port)
}

/// In `--write-namespace-mode service`: the Upstream beside its Service, owned by it
/// (docs/behaviour.md, deliberate differences; the Service's UID is checked apart).
fn beside_its_service(ns: &str, name: &str, port: u16) -> serde_json::Value {
    with(
        plain(ns, name, port),
        "/metadata/ownerReferences",
        json!([{"apiVersion": "v1", "kind": "Service", "name": name}]),
    )
}

/// `upstream` with the annotations `annotations`.
fn annotated(upstream: serde_json::Value, annotations: serde_json::Value) -> serde_json::Value {
    with(upstream, "/metadata/annotations", annotations)
}

async fn wait_for_event(admin: &Client, namespace: &str, service: &str, reason: &str) -> Event {
    crate::support::wait_for_event(admin, namespace, "Service", service, reason).await
}

pub async fn services_become_upstreams_and_follow_every_change(env: Arc<TestEnv>) {
    let scenario = Scenario::builder(env, "follow").build().await;
    let daemon = scenario
        .daemon()
        .args(&["--service-selector", "discovery!=off"])
        .ready()
        .await;
    let (admin, ns, write) = (
        &scenario.admin,
        scenario.service_ns.as_str(),
        scenario.write_ns.as_str(),
    );
    let annotations =
        |team: &str| json!({"team": team, "gloo.solo.io/sslService.secret": "8080:petstore-tls"});
    let tls = json!({"secretRef": {"name": "petstore-tls", "namespace": ns}});

    create_service(admin, ns, &service("petstore", &[("http", 8080), ("grpc", 9090)], json!({
        "metadata": {"annotations": {"team": "a", "gloo.solo.io/sslService.secret": "8080:petstore-tls"}},
    })))
    .await;
    create_service(
        admin,
        ns,
        &service("headless", &[], json!({"spec": {"clusterIP": "None"}})),
    )
    .await;
    // The secret is for port 8080 only; the port named grpc speaks HTTP/2; no ports, no Upstream.
    let upstreams = wait_for_exact_upstreams(
        admin,
        write,
        &[
            with(
                annotated(plain(ns, "petstore", 8080), annotations("a")),
                "/spec/sslConfig",
                tls.clone(),
            ),
            with(
                annotated(plain(ns, "petstore", 9090), annotations("a")),
                "/spec/useHttp2",
                json!(true),
            ),
        ],
    )
    .await;
    let http = &upstreams[&format!("{ns}-petstore-8080")];
    assert_eq!(
        http.spec
            .ssl_config
            .as_ref()
            .and_then(|s| s.secret_ref.as_ref())
            .map(|r| r.name.as_str()),
        Some("petstore-tls")
    );
    assert_eq!(
        upstreams[&format!("{ns}-petstore-9090")].spec.use_http2,
        Some(true)
    );

    // A port changes: the old Upstream goes, a new one comes.
    patch_service(admin, ns, "petstore", json!({"spec": {"ports": [{"name": "http", "port": 8081}, {"name": "grpc", "port": 9090}]}})).await;
    let h2 = |upstream| with(upstream, "/spec/useHttp2", json!(true));
    let upstreams = wait_for_exact_upstreams(
        admin,
        write,
        &[
            annotated(plain(ns, "petstore", 8081), annotations("a")),
            h2(annotated(plain(ns, "petstore", 9090), annotations("a"))),
        ],
    )
    .await;
    assert!(upstreams.contains_key(&format!("{ns}-petstore-8081")));
    // The selector and an annotation change: the Upstreams follow.
    patch_service(admin, ns, "petstore", json!({"spec": {"selector": {"app": "petstore", "tier": "web"}}, "metadata": {"annotations": {"team": "b"}}})).await;
    let tiered = |upstream| {
        with(
            upstream,
            "/spec/kube/selector",
            json!({"app": "petstore", "tier": "web"}),
        )
    };
    wait_for_exact_upstreams(
        admin,
        write,
        &[
            tiered(annotated(plain(ns, "petstore", 8081), annotations("b"))),
            h2(tiered(annotated(
                plain(ns, "petstore", 9090),
                annotations("b"),
            ))),
        ],
    )
    .await;
    // An annotation removed: gone from the Upstreams too.
    patch_service(
        admin,
        ns,
        "petstore",
        json!({"metadata": {"annotations": {"team": null}}}),
    )
    .await;
    let secret_only = json!({"gloo.solo.io/sslService.secret": "8080:petstore-tls"});
    wait_for_exact_upstreams(
        admin,
        write,
        &[
            tiered(annotated(plain(ns, "petstore", 8081), secret_only.clone())),
            h2(tiered(annotated(
                plain(ns, "petstore", 9090),
                secret_only.clone(),
            ))),
        ],
    )
    .await;
    // A port removed.
    patch_service(
        admin,
        ns,
        "petstore",
        json!({"spec": {"ports": [{"name": "grpc", "port": 9090}]}}),
    )
    .await;
    let only_grpc = [h2(tiered(annotated(
        plain(ns, "petstore", 9090),
        secret_only.clone(),
    )))];
    wait_for_exact_upstreams(admin, write, &only_grpc).await;
    // The Service stops matching --service-selector: its Upstreams are collected.
    patch_service(
        admin,
        ns,
        "petstore",
        json!({"metadata": {"labels": {"discovery": "off"}}}),
    )
    .await;
    wait_for_exact_upstreams(admin, write, &[]).await;
    patch_service(
        admin,
        ns,
        "petstore",
        json!({"metadata": {"labels": {"discovery": null}}}),
    )
    .await;
    wait_for_exact_upstreams(admin, write, &only_grpc).await;
    // The Service is deleted.
    Api::<Service>::namespaced(admin.clone(), ns)
        .delete("petstore", &DeleteParams::default())
        .await
        .expect("delete");
    wait_for_exact_upstreams(admin, write, &[]).await;

    daemon.wait_idle().await;
    let writes = daemon.writes().await;
    assert_eq!(
        daemon
            .metric_sum("upstream_discovery_lag_seconds_count")
            .await,
        writes,
        "a lag for every write"
    );
    let (p50, p99) = daemon.lag_quantiles().await;
    eprintln!("discovery lag over {writes} writes: p50 <= {p50} s, p99 <= {p99} s");
    daemon.terminate(EXIT_LIMIT);
    scenario.cleanup().await;
}

pub async fn an_upstream_it_does_not_own_is_left_alone(env: Arc<TestEnv>) {
    let scenario = Scenario::builder(env, "foreign").build().await;
    let (admin, ns, write) = (
        &scenario.admin,
        scenario.service_ns.clone(),
        scenario.write_ns.clone(),
    );
    let taken = format!("{ns}-api-80");
    let foreign: Upstream = serde_json::from_value(json!({
        "apiVersion": "gloo.solo.io/v1", "kind": "Upstream",
        "metadata": {"name": taken, "annotations": {"owner": "a human"}},
        "spec": {"static": {"hosts": [{"addr": "10.1.2.3", "port": 80}]}},
    }))
    .expect("upstream");
    let upstreams = Api::<Upstream>::namespaced(admin.clone(), &write);
    let before = upstreams
        .create(&PostParams::default(), &foreign)
        .await
        .expect("create foreign upstream");

    let daemon = scenario.daemon().ready().await;
    create_service(admin, &ns, &service("api", &[("http", 80)], json!({}))).await;
    create_service(admin, &ns, &service("web", &[("http", 80)], json!({}))).await;
    wait_for_exact_upstreams(admin, &write, &[plain(&ns, "web", 80)]).await;
    wait_for_event(admin, &ns, "api", "UpstreamNotOwned").await;
    wait_for("skipped_total{reason=not_owned}", || async {
        (daemon
            .metric_sum("upstream_discovery_skipped_total{reason=\"not_owned\"}")
            .await
            >= 1.0)
            .then_some(())
    })
    .await;
    let after = upstreams.get(&taken).await.expect("still there");
    assert_eq!(
        after.metadata.resource_version, before.metadata.resource_version,
        "not written at all"
    );
    assert_eq!(essence(&after), essence(&before));

    // When its owner deletes it, the name is free and discovery takes it.
    upstreams
        .delete(&taken, &DeleteParams::default())
        .await
        .expect("delete foreign");
    wait_for_exact_upstreams(
        admin,
        &write,
        &[plain(&ns, "web", 80), plain(&ns, "api", 80)],
    )
    .await;
    daemon.terminate(EXIT_LIMIT);
    scenario.cleanup().await;
}

pub async fn gloo_written_upstreams_are_adopted_and_user_fields_survive(env: Arc<TestEnv>) {
    let scenario = Scenario::builder(env, "adopt").build().await;
    let (admin, ns, write) = (
        &scenario.admin,
        scenario.service_ns.clone(),
        scenario.write_ns.clone(),
    );
    create_service(admin, &ns, &service("same", &[("http", 80)], json!({}))).await;
    create_service(
        admin,
        &ns,
        &service(
            "stale",
            &[("http", 80)],
            json!({"metadata": {"annotations": {"a": "1"}}}),
        ),
    )
    .await;
    // Written the way Gloo's discovery writes them: a labelled object, by an update of another
    // client.
    let upstreams = Api::<Upstream>::namespaced(admin.clone(), &write);
    let gloo = PostParams {
        field_manager: Some("discovery".into()),
        ..Default::default()
    };
    // As Gloo wrote them (docs/behaviour.md): `same` exactly right, `stale` without its Service's
    // annotation.
    let gloo_written = |service: &str| -> Upstream {
        let mut object = without(plain(&ns, service, 80), "/metadata/ownerReferences");
        object["apiVersion"] = json!("gloo.solo.io/v1");
        object["kind"] = json!("Upstream");
        serde_json::from_value(object).expect("upstream")
    };
    let same_upstream = gloo_written("same");
    let stale_upstream = gloo_written("stale");
    let same_before = upstreams
        .create(&gloo, &same_upstream)
        .await
        .expect("gloo-style create");
    let stale_before = upstreams
        .create(&gloo, &stale_upstream)
        .await
        .expect("gloo-style create");

    let daemon = scenario.daemon().ready().await;
    let adopted = wait_for_exact_upstreams(
        admin,
        &write,
        &[
            plain(&ns, "same", 80),
            annotated(plain(&ns, "stale", 80), json!({"a": "1"})),
        ],
    )
    .await;
    daemon.wait_idle().await;
    let same_after = &adopted[&format!("{ns}-same-80")];
    let stale_after = &adopted[&format!("{ns}-stale-80")];
    assert_eq!(
        same_after.metadata.uid, same_before.metadata.uid,
        "adopted in place"
    );
    assert_eq!(
        same_after.metadata.resource_version, same_before.metadata.resource_version,
        "already right: no write"
    );
    assert_eq!(
        stale_after.metadata.uid, stale_before.metadata.uid,
        "updated in place, not re-created"
    );
    assert_eq!(
        daemon
            .metric_sum("upstream_discovery_writes_total{op=\"create\",result=\"success\"")
            .await,
        0.0
    );

    // A user adds health checks to a discovered Upstream; a later change of its Service keeps them.
    let health = json!({"spec": {"healthChecks": [{"timeout": "1s", "interval": "10s", "httpHealthCheck": {"path": "/healthz"}}]}});
    let name = format!("{ns}-stale-80");
    upstreams
        .patch(
            &name,
            &PatchParams {
                field_manager: Some("a-user".into()),
                ..Default::default()
            },
            &Patch::Merge(&health),
        )
        .await
        .expect("user patch");
    patch_service(
        admin,
        &ns,
        "stale",
        json!({"metadata": {"annotations": {"a": "2"}}}),
    )
    .await;
    let updated = wait_for("the Upstream to follow its Service", || async {
        let upstream = upstreams.get(&name).await.ok()?;
        (upstream.metadata.annotations.as_ref()?.get("a")? == "2").then_some(upstream)
    })
    .await;
    assert_eq!(
        updated.spec.other.get("healthChecks"),
        Some(&health["spec"]["healthChecks"]),
        "the user's field survives"
    );
    daemon.terminate(EXIT_LIMIT);
    scenario.cleanup().await;
}

pub async fn a_restart_with_nothing_changed_makes_zero_writes(env: Arc<TestEnv>) {
    let scenario = Scenario::builder(env, "restart").build().await;
    let (admin, ns, write) = (
        &scenario.admin,
        scenario.service_ns.clone(),
        scenario.write_ns.clone(),
    );
    let first = scenario.daemon().ready().await;
    for (name, annotations) in [
        ("a", json!({})),
        ("b", json!({"gloo.solo.io/h2_service": "true"})),
        ("c", json!({"x": "y"})),
    ] {
        create_service(
            admin,
            &ns,
            &service(
                name,
                &[("http", 80), ("admin", 9000)],
                json!({"metadata": {"annotations": annotations}}),
            ),
        )
        .await;
    }
    let mut expected = Vec::new();
    for port in [80, 9000] {
        expected.push(plain(&ns, "a", port));
        expected.push(with(
            annotated(
                plain(&ns, "b", port),
                json!({"gloo.solo.io/h2_service": "true"}),
            ),
            "/spec/useHttp2",
            json!(true),
        ));
        expected.push(annotated(plain(&ns, "c", port), json!({"x": "y"})));
    }
    wait_for_exact_upstreams(admin, &write, &expected).await;
    first.wait_idle().await;
    let writes = first.writes().await;
    assert_eq!(writes, 6.0, "one write per Upstream");
    assert_eq!(
        first
            .metric_sum("upstream_discovery_lag_seconds_count")
            .await,
        writes,
        "a lag for every write"
    );
    let exit = first.terminate(EXIT_LIMIT);
    eprintln!("SIGTERM to exit: {exit:?}");

    // A short resync, to see that a periodic pass over unchanged Services writes nothing either.
    let second = scenario
        .daemon()
        .args(&["--resync-interval", "1s"])
        .ready()
        .await;
    second.wait_idle().await;
    second.wait_resyncs(2.0).await;
    second.wait_idle().await;
    assert_eq!(
        second.writes().await,
        0.0,
        "nothing changed, nothing written"
    );
    assert_eq!(
        second.metric_sum("upstream_discovery_writes_total").await,
        0.0,
        "not even an attempt"
    );
    second.terminate(EXIT_LIMIT);
    scenario.cleanup().await;
}

pub async fn service_mode_upstreams_are_collected_by_kubernetes_while_the_daemon_is_down(
    env: Arc<TestEnv>,
) {
    let scenario = Scenario::builder(env, "owner")
        .upstreams_cluster_wide()
        .build()
        .await;
    let (admin, ns) = (&scenario.admin, scenario.service_ns.clone());
    let daemon = scenario
        .daemon()
        .args(&["--write-namespace-mode", "service"])
        .ready()
        .await;
    let created = create_service(
        admin,
        &ns,
        &service("petstore", &[("http", 8080)], json!({})),
    )
    .await;
    let upstreams =
        wait_for_exact_upstreams(admin, &ns, &[beside_its_service(&ns, "petstore", 8080)]).await;
    let owners = upstreams[&format!("{ns}-petstore-8080")]
        .metadata
        .owner_references
        .clone()
        .expect("owner");
    assert_eq!(owners[0].uid, created.metadata.uid.clone().expect("uid"));
    daemon.terminate(EXIT_LIMIT);

    Api::<Service>::namespaced(admin.clone(), &ns)
        .delete("petstore", &DeleteParams::default())
        .await
        .expect("delete");
    let api = Api::<Upstream>::namespaced(admin.clone(), &ns);
    wait_for("the controller manager to collect the Upstream", || async {
        matches!(api.get_opt(&format!("{ns}-petstore-8080")).await, Ok(None)).then_some(())
    })
    .await;
    scenario.cleanup().await;
}

pub async fn only_the_leader_writes_and_a_follower_takes_over(env: Arc<TestEnv>) {
    let scenario = Scenario::builder(env, "leader").build().await;
    let (admin, ns, write) = (
        &scenario.admin,
        scenario.service_ns.clone(),
        scenario.write_ns.clone(),
    );
    let first = scenario.daemon().ready().await;
    wait_for("the first replica to lead", || async {
        (first.metric_sum("upstream_discovery_is_leader").await == 1.0).then_some(())
    })
    .await;
    let second = scenario.daemon().ready().await;
    create_service(admin, &ns, &service("one", &[("http", 80)], json!({}))).await;
    wait_for_exact_upstreams(admin, &write, &[plain(&ns, "one", 80)]).await;
    first.wait_idle().await;
    assert_eq!(second.metric_sum("upstream_discovery_is_leader").await, 0.0);
    assert_eq!(second.writes().await, 0.0, "a follower never writes");
    assert_eq!(first.writes().await, 1.0);

    first.kill();
    let killed = Instant::now();
    create_service(admin, &ns, &service("two", &[("http", 80)], json!({}))).await;
    wait_for_exact_upstreams(
        admin,
        &write,
        &[plain(&ns, "one", 80), plain(&ns, "two", 80)],
    )
    .await;
    let takeover = killed.elapsed();
    eprintln!("takeover after the leader was killed: {takeover:?}");
    assert!(takeover <= Duration::from_secs(20), "took {takeover:?}");
    assert_eq!(second.metric_sum("upstream_discovery_is_leader").await, 1.0);
    second.terminate(EXIT_LIMIT);
    scenario.cleanup().await;
}

pub async fn readyz_waits_for_the_first_sync(env: Arc<TestEnv>) {
    let scenario = Scenario::builder(env, "ready").build().await;
    let admin = scenario.admin.clone();
    // Without its Role the daemon cannot list Upstreams, so it cannot finish its first sync.
    let bindings = Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(
        admin.clone(),
        &scenario.write_ns,
    );
    let binding = bindings.get("upstream-discovery").await.expect("binding");
    bindings
        .delete("upstream-discovery", &DeleteParams::default())
        .await
        .expect("unbind");
    let daemon = scenario.daemon().args(&["--leader-elect", "false"]).start();
    wait_for("/healthz", || async {
        matches!(daemon.get("/healthz").await, Some((200, _))).then_some(())
    })
    .await;
    wait_for("a failed Upstream watch", || async {
        (daemon
            .metric_sum("upstream_discovery_watch_restarts_total{resource=\"upstreams\"}")
            .await
            >= 1.0)
            .then_some(())
    })
    .await;
    assert_eq!(
        daemon.get("/readyz").await.map(|(status, _)| status),
        Some(503),
        "not ready before the first sync"
    );

    let mut binding = binding;
    binding.metadata.resource_version = None;
    binding.metadata.uid = None;
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .expect("rebind");
    daemon.wait_ready().await;
    assert_eq!(
        daemon.get("/readyz").await.map(|(status, _)| status),
        Some(200)
    );
    daemon.terminate(EXIT_LIMIT);
    scenario.cleanup().await;
}

pub async fn dry_run_writes_nothing(env: Arc<TestEnv>) {
    let scenario = Scenario::builder(env, "dry").build().await;
    let (admin, ns, write) = (
        &scenario.admin,
        scenario.service_ns.clone(),
        scenario.write_ns.clone(),
    );
    let daemon = scenario.daemon().args(&["--dry-run"]).ready().await;
    create_service(
        admin,
        &ns,
        &service("petstore", &[("http", 8080)], json!({})),
    )
    .await;
    let name = format!("{ns}-petstore-8080");
    wait_for("the dry-run log line", || async {
        daemon
            .logs()
            .lines()
            .any(|l| l.contains("dry run: would apply") && l.contains(&name))
            .then_some(())
    })
    .await;
    let upstreams = Api::<Upstream>::namespaced(admin.clone(), &write)
        .list(&ListParams::default())
        .await
        .expect("list");
    assert!(
        upstreams.items.is_empty(),
        "dry run wrote {:?}",
        upstreams.items
    );
    assert_eq!(daemon.writes().await, 0.0);
    daemon.terminate(EXIT_LIMIT);
    scenario.cleanup().await;
}

pub async fn a_bad_annotation_gives_an_event_and_a_metric_and_loses_nothing(env: Arc<TestEnv>) {
    let scenario = Scenario::builder(env, "badann").build().await;
    let (admin, ns, write) = (
        &scenario.admin,
        scenario.service_ns.clone(),
        scenario.write_ns.clone(),
    );
    let daemon = scenario.daemon().ready().await;
    create_service(admin, &ns, &service("broken", &[("http", 80)], json!({
        "metadata": {"annotations": {"gloo.solo.io/upstream_config": "{not json", "gloo.solo.io/h2_service": "sometimes"}},
    })))
    .await;
    // Both annotations are ignored (and still copied): a plain Upstream.
    let upstreams = wait_for_exact_upstreams(
        admin,
        &write,
        &[annotated(
            plain(&ns, "broken", 80),
            json!({"gloo.solo.io/upstream_config": "{not json", "gloo.solo.io/h2_service": "sometimes"}),
        )],
    )
    .await;
    assert_eq!(
        upstreams[&format!("{ns}-broken-80")].spec.use_http2,
        None,
        "the bad value is ignored"
    );
    let event = wait_for_event(admin, &ns, "broken", "InvalidAnnotation").await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    wait_for("skipped_total for both bad annotations", || async {
        let invalid = daemon
            .metric_sum("upstream_discovery_skipped_total{reason=\"invalid_upstream_config\"}")
            .await;
        let boolean = daemon
            .metric_sum("upstream_discovery_skipped_total{reason=\"invalid_boolean_annotation\"}")
            .await;
        (invalid == 1.0 && boolean == 1.0).then_some(())
    })
    .await;
    daemon.terminate(EXIT_LIMIT);
    scenario.cleanup().await;
}

pub async fn switching_to_service_mode_moves_the_upstreams(env: Arc<TestEnv>) {
    let scenario = Scenario::builder(env, "switch")
        .upstreams_cluster_wide()
        .build()
        .await;
    let (admin, ns, write) = (
        &scenario.admin,
        scenario.service_ns.clone(),
        scenario.write_ns.clone(),
    );
    create_service(
        admin,
        &ns,
        &service("petstore", &[("http", 8080)], json!({})),
    )
    .await;
    let fixed = scenario.daemon().ready().await;
    wait_for_exact_upstreams(admin, &write, &[plain(&ns, "petstore", 8080)]).await;
    fixed.terminate(EXIT_LIMIT);

    let per_service = scenario
        .daemon()
        .args(&["--write-namespace-mode", "service"])
        .ready()
        .await;
    wait_for_exact_upstreams(admin, &ns, &[beside_its_service(&ns, "petstore", 8080)]).await;
    wait_for_exact_upstreams(admin, &write, &[]).await;
    per_service.terminate(EXIT_LIMIT);
    scenario.cleanup().await;
}

pub async fn owned_upstreams_changed_or_deleted_by_hand_are_put_back(env: Arc<TestEnv>) {
    let scenario = Scenario::builder(env, "putback").build().await;
    let (admin, ns, write) = (
        &scenario.admin,
        scenario.service_ns.clone(),
        scenario.write_ns.clone(),
    );
    let daemon = scenario.daemon().ready().await;
    create_service(
        admin,
        &ns,
        &service("petstore", &[("http", 8080)], json!({})),
    )
    .await;
    let petstore = [plain(&ns, "petstore", 8080)];
    wait_for_exact_upstreams(admin, &write, &petstore).await;
    let upstreams = Api::<Upstream>::namespaced(admin.clone(), &write);
    let name = format!("{ns}-petstore-8080");
    let tamper = json!({"spec": {"kube": {"servicePort": 1234}}});
    upstreams
        .patch(
            &name,
            &PatchParams {
                field_manager: Some("someone".into()),
                ..Default::default()
            },
            &Patch::Merge(&tamper),
        )
        .await
        .expect("tamper");
    wait_for_exact_upstreams(admin, &write, &petstore).await;
    let before = upstreams.get(&name).await.expect("get");
    upstreams
        .delete(&name, &DeleteParams::default())
        .await
        .expect("delete by hand");
    let back = wait_for_exact_upstreams(admin, &write, &petstore).await;
    assert_ne!(back[&name].metadata.uid, before.metadata.uid, "re-created");
    daemon.terminate(EXIT_LIMIT);
    scenario.cleanup().await;
}

pub async fn a_namespace_selector_scopes_discovery(env: Arc<TestEnv>) {
    let scenario = Scenario::builder(env, "nssel").build().await;
    let (admin, ns, write) = (
        &scenario.admin,
        scenario.service_ns.clone(),
        scenario.write_ns.clone(),
    );
    create_service(
        admin,
        &ns,
        &service("petstore", &[("http", 8080)], json!({})),
    )
    .await;
    let daemon = scenario
        .daemon()
        .args(&["--namespace-selector", "discovery=enabled"])
        .ready()
        .await;
    daemon.wait_idle().await;
    wait_for_exact_upstreams(admin, &write, &[]).await;

    let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(admin.clone());
    let label = |value: Option<&str>| json!({"metadata": {"labels": {"discovery": value}}});
    namespaces
        .patch(
            &ns,
            &PatchParams::default(),
            &Patch::Merge(&label(Some("enabled"))),
        )
        .await
        .expect("label");
    wait_for_exact_upstreams(admin, &write, &[plain(&ns, "petstore", 8080)]).await;
    namespaces
        .patch(&ns, &PatchParams::default(), &Patch::Merge(&label(None)))
        .await
        .expect("unlabel");
    wait_for_exact_upstreams(admin, &write, &[]).await;
    daemon.terminate(EXIT_LIMIT);
    scenario.cleanup().await;
}

/// Gloo's chart grants no Events (docs/behaviour.md): with that right taken away, refused Events
/// give one warning line (not one per Event) and `errors_total{kind="event_forbidden"}`, and
/// discovery goes on.
pub async fn refused_events_are_counted_logged_once_and_discovery_goes_on(env: Arc<TestEnv>) {
    use k8s_openapi::api::rbac::v1::ClusterRole;

    let scenario = Scenario::builder(env, "noevents").build().await;
    let (admin, ns, write) = (
        &scenario.admin,
        scenario.service_ns.clone(),
        scenario.write_ns.clone(),
    );
    // The scenario's ClusterRole, without its rule on Events.
    let roles = Api::<ClusterRole>::all(admin.clone());
    let name = format!("e2e-{write}");
    let mut role = roles.get(&name).await.expect("the scenario's ClusterRole");
    let rules = role.rules.get_or_insert_with(Vec::new);
    let before = rules.len();
    rules.retain(|rule| !rule.resources.iter().flatten().any(|r| r == "events"));
    assert_eq!(rules.len(), before - 1, "one rule on Events removed");
    role.metadata.managed_fields = None;
    roles
        .replace(&name, &PostParams::default(), &role)
        .await
        .expect("replace the ClusterRole");

    let daemon = scenario.daemon().ready().await;
    let bad = json!({"metadata": {"annotations": {"gloo.solo.io/upstream_config": "{not json"}}});
    for name in ["one", "two", "three"] {
        create_service(admin, &ns, &service(name, &[("http", 80)], bad.clone())).await;
    }
    let expected: Vec<serde_json::Value> = ["one", "three", "two"]
        .iter()
        .map(|name| {
            annotated(
                plain(&ns, name, 80),
                json!({"gloo.solo.io/upstream_config": "{not json"}),
            )
        })
        .collect();
    wait_for_exact_upstreams(admin, &write, &expected).await;
    wait_for("three refused Events counted", || async {
        let refused = daemon
            .metric_sum("upstream_discovery_errors_total{kind=\"event_forbidden\"}")
            .await;
        (refused >= 3.0).then_some(())
    })
    .await;
    let logs = daemon.logs();
    assert_eq!(
        logs.matches("Kubernetes Events are forbidden").count(),
        1,
        "one warning line, not one per Event"
    );
    assert!(!logs.contains("cannot record a Kubernetes Event"));
    daemon.terminate(EXIT_LIMIT);
    scenario.cleanup().await;
}
