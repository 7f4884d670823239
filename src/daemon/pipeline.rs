//! One run of the discovery loops for one configuration: started from a [`Discovery`], stopped
//! as a whole when the configuration changes or the daemon shuts down.

use std::num::NonZeroU32;
use std::time::Duration;

use futures::StreamExt;
use kube::Client;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::apply::Applier;
use crate::config::{Discovery, FdsMode, RunArgs, Scopes};
use crate::events::EventSink;
use crate::health::{Health, Loop, LoopHealth};
use crate::lambda::engine::{LambdaConfig, LambdaEngine};
use crate::metrics::Metrics;
use crate::model::Scope;
use crate::reconcile::{Fence, LeaderGate};
use crate::services::state::State;
use crate::services::{Engine, EngineConfig};
use crate::source::{self, UpstreamScopes};

/// Time the loops get to finish their writes in flight when they are stopped (service
/// discovery drains for 2 s of it), so that a shutdown stays under 5 s.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// What every run shares: the connection, the writer and its rate limit, the Events, the
/// metrics, readiness and leadership.
#[derive(Clone)]
pub struct Shared {
    pub client: Client,
    pub applier: Applier,
    pub events: EventSink,
    pub metrics: Metrics,
    pub health: Health,
    pub is_leader: tokio::sync::watch::Receiver<bool>,
    pub fence: Fence,
}

impl Shared {
    pub fn new(
        client: Client,
        args: &RunArgs,
        events: EventSink,
        metrics: Metrics,
        health: Health,
        is_leader: tokio::sync::watch::Receiver<bool>,
        fence: Fence,
    ) -> Self {
        let applier = Applier::new(
            client.clone(),
            NonZeroU32::new(args.kube_api_qps).unwrap_or(NonZeroU32::MIN),
            NonZeroU32::new(args.kube_api_burst).unwrap_or(NonZeroU32::MIN),
            args.dry_run,
            fence.clone(),
        );
        Self {
            client,
            applier,
            events,
            metrics,
            health,
            is_leader,
            fence,
        }
    }
}

/// The loops of one configuration, running.
pub struct Pipeline {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Pipeline {
    /// Starts service discovery and function discovery as `discovery` turns them on, watching
    /// the Upstreams of `scopes` (the configuration's, plus where an earlier one wrote).
    pub fn start(
        args: &RunArgs,
        discovery: &Discovery,
        scopes: &Scopes,
        shared: &Shared,
        stop: CancellationToken,
    ) -> Self {
        tracing::info!(
            services = ?scopes.services,
            upstreams = ?scopes.upstreams,
            write_namespace = ?scopes.write_namespace,
            service_selector = discovery.service_selector.as_str(),
            namespace_selector = scopes.namespace_selector.as_str(),
            global_annotations = ?discovery.translate.global_annotations,
            uds_enabled = discovery.uds_enabled,
            fds_mode = ?discovery.fds_mode,
            dry_run = args.dry_run,
            "starting discovery"
        );
        let mut tasks = Vec::new();
        // Each loop that runs gets a fresh health record (unsynced, no failing stream); one
        // that does not run no longer counts.
        let functions_health = (discovery.fds_mode != FdsMode::Disabled)
            .then(|| shared.health.register(Loop::Functions));
        if functions_health.is_none() {
            shared.health.unregister(Loop::Functions);
        }
        let services_health = discovery
            .uds_enabled
            .then(|| shared.health.register(Loop::Services));
        if services_health.is_none() {
            // Upstreams already written stay: turning discovery off is not a reason to delete.
            shared.health.unregister(Loop::Services);
        }
        // Both loops are fed from one Upstream stream.
        let loop_healths: Vec<&LoopHealth> = services_health
            .iter()
            .chain(functions_health.iter())
            .collect();
        let upstreams = source::upstream_inputs(
            &shared.client,
            UpstreamScopes {
                services: services_health
                    .as_ref()
                    .map(|_| scopes.upstreams.as_slice()),
                functions: functions_health
                    .as_ref()
                    .map(|_| scopes.function_upstreams.as_slice()),
            },
            args.watch_timeout,
            &loop_healths,
        );
        if let (Some(health), Some(upstreams)) = (functions_health, upstreams.functions) {
            let mut config = LambdaConfig::from(&args.lambda);
            config.mode = discovery.fds_mode;
            let lambda = LambdaEngine::new(
                config,
                shared.client.clone(),
                &scopes.function_upstreams,
                shared.applier.clone(),
                shared.metrics.clone(),
                shared.events.clone(),
                LeaderGate::new(shared.is_leader.clone(), shared.fence.clone()),
            );
            let inputs =
                source::lambda_inputs(&shared.client, upstreams, args.watch_timeout, &health);
            tasks.push(tokio::spawn(lambda.run(inputs, health, stop.clone())));
        }
        if let (Some(health), Some(upstreams)) = (services_health, upstreams.services) {
            let mut inputs = source::service_inputs(
                &shared.client,
                scopes,
                &discovery.service_selector,
                upstreams,
                args.watch_timeout,
                &health,
            );
            let mut state = State::new(
                &scopes.services,
                &scopes.upstreams,
                scopes.namespace_selector.clone(),
                discovery.translate.write_namespace.clone(),
            );
            let grants = match (args.grant_settings(), scopes.fixed_write_namespace()) {
                (Some(grants), Some(namespace)) => {
                    // The write namespace first, then those an earlier configuration wrote to
                    // (their Upstreams are watched for the same reason).
                    let mut namespaces = vec![namespace.to_string()];
                    namespaces.extend(scopes.upstreams.iter().filter_map(|scope| match scope {
                        Scope::Namespace(other) if other != namespace => Some(other.clone()),
                        _ => None,
                    }));
                    state.enable_grants(&namespaces);
                    let grant_inputs = source::grant_inputs(
                        &shared.client,
                        &namespaces,
                        args.watch_timeout,
                        &health,
                    );
                    inputs = futures::stream::select(inputs, grant_inputs).boxed();
                    Some(grants)
                }
                (Some(_), None) => {
                    // Each Upstream sits beside its Service: routes there need no grant.
                    tracing::warn!(
                        "--reference-grants is ignored with --write-namespace-mode=service"
                    );
                    None
                }
                (None, _) => None,
            };
            let engine = Engine::new(
                EngineConfig {
                    translate: discovery.translate.clone(),
                    grants,
                    resync_interval: args.resync_interval,
                    write_concurrency: usize::try_from(args.write_concurrency).unwrap_or(1).max(1),
                },
                state,
                shared.applier.clone(),
                shared.metrics.clone(),
                shared.events.clone(),
                health,
                LeaderGate::new(shared.is_leader.clone(), shared.fence.clone()),
            );
            tasks.push(tokio::spawn(engine.run(inputs, stop.clone())));
        }
        Self { stop, tasks }
    }

    /// Stops the loops and waits (bounded) for their writes in flight.
    pub async fn stop(self) {
        self.stop.cancel();
        let aborts: Vec<_> = self.tasks.iter().map(JoinHandle::abort_handle).collect();
        let stopped = futures::future::join_all(self.tasks);
        if tokio::time::timeout(STOP_TIMEOUT, stopped).await.is_err() {
            // A loop that outlived its configuration would write by the old one.
            tracing::warn!("a discovery loop did not stop in time; it is aborted");
            for abort in aborts {
                abort.abort();
            }
        }
    }
}
