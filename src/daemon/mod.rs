//! `upstream-discovery run`: wires the sources, the engines, the writer, the metrics endpoint
//! and leader election together, restarts the discovery loops when Gloo's Settings change
//! (`follow`, `pipeline`), and shuts everything down cleanly on SIGTERM.

mod follow;
mod pipeline;

use std::time::Duration;

use futures::stream::{self, BoxStream, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::config::RunArgs;
use crate::events::EventSink;
use crate::health::{Health, HealthLimits};
use crate::http;
use crate::leader::{Leadership, Timing};
use crate::metrics::Metrics;
use crate::source::settings::{self, SettingsUpdate};
use crate::source::SilenceLayer;
use follow::{Follower, Step};
use pipeline::{Pipeline, Shared};

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
    #[error("leader election: {0}")]
    Leader(#[from] crate::leader::TimingError),
    #[error("cannot listen for signals: {0}")]
    Signals(std::io::Error),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// Runs the daemon until SIGTERM or SIGINT; `serve_http` off (Gloo's `START_STATS_SERVER`
/// false) serves no `/metrics`, `/healthz` or `/readyz`.
pub async fn run(args: RunArgs, serve_http: bool) -> Result<(), DaemonError> {
    let pod_namespace = std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|ns| !ns.is_empty());
    let identity = std::env::var("POD_NAME")
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| format!("upstream-discovery-{}", std::process::id()));
    // Flags that turn both discoveries off leave Settings nothing to change: refuse at once,
    // before connecting anywhere.
    if !args.read_settings
        || (args.given.contains("uds_enabled") && args.given.contains("fds_mode"))
    {
        args.discovery(pod_namespace.as_deref(), None)?;
    }
    // Settings and the Lease live in the daemon's own namespace, which Settings cannot move.
    let own_namespace = args.scopes(pod_namespace.as_deref()).own_namespace;

    let mut config = kube::Config::infer().await?;
    // kube-rs would otherwise retry 429/503/504 inside a single call, unseen: the engine retries
    // them itself, with its backoff and Retry-After, and counts them.
    config.default_retry = false;
    let metrics = Metrics::new()?;
    let client = kube::client::ClientBuilder::try_from(config)?
        .with_layer(&SilenceLayer::new(args.watch_silence, metrics.clone()))
        .build();
    let health = Health::new(HealthLimits {
        stall_timeout: args.stall_timeout,
        watch_grace: args.watch_grace,
    });
    let shutdown = CancellationToken::new();

    // Up first, so that probes get an answer while Settings are read.
    let http_task = if serve_http {
        Some(serve_http_endpoints(&args, &metrics, &health, &shutdown).await?)
    } else {
        tracing::info!("START_STATS_SERVER is off: no /metrics, /healthz or /readyz");
        None
    };

    let (mut follower, mut updates) = if args.read_settings {
        let first = settings::first_read(&client, &own_namespace, &args.settings_name).await;
        let follower = Follower::start(
            args.clone(),
            pod_namespace.clone(),
            metrics.clone(),
            first,
            &args.settings_name,
            &own_namespace,
        )?;
        let updates = settings::updates(&client, &own_namespace, &args.settings_name);
        (follower, updates)
    } else {
        let follower = Follower::without_settings(args.clone(), pod_namespace, metrics.clone())?;
        let none: BoxStream<'static, SettingsUpdate> = stream::pending().boxed();
        (follower, none)
    };

    let leadership = if args.leader_elect {
        tracing::info!(namespace = %own_namespace, lease = %args.lease_name, %identity, "competing for leadership");
        let timing = Timing {
            lease_duration: args.lease_duration,
            renew_deadline: args.renew_deadline,
            retry_period: args.retry_period,
        }
        .checked()?;
        Leadership::elect(
            client.clone(),
            &own_namespace,
            &args.lease_name,
            &identity,
            timing,
        )
    } else {
        Leadership::always()
    };
    let events = if args.dry_run {
        EventSink::log_only()
    } else {
        EventSink::start(client.clone(), identity.clone(), metrics.clone())
    };
    let shared = Shared::new(
        client,
        &args,
        events,
        metrics,
        health,
        leadership.is_leader.clone(),
        leadership.fence.clone(),
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

    loop {
        let scopes = follower
            .current()
            .scopes
            .clone()
            .collecting_from(follower.earlier_write_namespaces());
        let running = Pipeline::start(
            &args,
            follower.current(),
            &scopes,
            &shared,
            shutdown.child_token(),
        );
        let restart = loop {
            tokio::select! {
                _ = shutdown.cancelled() => break false,
                update = updates.next() => match update.map(|update| follower.on_update(update)) {
                    Some(Step::Restart(_)) => break true,
                    Some(Step::Keep) => {}
                    None => {
                        // The watch stream never ends on its own; if it does, the running
                        // configuration simply stays.
                        updates = stream::pending().boxed();
                    }
                },
            }
        };
        running.stop().await;
        if !restart {
            break;
        }
        tracing::info!("Settings changed: discovery starts over with the new configuration");
    }

    leadership.release(RELEASE_TIMEOUT).await;
    if let Some(task) = http_task {
        let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Binds `--metrics-addr` and serves `/metrics`, `/healthz` and `/readyz` until `shutdown`.
async fn serve_http_endpoints(
    args: &RunArgs,
    metrics: &Metrics,
    health: &Health,
    shutdown: &CancellationToken,
) -> Result<tokio::task::JoinHandle<Result<(), http::HttpError>>, DaemonError> {
    let listen_error = |source| DaemonError::Listen {
        addr: args.metrics_addr,
        source,
    };
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .map_err(listen_error)?;
    let bound = listener.local_addr().map_err(listen_error)?;
    tracing::info!(%bound, "serving /metrics, /healthz and /readyz");
    Ok(tokio::spawn(http::serve(
        listener,
        metrics.clone(),
        health.clone(),
        shutdown.clone(),
    )))
}
