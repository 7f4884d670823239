//! One read-only look at the cluster, as `run` would take it at start: the same connection,
//! the same Settings read and layering, the same scopes, and the same cache (`services::state`)
//! fed with paged lists instead of watches. Nothing here writes.

use std::collections::{BTreeSet, HashMap};

use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{Api, ListParams, ObjectList};
use kube::runtime::watcher;
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

use super::PreviewError;
use crate::config::settings::GlooSettings;
use crate::config::{Discovery, RunArgs};
use crate::crd::{ReferenceGrant, Upstream};
use crate::model::{is_owned, Scope, ServiceKey, UpstreamKey, DISCOVERY_MANAGERS};
use crate::plan::ObservedUpstream;
use crate::services::state::State;
use crate::source::api_for;
use crate::source::settings::{first_read, FirstRead};

/// Page size of every list: the daemon's.
const PAGE_SIZE: u32 = 500;

/// The connection and the configuration `run` would start with.
pub struct Connected {
    pub client: Client,
    pub discovery: Discovery,
    /// What to tell the user about where the configuration came from.
    pub notes: Vec<String>,
}

/// Connects as `run` does (kubeconfig, else in-cluster) and works out its configuration as
/// `run` does at start: the flags given, then Gloo's Settings in `$POD_NAMESPACE` (when
/// `--read-settings`), then the defaults. Settings missing, invalid or unreadable leave flags
/// and defaults, as in `run`; the notes say which.
pub async fn connect(args: &RunArgs) -> Result<Connected, PreviewError> {
    let pod_namespace = std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|ns| !ns.is_empty());
    let config = kube::Config::infer().await?;
    let client = Client::try_from(config)?;
    let own_namespace = args.scopes(pod_namespace.as_deref()).own_namespace;
    let mut notes = Vec::new();
    let settings = if args.read_settings {
        let name = &args.settings_name;
        match first_read(&client, &own_namespace, name).await {
            FirstRead::Found(spec) => match GlooSettings::from_spec(&spec) {
                Ok(settings) => {
                    notes.push(format!(
                        "configuration: Settings {own_namespace}/{name}, under the flags given"
                    ));
                    Some(settings)
                }
                Err(error) => {
                    notes.push(format!(
                        "Settings {own_namespace}/{name} is invalid ({error}): run starts from flags and defaults, and so does this preview"
                    ));
                    None
                }
            },
            FirstRead::Missing => {
                notes.push(format!(
                    "configuration: flags and defaults (no Settings {own_namespace}/{name})"
                ));
                None
            }
            // Without the Settings CRD the API server answers a plain-text 404 that kube-rs
            // cannot parse as a Status, so it arrives here rather than as `Missing`.
            FirstRead::Unreadable(message) if message.contains("404") => {
                notes.push(format!(
                    "configuration: flags and defaults (no Settings {own_namespace}/{name}: 404, no Settings CRD)"
                ));
                None
            }
            FirstRead::Unreadable(message) => {
                notes.push(format!(
                    "cannot read Settings {own_namespace}/{name} ({message}): run starts from flags and defaults until it can, and so does this preview"
                ));
                None
            }
        }
    } else {
        notes.push("configuration: flags and defaults (--read-settings false)".to_string());
        None
    };
    let discovery = args.discovery(pod_namespace.as_deref(), settings.as_ref())?;
    Ok(Connected {
        client,
        discovery,
        notes,
    })
}

/// Every object `params` selects, page by page (`limit` and `continue`), no watch.
pub async fn list_all<K>(api: &Api<K>, params: &ListParams) -> Result<Vec<K>, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut items = Vec::new();
    list_pages(api, params, |page| items.extend(page)).await?;
    Ok(items)
}

/// Hands each page of the objects `params` selects to `on_page` as it arrives, so that only
/// one page of whole objects is held at a time (the cache keeps them compact).
pub async fn list_pages<K>(
    api: &Api<K>,
    params: &ListParams,
    mut on_page: impl FnMut(Vec<K>),
) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut params = params.clone().limit(PAGE_SIZE);
    loop {
        let page: ObjectList<K> = api.list(&params).await?;
        on_page(page.items);
        match page.metadata.continue_.filter(|token| !token.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(()),
        }
    }
}

/// The daemon's cache after its first full lists, and the Upstreams without our label it saw.
pub struct Snapshot {
    pub state: State,
    pub foreign: BTreeSet<UpstreamKey>,
    /// The owned Upstreams whole: a preview shows what an update changes, which the daemon's
    /// cache (fingerprints) cannot say.
    pub observed: HashMap<UpstreamKey, ObservedUpstream>,
    pub services_listed: usize,
    pub upstreams_listed: usize,
}

impl Snapshot {
    /// Keeps an owned Upstream whole, beside what the cache keeps of it.
    pub fn observe(&mut self, upstream: &Upstream) {
        if let (Some(key), Some(observed)) = (
            UpstreamKey::of(&upstream.metadata),
            ObservedUpstream::from_upstream(upstream, &DISCOVERY_MANAGERS),
        ) {
            if is_owned(upstream.metadata.labels.as_ref()) {
                self.observed.insert(key, observed);
            }
        }
    }

