//! What Gloo's own Helm chart gives its discovery pod (docs/behaviour.md "Gloo's discovery pod"),
//! for the tests that run the binary in its place: Gloo's `Settings` CRD (a minimal one of Gloo's
//! shape) and the `default` object, and the ServiceAccount `discovery` bound to exactly the rules
//! Gloo's chart grants it (no Events).

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams};
use kube::{Api, Client};
use serde_json::{json, Value};

use crate::support::{service_account_token, wait_for};
use crate::test_env::TestEnv;

/// The name of the Settings object Gloo's discovery reads.
pub const SETTINGS_NAME: &str = "default";

/// Gloo's `settings.gloo.solo.io`, reduced to its shape: namespaced, `gloo.solo.io/v1`, kind
/// `Settings`, plural `settings`, and a schema as loose as Gloo's (`spec` and `status` keep
/// whatever they are given), so the API server stores an invalid Settings (`fdsMode: NOPE`) as
/// it would in a cluster with Gloo.
fn settings_crd() -> CustomResourceDefinition {
    let loose = json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "settings.gloo.solo.io", "labels": {"app": "gloo", "gloo": "settings"}},
        "spec": {
            "group": "gloo.solo.io",
            "scope": "Namespaced",
            "names": {"kind": "Settings", "listKind": "SettingsList", "plural": "settings",
                      "singular": "settings", "shortNames": ["st"]},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": loose, "status": loose},
                }},
            }],
        },
    }))
    .expect("the Settings CRD")
}

/// Installs (or updates) the Settings CRD and waits until it is served. Idempotent, so tests
/// running side by side may all call it.
pub async fn install_settings_crd(client: &Client) {
    crate::support::apply_crd(client, &settings_crd()).await;
    // Established can come a moment before the resource is served to every client.
    let api = settings_api(client, "default");
    wait_for("the Settings resource to be served", || async {
        api.list(&Default::default()).await.ok().map(drop)
    })
    .await;
}

/// The Settings API of `namespace`, untyped.
pub fn settings_api(client: &Client, namespace: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gloo.solo.io", "v1", "Settings"),
        "settings",
    );
    Api::namespaced_with(client.clone(), namespace, &resource)
}

/// Creates the Settings `default` in `namespace` with `spec`, or replaces the whole spec of the
/// one there (fields left out of `spec` are gone afterwards, as with `kubectl replace`).
pub async fn put_settings(client: &Client, namespace: &str, spec: Value) {
    let api = settings_api(client, namespace);
    let mut object = json!({
        "apiVersion": "gloo.solo.io/v1",
        "kind": "Settings",
        "metadata": {"name": SETTINGS_NAME, "namespace": namespace},
        "spec": spec,
    });
    let existing = api
        .get_opt(SETTINGS_NAME)
        .await
        .unwrap_or_else(|e| panic!("read the Settings in {namespace}: {e}"));
    match existing {
        Some(existing) => {
            object["metadata"]["resourceVersion"] = json!(existing.metadata.resource_version);
            let object: DynamicObject = serde_json::from_value(object).expect("settings");
            api.replace(SETTINGS_NAME, &PostParams::default(), &object)
                .await
                .unwrap_or_else(|e| panic!("replace the Settings in {namespace}: {e}"));
        }
        None => {
            let object: DynamicObject = serde_json::from_value(object).expect("settings");
            api.create(&PostParams::default(), &object)
                .await
                .unwrap_or_else(|e| panic!("create the Settings in {namespace}: {e}"));
        }
    }
}

/// The rules Gloo's chart binds its discovery ServiceAccount to (docs/behaviour.md), exactly:
/// reading pods, services, secrets, endpoints, configmaps and namespaces; everything on leases and
/// configmaps (leader election); upstreams; reading settings. Nothing on Events.
pub fn gloo_discovery_rules() -> Value {
    json!([
        {"apiGroups": [""],
         "resources": ["pods", "services", "secrets", "endpoints", "configmaps", "namespaces"],
         "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["", "coordination.k8s.io"], "resources": ["configmaps", "leases"],
         "verbs": ["*"]},
        {"apiGroups": ["gloo.solo.io"], "resources": ["upstreams"],
         "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
        {"apiGroups": ["gloo.solo.io"], "resources": ["settings"],
         "verbs": ["get", "list", "watch"]},
    ])
}

/// The ServiceAccount `discovery` of a Gloo install in `pod_ns`, bound cluster-wide to
/// [`gloo_discovery_rules`], and a kubeconfig with its token.
pub struct GlooAccount {
    /// The ClusterRole and ClusterRoleBinding, both of this name (unique per namespace).
    binding: String,
    pub token: String,
    /// A kubeconfig (YAML) for the API server with [`GlooAccount::token`].
    pub kubeconfig: String,
}

impl GlooAccount {
    pub async fn create(env: &TestEnv, admin: &Client, pod_ns: &str) -> Self {
        let account: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": "discovery"}})).expect("sa");
        match Api::<ServiceAccount>::namespaced(admin.clone(), pod_ns)
            .create(&PostParams::default(), &account)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(response)) if response.code == 409 => {}
            Err(error) => panic!("create the ServiceAccount discovery: {error}"),
        }
        let binding = format!("e2e-gloo-discovery-{pod_ns}");
        let role: ClusterRole = serde_json::from_value(json!({
            "metadata": {"name": binding},
            "rules": gloo_discovery_rules(),
        }))
        .expect("cluster role");
        create_or_keep(Api::<ClusterRole>::all(admin.clone()), &role).await;
        let role_binding: ClusterRoleBinding = serde_json::from_value(json!({
            "metadata": {"name": binding},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": binding},
            "subjects": [{"kind": "ServiceAccount", "name": "discovery", "namespace": pod_ns}],
        }))
        .expect("cluster role binding");
        create_or_keep(Api::<ClusterRoleBinding>::all(admin.clone()), &role_binding).await;
        let token = service_account_token(admin, pod_ns, "discovery").await;
        let kubeconfig = env.kubeconfig_yaml(&token);
        Self {
            binding,
            token,
            kubeconfig,
        }
    }

    /// Deletes the cluster-wide objects (the namespaced ones go with the namespace).
    pub async fn delete(self, admin: &Client) {
        let _ = Api::<ClusterRoleBinding>::all(admin.clone())
            .delete(&self.binding, &DeleteParams::default())
            .await;
        let _ = Api::<ClusterRole>::all(admin.clone())
            .delete(&self.binding, &DeleteParams::default())
            .await;
    }
}

async fn create_or_keep<K>(api: Api<K>, object: &K)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    match api.create(&PostParams::default(), object).await {
        Ok(_) => {}
        Err(kube::Error::Api(response)) if response.code == 409 => {}
        Err(error) => panic!("create RBAC object: {error}"),
    }
}
