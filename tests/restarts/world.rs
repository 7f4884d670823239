//! The Services a test makes, kept beside it as a model, and the Upstreams docs/behaviour.md says
//! they give (written by hand through `kube_upstream`); plus the unowned Upstream every test puts
//! in the write namespace, and the identities (UID, resourceVersion) of what is there.

use std::collections::BTreeMap;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{json, Map, Value};

use crate::support::{kube_upstream, list_upstreams, upstream_api, with};

/// The Service whose Upstream name an unowned Upstream already holds: it gets none.
pub const TAKEN: &str = "taken";

/// One Service as the test made it: `app: <name>` label and selector, plus these.
#[derive(Clone, Default)]
struct Made {
    ports: Vec<u16>,
    labels: Map<String, Value>,
    annotations: Map<String, Value>,
}

/// The Services of one namespace, as made so far.
pub struct World {
    admin: Client,
    pub ns: String,
    services: BTreeMap<String, Made>,
}

impl World {
    pub fn new(admin: &Client, ns: &str) -> Self {
        Self {
            admin: admin.clone(),
            ns: ns.to_string(),
            services: BTreeMap::new(),
        }
    }

    fn api(&self) -> Api<Service> {
        Api::namespaced(self.admin.clone(), &self.ns)
    }

    fn manifest(name: &str, ports: &[u16]) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"app": name}},
            "spec": {
                "selector": {"app": name},
                "ports": ports.iter().map(|p| json!({"name": format!("p{p}"), "port": p})).collect::<Vec<_>>(),
            },
        }))
        .expect("service")
    }

    /// Creates Services `names`, each with `ports`, 16 at a time.
    pub async fn create(&mut self, names: &[String], ports: &[u16]) {
        let api = self.api();
        let mut creates = futures::stream::iter(names.iter().map(|name| {
            let (api, service) = (api.clone(), Self::manifest(name, ports));
            async move {
                api.create(&PostParams::default(), &service)
                    .await
                    .unwrap_or_else(|e| panic!("create service {name}: {e}"));
            }
        }))
        .buffer_unordered(16);
        while creates.next().await.is_some() {}
        for name in names {
            let made = Made {
                ports: ports.to_vec(),
                ..Made::default()
            };
            self.services.insert(name.clone(), made);
        }
    }

    pub async fn delete(&mut self, name: &str) {
        self.api()
            .delete(name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("delete service {name}: {e}"));
        self.services.remove(name);
    }

    async fn patch(&self, name: &str, patch: Value) {
        self.api()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap_or_else(|e| panic!("patch service {name}: {e}"));
    }

    fn made(&mut self, name: &str) -> &mut Made {
        self.services
            .get_mut(name)
            .unwrap_or_else(|| panic!("no service {name} made"))
    }

    /// Replaces the Service's ports (a merge patch replaces a list whole).
    pub async fn set_ports(&mut self, name: &str, ports: &[u16]) {
        let list: Vec<Value> = ports
            .iter()
            .map(|p| json!({"name": format!("p{p}"), "port": p}))
            .collect();
        self.patch(name, json!({"spec": {"ports": list}})).await;
        self.made(name).ports = ports.to_vec();
    }

    pub async fn add_label(&mut self, name: &str, key: &str, value: &str) {
        self.patch(name, json!({"metadata": {"labels": {key: value}}}))
            .await;
        self.made(name).labels.insert(key.into(), value.into());
    }

    pub async fn add_annotation(&mut self, name: &str, key: &str, value: &str) {
        self.patch(name, json!({"metadata": {"annotations": {key: value}}}))
            .await;
        self.made(name).annotations.insert(key.into(), value.into());
    }

    /// docs/behaviour.md: one Upstream per port, labelled `discovered_by: kubernetesplugin`,
    /// carrying the Service's annotations and, in `discoveryMetadata.labels`, its labels; none for
    /// [`TAKEN`], whose name an unowned Upstream holds.
    pub fn expected(&self) -> Vec<Value> {
        let mut upstreams = Vec::new();
        for (name, made) in self.services.iter().filter(|(name, _)| *name != TAKEN) {
            let mut labels = made.labels.clone();
            labels.insert("app".into(), name.as_str().into());
            for port in &made.ports {
                let mut upstream = with(
                    kube_upstream(&self.ns, name, *port),
                    "/spec/discoveryMetadata/labels",
                    Value::Object(labels.clone()),
                );
                if !made.annotations.is_empty() {
                    upstream = with(
                        upstream,
                        "/metadata/annotations",
                        Value::Object(made.annotations.clone()),
                    );
                }
                upstreams.push(upstream);
            }
        }
        upstreams
    }

    /// Whether the Upstream `name` still has a Service port it belongs to.
    pub fn still_wanted(&self, upstream: &str) -> bool {
        self.services
            .iter()
            .filter(|(name, _)| *name != TAKEN)
            .flat_map(|(name, made)| made.ports.iter().map(move |p| (name, p)))
            .any(|(name, port)| format!("{}-{name}-{port}", self.ns) == upstream)
    }
}

/// Puts the unowned Upstream holding [`TAKEN`]'s name for port 80 in `write_ns` (no
/// `discovered_by` label: the daemon must never touch it); returns its name.
pub async fn put_unowned(admin: &Client, write_ns: &str, service_ns: &str) -> String {
    let name = format!("{service_ns}-{TAKEN}-80");
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gloo.solo.io/v1", "kind": "Upstream",
        "metadata": {"name": name, "labels": {"team": "edge"}},
        "spec": {"static": {"hosts": [{"addr": "10.1.2.3", "port": 80}]}},
    }))
    .expect("upstream");
    upstream_api(admin, write_ns)
        .create(&PostParams::default(), &object)
        .await
        .expect("create the unowned upstream");
    name
}

/// The resourceVersion of the Upstream `name` in `write_ns`.
pub async fn resource_version(admin: &Client, write_ns: &str, name: &str) -> String {
    upstream_api(admin, write_ns)
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("get upstream {name}: {e}"))
        .metadata
        .resource_version
        .expect("a resourceVersion")
}

/// The owned Upstreams of `write_ns`: name → (uid, resourceVersion).
pub async fn identities(admin: &Client, write_ns: &str) -> BTreeMap<String, (String, String)> {
    list_upstreams(admin, write_ns, Some("discovered_by=kubernetesplugin"))
        .await
        .expect("list upstreams")
        .iter()
        .map(|u| {
            let field = |pointer: &str| {
                u.pointer(pointer)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            (
                field("/metadata/name"),
                (field("/metadata/uid"), field("/metadata/resourceVersion")),
            )
        })
        .collect()
}

/// The daemon's successful writes of `op` (`create`, `update`, `delete`), or None while its
/// metrics are not served yet.
pub async fn writes_of(port: u16, op: &str) -> Option<f64> {
    let (status, body) = crate::support::http_get(&format!("127.0.0.1:{port}"), "/metrics").await?;
    (status == 200).then(|| {
        body.lines()
            .filter(|line| {
                line.starts_with("upstream_discovery_writes_total{")
                    && line.contains(&format!("op=\"{op}\""))
                    && line.contains("result=\"success\"")
            })
            .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    })
}
