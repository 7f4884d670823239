//! `upstream-discovery run`: wires the sources, the engine, the writer, the metrics endpoint
//! and leader election together, and shuts them down cleanly on SIGTERM.

use std::num::NonZeroU32;
use std::time::Duration;

use kube::Client;
use tokio_util::sync::CancellationToken;

use crate::apply::Applier;
use crate::config::{FdsMode, RunArgs};
use crate::events::EventSink;
use crate::http::{self, Health};
use crate::lambda::engine::{LambdaConfig, LambdaEngine};
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::reconcile::LeaderGate;
use crate::services::state::State;
use crate::services::{Engine, EngineConfig};
use crate::source;

/// Time the lease gets to be handed back at shutdown (the whole exit stays under 5 s).
const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot connect to Kubernetes: {0}")]
    Kubernetes(#[from] kube::Error),
    #[error("cannot configure the Kubernetes client: {0}")]
    KubeConfig(#[from] kube::config::InferConfigError),
    #[error("cannot set up metrics: {0}")]
    Metrics(#[from] crate::metrics::MetricsError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Leader(#[from] crate::leader::LeaderError),
    #[error("cannot listen for signals: {0}")]
    Signals(std::io::Error),
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(args: RunArgs) -> Result<(), DaemonError> {
    let pod_namespace = std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|ns| !ns.is_empty());
    let settings = args.translation.settings(pod_namespace.as_deref());
    let scopes = args.scopes(pod_namespace.as_deref());
    let identity = std::env::var("POD_NAME")
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| format!("upstream-discovery-{}", std::process::id()));

    let mut config = kube::Config::infer().await?;
    // kube-rs would otherwise retry 429/503/504 inside a single call, unseen: the engine retries
    // them itself, with its backoff and Retry-After, and counts them.
    config.default_retry = false;
    let client = Client::try_from(config)?;
    let metrics = Metrics::new()?;
    let health = Health::new();
    let shutdown = CancellationToken::new();

    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .map_err(|source| DaemonError::Listen {
            addr: args.metrics_addr,
            source,
        })?;
    let bound = listener
        .local_addr()
        .map_err(|source| DaemonError::Listen {
            addr: args.metrics_addr,
            source,
        })?;
    tracing::info!(%bound, "serving /metrics, /healthz and /readyz");
    let http_task = tokio::spawn(http::serve(
        listener,
        metrics.clone(),
        health.clone(),
        shutdown.clone(),
    ));

    let leadership = if args.leader_elect {
        tracing::info!(namespace = %scopes.own_namespace, lease = %args.lease_name, %identity, "competing for leadership");
        Leadership::elect(
            client.clone(),
            &scopes.own_namespace,
            &args.lease_name,
            &identity,
        )
        .await?
    } else {
        Leadership::always()
    };

    tracing::info!(
        services = ?scopes.services,
        upstreams = ?scopes.upstreams,
        write_namespace = ?scopes.write_namespace,
        dry_run = args.dry_run,
        "starting discovery"
    );
    let inputs = source::service_inputs(&client, &scopes, &args.translation.service_selector);
    let state = State::new(
        &scopes.services,
        &scopes.upstreams,
        scopes.namespace_selector.clone(),
        settings.write_namespace.clone(),
    );
    let applier = Applier::new(
        client.clone(),
        NonZeroU32::new(args.kube_api_qps).unwrap_or(NonZeroU32::MIN),
        NonZeroU32::new(args.kube_api_burst).unwrap_or(NonZeroU32::MIN),
        args.dry_run,
    );
    let events = if args.dry_run {
        EventSink::log_only()
    } else {
        EventSink::start(client.clone(), identity.clone(), metrics.clone())
    };
    let engine_config = EngineConfig {
        translate: settings,
        resync_interval: args.resync_interval,
        write_concurrency: usize::try_from(args.write_concurrency).unwrap_or(1).max(1),
    };
    // Function discovery: a loop of its own beside service discovery, sharing the writer (and
    // its rate limit), the metrics, the Events and the leadership.
    let lambda_task = (args.lambda.fds_mode != FdsMode::Disabled).then(|| {
        let lambda = LambdaEngine::new(
            LambdaConfig::from(&args.lambda),
            client.clone(),
            &scopes.function_upstreams,
            applier.clone(),
            metrics.clone(),
            events.clone(),
            LeaderGate::new(leadership.is_leader.clone()),
        );
        let inputs = source::lambda_inputs(&client, &scopes.function_upstreams);
        tokio::spawn(lambda.run(inputs, shutdown.clone()))
    });
    let engine = Engine::new(
        engine_config,
        state,
        applier,
        metrics,
        events,
        health,
        LeaderGate::new(leadership.is_leader.clone()),
    );

    let signals = shutdown.clone();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(DaemonError::Signals)?;
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        }
        signals.cancel();
    });

    engine.run(inputs, shutdown.clone()).await;
    shutdown.cancel();
    if let Some(task) = lambda_task {
        let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
    }
    leadership.release(RELEASE_TIMEOUT).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), http_task).await;
    tracing::info!("stopped");
    Ok(())
}
