//! Writes refused by admission control (issue 25), with a real HTTPS validating webhook of the
//! tests' own ([`crate::webhook`]) that judges the Upstreams of the test's write namespace:
//! refusals are their own error kinds (never `forbidden`), one Warning Event per refused object
//! and change carries the webhook's message word for word, retries back off per Service without
//! holding others back, and the write goes through within the backoff's cap once allowed.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Service};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use crate::daemon::Daemon;
use crate::diff::explain;
use crate::scenario::Scenario;
use crate::support::{
    create_plain_service, kube_upstream, upstream_api, wait_for, wait_for_event,
    wait_for_exact_upstreams, with,
};
use crate::test_env::TestEnv;
use crate::webhook::{nowhere, Mode, Rule, Webhook};

const EXIT_LIMIT: Duration = Duration::from_secs(10);
/// The longest wait between two tries of a Service's writes: the 60 s cap plus its jitter.
const CAP: Duration = Duration::from_secs(75);
/// What a write and its watch event take on top of the wait.
const SLACK: Duration = Duration::from_secs(10);

fn upstream_name(ns: &str, service: &str) -> String {
    format!("{ns}-{service}-80")
}

/// An Upstream without our label in the write namespace: never to be touched.
async fn create_unowned(admin: &Client, write: &str, ns: &str) -> String {
    let mut object = kube_upstream(ns, "hand-made", 80);
    object["apiVersion"] = json!("gloo.solo.io/v1");
    object["kind"] = json!("Upstream");
    object["metadata"] = json!({"name": "hand-made"});
    let object = serde_json::from_value(object).expect("an Upstream");
    let created = upstream_api(admin, write)
        .create(&PostParams::default(), &object)
        .await
        .expect("create the unowned Upstream");
    created.metadata.resource_version.expect("a version")
}

async fn unowned_version(admin: &Client, write: &str) -> Option<String> {
    upstream_api(admin, write)
        .get("hand-made")
        .await
        .expect("the unowned Upstream is still there")
        .metadata
        .resource_version
}

/// The Events with `reason` about `kind` `name` in `namespace`.
async fn events(
    admin: &Client,
    namespace: &str,
    kind: &str,
    name: &str,
    reason: &str,
) -> Vec<Event> {
    Api::<Event>::namespaced(admin.clone(), namespace)
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| {
            e.involved_object.kind.as_deref() == Some(kind)
                && e.involved_object.name.as_deref() == Some(name)
                && e.reason.as_deref() == Some(reason)
        })
        .collect()
}

fn log_lines(daemon: &Daemon, level: &str, text: &str) -> usize {
    daemon
        .logs()
        .lines()
        .filter(|line| line.contains(&format!("\"{level}\"")) && line.contains(text))
        .count()
}

/// The most tries a capped exponential backoff (0.5 s base, -25 % jitter at most) allows in
/// `elapsed`, counting the first.
fn most_tries(elapsed: Duration) -> usize {
    let (mut spent, mut tries, mut delay) = (Duration::ZERO, 1, Duration::from_millis(375));
    while spent + delay <= elapsed {
        spent += delay;
        tries += 1;
        delay = (delay * 2).min(Duration::from_secs(45));
    }
    tries
}

async fn label_service(admin: &Client, ns: &str, name: &str, tier: &str) {
    Api::<Service>::namespaced(admin.clone(), ns)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"tier": tier}}})),
        )
        .await
        .expect("label the Service");
}

fn labelled(ns: &str, service: &str, tier: &str) -> serde_json::Value {
    with(
        kube_upstream(ns, service, 80),
        "/spec/discoveryMetadata/labels/tier",
        json!(tier),
    )
}

