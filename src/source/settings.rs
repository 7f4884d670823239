//! Gloo's `Settings` object: read once at start, then watched, so that a change reaches the
//! daemon without a restart. Only the raw `spec` travels from here; `config::settings` reads it.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::{BoxStream, StreamExt};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;

use super::backoff::{status_code, Signals, WatchBackoff};

/// How long the first read may take before the daemon starts on its flags alone.
const FIRST_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait between retries of a failing Settings watch: Settings (or their CRD)
/// installed later are picked up within this.
const MISSING_CRD_RETRY: Duration = Duration::from_secs(60);

/// The Settings object as first read.
#[derive(Debug)]
pub enum FirstRead {
    /// Its `spec` (`null` when it has none).
    Found(serde_json::Value),
    /// No such object, or no Settings CRD in the cluster.
    Missing,
    /// It could not be read: forbidden, an API error, or no answer in time.
    Unreadable(String),
}

/// A change seen by the watch.
#[derive(Debug)]
pub enum SettingsUpdate {
    /// The object was created or changed: its new `spec`.
    Changed(serde_json::Value),
    /// The object is gone.
    Deleted,
    /// The watch failed (it retries with backoff on its own).
    Unreadable(String),
}

fn api(client: &Client, namespace: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("gloo.solo.io", "v1", "Settings");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "settings");
    Api::namespaced_with(client.clone(), namespace, &resource)
}

fn spec_of(object: &DynamicObject) -> serde_json::Value {
    object
        .data
        .get("spec")
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

/// Reads the object `name` in `namespace` once.
pub async fn first_read(client: &Client, namespace: &str, name: &str) -> FirstRead {
    let settings = api(client, namespace);
    match tokio::time::timeout(FIRST_READ_TIMEOUT, settings.get_opt(name)).await {
        Ok(Ok(Some(object))) => FirstRead::Found(spec_of(&object)),
        // A missing CRD answers 404 as a missing object does.
        Ok(Ok(None)) => FirstRead::Missing,
        // Without the CRD the answer is a plain-text 404 that kube cannot parse into a Status,
        // so `get_opt` cannot tell it from other errors; its code still says what it is.
        Ok(Err(kube::Error::Api(status))) if status.code == 404 => FirstRead::Missing,
        Ok(Err(error)) => FirstRead::Unreadable(error.to_string()),
        Err(_) => FirstRead::Unreadable(format!(
            "no answer within {}s",
            FIRST_READ_TIMEOUT.as_secs()
        )),
    }
}

/// Every later change of the object `name` in `namespace`. A re-list that no longer finds it
/// counts as a deletion; a re-list that finds it unchanged repeats it, which the reader
/// compares away.
pub fn updates(client: &Client, namespace: &str, name: &str) -> BoxStream<'static, SettingsUpdate> {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut seen_in_relist = false;
    let signals = Arc::new(Signals::default());
    let observer = signals.clone();
    watcher(api(client, namespace), config)
        .inspect(move |item| observer.observe(item))
        // Not kube's default backoff: a retry's `Init` resets it, so a cluster without the
        // Settings CRD got a list every second, forever.
        .backoff(WatchBackoff::capped(signals, MISSING_CRD_RETRY))
        .filter_map(move |event| {
            let update = match event {
                Ok(watcher::Event::Apply(object)) => {
                    Some(SettingsUpdate::Changed(spec_of(&object)))
                }
                Ok(watcher::Event::Delete(_)) => Some(SettingsUpdate::Deleted),
                Ok(watcher::Event::Init) => {
                    seen_in_relist = false;
                    None
                }
                Ok(watcher::Event::InitApply(object)) => {
                    seen_in_relist = true;
                    Some(SettingsUpdate::Changed(spec_of(&object)))
                }
                Ok(watcher::Event::InitDone) => {
                    (!seen_in_relist).then_some(SettingsUpdate::Deleted)
                }
                // No Settings CRD: as at the first read, there are no Settings to follow.
                Err(error) if status_code(&error) == Some(404) => None,
                Err(error) => Some(SettingsUpdate::Unreadable(error.to_string())),
            };
            std::future::ready(update)
        })
        .boxed()
}
