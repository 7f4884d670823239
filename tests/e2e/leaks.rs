//! No credential the daemon is handed ever comes out of it (issue 13): not in its log, not in an
//! Event, not in its metrics.
//!
//! A test collects every secret value it gives the daemon in a [`Credentials`] (the fixtures
//! that make Secrets, environments and token files add them as they make them) and ends with
//! [`assert_no_credentials_leaked`]. What counts as a credential: a secret access key, a session
//! token, a web identity token, the credentials STS issued in exchange for it, and the daemon's
//! own Kubernetes bearer token. An access key id does not: AWS treats it as an identifier (it
//! travels in clear in every request's `Authorization` header and is printed in AWS's own error
//! messages and CloudTrail), and naming it helps an operator find the key that was refused.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Event;
use k8s_openapi::ByteString;
use kube::api::ListParams;
use kube::{Api, Client};

use crate::daemon::Daemon;

/// Shorter values could turn up by chance (and "x" is in every log): a test must hand out
/// values long enough to be searched for.
const SHORTEST: usize = 12;

/// The credential values handed to a daemon in one test. Clones share the values.
#[derive(Clone, Default)]
pub struct Credentials(Arc<Mutex<BTreeSet<String>>>);

impl Credentials {
    /// A secret value given to the daemon; panics when it is too short to search for.
    pub fn add(&self, value: &str) {
        let value = value.trim();
        assert!(
            value.len() >= SHORTEST,
            "credential {value:?} is too short to search the daemon's output for: give the \
             daemon a value of at least {SHORTEST} characters"
        );
        self.lock().insert(value.to_string());
    }

    /// Every value of a Secret's `data` except the access key ids (see the module's doc), by
    /// the key it is stored under.
    pub fn add_secret_data<'a>(&self, data: impl IntoIterator<Item = (&'a str, &'a str)>) {
        for (key, value) in data {
            if !is_access_key_id(key) {
                self.add(value);
            }
        }
    }

    /// The credential values among environment variables given to the daemon; a web identity
    /// token file's content counts as given too.
    pub fn add_environment<'a>(&self, env: impl IntoIterator<Item = (&'a str, &'a str)>) {
        for (name, value) in env {
            match name {
                "AWS_SECRET_ACCESS_KEY" | "AWS_SESSION_TOKEN" => self.add(value),
                "AWS_WEB_IDENTITY_TOKEN_FILE" => {
                    let token = std::fs::read_to_string(value)
                        .unwrap_or_else(|e| panic!("read the web identity token {value}: {e}"));
                    self.add(&token);
                }
                _ => {}
            }
        }
    }

    pub fn values(&self) -> Vec<String> {
        self.lock().iter().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `aws_access_key_id`, and the spellings tests use for keys the daemon does not read.
fn is_access_key_id(key: &str) -> bool {
    let plain: String = key
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase();
    plain.ends_with("accesskeyid") || plain == "accesskey"
}

/// The forms a value may take when printed: as it is, base64 (a Secret's `data`, a
/// `ByteString` serialized) and as a byte list (`Debug` of a `Vec<u8>` or a `ByteString`).
fn forms(value: &str) -> Vec<(&'static str, String)> {
    let base64 = serde_json::to_value(ByteString(value.as_bytes().to_vec()))
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let bytes = format!("{:?}", value.as_bytes());
    vec![
        ("plain", value.to_string()),
        ("base64", base64),
        ("bytes", bytes.trim_matches(['[', ']']).to_string()),
    ]
}

/// Where each credential shows up in `text`, one line per finding.
fn findings(place: &str, text: &str, credentials: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    for value in credentials {
        for (form, printed) in forms(value) {
            if printed.is_empty() {
                continue;
            }
            for line in text.lines().filter(|line| line.contains(&printed)) {
                let line: String = line.chars().take(400).collect();
                found.push(format!("{place}: credential {value:?} ({form}) in: {line}"));
            }
        }
    }
    found
}

/// Fails the test if any of `credentials` appears in `daemon`'s log (stderr and stdout), in
/// an Event of `namespaces` (every field of it, whoever recorded it) or in its `/metrics`.
/// Call it while the daemon still runs (its metrics) and before it is dropped (its log).
pub async fn assert_no_credentials_leaked(
    daemon: &Daemon,
    admin: &Client,
    namespaces: &[&str],
    credentials: &Credentials,
) {
    let values = credentials.values();
    assert!(
        !values.is_empty(),
        "no credential collected: the check would pass whatever the daemon printed"
    );
    let mut found = findings("log", &daemon.logs(), &values);
    match daemon.get("/metrics").await {
        Some((200, body)) => found.extend(findings("metrics", &body, &values)),
        other => panic!("the daemon's /metrics is not readable for the leak check: {other:?}"),
    }
    for namespace in namespaces {
        let events = Api::<Event>::namespaced(admin.clone(), namespace)
            .list(&ListParams::default())
            .await
            .unwrap_or_else(|e| panic!("list the Events of {namespace}: {e}"));
        for event in events.items {
            let text = serde_json::to_string(&event).expect("an Event serializes");
            found.extend(findings(&format!("Event in {namespace}"), &text, &values));
        }
    }
    assert!(
        found.is_empty(),
        "credentials leaked ({} finding(s)):\n{}",
        found.len(),
        found.join("\n")
    );
}