pub async fn a_refused_delete_is_reported_once_retried_with_backoff_and_collected_once_allowed(
    env: Arc<TestEnv>,
) {
    let scenario = Scenario::builder(env, "admdel").build().await;
    let (admin, ns, write) = (
        &scenario.admin,
        scenario.service_ns.clone(),
        scenario.write_ns.clone(),
    );
    let mut hook = Webhook::start("upstreams.e2e-delete.upstream-discovery.io").await;
    hook.register(admin, &write).await;
    let unowned = create_unowned(admin, &write, &ns).await;
    let daemon = scenario.daemon().ready().await;
    for name in ["web", "keep"] {
        create_plain_service(admin, &ns, name).await;
    }
    let keep = kube_upstream(&ns, "keep", 80);
    wait_for_exact_upstreams(
        admin,
        &write,
        &[keep.clone(), kube_upstream(&ns, "web", 80)],
    )
    .await;

    let web = upstream_name(&ns, "web");
    let message = "deletes of this Upstream are frozen by the e2e webhook";
    hook.set(Mode::Deny(vec![Rule {
        operation: "DELETE",
        name: web.clone(),
        message: message.into(),
    }]));
    Api::<Service>::namespaced(admin.clone(), &ns)
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete Service web");
    let refused_at = Instant::now();
    let event = wait_for_event(admin, &write, "Upstream", &web, "AdmissionDenied").await;
    let note = event.message.unwrap_or_default();
    let verbatim = format!(
        "admission webhook \"{}\" denied the request: {message}",
        hook.name
    );
    assert!(note.contains(&verbatim), "{verbatim:?} in {note:?}");
    assert_eq!(event.type_.as_deref(), Some("Warning"));

    wait_for("five refused deletes", || async {
        (hook.refused("DELETE", &web) >= 5).then_some(())
    })
    .await;
    let (tries, elapsed) = (hook.refused("DELETE", &web), refused_at.elapsed());
    assert!(
        tries <= most_tries(elapsed) + 1,
        "{tries} tries in {elapsed:?}: not backing off"
    );
    let denied = daemon
        .metric_sum("upstream_discovery_errors_total{kind=\"admission_denied\"}")
        .await;
    assert!(denied >= 5.0, "each refusal counted: {denied}");
    let forbidden = daemon
        .metric_sum("upstream_discovery_errors_total{kind=\"forbidden\"}")
        .await;
    assert_eq!(forbidden, 0.0, "not a missing right");
    // The refused Upstream stays; the other Service's is not held back by it.
    let both = [keep.clone(), kube_upstream(&ns, "web", 80)];
    crate::support::upstreams_match(admin, &write, &both)
        .await
        .expect("both Upstreams still there");

    hook.set(Mode::Allow);
    let allowed_at = Instant::now();
    wait_for_exact_upstreams(admin, &write, &[keep]).await;
    let recovered = allowed_at.elapsed();
    assert!(
        recovered <= CAP + SLACK,
        "collected {recovered:?} after allowed"
    );
    let total = hook.refused("DELETE", &web);
    eprintln!(
        "admission: refused delete: {tries} tries in {elapsed:.1?}, {total} in all; collected {recovered:.1?} after allowed"
    );
    wait_for("the INFO line of the write going through", || async {
        (log_lines(
            &daemon,
            "INFO",
            "write went through after admission control refused it",
        ) == 1)
            .then_some(())
    })
    .await;
    let logs = daemon.logs();
    assert_eq!(
        log_lines(&daemon, "WARN", "AdmissionDenied"),
        1,
        "one WARN line for all the retries:\n{logs}"
    );
    assert_eq!(
        events(admin, &write, "Upstream", &web, "AdmissionDenied")
            .await
            .len(),
        1,
        "one Event for the refused delete"
    );
    assert_eq!(
        unowned_version(admin, &write).await,
        Some(unowned),
        "unowned untouched"
    );
    daemon.terminate(EXIT_LIMIT);
    hook.shutdown().await;
    scenario.cleanup().await;
}

