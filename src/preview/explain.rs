//! `upstream-discovery explain`: the Upstreams a Service maps to and, for each field, the rule
//! that set it, read from translation's own trace (never from a second copy of the rules); the
//! warnings; and against a cluster what `run` would do with each (the daemon's planner), who
//! holds the name, the last admission refusal of each Upstream, and the last Event recorded for
//! the Service.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use k8s_openapi::api::core::v1::{Event, Service};
use kube::api::{Api, ListParams};
use serde_json::Value;

use super::cluster::{self, list_all, Snapshot};
use super::diff::{reason_text, UpdateView};
use super::PreviewError;
use crate::config::RunArgs;
use crate::model::{EventReason, ServiceKey, UpstreamKey};
use crate::plan::{self, Action, BlockedBy, NameClaims, NameHolder, Plan};
use crate::render::parse_services;
use crate::selector::LabelSelector;
use crate::translate::{translate_service_traced, FieldSource, Rule, TranslateSettings};

/// What the cluster says about one Service.
struct Live<'a> {
    snapshot: &'a Snapshot,
    key: ServiceKey,
    /// `run`'s plan for it; `None` when `run` does not see the Service.
    plan: Option<Plan>,
    last_event: String,
    /// The last admission refusal of each Upstream that has one.
    refusals: BTreeMap<UpstreamKey, String>,
}

/// `NAMESPACE/SERVICE` as a key.
pub fn service_key(target: &str) -> Result<ServiceKey, PreviewError> {
    match target.split_once('/') {
        Some((namespace, name))
            if !namespace.is_empty() && !name.is_empty() && !name.contains('/') =>
        {
            Ok(ServiceKey::new(namespace, name))
        }
        _ => Err(PreviewError::ServiceName(target.to_string())),
    }
}

/// Explains the Services of a YAML file (or the one named), offline, with the translation
/// flags of `args` (`$POD_NAMESPACE` as `render` reads it; Settings are not read).
pub fn explain_file(
    args: &RunArgs,
    yaml: &str,
    target: Option<&ServiceKey>,
) -> Result<String, PreviewError> {
    let pod_namespace = std::env::var("POD_NAMESPACE").ok();
    let settings = args.translation.settings(pod_namespace.as_deref());
    let input = parse_services(yaml)?;
    let mut out = String::new();
    let mut found = false;
    for service in &input.services {
        let key = ServiceKey::new(
            service
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".to_string()),
            service.metadata.name.clone().unwrap_or_default(),
        );
        if target.is_some_and(|target| *target != key) {
            continue;
        }
        if found {
            out.push('\n');
        }
        found = true;
        let selector = &args.translation.service_selector;
        explain_service(&mut out, service, &key, &settings, selector, None);
    }
    match (found, target) {
        (false, Some(target)) => Err(PreviewError::NoService(target.to_string())),
        _ => Ok(out),
    }
}

/// Explains one Service of the cluster, with `run`'s configuration (flags, then Settings).
pub async fn explain_cluster(args: &RunArgs, key: &ServiceKey) -> Result<String, PreviewError> {
    let connected = cluster::connect(args).await?;
    let discovery = &connected.discovery;
    let services: Api<Service> = Api::namespaced(connected.client.clone(), &key.namespace);
    let service = services
        .get_opt(&key.name)
        .await
        .map_err(|source| PreviewError::Get {
            what: format!("Service {key}"),
            source,
        })?
        .ok_or_else(|| PreviewError::NoService(key.to_string()))?;
    let snapshot = cluster::snapshot(&connected.client, discovery).await?;
    let translation = crate::translate::translate_service(&service, &discovery.translate);
    let plan =
        (discovery.uds_enabled && snapshot.state.service_in_scope(key).is_some()).then(|| {
            let observed = snapshot.observed_for(key);
            plan::plan(
                key,
                &translation.upstreams,
                &observed,
                &snapshot.state,
                true,
            )
        });
    let service_events = events_of(&connected.client, &key.namespace, "Service", &key.name).await;
    let last_event = last_of(&service_events, |_| true);
    let names: Vec<UpstreamKey> = translation
        .upstreams
        .iter()
        .filter_map(|upstream| UpstreamKey::of(&upstream.metadata))
        .collect();
    let refusals = last_refusals(&connected.client, &service_events, &names).await;
    let live = Live {
        snapshot: &snapshot,
        key: key.clone(),
        plan,
        last_event,
        refusals,
    };
    let mut out = String::new();
    for note in &connected.notes {
        let _ = writeln!(out, "# {note}");
    }
    explain_service(
        &mut out,
        &service,
        key,
        &discovery.translate,
        &discovery.service_selector,
        Some(&live),
    );
    Ok(out)
}

