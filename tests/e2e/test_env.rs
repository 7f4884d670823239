//! The test environment: etcd, kube-apiserver, kube-controller-manager and moto, started by
//! `tests/env/start.sh` on free loopback ports and stopped by PID at the end of the run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// A running environment. Dropping it stops every process it started.
pub struct TestEnv {
    pub state_dir: PathBuf,
    values: HashMap<String, String>,
    stopped: AtomicBool,
    _state_guard: tempfile::TempDir,
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

impl TestEnv {
    /// Starts the environment; fails (never skips) when the servers cannot be started.
    pub fn start() -> Result<Self, String> {
        let state_guard = tempfile::Builder::new()
            .prefix("upstream-discovery-e2e-")
            .tempdir()
            .map_err(|e| format!("cannot create a state directory: {e}"))?;
        let state_dir = state_guard.path().to_path_buf();
        let status = Command::new("bash")
            .arg(repo_root().join("tests/env/start.sh"))
            .arg(&state_dir)
            .status()
            .map_err(|e| format!("cannot run tests/env/start.sh: {e}"))?;
        let mut env = Self {
            state_dir,
            values: HashMap::new(),
            stopped: AtomicBool::new(false),
            _state_guard: state_guard,
        };
        if !status.success() {
            env.stop();
            return Err(format!(
                "tests/env/start.sh failed ({status}); run tests/env/setup.sh first, logs in {}",
                env.state_dir.join("logs").display()
            ));
        }
        let text = std::fs::read_to_string(env.state_dir.join("env"))
            .map_err(|e| format!("no env file: {e}"))?;
        env.values = text
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Ok(env)
    }

    /// A value of the env file; panics with its name when start.sh did not write it.
    pub fn get(&self, key: &str) -> &str {
        self.values
            .get(key)
            .unwrap_or_else(|| panic!("{key} missing from the env file"))
    }

    pub fn kubectl_path(&self) -> &Path {
        Path::new(self.get("KUBECTL"))
    }

    /// Runs kubectl as the admin; returns stdout, panics with stderr on failure.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let output = Command::new(self.kubectl_path())
            .arg("--kubeconfig")
            .arg(self.get("KUBECONFIG"))
            .args(args)
            .output()
            .expect("kubectl runs");
        assert!(
            output.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("utf-8")
    }

    /// A kubeconfig for `token`, pointing at the test API server.
    pub fn kubeconfig_yaml(&self, token: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: user\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context: {{cluster: test, user: user}}\ncurrent-context: test\n",
            server = self.get("KUBE_SERVER"),
            ca = self.get("KUBE_CA_FILE"),
        )
    }

    /// A kube client that authenticates with `token`.
    pub async fn client_with_token(&self, token: &str) -> Client {
        let kubeconfig =
            Kubeconfig::from_yaml(&self.kubeconfig_yaml(token)).expect("valid kubeconfig");
        let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("usable kubeconfig");
        config.read_timeout = Some(Duration::from_secs(60));
        Client::try_from(config).expect("client")
    }

    /// A client with cluster-admin rights, for setting up and checking tests.
    pub async fn admin_client(&self) -> Client {
        self.client_with_token(self.get("KUBE_ADMIN_TOKEN")).await
    }

    /// Stops every process by PID (idempotent).
    pub fn stop(&self) {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        let status = Command::new("bash")
            .arg(repo_root().join("tests/env/stop.sh"))
            .arg(&self.state_dir)
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!(
                "warning: tests/env/stop.sh {} did not finish cleanly: {status:?}",
                self.state_dir.display()
            );
        }
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        self.stop();
    }
}