pub async fn refused_creates_and_updates_are_reported_and_hold_nothing_else_back(
    env: Arc<TestEnv>,
) {
    let scenario = Scenario::builder(env, "admput").build().await;
    let (admin, ns, write) = (
        &scenario.admin,
        scenario.service_ns.clone(),
        scenario.write_ns.clone(),
    );
    let mut hook = Webhook::start("upstreams.e2e-write.upstream-discovery.io").await;
    hook.register(admin, &write).await;
    let unowned = create_unowned(admin, &write, &ns).await;
    let daemon = scenario.daemon().ready().await;
    for name in ["changed", "other"] {
        create_plain_service(admin, &ns, name).await;
    }
    let (changed, other) = (
        kube_upstream(&ns, "changed", 80),
        kube_upstream(&ns, "other", 80),
    );
    wait_for_exact_upstreams(admin, &write, &[changed.clone(), other.clone()]).await;

    let (blocked_name, changed_name) =
        (upstream_name(&ns, "blocked"), upstream_name(&ns, "changed"));
    let (no_create, no_update) = ("no new Upstream today", "this Upstream is frozen as it is");
    hook.set(Mode::Deny(vec![
        Rule {
            operation: "CREATE",
            name: blocked_name.clone(),
            message: no_create.into(),
        },
        Rule {
            operation: "UPDATE",
            name: changed_name.clone(),
            message: no_update.into(),
        },
    ]));
    create_plain_service(admin, &ns, "blocked").await;
    label_service(admin, &ns, "changed", "web").await;
    create_plain_service(admin, &ns, "third").await;
    // The third Service gets its Upstream while the other two are refused.
    let third = kube_upstream(&ns, "third", 80);
    wait_for_exact_upstreams(admin, &write, &[changed, other.clone(), third.clone()]).await;

    let on_service = wait_for_event(admin, &ns, "Service", "blocked", "AdmissionDenied").await;
    let on_upstream =
        wait_for_event(admin, &write, "Upstream", &changed_name, "AdmissionDenied").await;
    for (event, message, op) in [
        (&on_service, no_create, "create"),
        (&on_upstream, no_update, "update"),
    ] {
        let note = event.message.clone().unwrap_or_default();
        let verbatim = format!(
            "admission webhook \"{}\" denied the request: {message}",
            hook.name
        );
        assert!(note.contains(&verbatim), "{verbatim:?} in {note:?}");
        assert!(note.starts_with(op), "{note:?}");
    }
    // explain shows each Upstream's last refusal.
    let admin_config = Path::new(scenario.env.get("KUBECONFIG")).to_path_buf();
    for (service, message) in [("blocked", no_create), ("changed", no_update)] {
        let run = explain(&admin_config, &write, &format!("{ns}/{service}"), &ns).await;
        assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
        let line = run
            .stdout
            .lines()
            .find(|line| line.starts_with("    last refusal: Warning AdmissionDenied at "))
            .unwrap_or_else(|| panic!("a last refusal in:\n{}", run.stdout));
        assert!(line.contains(message), "{line}");
    }
    wait_for("both refusals counted", || async {
        let denied = daemon
            .metric_sum("upstream_discovery_errors_total{kind=\"admission_denied\"}")
            .await;
        (denied >= 2.0).then_some(())
    })
    .await;
    assert_eq!(
        daemon
            .metric_sum("upstream_discovery_errors_total{kind=\"forbidden\"}")
            .await,
        0.0
    );

    hook.set(Mode::Allow);
    let allowed_at = Instant::now();
    let all = [
        labelled(&ns, "changed", "web"),
        other,
        third,
        kube_upstream(&ns, "blocked", 80),
    ];
    wait_for_exact_upstreams(admin, &write, &all).await;
    let recovered = allowed_at.elapsed();
    assert!(
        recovered <= CAP + SLACK,
        "written {recovered:?} after allowed"
    );
    let (creates, updates) = (
        hook.refused("CREATE", &blocked_name),
        hook.refused("UPDATE", &changed_name),
    );
    eprintln!(
        "admission: refused create: {creates} tries, refused update: {updates} tries; both written {recovered:.1?} after allowed"
    );
    wait_for("an INFO line for each write going through", || async {
        (log_lines(
            &daemon,
            "INFO",
            "write went through after admission control refused it",
        ) == 2)
            .then_some(())
    })
    .await;
    let logs = daemon.logs();
    assert_eq!(
        log_lines(&daemon, "WARN", "AdmissionDenied"),
        2,
        "one WARN line per refused object:\n{logs}"
    );
    assert_eq!(
        unowned_version(admin, &write).await,
        Some(unowned),
        "unowned untouched"
    );
    daemon.terminate(EXIT_LIMIT);
    hook.shutdown().await;
    scenario.cleanup().await;
}

