//! Kubernetes Events on Services, where an operator looks (`kubectl describe svc`). Published
//! from a task of their own so that a slow or failing Events API never holds up discovery.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::Client;
use tokio::sync::mpsc;

use crate::engine::state::ServiceKey;

/// An Event to record on a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEvent {
    pub service: ServiceKey,
    pub uid: Option<String>,
    pub warning: bool,
    /// PascalCase, from a fixed set.
    pub reason: &'static str,
    pub note: String,
}

/// Sends Events to the publishing task; never blocks (a full queue drops the Event and logs).
#[derive(Clone)]
pub struct EventSink {
    sender: Option<mpsc::Sender<ServiceEvent>>,
}

impl EventSink {
    /// A sink that only logs (dry runs, tests of the engine).
    pub fn log_only() -> Self {
        Self { sender: None }
    }

    /// Starts the publishing task.
    pub fn start(client: Client, instance: String) -> Self {
        let (sender, mut receiver) = mpsc::channel::<ServiceEvent>(1024);
        let reporter = Reporter {
            controller: "upstream-discovery".into(),
            instance: Some(instance),
        };
        let recorder = Recorder::new(client, reporter);
        tokio::spawn(async move {
            while let Some(event) = receiver.recv().await {
                let reference = ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Service".into()),
                    namespace: Some(event.service.namespace.clone()),
                    name: Some(event.service.name.clone()),
                    uid: event.uid.clone(),
                    ..Default::default()
                };
                let published = Event {
                    type_: if event.warning {
                        EventType::Warning
                    } else {
                        EventType::Normal
                    },
                    reason: event.reason.into(),
                    note: Some(truncate(&event.note, 1000)),
                    action: "Discover".into(),
                    secondary: None,
                };
                if let Err(error) = recorder.publish(&published, &reference).await {
                    tracing::warn!(service = %event.service, reason = event.reason, %error, "cannot record a Kubernetes Event");
                }
            }
        });
        Self {
            sender: Some(sender),
        }
    }

    pub fn record(&self, event: ServiceEvent) {
        if event.warning {
            tracing::warn!(service = %event.service, reason = event.reason, "{}", event.note);
        } else {
            tracing::info!(service = %event.service, reason = event.reason, "{}", event.note);
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

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}
