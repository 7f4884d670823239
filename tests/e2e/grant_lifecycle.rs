//! The loose ends of ReferenceGrants (issue 25): each grant names its Upstream as owner, so
//! Kubernetes's garbage collector (kube-controller-manager, running in the test environment)
//! removes it with its Upstream even while the daemon is down; grants left in a write
//! namespace the daemon no longer uses are collected like its Upstreams there; `render` and
//! `diff` show the grants. Expectations are written by hand from the issue.

use std::sync::Arc;
use std::time::Duration;

use kube::api::{DeleteParams, DynamicObject, PostParams};
use kube::Client;
use serde_json::{json, Value};

use crate::diff::run_binary;
use crate::gloo_pod::{install_settings_crd, put_settings, GlooAccount};
use crate::grants::{
    allow_grants_in, create_service, expected_grant, grant_api, install_grant_crd, service,
    upstream, wait_for_exact_grants,
};
use crate::scenario::Scenario;
use crate::support::{upstream_api, wait_for, wait_for_exact_upstreams};
use crate::test_env::TestEnv;

const EXIT_LIMIT: Duration = Duration::from_secs(5);
const ROUTES: &str = "gateway.networking.k8s.io";

/// The ownerReference the issue asks for: the Upstream by name and uid, nothing else set (no
/// `controller`, no `blockOwnerDeletion`).
fn owner(name: &str, uid: &str) -> Value {
    json!([{"apiVersion": "gloo.solo.io/v1", "kind": "Upstream", "name": name, "uid": uid}])
}

async fn owners_of(admin: &Client, namespace: &str, name: &str) -> Option<Value> {
    let grant = grant_api(admin, namespace).get(name).await.ok()?;
    Some(serde_json::to_value(grant.metadata.owner_references).expect("json"))
}

/// A grant as an earlier version wrote it: labelled, the right spec, no ownerReference.
async fn unowned_grant(admin: &Client, namespace: &str, name: &str, from: &str) {
    let grant: DynamicObject = serde_json::from_value(json!({
        "apiVersion": format!("{ROUTES}/v1beta1"), "kind": "ReferenceGrant",
        "metadata": {"name": name, "labels": {"discovered_by": "kubernetesplugin"}},
        "spec": {"from": [{"group": ROUTES, "kind": "HTTPRoute", "namespace": from}],
                 "to": [{"group": "gloo.solo.io", "kind": "Upstream", "name": name}]},
    }))
    .expect("grant");
    grant_api(admin, namespace)
        .create(&PostParams::default(), &grant)
        .await
        .expect("create the earlier grant");
}

pub async fn a_grant_is_owned_by_its_upstream_and_goes_with_it_while_the_daemon_is_down(
    env: Arc<TestEnv>,
) {
    let scenario = Scenario::builder(env, "grantowner").build().await;
    let admin = &scenario.admin;
    install_grant_crd(admin).await;
    let (ns, write) = (scenario.service_ns.clone(), scenario.write_ns.clone());
    allow_grants_in(admin, &write, &write, "upstream-discovery").await;
    let web = format!("{ns}-web-80");
    let old = format!("{ns}-old-81");
    create_service(admin, &ns, &service("web", &[80], json!({}))).await;
    create_service(admin, &ns, &service("old", &[81], json!({}))).await;
    unowned_grant(admin, &write, &old, &ns).await;

    let daemon = scenario
        .daemon()
        .args(&["--reference-grants"])
        .ready()
        .await;
    let found = wait_for_exact_upstreams(
        admin,
        &write,
        &[
            upstream(&ns, "web", 80, json!({})),
            upstream(&ns, "old", 81, json!({})),
        ],
    )
    .await;
    wait_for_exact_grants(
        admin,
        &write,
        &[
            expected_grant(&web, &[&ns], &["HTTPRoute"]),
            expected_grant(&old, &[&ns], &["HTTPRoute"]),
        ],
    )
    .await;
    // Both name their Upstream: the new one from its create, the earlier one by an update.
    for name in [&web, &old] {
        let uid = found[name].metadata.uid.clone().expect("uid");
        let wanted = owner(name, &uid);
        wait_for(&format!("{name}'s grant to name its Upstream"), || async {
            (owners_of(admin, &write, name).await? == wanted).then_some(())
        })
        .await;
    }
    daemon.wait_idle().await;
    daemon.terminate(EXIT_LIMIT);

    // With the daemon stopped, the Upstream is deleted: Kubernetes takes its grant along, and
    // leaves the other one.
    upstream_api(admin, &write)
        .delete(&web, &DeleteParams::default())
        .await
        .expect("delete the upstream");
    wait_for("the garbage collector to delete the grant", || async {
        matches!(
            grant_api(admin, &write).get(&web).await,
            Err(kube::Error::Api(status)) if status.code == 404
        )
        .then_some(())
    })
    .await;
    assert!(grant_api(admin, &write).get(&old).await.is_ok());

    // Started again, the daemon puts both back, the grant naming the new Upstream.
    let daemon = scenario
        .daemon()
        .args(&["--reference-grants"])
        .ready()
        .await;
    let found = wait_for_exact_upstreams(
        admin,
        &write,
        &[
            upstream(&ns, "web", 80, json!({})),
            upstream(&ns, "old", 81, json!({})),
        ],
    )
    .await;
    let uid = found[&web].metadata.uid.clone().expect("uid");
    wait_for("the new grant to name the new Upstream", || async {
        (owners_of(admin, &write, &web).await? == owner(&web, &uid)).then_some(())
    })
    .await;
    daemon.terminate(EXIT_LIMIT);
    scenario.cleanup().await;
}

