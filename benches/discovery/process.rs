//! The daemon under test: the release binary `upstream-discovery run`, as its ServiceAccount,
//! with its resource use read from /proc and its metrics from its own endpoint.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::prom::Samples;
use crate::support::http_get;

/// Peak and current memory and CPU time of a process, from /proc.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Usage {
    /// `VmHWM`: the peak resident set size.
    pub peak_rss_bytes: u64,
    /// `VmRSS`: the resident set size now.
    pub rss_bytes: u64,
    /// `RssFile`: the resident pages mapped from files now, almost all of them the binary's
    /// code that has run (they stay resident once touched, so after a phase this is the code's
    /// share of its peak).
    pub file_rss_bytes: u64,
    /// utime + stime.
    pub cpu_seconds: f64,
}

pub struct DaemonProcess {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
}

/// How to start the daemon: its kubeconfig, namespace and arguments.
pub struct Launch<'a> {
    pub kubeconfig: &'a Path,
    pub pod_namespace: &'a str,
    pub args: &'a [String],
    pub log: PathBuf,
    /// A command the daemon runs under (e.g. `heaptrack -o FILE`), or empty.
    pub wrapper: &'a [String],
}

impl DaemonProcess {
    pub fn start(launch: &Launch<'_>) -> Result<Self, String> {
        let port = free_port()?;
        let log = std::fs::File::create(&launch.log)
            .map_err(|e| format!("cannot create {}: {e}", launch.log.display()))?;
        let mut command = match launch.wrapper.split_first() {
            Some((program, wrapper_args)) => {
                let mut command = Command::new(program);
                command.args(wrapper_args).arg(DAEMON_BINARY);
                command
            }
            None => Command::new(DAEMON_BINARY),
        };
        let child = command
            .args(launch.args)
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
            .args(["--log-format", "json"])
            .env("KUBECONFIG", launch.kubeconfig)
            .env("POD_NAMESPACE", launch.pod_namespace)
            .env("POD_NAME", format!("bench-daemon-{port}"))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start the daemon: {e}"))?;
        Ok(Self {
            child,
            port,
            log: launch.log.clone(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The daemon's own process: the child, or under a wrapper, the descendant running the
    /// daemon's binary.
    fn daemon_pid(&self) -> u32 {
        let mut queue = vec![self.pid()];
        while let Some(pid) = queue.pop() {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
            if exe == Path::new(DAEMON_BINARY) {
                return pid;
            }
            queue.extend(children(pid));
        }
        self.pid()
    }

    /// An error naming the log when the daemon has exited.
    pub fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "the daemon exited ({status}); its log: {}",
                self.log.display()
            )),
            Err(e) => Err(format!("cannot check on the daemon: {e}")),
        }
    }

    pub fn usage(&self) -> Result<Usage, String> {
        read_usage(self.daemon_pid())
    }

    /// A scrape of its `/metrics`, or `None` while it does not answer.
    pub async fn metrics(&self) -> Option<Samples> {
        let (status, body) = http_get(&format!("127.0.0.1:{}", self.port), "/metrics").await?;
        (status == 200).then(|| Samples::parse(&body))
    }

    pub async fn is_ready(&self) -> bool {
        matches!(
            http_get(&format!("127.0.0.1:{}", self.port), "/readyz").await,
            Some((200, _))
        )
    }

    /// SIGTERM to the daemon, then waits for the exit (of the wrapper, if any); returns how
    /// long it took.
    pub fn terminate(mut self, limit: Duration) -> Result<(Duration, ExitStatus), String> {
        let started = Instant::now();
        Command::new("kill")
            .args(["-TERM", &self.daemon_pid().to_string()])
            .status()
            .map_err(|e| format!("cannot signal the daemon: {e}"))?;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Ok((started.elapsed(), status)),
                Ok(None) if started.elapsed() > limit => {
                    return Err(format!("the daemon still runs {limit:?} after SIGTERM"))
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(format!("cannot wait for the daemon: {e}")),
            }
        }
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // Under a wrapper, killing the wrapper alone would leave the daemon running.
            let daemon = self.daemon_pid();
            if daemon != self.pid() {
                let _ = Command::new("kill")
                    .args(["-KILL", &daemon.to_string()])
                    .status();
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

const DAEMON_BINARY: &str = env!("CARGO_BIN_EXE_upstream-discovery");

/// The PIDs whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|child| child.parse().ok())
        .collect()
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| format!("no free port: {e}"))
}

fn read_usage(pid: u32) -> Result<Usage, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("cannot read /proc/{pid}/status: {e}"))?;
    let kib = |field: &str| -> u64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|value| value.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("cannot read /proc/{pid}/stat: {e}"))?;
    // The fields after the command name (which may hold spaces) in parentheses: utime and stime
    // are the 14th and 15th fields of the line, the 12th and 13th after the closing parenthesis.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |index: usize| -> f64 {
        fields
            .get(index)
            .and_then(|value| value.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok(Usage {
        peak_rss_bytes: kib("VmHWM:") * 1024,
        rss_bytes: kib("VmRSS:") * 1024,
        file_rss_bytes: kib("RssFile:") * 1024,
        cpu_seconds: (ticks(11) + ticks(12)) / clock_ticks_per_second(),
    })
}

fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|output| String::from_utf8(output.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(100.0)
    })
}
