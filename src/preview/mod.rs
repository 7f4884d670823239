//! `diff` and `explain`: read-only previews of what `run` does, from its own parts. `cluster`
//! takes one look at the cluster as `run` would at start (connection, Settings, scopes, its
//! cache fed by paged lists); `diff` plans every Service with the daemon's planner; `explain`
//! says, from translation's own trace, which rule set each field of a Service's Upstreams.
//! Nothing here writes: no apply, no Event, no Lease.

pub mod cluster;
pub mod diff;
pub mod explain;
pub mod grants;

use std::fmt::Write as _;

use crate::config::RunArgs;
use diff::Report;

/// Why a preview could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error("cannot configure the Kubernetes client: {0}")]
    KubeConfig(#[from] kube::config::InferConfigError),
    #[error("cannot connect to Kubernetes: {0}")]
    Kubernetes(#[from] kube::Error),
    #[error("cannot list {what}: {source}")]
    List { what: String, source: kube::Error },
    #[error("cannot read {what}: {source}")]
    Get { what: String, source: kube::Error },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Input(#[from] crate::render::RenderError),
    #[error("expected NAMESPACE/SERVICE, got {0:?}")]
    ServiceName(String),
    #[error("no Service {0}")]
    NoService(String),
    #[error("name a Service (NAMESPACE/SERVICE) or give -f FILE")]
    NothingToExplain,
    #[error("cannot write JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// One `diff` pass: connects, lists, plans. Writes nothing.
pub async fn diff(args: &RunArgs) -> Result<Report, PreviewError> {
    let connected = cluster::connect(args).await?;
    let discovery = &connected.discovery;
    if !discovery.uds_enabled {
        let mut notes = connected.notes;
        notes.push(
            "Service discovery is off (udsOptions.enabled / --uds-enabled false): run writes no Service Upstreams"
                .to_string(),
        );
        return Ok(Report::without_service_discovery(
            &discovery.translate,
            notes,
        ));
    }
    let grants = match (
        args.grant_settings(),
        discovery.scopes.fixed_write_namespace(),
    ) {
        (Some(grants), Some(_)) => Some(grants),
        _ => None,
    };
    let mut snapshot = cluster::snapshot(&connected.client, discovery).await?;
    let mut notes = connected.notes;
    notes.push(format!(
        "listed {} Services and {} Upstreams",
        snapshot.services_listed, snapshot.upstreams_listed
    ));
    if grants.is_some() {
        notes.push(cluster::add_grants(&connected.client, discovery, &mut snapshot).await?);
    }
    Ok(diff::build(
        &snapshot,
        &discovery.translate,
        grants.as_ref(),
        notes,
    ))
}

/// The report for people: grouped, then one summary line.
pub fn diff_text(report: &Report) -> String {
    let mut out = String::new();
    for note in &report.notes {
        let _ = writeln!(out, "# {note}");
    }
    if !report.create.is_empty() {
        let _ = writeln!(out, "\nTo create ({}):", report.create.len());
        for create in &report.create {
            let _ = writeln!(
                out,
                "  + {}/{} (Service {})",
                create.namespace, create.name, create.service
            );
        }
    }
    if !report.update.is_empty() {
        let _ = writeln!(out, "\nTo update ({}):", report.update.len());
        for update in &report.update {
            let _ = write!(
                out,
                "  ~ {}/{} (Service {}): {}",
                update.namespace, update.name, update.service, update.reason
            );
            if update.only_deliberate {
                let _ = write!(
                    out,
                    " [only a deliberate difference from Gloo: {}]",
                    update.deliberate.join(", ")
                );
            } else if !update.deliberate.is_empty() {
                let _ = write!(
                    out,
                    " [with a deliberate difference from Gloo: {}]",
                    update.deliberate.join(", ")
                );
            }
            out.push('\n');
            for line in update.diff.lines() {
                let _ = writeln!(out, "      {line}");
            }
        }
    }
    if !report.delete.is_empty() {
        let _ = writeln!(out, "\nTo delete ({}):", report.delete.len());
        for delete in &report.delete {
            let _ = writeln!(
                out,
                "  - {}/{}: {}",
                delete.namespace, delete.name, delete.reason
            );
        }
    }
    if !report.left_alone.is_empty() {
        let _ = writeln!(out, "\nLeft alone ({}):", report.left_alone.len());
        for left in &report.left_alone {
            let _ = match &left.service {
                Some(service) => writeln!(
                    out,
                    "  = {}/{} (wanted by Service {service}): {} ({})",
                    left.namespace, left.name, left.message, left.reason
                ),
                None => writeln!(
                    out,
                    "  = {}/{}: {} ({})",
                    left.namespace, left.name, left.message, left.reason
                ),
            };
        }
    }
    if !report.warnings.is_empty() {
        let _ = writeln!(
            out,
            "\nAnnotations ignored ({}; the Upstreams are written without them):",
            report.warnings.len()
        );
        for warning in &report.warnings {
            let _ = writeln!(
                out,
                "  ! Service {}: {} ({})",
                warning.service, warning.message, warning.reason
            );
        }
    }
    if let Some(grants) = &report.grants {
        grants.write_text(&mut out);
    }
    if !report.has_changes() {
        let _ = writeln!(out, "\nNothing to do: run would write nothing.");
    }
    let summary = &report.summary;
    let deliberate = match summary.update_only_deliberate {
        0 => String::new(),
        n => format!(" ({n} only deliberate differences from Gloo)"),
    };
    let _ = writeln!(
        out,
        "\n{} to create, {} to update{deliberate}, {} to delete, {} unchanged, {} left alone",
        summary.create, summary.update, summary.delete, summary.unchanged, summary.left_alone
    );
    if let Some(grants) = &report.grants {
        let _ = writeln!(
            out,
            "ReferenceGrants: {} to create, {} to update, {} to delete, {} unchanged",
            grants.create.len(),
            grants.update.len(),
            grants.delete.len(),
            grants.unchanged
        );
    }
    out
}