/// A Settings change moves the write namespace from w1 to w2: the grants follow their
/// Upstreams, and those the daemon owned in w1 are collected; someone else's grant there stays.
pub async fn grants_left_in_an_earlier_write_namespace_are_collected(env: Arc<TestEnv>) {
    let scenario = Scenario::builder(env.clone(), "grantmove")
        .without_account()
        .another_namespace("w1")
        .another_namespace("w2")
        .build()
        .await;
    let admin = &scenario.admin;
    let pod_ns = scenario.write_ns.clone();
    let (ns, w1, w2) = (
        scenario.service_ns.clone(),
        scenario.others[0].clone(),
        scenario.others[1].clone(),
    );
    install_settings_crd(admin).await;
    install_grant_crd(admin).await;
    let account = GlooAccount::create(&env, admin, &pod_ns).await;
    for namespace in [&w1, &w2] {
        allow_grants_in(admin, namespace, &pod_ns, "discovery").await;
    }
    let theirs: DynamicObject = serde_json::from_value(json!({
        "apiVersion": format!("{ROUTES}/v1beta1"), "kind": "ReferenceGrant",
        "metadata": {"name": "theirs"},
        "spec": {"from": [{"group": ROUTES, "kind": "HTTPRoute", "namespace": "x"}],
                 "to": [{"group": "gloo.solo.io", "kind": "Upstream"}]},
    }))
    .expect("grant");
    grant_api(admin, &w1)
        .create(&PostParams::default(), &theirs)
        .await
        .expect("create someone else's grant");
    create_service(admin, &ns, &service("web", &[80], json!({}))).await;
    let mut settings = json!({
        "discoveryNamespace": w1,
        "watchNamespaces": [ns],
        "discovery": {"fdsMode": "DISABLED"},
    });
    put_settings(admin, &pod_ns, settings.clone()).await;
    let daemon = scenario
        .daemon()
        .token(&account.token)
        .exact_args(vec!["run".into(), "--reference-grants".into()])
        .ready()
        .await;
    let web = format!("{ns}-web-80");
    let theirs = json!({"name": "theirs", "labels": null, "spec": theirs.data["spec"]});
    wait_for_exact_grants(
        admin,
        &w1,
        &[expected_grant(&web, &[&ns], &["HTTPRoute"]), theirs.clone()],
    )
    .await;

    settings["discoveryNamespace"] = json!(w2);
    put_settings(admin, &pod_ns, settings).await;
    wait_for_exact_upstreams(admin, &w2, &[upstream(&ns, "web", 80, json!({}))]).await;
    wait_for_exact_grants(admin, &w2, &[expected_grant(&web, &[&ns], &["HTTPRoute"])]).await;
    wait_for_exact_grants(admin, &w1, &[theirs]).await;
    wait_for_exact_upstreams(admin, &w1, &[]).await;
    daemon.terminate(EXIT_LIMIT);
    account.delete(admin).await;
    scenario.cleanup().await;
}