pub async fn a_webhook_that_times_out_or_is_down_is_unavailable_and_recovers(env: Arc<TestEnv>) {
    let scenario = Scenario::builder(env, "admdown").build().await;
    let (admin, ns, write) = (
        &scenario.admin,
        scenario.service_ns.clone(),
        scenario.write_ns.clone(),
    );
    let mut hook = Webhook::start("upstreams.e2e-down.upstream-discovery.io").await;
    hook.register(admin, &write).await;
    let unowned = create_unowned(admin, &write, &ns).await;
    let daemon = scenario.daemon().ready().await;
    let unavailable = || async {
        daemon
            .metric_sum("upstream_discovery_errors_total{kind=\"admission_unavailable\"}")
            .await
    };

    // Times out: the create is refused without a verdict.
    hook.set(Mode::Hang);
    create_plain_service(admin, &ns, "slow").await;
    let event = wait_for_event(admin, &ns, "Service", "slow", "AdmissionUnavailable").await;
    let note = event.message.unwrap_or_default();
    let quoted = format!("failed calling webhook \"{}\"", hook.name);
    assert!(note.contains(&quoted), "{quoted:?} in {note:?}");
    wait_for("timed-out creates counted", || async {
        (unavailable().await >= 2.0).then_some(())
    })
    .await;
    hook.set(Mode::Allow);
    let allowed_at = Instant::now();
    let slow = kube_upstream(&ns, "slow", 80);
    wait_for_exact_upstreams(admin, &write, &[slow]).await;
    let timed_out_recovery = allowed_at.elapsed();
    assert!(timed_out_recovery <= CAP + SLACK, "{timed_out_recovery:?}");
    let timed_out = unavailable().await;

    // Down: the registration points where nothing listens; the update is refused.
    hook.point_at(&nowhere()).await;
    label_service(admin, &ns, "slow", "web").await;
    let slow_name = upstream_name(&ns, "slow");
    wait_for_event(
        admin,
        &write,
        "Upstream",
        &slow_name,
        "AdmissionUnavailable",
    )
    .await;
    wait_for("refused updates counted", || async {
        (unavailable().await >= timed_out + 2.0).then_some(())
    })
    .await;
    hook.point_at(&hook.url()).await;
    let back_at = Instant::now();
    wait_for_exact_upstreams(admin, &write, &[labelled(&ns, "slow", "web")]).await;
    let down_recovery = back_at.elapsed();
    assert!(down_recovery <= CAP + SLACK, "{down_recovery:?}");
    let down = unavailable().await - timed_out;
    eprintln!(
        "admission: webhook timing out: {timed_out} refused tries, written {timed_out_recovery:.1?} after it answered; webhook down: {down} refused tries, written {down_recovery:.1?} after it was back"
    );
    assert_eq!(
        daemon
            .metric_sum("upstream_discovery_errors_total{kind=\"admission_denied\"}")
            .await,
        0.0,
        "no verdict is no denial"
    );
    wait_for("an INFO line for each write going through", || async {
        (log_lines(
            &daemon,
            "INFO",
            "write went through after admission control refused it",
        ) == 2)
            .then_some(())
    })
    .await;
    let logs = daemon.logs();
    assert_eq!(
        log_lines(&daemon, "WARN", "AdmissionUnavailable"),
        2,
        "one WARN line per refused object:\n{logs}"
    );
    assert_eq!(
        unowned_version(admin, &write).await,
        Some(unowned),
        "unowned untouched"
    );
    daemon.terminate(EXIT_LIMIT);
    hook.shutdown().await;
    scenario.cleanup().await;
}
