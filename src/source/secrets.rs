//! Watches exactly the Secrets that aws Upstreams name, one field-selected watch each, so a
//! rotated Secret is used at the next sweep and no other Secret is ever read into memory.
//! Each watch runs in a task of its own and sends what it sees down one channel.

use std::collections::{BTreeSet, HashMap};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::credentials::{keys_from_secret, SecretSeen};
use crate::model::SecretKey;

/// What the watch of one Secret saw.
#[derive(Debug)]
pub struct SecretUpdate {
    pub key: SecretKey,
    pub seen: SecretSeen,
}

/// The running watches, one per Secret in use.
pub struct SecretWatches {
    client: Client,
    sender: mpsc::UnboundedSender<SecretUpdate>,
    running: HashMap<SecretKey, AbortHandle>,
}

impl SecretWatches {
    pub fn new(client: Client) -> (Self, mpsc::UnboundedReceiver<SecretUpdate>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (
            Self {
                client,
                sender,
                running: HashMap::new(),
            },
            receiver,
        )
    }

    /// Watches exactly `wanted`: starts the new ones, stops the rest.
    pub fn set(&mut self, wanted: &BTreeSet<SecretKey>) {
        self.running.retain(|key, handle| {
            let keep = wanted.contains(key);
            if !keep {
                handle.abort();
            }
            keep
        });
        for key in wanted {
            if !self.running.contains_key(key) {
                let handle = tokio::spawn(watch_one(
                    self.client.clone(),
                    key.clone(),
                    self.sender.clone(),
                ))
                .abort_handle();
                self.running.insert(key.clone(), handle);
            }
        }
    }
}

impl Drop for SecretWatches {
    fn drop(&mut self) {
        for handle in self.running.values() {
            handle.abort();
        }
    }
}

async fn watch_one(client: Client, key: SecretKey, sender: mpsc::UnboundedSender<SecretUpdate>) {
    let api: Api<Secret> = Api::namespaced(client, &key.namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={}", key.name));
    let mut events = watcher(api, config).default_backoff().boxed();
    let mut listed = false;
    while let Some(event) = events.next().await {
        let seen = match event {
            Ok(watcher::Event::Init) => {
                listed = false;
                continue;
            }
            Ok(watcher::Event::InitApply(secret) | watcher::Event::Apply(secret)) => {
                listed = true;
                SecretSeen::Present(keys_from_secret(secret.data.as_ref()))
            }
            Ok(watcher::Event::InitDone) if listed => continue,
            Ok(watcher::Event::InitDone | watcher::Event::Delete(_)) => SecretSeen::Missing,
            Err(error) => SecretSeen::WatchError(describe(&key, &error)),
        };
        let update = SecretUpdate {
            key: key.clone(),
            seen,
        };
        if sender.send(update).is_err() {
            return;
        }
    }
}

/// What a failed watch of the Secret `key` says; for a refusal (403), the right the daemon's
/// ServiceAccount lacks, so that the Event on the Upstream tells the operator what to grant.
fn describe(key: &SecretKey, error: &watcher::Error) -> String {
    if super::backoff::status_code(error) == Some(403) {
        return format!(
            "forbidden: the daemon may not list and watch the Secret {name} in namespace {namespace} (it needs get/list/watch on secrets there; resourceNames [{name}] is enough; chart: discovery.lambda.secrets)",
            name = key.name,
            namespace = key.namespace,
        );
    }
    error.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_the_secret_and_the_right_it_needs() {
        let key = SecretKey::new("team", "aws-creds");
        let refused =
            kube::core::Status::failure("secrets is forbidden", "Forbidden").with_code(403);
        let said = describe(&key, &watcher::Error::WatchError(Box::new(refused)));
        assert_eq!(
            said,
            "forbidden: the daemon may not list and watch the Secret aws-creds in namespace team (it needs get/list/watch on secrets there; resourceNames [aws-creds] is enough; chart: discovery.lambda.secrets)"
        );
        let other = kube::core::Status::failure("boom", "InternalError").with_code(500);
        assert!(
            !describe(&key, &watcher::Error::WatchError(Box::new(other))).contains("forbidden")
        );
    }
}
