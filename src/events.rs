//! Kubernetes Events where an operator looks: on Services (`kubectl describe svc`) for service
//! discovery, on aws Upstreams for function discovery. Published from a task of their own so
//! that a slow or failing Events API never holds up discovery.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::Client;
use tokio::sync::mpsc;

use crate::apply::status_code;
use crate::metrics::Metrics;
use crate::model::{ErrorKind, EventReason, ServiceKey, UpstreamKey};

/// The object an Event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Regarding {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
}

impl Regarding {
    pub fn service(key: &ServiceKey, uid: Option<String>) -> Self {
        Self {
            api_version: "v1",
            kind: "Service",
            namespace: key.namespace.to_string(),
            name: key.name.to_string(),
            uid,
        }
    }

    pub fn upstream(key: &UpstreamKey, uid: Option<String>) -> Self {
        Self {
            api_version: "gloo.solo.io/v1",
            kind: "Upstream",
            namespace: key.namespace.to_string(),
            name: key.name.to_string(),
            uid,
        }
    }
}

impl std::fmt::Display for Regarding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// An Event to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectEvent {
    pub regarding: Regarding,
    pub warning: bool,
    pub reason: EventReason,
    pub note: String,
}

/// Sends Events to the publishing task; never blocks (a full queue drops the Event and logs).
#[derive(Clone)]
pub struct EventSink {
    sender: Option<mpsc::Sender<ObjectEvent>>,
}

impl EventSink {
    /// A sink that only logs (dry runs, tests of the engine).
    pub fn log_only() -> Self {
        Self { sender: None }
    }

    /// Starts the publishing task.
    pub fn start(client: Client, instance: String, metrics: Metrics) -> Self {
        let (sender, mut receiver) = mpsc::channel::<ObjectEvent>(1024);
        let reporter = Reporter {
            controller: "upstream-discovery".into(),
            instance: Some(instance),
        };
        let recorder = Recorder::new(client, reporter);
        tokio::spawn(async move {
            let mut refusals = Refusals::default();
            while let Some(event) = receiver.recv().await {
                let regarding = &event.regarding;
                let reference = ObjectReference {
                    api_version: Some(regarding.api_version.into()),
                    kind: Some(regarding.kind.into()),
                    namespace: Some(regarding.namespace.clone()),
                    name: Some(regarding.name.clone()),
                    uid: regarding.uid.clone(),
                    ..Default::default()
                };
                let published = Event {
                    type_: if event.warning {
                        EventType::Warning
                    } else {
                        EventType::Normal
                    },
                    reason: event.reason.as_str().into(),
                    note: Some(truncate(&event.note, 1000)),
                    action: "Discover".into(),
                    secondary: None,
                };
                match recorder.publish(&published, &reference).await {
                    Ok(()) => refusals.published(),
                    Err(error) if status_code(&error) == Some(403) => {
                        metrics.error(ErrorKind::EventForbidden);
                        if refusals.forbidden() {
                            tracing::warn!(%error, "Kubernetes Events are forbidden to this ServiceAccount (as with Gloo's chart): they are only logged from now on, counted as errors_total{{kind=\"event_forbidden\"}}; discovery goes on");
                        }
                    }
                    Err(error) => {
                        tracing::warn!(regarding = %event.regarding, reason = event.reason.as_str(), %error, "cannot record a Kubernetes Event");
                    }
                }
            }
        });
        Self {
            sender: Some(sender),
        }
    }

    pub fn record(&self, event: ObjectEvent) {
        if event.warning {
            tracing::warn!(regarding = %event.regarding, reason = event.reason.as_str(), "{}", event.note);
        } else {
            tracing::info!(regarding = %event.regarding, reason = event.reason.as_str(), "{}", event.note);
        }
        if let Some(sender) = &self.sender {
            if sender.try_send(event).is_err() {
                tracing::warn!(
                    "the Event queue is full; an Event was dropped (it is in the log above)"
                );
            }
        }
    }
}

/// Whether a refused Event is worth a log line: the first refusal says it once, not once per
/// Event (Gloo's chart grants no Events, so every Event is refused); once an Event goes through
/// again (the right was granted), a later refusal is news again.
#[derive(Debug, Default)]
struct Refusals {
    forbidden_reported: bool,
}

impl Refusals {
    /// An Event was refused with 403; true when that should be logged.
    fn forbidden(&mut self) -> bool {
        !std::mem::replace(&mut self.forbidden_reported, true)
    }

    fn published(&mut self) {
        self.forbidden_reported = false;
    }
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forbidden_event_is_logged_once_until_one_goes_through() {
        let mut refusals = Refusals::default();
        assert!(refusals.forbidden(), "the first refusal is logged");
        assert!(!refusals.forbidden(), "not every Event");
        assert!(!refusals.forbidden());
        refusals.published();
        assert!(
            refusals.forbidden(),
            "refused again after the right came back"
        );
    }

    #[test]
    fn long_notes_are_cut_on_a_character() {
        assert_eq!(truncate("ééé", 2), "éé…");
        assert_eq!(truncate("abc", 3), "abc");
    }
}
