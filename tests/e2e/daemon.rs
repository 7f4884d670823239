//! Running the real `upstream-discovery run` binary in the tests, with its own metrics port,
//! log file and environment. [`crate::scenario`] says who it runs as and where.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::support::wait_for;

/// A running daemon process; killed if still running when dropped.
pub struct Daemon {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

/// A free port for a server the tests start, from below the kernel's ephemeral range. A port
/// found by binding port 0 lies inside that range, and between the probe letting it go and the
/// server binding it, any outgoing connection on the machine may take it (seen in a full run:
/// the daemon stopped at once on "Address already in use"). Below the range only another
/// listener can, and each test process walks its own sequence from a different start.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOWEST: u32 = 10_000;
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let span = ephemeral_start.saturating_sub(LOWEST);
    if span >= 1_000 {
        let start = std::process::id().wrapping_mul(7_919) % span;
        for _ in 0..span {
            let offset = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
            let port = u16::try_from(LOWEST + offset).expect("below the ephemeral range");
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

impl Daemon {
    /// Starts `upstream-discovery` with `args` and the client configuration `kubeconfig` (YAML),
    /// in `namespace` (its POD_NAMESPACE), with `env` added to an environment cleared of every
    /// `AWS_*` variable of the test run (and of the instance metadata service), so that function
    /// discovery sees only what the test gives it.
    pub fn start(
        kubeconfig: &str,
        namespace: &str,
        args: &[String],
        env: &[(String, String)],
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("daemon.log");
        let kubeconfig_file = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig_file, kubeconfig).expect("write kubeconfig");
        let port = free_port();
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_upstream-discovery"));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("AWS_") {
                command.env_remove(name);
            }
        }
        without_ambient_aws(&mut command, dir.path());
        command.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let child = command
            .args(args)
            .args([
                "--metrics-addr",
                &format!("127.0.0.1:{port}"),
                "--log-format",
                "json",
            ])
            .env("KUBECONFIG", &kubeconfig_file)
            .env("POD_NAMESPACE", namespace)
            .env("POD_NAME", format!("daemon-{port}"))
            .env("RUST_LOG", "info,upstream_discovery=debug")
            .stdin(Stdio::null())
            // stdout too: nothing the daemon prints may escape the credential check (`leaks`).
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file)
            .spawn()
            .expect("the daemon starts");
        Self {
            child,
            port,
            log,
            _dir: dir,
        }
    }

    /// Starts the binary as Gloo's discovery pod runs it (docs/behaviour.md "Gloo's discovery
    /// pod"): no command-line arguments at all and an environment holding only `PATH`, `env` (the
    /// pod's: POD_NAMESPACE, START_STATS_SERVER, maybe LOG_LEVEL; and what the test points AWS at),
    /// `KUBECONFIG` (standing in for the pod's mounted token) and the switches that keep the AWS
    /// SDK off this machine's own configuration. Its metrics are then on the fixed
    /// [`GLOO_METRICS_PORT`]: waits for that port to be free first, so call it from one test only.
    pub async fn start_as_gloo_pod(kubeconfig: &str, env: &[(String, String)]) -> Self {
        wait_for(
            &format!("port {GLOO_METRICS_PORT} to be free for the daemon started as Gloo's pod"),
            || async {
                std::net::TcpListener::bind(("0.0.0.0", GLOO_METRICS_PORT))
                    .ok()
                    .map(drop)
            },
        )
        .await;
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("daemon.log");
        let kubeconfig_file = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig_file, kubeconfig).expect("write kubeconfig");
        let mut command = Command::new(env!("CARGO_BIN_EXE_upstream-discovery"));
        command.env_clear();
        if let Some(path) = std::env::var_os("PATH") {
            command.env("PATH", path);
        }
        without_ambient_aws(&mut command, dir.path());
        let log_file = std::fs::File::create(&log).expect("log file");
        let child = command
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("KUBECONFIG", &kubeconfig_file)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file)
            .spawn()
            .expect("the daemon starts");
        Self {
            child,
            port: GLOO_METRICS_PORT,
            log,
            _dir: dir,
        }
    }

    /// The process id: the same one all along means no restart.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running (it has not exited, for whatever reason).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET a path of the daemon's HTTP endpoint: (status, body), or None while it is not up.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        crate::support::http_get(&format!("127.0.0.1:{}", self.port), path).await
    }

    pub async fn wait_ready(&self) {
        wait_for(
            &format!("the daemon to be ready; its log:\n{}", self.logs()),
            || async { matches!(self.get("/readyz").await, Some((200, _))).then_some(()) },
        )
        .await;
    }

    /// The daemon's metrics as (name with labels → value).
    pub async fn metrics(&self) -> BTreeMap<String, f64> {
        let (status, body) = self.get("/metrics").await.expect("metrics endpoint up");
        assert_eq!(status, 200);
        body.lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.rsplit_once(' '))
            .filter_map(|(name, value)| Some((name.to_string(), value.parse().ok()?)))
            .collect()
    }

    /// Sum of every sample whose name (with labels) starts with `prefix`.
    pub async fn metric_sum(&self, prefix: &str) -> f64 {
        self.metrics()
            .await
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    }

    /// Writes the daemon made (all ops, successful ones).
    pub async fn writes(&self) -> f64 {
        let metrics = self.metrics().await;
        metrics
            .iter()
            .filter(|(name, _)| {
                name.starts_with("upstream_discovery_writes_total{")
                    && name.contains("result=\"success\"")
            })
            .map(|(_, v)| v)
            .sum()
    }

    /// p50 and p99 of `lag_seconds{source="kubernetes"}`, read off the histogram buckets (the
    /// upper bound of the bucket the quantile falls in, as Prometheus would bound it).
    pub async fn lag_quantiles(&self) -> (f64, f64) {
        let metrics = self.metrics().await;
        let mut buckets: Vec<(f64, f64)> = metrics
            .iter()
            .filter(|(name, _)| {
                name.starts_with("upstream_discovery_lag_seconds_bucket{")
                    && name.contains("source=\"kubernetes\"")
            })
            .filter_map(|(name, count)| {
                let le = name.split("le=\"").nth(1)?.split('"').next()?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, *count))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let total = buckets.last().map(|(_, count)| *count).unwrap_or_default();
        let quantile = |q: f64| {
            buckets
                .iter()
                .find(|(_, count)| *count >= q * total)
                .map(|(le, _)| *le)
                .unwrap_or(f64::NAN)
        };
        (quantile(0.5), quantile(0.99))
    }

    /// Waits until the daemon has nothing pending (after it is ready).
    /// Waits for `seconds` more of periodic resyncs, by the time the last one was stamped (one
    /// per second with `--resync-interval 1s`).
    pub async fn wait_resyncs(&self, seconds: f64) {
        const LAST_SYNC: &str =
            "upstream_discovery_last_sync_timestamp_seconds{source=\"kubernetes\"}";
        let synced_at = self.metric_sum(LAST_SYNC).await;
        wait_for("periodic resyncs", || async {
            let now = self.metric_sum(LAST_SYNC).await;
            (now >= synced_at + seconds).then_some(())
        })
        .await;
    }

    pub async fn wait_idle(&self) {
        wait_for("the daemon to have no pending changes", || async {
            let metrics = self.metrics().await;
            (metrics.get("upstream_discovery_pending_changes") == Some(&0.0)).then_some(())
        })
        .await;
    }

    /// SIGTERM, and the time it took to exit; panics if it takes over `limit`.
    pub fn terminate(mut self, limit: Duration) -> Duration {
        let started = Instant::now();
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(
                    status.success(),
                    "exit status {status}; log:\n{}",
                    self.logs()
                );
                return started.elapsed();
            }
            assert!(
                started.elapsed() < limit,
                "still running {limit:?} after SIGTERM; log:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal}");
    }

    /// Waits for the process to exit on its own (e.g. a start-up error): its exit code and its
    /// log; panics if it is still running after `limit`.
    pub fn wait_exit(mut self, limit: Duration) -> (Option<i32>, String) {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (status.code(), self.logs());
            }
            assert!(
                started.elapsed() < limit,
                "still running after {limit:?}; log:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: the process dies without releasing anything.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where Gloo's discovery pod serves its metrics (`START_STATS_SERVER=true`).
pub const GLOO_METRICS_PORT: u16 = 9091;

/// Keeps the AWS SDK off the machine's own credentials, config files and instance metadata, so
/// function discovery sees only what a test gives it.
fn without_ambient_aws(command: &mut Command, dir: &std::path::Path) {
    let nowhere = dir.join("no-such-file");
    command
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", &nowhere)
        .env("AWS_SHARED_CREDENTIALS_FILE", &nowhere);
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