/// The Events whose involved object is `kind` `namespace/name`.
async fn events_of(
    client: &kube::Client,
    namespace: &str,
    kind: &str,
    name: &str,
) -> Result<Vec<Event>, kube::Error> {
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    let selector = format!("involvedObject.kind={kind},involvedObject.name={name}");
    list_all(&events, &ListParams::default().fields(&selector)).await
}

/// The latest Event of `events` as one line, `none` when there is none, or why Events cannot
/// be read (the daemon's own rights grant no list of Events: not worth failing for).
fn last_of(events: &Result<Vec<Event>, kube::Error>, keep: impl Fn(&Event) -> bool) -> String {
    let found = match events {
        Ok(found) => found,
        Err(error) => return format!("unknown (cannot list Events: {error})"),
    };
    let time = |event: &Event| {
        let stamp = match (&event.event_time, &event.last_timestamp) {
            (_, Some(last)) => serde_json::to_value(last).ok(),
            (Some(at), None) => serde_json::to_value(at).ok(),
            (None, None) => serde_json::to_value(&event.metadata.creation_timestamp).ok(),
        };
        stamp
            .and_then(|value| value.as_str().map(str::to_string))
            .unwrap_or_default()
    };
    match found
        .iter()
        .filter(|event| keep(event))
        .max_by_key(|event| time(event))
    {
        Some(event) => format!(
            "{} {} at {}: {}",
            event.type_.as_deref().unwrap_or("Normal"),
            event.reason.as_deref().unwrap_or_default(),
            time(event),
            event.message.as_deref().unwrap_or_default()
        ),
        None => "none".to_string(),
    }
}

/// The last admission refusal of each of `upstreams`: the daemon records it on the Upstream,
/// or on the Service when the Upstream does not exist (a refused create).
async fn last_refusals(
    client: &kube::Client,
    service_events: &Result<Vec<Event>, kube::Error>,
    upstreams: &[UpstreamKey],
) -> BTreeMap<UpstreamKey, String> {
    let is_refusal = |event: &Event| {
        [
            EventReason::AdmissionDenied,
            EventReason::AdmissionUnavailable,
        ]
        .iter()
        .any(|reason| event.reason.as_deref() == Some(reason.as_str()))
    };
    let mut found = BTreeMap::new();
    for key in upstreams {
        let on_upstream = events_of(client, &key.namespace, "Upstream", &key.name).await;
        let mut refusals: Vec<Event> = on_upstream.unwrap_or_default();
        let named = format!(" of Upstream {key} ");
        if let Ok(events) = service_events {
            refusals.extend(
                events
                    .iter()
                    .filter(|event| event.message.as_deref().is_some_and(|m| m.contains(&named)))
                    .cloned(),
            );
        }
        let line = last_of(&Ok(refusals), is_refusal);
        if line != "none" {
            found.insert(key.clone(), line);
        }
    }
    found
}

