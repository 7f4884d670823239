//! Killing and restarting one server of this binary's own environment (started by
//! `tests/env/start.sh`) while the others keep running. A server is started again with the very
//! command line it ran with (read from `/proc/PID/cmdline`), so it keeps its port, its data
//! directory and its certificates, and the daemon finds it again at the same address. The new
//! process is added to the environment's `pids` file, so `tests/env/stop.sh` stops it at the end.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::support::wait_until;
use crate::test_env::TestEnv;

/// Servers started again by the tests: reaped at the end of the run (they are our children).
static RESTARTED: Mutex<Vec<Child>> = Mutex::new(Vec::new());

/// A server as `start.sh` names it (its log is `logs/NAME.log`, its binary ends in NAME).
#[derive(Clone, Copy, Debug)]
pub enum Server {
    Etcd,
    KubeApiServer,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Etcd => "etcd",
            Server::KubeApiServer => "kube-apiserver",
        }
    }
}

/// A server that was killed: what it takes to start it again.
pub struct Killed {
    server: Server,
    argv: Vec<String>,
}

/// The arguments a process runs with, or None when it is gone.
fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let argv: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|part| !part.is_empty())
        .map(|part| String::from_utf8_lossy(part).into_owned())
        .collect();
    (!argv.is_empty()).then_some(argv)
}

/// Gone or a zombie (start.sh's servers are reparented, so someone else may reap them late).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => true,
    }
}

fn pids_file(env: &TestEnv) -> PathBuf {
    env.state_dir.join("pids")
}

/// The running process of `server` among the environment's PIDs.
fn running(env: &TestEnv, server: Server) -> (u32, Vec<String>) {
    let pids = std::fs::read_to_string(pids_file(env)).expect("the environment's pids file");
    pids.lines()
        .filter_map(|line| line.trim().parse::<u32>().ok())
        .filter(|pid| !gone(*pid))
        .find_map(|pid| {
            let argv = cmdline(pid)?;
            let binary = Path::new(&argv[0])
                .file_name()?
                .to_string_lossy()
                .into_owned();
            (binary == server.name()).then_some((pid, argv))
        })
        .unwrap_or_else(|| panic!("no running {} in the environment", server.name()))
}

/// SIGKILLs `server` and waits until the process is gone.
pub fn kill(env: &TestEnv, server: Server) -> Killed {
    let (pid, argv) = running(env, server);
    let status = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -KILL {pid} ({})", server.name());
    let started = Instant::now();
    let mut restarted = RESTARTED.lock().expect("lock");
    for child in restarted.iter_mut().filter(|child| child.id() == pid) {
        let _ = child.wait();
    }
    drop(restarted);
    while !gone(pid) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{} (pid {pid}) still there 10 s after SIGKILL",
            server.name()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Killed { server, argv }
}

/// Starts a killed server again with the same command line, its output appended to its log.
pub fn restart(env: &TestEnv, killed: Killed) {
    let log_path = env
        .state_dir
        .join("logs")
        .join(format!("{}.log", killed.server.name()));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .expect("the server's log");
    let child = Command::new(&killed.argv[0])
        .args(&killed.argv[1..])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("start {} again: {e}", killed.server.name()));
    let mut pids = std::fs::OpenOptions::new()
        .append(true)
        .open(pids_file(env))
        .expect("the environment's pids file");
    writeln!(pids, "{}", child.id()).expect("write the pids file");
    RESTARTED.lock().expect("lock").push(child);
}

/// Reaps the servers started again, once `tests/env/stop.sh` has stopped them.
pub fn reap() {
    for mut child in RESTARTED.lock().expect("lock").drain(..) {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// etcd answers its health check.
async fn etcd_healthy(env: &TestEnv) -> Result<(), String> {
    let url = format!("{}/health", env.get("ETCD_URL"));
    let output = tokio::process::Command::new("curl")
        .args(["-fsS", "--max-time", "2", &url])
        .output()
        .await
        .map_err(|e| format!("curl: {e}"))?;
    let body = String::from_utf8_lossy(&output.stdout);
    body.contains("\"health\":\"true\"")
        .then_some(())
        .ok_or_else(|| format!("etcd: {body}{}", String::from_utf8_lossy(&output.stderr)))
}

/// kube-apiserver's `/readyz` answers `ok` (it checks etcd too).
pub async fn api_server_ready(env: &TestEnv) -> Result<(), String> {
    let output = tokio::process::Command::new("curl")
        .args([
            "-fsS",
            "--max-time",
            "2",
            "--cacert",
            env.get("KUBE_CA_FILE"),
            "-H",
            &format!("Authorization: Bearer {}", env.get("KUBE_ADMIN_TOKEN")),
            &format!("{}/readyz", env.get("KUBE_SERVER")),
        ])
        .output()
        .await
        .map_err(|e| format!("curl: {e}"))?;
    let body = String::from_utf8_lossy(&output.stdout);
    (output.status.success() && body.trim() == "ok")
        .then_some(())
        .ok_or_else(|| format!("readyz: {body}{}", String::from_utf8_lossy(&output.stderr)))
}

/// Waits until the API server is ready again after `server` restarted (etcd healthy first, so a
/// `/readyz` the API server has not yet re-checked does not count); returns that instant.
pub async fn wait_ready_after(env: &TestEnv, server: Server) -> Instant {
    if let Server::Etcd = server {
        wait_until("etcd to be healthy again", || etcd_healthy(env)).await;
    }
    wait_until("kube-apiserver to be ready again", || api_server_ready(env)).await;
    Instant::now()
}
