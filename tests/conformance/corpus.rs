//! The conformance corpus (`tests/conformance/cases/*.yaml`, format in
//! `tests/conformance/README.md`): reading the cases, and what each one asks of a runner. Shared
//! by the `render` runner (`tests/conformance.rs`), the daemon runner (`tests/e2e/conformance.rs`)
//! and the Gloo-CRD run (`tests/gloo_crd.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

/// One case file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Case {
    /// The file name without `.yaml`.
    #[serde(skip)]
    pub name: String,
    /// The docs/behaviour.md rule line the case covers.
    pub rule: String,
    /// Where the Upstreams are written (`--write-namespace`).
    pub write_namespace: String,
    /// `--watch-namespaces`; by default the namespaces of the case's Services.
    #[serde(default)]
    pub watch_namespaces: Option<Vec<String>>,
    /// Gloo's `upstreamOptions.globalAnnotations` (`--global-annotations KEY=VALUE`).
    #[serde(default)]
    pub global_annotations: BTreeMap<String, String>,
    /// Translation flags given to both `render` and `run` (e.g. `--service-selector`).
    #[serde(default)]
    pub daemon_args: Vec<String>,
    /// Run through `render` only, for this reason (e.g. names the API server refuses).
    #[serde(default)]
    pub offline_only: Option<String>,
    /// Also run with the Gloo-shaped CRD (`tests/gloo_crd.rs`).
    #[serde(default)]
    pub gloo_crd: bool,
    pub steps: Vec<Step>,
}

/// One step: changes made in the API server, then what the write namespace must hold.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Step {
    /// Made before the daemon starts (only the first steps may be).
    #[serde(default)]
    pub before_daemon: bool,
    /// The field manager of the Upstreams this step creates (default `discovery`, Gloo's).
    #[serde(default)]
    pub field_manager: Option<String>,
    /// Whole objects, created (Upstreams: a plain create) or replaced (Services), in order.
    #[serde(default)]
    pub apply: Vec<Value>,
    /// JSON merge patches, after `apply`.
    #[serde(default)]
    pub patch: Vec<PatchOp>,
    /// Objects deleted, after `patch`.
    #[serde(default)]
    pub delete: Vec<ObjectRef>,
    /// Every Upstream of the write namespace afterwards, exactly.
    pub expect: Vec<Value>,
    /// Events that must be recorded (the runner waits for them before checking `expect`).
    #[serde(default)]
    pub events: Vec<EventRef>,
    /// Upstreams that keep the UID they had after the previous step.
    #[serde(default)]
    pub same_uid: Vec<String>,
    /// Upstreams not written at all: same resourceVersion as last seen by the runner (after
    /// the previous step, or as this step created it).
    #[serde(default)]
    pub unchanged: Vec<String>,
    /// How long the daemon may take for this step (default: the tests' generous deadline).
    #[serde(default)]
    pub deadline_seconds: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PatchOp {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub field_manager: String,
    pub merge: Value,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectRef {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventRef {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub reason: String,
}

pub fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/cases")
}

/// Every case, by file name; the first file that cannot be read, or that breaks the format's
/// rules, is an error naming it.
pub fn load_all() -> Result<Vec<Case>, String> {
    let dir = cases_dir();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    paths.sort();
    paths.iter().map(|path| load(path)).collect()
}

fn load(path: &Path) -> Result<Case, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut case: Case =
        serde_saphyr::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    case.name = path
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_default();
    case.validate()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(case)
}

impl Case {
    fn validate(&self) -> Result<(), String> {
        if self.steps.is_empty() {
            return Err("no steps".into());
        }
        let leading = self.steps.iter().take_while(|s| s.before_daemon).count();
        if self.steps[leading..].iter().any(|s| s.before_daemon) {
            return Err("beforeDaemon steps must come first".into());
        }
        if leading == self.steps.len() && self.offline_only.is_none() {
            return Err("every step is beforeDaemon: the daemon would never run".into());
        }
        for (index, step) in self.steps.iter().enumerate() {
            let expected: BTreeSet<&str> = step
                .expect
                .iter()
                .map(|u| u.pointer("/metadata/name").and_then(Value::as_str))
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    format!("step {}: an expected Upstream without a name", index + 1)
                })?;
            for name in step.same_uid.iter().chain(&step.unchanged) {
                if !expected.contains(name.as_str()) {
                    return Err(format!(
                        "step {}: {name} is in sameUid/unchanged but not in expect",
                        index + 1
                    ));
                }
            }
            let previous: BTreeSet<&str> = match index.checked_sub(1) {
                Some(before) => self.steps[before]
                    .expect
                    .iter()
                    .filter_map(|u| u.pointer("/metadata/name").and_then(Value::as_str))
                    .collect(),
                None => BTreeSet::new(),
            };
            for name in &step.same_uid {
                if !previous.contains(name.as_str()) {
                    return Err(format!(
                        "step {}: {name} is in sameUid but the previous step does not expect it",
                        index + 1
                    ));
                }
            }
            for object in &step.apply {
                if kind(object).is_empty() || object.pointer("/metadata/name").is_none() {
                    return Err(format!(
                        "step {}: an object without kind or name",
                        index + 1
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether the `render` runner takes this case: one step that only adds Services.
    pub fn runs_offline(&self) -> bool {
        let [step] = &self.steps[..] else {
            return false;
        };
        !step.before_daemon
            && step.patch.is_empty()
            && step.delete.is_empty()
            && step.apply.iter().all(|object| kind(object) != "Upstream")
    }

    /// Whether the daemon runner takes this case.
    pub fn runs_on_the_daemon(&self) -> bool {
        self.offline_only.is_none()
    }

    /// The namespaces the daemon watches: `watchNamespaces`, else those of the case's Services
    /// (never none, which would mean all: then the write namespace).
    pub fn watched_namespaces(&self) -> Vec<String> {
        if let Some(listed) = &self.watch_namespaces {
            return listed.clone();
        }
        let mut found: BTreeSet<String> = self
            .objects()
            .filter(|object| kind(object) == "Service")
            .filter_map(namespace_of)
            .filter(|namespace| namespace != &self.write_namespace)
            .collect();
        if found.is_empty() {
            found.insert(self.write_namespace.clone());
        }
        found.into_iter().collect()
    }

    /// Every namespace the case uses: the write namespace, the watched ones, and those of its
    /// objects, patches, deletes and events.
    pub fn namespaces(&self) -> BTreeSet<String> {
        let mut all: BTreeSet<String> = self.watched_namespaces().into_iter().collect();
        all.insert(self.write_namespace.clone());
        all.extend(self.objects().filter_map(namespace_of));
        for step in &self.steps {
            all.extend(step.patch.iter().map(|p| p.namespace.clone()));
            all.extend(step.delete.iter().map(|d| d.namespace.clone()));
            all.extend(step.events.iter().map(|e| e.namespace.clone()));
        }
        all
    }

    fn objects(&self) -> impl Iterator<Item = &Value> {
        self.steps.iter().flat_map(|step| step.apply.iter())
    }
}

/// `kind` of an object ("" when absent).
pub fn kind(object: &Value) -> &str {
    object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The namespace an object lives in (a Namespace object: itself).
pub fn namespace_of(object: &Value) -> Option<String> {
    let pointer = if kind(object) == "Namespace" {
        "/metadata/name"
    } else {
        "/metadata/namespace"
    };
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_string)
}
