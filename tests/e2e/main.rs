//! End-to-end tests against real servers (DESIGN.md §7): one environment for the whole run,
//! started on first use and stopped by PID when the run ends, each test in its own namespaces.

mod env;
mod environment;
mod support;

use std::future::Future;
use std::sync::{Arc, OnceLock};

use libtest_mimic::{Arguments, Failed, Trial};

use env::TestEnv;

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

/// Runs one async test against the shared environment, starting it on first use.
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
    let args = Arguments::from_args();
    let trials = trials![
        environment::api_server_is_v1_20_2_with_tls,
        environment::crd_applies_and_an_upstream_round_trips_through_kubectl,
        environment::rendered_upstreams_are_accepted_by_the_api_server,
        environment::controller_manager_collects_dependents_of_a_deleted_owner,
        environment::a_token_without_rights_is_refused_with_403,
        environment::a_service_account_has_only_the_rights_it_is_bound_to,
        environment::moto_serves_lambda,
    ];
    let conclusion = libtest_mimic::run(&args, trials);
    if let Some(Ok(env)) = ENV.get() {
        env.stop();
    }
    conclusion.exit();
}