fn explain_service(
    out: &mut String,
    service: &Service,
    key: &ServiceKey,
    settings: &TranslateSettings,
    selector: &LabelSelector,
    live: Option<&Live<'_>>,
) {
    let _ = writeln!(out, "Service {key}");
    let no_labels = Default::default();
    let labels = service.metadata.labels.as_ref().unwrap_or(&no_labels);
    if !selector.matches(labels) {
        let _ = writeln!(
            out,
            "  note: its labels do not match the service selector {:?}: run gives it no Upstream; were it selected:",
            selector.as_str()
        );
    } else if live.is_some_and(|live| live.plan.is_none()) {
        let _ = writeln!(
            out,
            "  note: run does not see this Service (Service discovery off, or its namespace not watched or not selected): it gives it no Upstream; were it seen:"
        );
    }
    let (translation, traces) = translate_service_traced(service, settings);
    for warning in &translation.warnings {
        let _ = writeln!(out, "  warning: {warning} ({})", warning.reason().as_str());
    }
    if translation.upstreams.is_empty() {
        let _ = writeln!(out, "  no ports: no Upstream");
    }
    let ports = service
        .spec
        .as_ref()
        .and_then(|spec| spec.ports.clone())
        .unwrap_or_default();
    for ((upstream, trace), port) in translation.upstreams.iter().zip(&traces).zip(&ports) {
        let name = UpstreamKey::of(&upstream.metadata)
            .unwrap_or_else(|| UpstreamKey::new(String::new(), String::new()));
        let _ = writeln!(out, "  Upstream {name} (port {})", port.port);
        let json = serde_json::to_value(upstream).unwrap_or(Value::Null);
        let mut leaves = Vec::new();
        for root in ["metadata", "spec"] {
            if let Some(value) = json.get(root) {
                collect_leaves(value, &mut vec![root.to_string()], &mut leaves);
            }
        }
        leaves.sort_by(|a, b| a.0.cmp(&b.0));
        for (path, value) in &leaves {
            let rule = rule_for(trace, path)
                .map(ToString::to_string)
                .unwrap_or_else(|| "(no rule recorded)".to_string());
            let _ = writeln!(out, "    {} = {value}  <- {rule}", show_path(path));
        }
        for source in trace {
            if source.rule == Rule::Http2Unset && !leaves.iter().any(|(p, _)| *p == source.path) {
                let _ = writeln!(
                    out,
                    "    {} unset  <- {}",
                    show_path(&source.path),
                    source.rule
                );
            }
        }
        if let Some(live) = live {
            explain_live(out, live, &name);
        }
    }
    if let Some(live) = live {
        let _ = writeln!(out, "  last Event: {}", live.last_event);
    }
}

/// What `run` would do with the Upstream `name`, and who holds the name.
fn explain_live(out: &mut String, live: &Live<'_>, name: &UpstreamKey) {
    let holder = match live.snapshot.state.holder(name) {
        NameHolder::Foreign => {
            "an Upstream without the discovered_by=kubernetesplugin label (not owned: never touched)"
                .to_string()
        }
        NameHolder::Service(holder) if holder == live.key => "this Service".to_string(),
        NameHolder::Service(holder) => format!("Service {holder}"),
        NameHolder::Free if live.snapshot.foreign.contains(name) => {
            "an Upstream without the discovered_by=kubernetesplugin label (not owned: never touched)"
                .to_string()
        }
        NameHolder::Free => "nobody".to_string(),
    };
    let _ = writeln!(out, "    name held by: {holder}");
    if let Some(refusal) = live.refusals.get(name) {
        let _ = writeln!(out, "    last refusal: {refusal}");
    }
    let Some(plan) = &live.plan else {
        return;
    };
    if let Some(blocked) = plan.blocked.iter().find(|b| b.name == *name) {
        let why = match &blocked.by {
            BlockedBy::NotOwned => "not owned".to_string(),
            BlockedBy::GrantNotOwned => {
                "its ReferenceGrant's name is held by a grant not owned".to_string()
            }
            BlockedBy::Service(holder) => format!("the name is Service {holder}'s"),
        };
        let _ = writeln!(out, "    live: left alone by run ({why})");
        return;
    }
    let action = plan.actions.iter().find(|action| match action {
        Action::Create(upstream)
        | Action::Update {
            desired: upstream, ..
        } => UpstreamKey::of(&upstream.metadata).as_ref() == Some(name),
        // Grants are not previewed (docs/behaviour.md, "Routing from your namespace").
        Action::Delete { .. } | Action::Grant(_) => false,
    });
    match action {
        Some(Action::Create(_)) => {
            let _ = writeln!(out, "    live: missing (run creates it)");
        }
        Some(Action::Update {
            desired,
            reason,
            remove,
            ..
        }) => {
            let _ = writeln!(
                out,
                "    live: differs (run updates it: {})",
                reason_text(reason)
            );
            let observed = live.snapshot.observed_for(&live.key);
            if let Some(current) = observed
                .iter()
                .find(|o| *o.namespace == *name.namespace && *o.name == *name.name)
            {
                for line in UpdateView::new(desired, current, remove).diff.lines() {
                    let _ = writeln!(out, "      {line}");
                }
            }
        }
        _ => {
            let _ = writeln!(out, "    live: same (run writes nothing)");
        }
    }
}

