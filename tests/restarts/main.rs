//! Servers dying mid-work (issue 13): kube-apiserver SIGKILLed and started again (etcd kept),
//! etcd SIGKILLed and started again on its data, and the daemon SIGKILLed in the middle of a
//! burst of writes and started again. Each ends in exactly the Upstreams docs/behaviour.md gives
//! (written by hand), an unowned Upstream untouched, and no owned Upstream lost.
//!
//! The tests kill the servers, so this binary has an environment of its own (the end-to-end
//! tests' servers are never touched) and runs its tests one at a time, whatever
//! `--test-threads` says. `UD_RESTARTS_SERVICES` sets the size of the burst (default 500
//! Services of 2 ports: 1,000 writes).

#[allow(dead_code)]
#[path = "../e2e/daemon.rs"]
mod daemon;
#[allow(dead_code)]
#[path = "../e2e/scenario.rs"]
mod scenario;
#[allow(dead_code)]
#[path = "../e2e/support.rs"]
mod support;
#[allow(dead_code)]
#[path = "../e2e/test_env.rs"]
mod test_env;

mod burst;
mod outage;
mod servers;
mod world;

use std::future::Future;
use std::sync::{Arc, OnceLock};

use libtest_mimic::{Arguments, Failed, Trial};

use test_env::TestEnv;

static ENV: OnceLock<Result<Arc<TestEnv>, String>> = OnceLock::new();
static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();

fn runtime() -> &'static tokio::runtime::Runtime {
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

/// Runs one async test against this binary's environment, starting it on first use.
fn run_test<F, Fut>(test: F) -> Result<(), Failed>
where
    F: FnOnce(Arc<TestEnv>) -> Fut,
    Fut: Future<Output = ()>,
{
    let env = ENV.get_or_init(|| TestEnv::start().map(Arc::new)).clone()?;
    runtime().block_on(test(env));
    Ok(())
}

macro_rules! trials {
    ($($module:ident :: $name:ident),* $(,)?) => {
        vec![$(Trial::test(concat!(stringify!($module), "::", stringify!($name)), || run_test($module::$name))),*]
    };
}

fn main() {
    let mut args = Arguments::from_args();
    // Each test kills a server every other test relies on.
    args.test_threads = Some(1);
    let trials = trials![
        outage::kube_apiserver_killed_and_restarted_while_services_change,
        outage::etcd_killed_and_restarted_while_services_change,
        burst::daemon_killed_mid_burst_converges_and_a_restart_writes_nothing,
    ];
    let conclusion = libtest_mimic::run(&args, trials);
    if let Some(Ok(env)) = ENV.get() {
        env.stop();
        // The environment lives in a static, never dropped: its state directory (etcd's data,
        // tens of MB) would outlive the run.
        let _ = std::fs::remove_dir_all(&env.state_dir);
    }
    servers::reap();
    conclusion.exit();
}