/// `render --reference-grants` prints the grant beside each Upstream, offline; `diff
/// --reference-grants` shows the creates, updates and deletes `run` would make, and writes none.
pub async fn render_and_diff_show_the_grants(env: Arc<TestEnv>) {
    let scenario = Scenario::builder(env, "grantdiff").build().await;
    let admin = &scenario.admin;
    install_grant_crd(admin).await;
    let (ns, write) = (scenario.service_ns.clone(), scenario.write_ns.clone());
    allow_grants_in(admin, &write, &write, "upstream-discovery").await;

    // Offline: the Upstream, then its grant (no ownerReference: no Upstream exists yet).
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("services.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: team-a, annotations: {upstream-discovery.io/route-namespaces: edge}}\nspec: {ports: [{port: 80}]}\n",
    )
    .expect("write services");
    let file = file.display().to_string();
    let rendered = run_binary(
        scenario.kubeconfig(),
        "gloo-system",
        &["render", "-f", &file, "--reference-grants"],
    )
    .await;
    assert_eq!(rendered.code, Some(0), "{}", rendered.stderr);
    let documents: Vec<Value> = serde_saphyr::from_multiple(&rendered.stdout).expect("YAML");
    assert_eq!(documents.len(), 2, "{}", rendered.stdout);
    assert_eq!(documents[0]["kind"], "Upstream");
    assert_eq!(
        documents[1],
        json!({
            "apiVersion": format!("{ROUTES}/v1beta1"), "kind": "ReferenceGrant",
            "metadata": {"name": "team-a-web-80", "namespace": "gloo-system",
                         "labels": {"discovered_by": "kubernetesplugin"}},
            "spec": {
                "from": [{"group": ROUTES, "kind": "HTTPRoute", "namespace": "team-a"},
                         {"group": ROUTES, "kind": "HTTPRoute", "namespace": "edge"}],
                "to": [{"group": "gloo.solo.io", "kind": "Upstream", "name": "team-a-web-80"}],
            },
        })
    );
    let without = run_binary(
        scenario.kubeconfig(),
        "gloo-system",
        &["render", "-f", &file],
    )
    .await;
    let documents: Vec<Value> = serde_saphyr::from_multiple(&without.stdout).expect("YAML");
    assert_eq!(
        documents.len(),
        1,
        "no grant unless asked: {}",
        without.stdout
    );

    // Against the cluster, once the daemon has written web's Upstream and grant, and stopped.
    create_service(admin, &ns, &service("web", &[80], json!({}))).await;
    let daemon = scenario
        .daemon()
        .args(&["--reference-grants"])
        .ready()
        .await;
    let web = format!("{ns}-web-80");
    wait_for_exact_grants(
        admin,
        &write,
        &[expected_grant(&web, &[&ns], &["HTTPRoute"])],
    )
    .await;
    daemon.wait_idle().await;
    daemon.terminate(EXIT_LIMIT);
    // A new Service (a grant to create), an annotation (one to update), a grant whose Upstream
    // no Service gives any more (one to delete).
    create_service(admin, &ns, &service("api", &[8080], json!({}))).await;
    crate::grants::patch_service(
        admin,
        &ns,
        "web",
        json!({"metadata": {"annotations": {"upstream-discovery.io/route-namespaces": "edge"}}}),
    )
    .await;
    let gone = format!("{ns}-gone-90");
    unowned_grant(admin, &write, &gone, &ns).await;
    let args = ["diff", "--watch-namespaces", &ns, "--reference-grants"];
    let text = run_binary(scenario.kubeconfig(), &write, &args).await;
    assert_eq!(text.code, Some(1), "{}{}", text.stdout, text.stderr);
    let api = format!("{ns}-api-8080");
    for line in [
        format!("  + {write}/{api} (Service {ns}/api): HTTPRoute from {ns}"),
        format!("  ~ {write}/{web} (Service {ns}/web): HTTPRoute from {ns}, HTTPRoute from edge"),
        format!("  - {write}/{gone}: owned, and no Service in scope maps to its name"),
        "ReferenceGrants: 1 to create, 1 to update, 1 to delete, 0 unchanged".to_string(),
    ] {
        assert!(text.stdout.contains(&line), "{line}\n{}", text.stdout);
    }
    let mut json_args = args.to_vec();
    json_args.extend(["-o", "json"]);
    let run = run_binary(scenario.kubeconfig(), &write, &json_args).await;
    let report: Value = serde_json::from_str(&run.stdout).expect("JSON");
    let grants = &report["grants"];
    assert_eq!(grants["create"][0]["name"], json!(api), "{grants}");
    assert_eq!(grants["update"][0]["name"], json!(web), "{grants}");
    assert_eq!(
        grants["update"][0]["grant"]["spec"]["from"][1]["namespace"],
        "edge"
    );
    assert_eq!(grants["delete"][0]["name"], json!(gone), "{grants}");
    assert_eq!(grants["unchanged"], 0);
    // A preview: nothing was written.
    assert!(grant_api(admin, &write).get(&api).await.is_err());
    scenario.cleanup().await;
}