/// The rule of the last trace entry at `path` or above it: later rules override earlier ones.
fn rule_for<'a>(trace: &'a [FieldSource], path: &[String]) -> Option<&'a Rule> {
    trace
        .iter()
        .rev()
        .find(|source| source.path.len() <= path.len() && path.starts_with(&source.path))
        .map(|source| &source.rule)
}

/// Leaves of a JSON value: objects are walked (an empty one is a leaf), lists and scalars are
/// leaves, shown as compact JSON.
fn collect_leaves(value: &Value, path: &mut Vec<String>, leaves: &mut Vec<(Vec<String>, String)>) {
    match value {
        Value::Null => {}
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                path.push(key.clone());
                collect_leaves(child, path, leaves);
                path.pop();
            }
        }
        other => leaves.push((path.clone(), other.to_string())),
    }
}

/// `spec.kube.selector.app`; keys other than letters, digits, `_` and `-` in brackets:
/// `metadata.annotations["gloo.solo.io/h2_service"]`.
fn show_path(path: &[String]) -> String {
    let mut shown = String::new();
    for (i, key) in path.iter().enumerate() {
        let plain = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        match (i, plain) {
            (0, _) => shown.push_str(key),
            (_, true) => {
                shown.push('.');
                shown.push_str(key);
            }
            (_, false) => {
                let _ = write!(shown, "[{}]", Value::String(key.clone()));
            }
        }
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(keys: &[&str]) -> Vec<String> {
        keys.iter().map(|key| key.to_string()).collect()
    }

    #[test]
    fn paths_quote_keys_that_are_not_plain() {
        assert_eq!(
            show_path(&path(&["spec", "kube", "selector", "app"])),
            "spec.kube.selector.app"
        );
        assert_eq!(
            show_path(&path(&[
                "metadata",
                "annotations",
                "gloo.solo.io/h2_service"
            ])),
            r#"metadata.annotations["gloo.solo.io/h2_service"]"#
        );
    }

    #[test]
    fn the_last_rule_covering_a_field_wins() {
        let source = |keys: &[&str], rule: Rule| FieldSource {
            path: path(keys),
            rule,
        };
        let trace = vec![
            source(&["spec", "kube", "serviceName"], Rule::ServiceName),
            source(&["spec", "kube", "selector"], Rule::ServiceSelector),
            source(
                &["spec", "kube"],
                Rule::Override {
                    origin: crate::translate::AnnotationOrigin::Service,
                    deep: false,
                },
            ),
            source(&["spec", "useHttp2"], Rule::Http2Unset),
        ];
        assert!(matches!(
            rule_for(&trace, &path(&["spec", "kube", "serviceName"])),
            Some(Rule::Override { deep: false, .. })
        ));
        assert_eq!(
            rule_for(&trace, &path(&["spec", "useHttp2"])),
            Some(&Rule::Http2Unset)
        );
        assert_eq!(rule_for(&trace, &path(&["spec", "static"])), None);
    }

    #[test]
    fn service_keys_are_namespace_slash_name() {
        assert_eq!(
            service_key("shop/web").expect("valid").to_string(),
            "shop/web"
        );
        for bad in ["web", "/web", "shop/", "a/b/c"] {
            assert!(service_key(bad).is_err(), "{bad}");
        }
    }
}