    /// The owned Upstreams at the names this Service holds, whole: what its plan updates.
    pub fn observed_for(&self, key: &ServiceKey) -> Vec<ObservedUpstream> {
        self.state
            .owned_for(key)
            .iter()
            .filter_map(|owned| {
                let name = UpstreamKey::new(owned.namespace.as_str(), owned.name.as_str());
                self.observed.get(&name).cloned()
            })
            .collect()
    }
}

/// Lists the ReferenceGrants of the write namespace into the snapshot's cache, as the grants'
/// first list (`--reference-grants`); says what it found, or that none are served (no CRD:
/// `run` then keeps none either).
pub async fn add_grants(
    client: &Client,
    discovery: &Discovery,
    snapshot: &mut Snapshot,
) -> Result<String, PreviewError> {
    let Some(namespace) = discovery.scopes.fixed_write_namespace() else {
        return Ok("--reference-grants is ignored with --write-namespace-mode=service".into());
    };
    let api: Api<ReferenceGrant> = Api::namespaced(client.clone(), namespace);
    let grants = match list_all(&api, &ListParams::default()).await {
        Ok(grants) => grants,
        Err(kube::Error::Api(status)) if status.code == 404 => {
            return Ok("the API server serves no ReferenceGrant (no Gateway API CRD): run keeps no grant until it does".into());
        }
        Err(source) => {
            return Err(PreviewError::List {
                what: format!("referencegrants in {namespace}"),
                source,
            })
        }
    };
    let listed = grants.len();
    let state = &mut snapshot.state;
    let scope = Scope::Namespace(namespace.to_string());
    state.enable_grants(&[namespace.to_string()]);
    state.on_grant_event(&scope, watcher::Event::Init);
    for grant in grants {
        state.on_grant_event(&scope, watcher::Event::InitApply(grant));
    }
    state.on_grant_event(&scope, watcher::Event::InitDone);
    Ok(format!("listed {listed} ReferenceGrants in {namespace}"))
}

fn list_error(what: String) -> impl FnOnce(kube::Error) -> PreviewError {
    move |source| PreviewError::List { what, source }
}

/// Lists what the daemon's streams would (Services of each scope, selected server-side by the
/// service selector as the daemon's are; every Upstream of the write namespace(s); Namespaces
/// when a namespace selector needs their labels) and feeds it to the daemon's own cache, as
/// the first list of each stream.
pub async fn snapshot(client: &Client, discovery: &Discovery) -> Result<Snapshot, PreviewError> {
    let scopes = &discovery.scopes;
    let mut state = State::new(
        &scopes.services,
        &scopes.upstreams,
        scopes.namespace_selector.clone(),
        scopes.write_namespace.clone(),
    );
    let mut snapshot_counts = (0, 0);
    if !scopes.namespace_selector.selects_all() {
        let namespaces = list_all(
            &Api::<Namespace>::all(client.clone()),
            &ListParams::default(),
        )
        .await
        .map_err(list_error("namespaces".to_string()))?;
        state.on_namespace_event(watcher::Event::Init);
        for namespace in namespaces {
            state.on_namespace_event(watcher::Event::InitApply(namespace));
        }
        state.on_namespace_event(watcher::Event::InitDone);
    }
    let selected = ListParams::default().labels(discovery.service_selector.as_str());
    for scope in &scopes.services {
        state.on_service_event(scope, watcher::Event::Init);
        list_pages(&api_for::<Service>(client, scope), &selected, |page| {
            snapshot_counts.0 += page.len();
            for service in page {
                state.on_service_event(scope, watcher::Event::InitApply(service));
            }
        })
        .await
        .map_err(list_error(format!("services in {scope}")))?;
        state.on_service_event(scope, watcher::Event::InitDone);
    }
    let mut snapshot = Snapshot {
        state,
        foreign: BTreeSet::new(),
        observed: HashMap::new(),
        services_listed: snapshot_counts.0,
        upstreams_listed: 0,
    };
    for scope in &scopes.upstreams {
        snapshot
            .state
            .on_upstream_event(scope, watcher::Event::Init);
        let api = api_for::<Upstream>(client, scope);
        list_pages(&api, &ListParams::default(), |page| {
            snapshot.upstreams_listed += page.len();
            for upstream in page {
                if !is_owned(upstream.metadata.labels.as_ref()) {
                    snapshot.foreign.extend(UpstreamKey::of(&upstream.metadata));
                }
                snapshot.observe(&upstream);
                snapshot
                    .state
                    .on_upstream_event(scope, watcher::Event::InitApply(upstream));
            }
        })
        .await
        .map_err(list_error(format!("upstreams in {scope}")))?;
        snapshot
            .state
            .on_upstream_event(scope, watcher::Event::InitDone);
    }
    Ok(snapshot)
}
