//! End-to-end tests against real servers (docs/development.md): one environment for the whole run,
//! started on first use and stopped by PID when the run ends, each test in its own namespaces.

mod admission;
mod aws_fixture;
mod aws_proxy;
mod aws_selftest;
mod chart;
mod churn;
mod claims;
mod conformance;
// Shared with the other runners of the corpus, each of which uses part of it.
#[allow(dead_code)]
#[path = "../conformance/corpus.rs"]
mod corpus;
mod crd;
mod daemon;
mod diff;
mod discovery;
mod env_selftest;
mod fault_proxy;
mod faults;
mod gloo_pod;
mod grant_lifecycle;
mod grants;
mod health;
mod hostile;
mod lambda;
mod leadership;
mod leaks;
mod observability;
mod proxy_server;
mod rights;
mod scenario;
mod secret_rights;
mod settings;
mod support;
mod test_env;
mod webhook;

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
    let mut args = Arguments::from_args();
    // The tests mostly wait on servers, so more of them than cores can run side by side.
    args.test_threads.get_or_insert(4);
    let mut trials = trials![
        env_selftest::api_server_is_v1_20_2_with_tls,
        env_selftest::crd_applies_and_an_upstream_round_trips_through_kubectl,
        env_selftest::rendered_upstreams_are_accepted_by_the_api_server,
        env_selftest::controller_manager_collects_dependents_of_a_deleted_owner,
        env_selftest::a_token_without_rights_is_refused_with_403,
        env_selftest::a_service_account_has_only_the_rights_it_is_bound_to,
        env_selftest::moto_serves_lambda,
        crd::gloo_objects_with_status_apply_strictly_and_read_back_unchanged,
        crd::an_upstream_created_without_status_reads_back_gloo_s_default_status,
        discovery::services_become_upstreams_and_follow_every_change,
        diff::previews_a_switch_from_gloo_exactly_and_writes_nothing,
        diff::answers_for_two_thousand_services,
        discovery::an_upstream_it_does_not_own_is_left_alone,
        discovery::gloo_written_upstreams_are_adopted_and_user_fields_survive,
        discovery::a_restart_with_nothing_changed_makes_zero_writes,
        discovery::service_mode_upstreams_are_collected_by_kubernetes_while_the_daemon_is_down,
        discovery::only_the_leader_writes_and_a_follower_takes_over,
        discovery::readyz_waits_for_the_first_sync,
        discovery::dry_run_writes_nothing,
        discovery::a_bad_annotation_gives_an_event_and_a_metric_and_loses_nothing,
        discovery::refused_events_are_counted_logged_once_and_discovery_goes_on,
        discovery::switching_to_service_mode_moves_the_upstreams,
        discovery::owned_upstreams_changed_or_deleted_by_hand_are_put_back,
        discovery::a_namespace_selector_scopes_discovery,
        leadership::a_leader_cut_off_from_its_lease_stops_writing_before_another_takes_over,
        leadership::a_leader_paused_past_its_lease_refuses_its_own_writes_on_waking,
        rights::a_refused_service_list_is_reported_once_deletes_nothing_and_recovers,
        rights::refused_writes_are_said_once_counted_and_retried_until_the_right_is_back,
        rights::a_list_right_lost_while_running_deletes_nothing_and_recovers,
        health::readyz_names_a_failing_service_watch_and_recovers,
        health::healthz_fails_while_a_write_hangs,
        hostile::hostile_services_cost_the_normal_ones_nothing_and_are_each_reported_once,
        faults::the_fault_proxy_injects_and_forwards,
        faults::throttled_writes_wait_for_retry_after_and_are_counted,
        faults::server_errors_are_retried_with_backoff_without_holding_up_others,
        faults::a_conflict_makes_the_daemon_replan,
        faults::dropped_watches_are_reestablished_and_a_relist_collects,
        faults::a_watch_stalled_without_an_end_is_renewed_at_the_watch_timeout,
        faults::a_watch_stalled_without_an_end_is_renewed_after_the_silence_limit,
        faults::a_burst_far_above_the_write_rate_is_written_whole_with_every_watch_kept,
        faults::a_service_deleted_during_its_write_is_collected,
        claims::a_create_never_merges_into_an_object_the_cache_has_not_seen,
        churn::rss_stays_flat_over_rounds_of_services_created_and_deleted,
        lambda::functions_of_an_account_are_listed_in_gloo_order,
        lambda::the_list_follows_changes_and_an_unchanged_account_writes_nothing,
        lambda::upstreams_on_one_account_share_a_sweep,
        lambda::credential_problems_and_throttling_are_reported_and_lose_nothing,
        lambda::irsa_mode_lists_with_the_upstreams_role_or_the_pods,
        lambda::without_irsa_role_arn_is_ignored_and_the_sdk_region_fills_in,
        lambda::opted_out_upstreams_are_left_alone,
        lambda::aliases_are_listed_for_changed_functions_only,
        lambda::failed_writes_are_retried_and_a_deleted_upstream_stays_deleted,
        lambda::sweeps_of_one_account_share_its_rate_limit,
        chart::default_values_apply_server_side_and_grant_only_what_the_daemon_needs,
        chart::service_mode_with_lambda_and_replicas_applies_and_grants_upstreams_and_secrets,
        chart::the_daemon_with_the_charts_arguments_and_token_discovers_a_service,
        secret_rights::only_the_listed_secret_names_are_readable_and_others_are_reported,
        secret_rights::a_namespace_scoped_role_reads_secrets_there_only,
        secret_rights::no_secret_rights_with_web_identity_still_discover,
        observability::dashboard_queries_and_alert_rules_work_on_a_real_prometheus,
        aws_selftest::the_lambda_proxy_pages_and_injects_faults,
        settings::gloo_pod_with_gloo_rbac_runs_from_settings,
        settings::settings_changes_apply_while_running,
        settings::gloo_defaulting_of_fds_mode,
        settings::no_settings_means_flags_and_defaults,
        settings::namespace_selectors_and_flags_given_on_the_command_line,
        grants::each_namespace_gets_grants_for_exactly_its_own_upstreams,
        grants::an_unlabelled_grant_of_the_same_name_is_left_alone,
        grants::a_restart_with_nothing_changed_writes_no_grant,
        grant_lifecycle::a_grant_is_owned_by_its_upstream_and_goes_with_it_while_the_daemon_is_down,
        grant_lifecycle::grants_left_in_an_earlier_write_namespace_are_collected,
        grant_lifecycle::render_and_diff_show_the_grants,
        grants::off_by_default_writes_none_and_needs_no_rights,
        grants::without_the_crd_one_warning_a_metric_and_upstreams_converge,
        admission::a_refused_delete_is_reported_once_retried_with_backoff_and_collected_once_allowed,
        admission::refused_creates_and_updates_are_reported_and_hold_nothing_else_back,
        admission::a_webhook_that_times_out_or_is_down_is_unavailable_and_recovers,
    ];
    // The conformance corpus, one trial per case file (tests/conformance/README.md).
    trials.extend(conformance::trials(conformance::Crd::Ours, |_| true));
    let conclusion = libtest_mimic::run(&args, trials);
    if let Some(Ok(env)) = ENV.get() {
        env.stop();
        // The environment lives in a static, never dropped: its state directory (etcd's data)
        // would outlive the run.
        let _ = std::fs::remove_dir_all(&env.state_dir);
    }
    conclusion.exit();
}
