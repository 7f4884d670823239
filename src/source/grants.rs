//! The ReferenceGrants of the write namespace (`--reference-grants`). Gateway API's CRD may not
//! be installed: the stream then says so once and looks again every [`CRD_RECHECK`] (API
//! discovery, which every authenticated client may read), and starts the watch once it is
//! served, so that Upstream discovery never waits for it and readiness never fails over it.

use std::time::Duration;

use futures::stream::{self, BoxStream, StreamExt};
use kube::{Api, Client};

use super::read_ahead::read_ahead;
use super::{watch, watch_config, ServiceInput};
use crate::crd::ReferenceGrant;
use crate::health::LoopHealth;
use crate::metrics::WatchResource;
use crate::model::Scope;

/// How often a missing ReferenceGrant CRD is looked for again.
pub const CRD_RECHECK: Duration = Duration::from_secs(30);
/// How soon after a failed look (server away, not an answer) it is tried again.
const RETRY: Duration = Duration::from_secs(5);
const GROUP_VERSION: &str = "gateway.networking.k8s.io/v1beta1";
const PLURAL: &str = "referencegrants";

/// The grants of each of `namespaces` (the write namespace, then earlier ones):
/// [`ServiceInput::GrantsUnavailable`] once while the CRD is missing, then the events of one
/// watch per namespace (read ahead of the loop, as its other streams are).
pub fn grant_inputs(
    client: &Client,
    namespaces: &[String],
    watch_timeout: Duration,
    health: &LoopHealth,
) -> BoxStream<'static, ServiceInput> {
    let probe = client.clone();
    let wait = stream::unfold(
        (probe, false, true),
        |(client, reported, first)| async move {
            let mut first = first;
            loop {
                if !first {
                    tokio::time::sleep(if reported { CRD_RECHECK } else { RETRY }).await;
                }
                first = false;
                match served(&client).await {
                    Ok(true) => return None,
                    Ok(false) if !reported => {
                        return Some((ServiceInput::GrantsUnavailable, (client, true, false)))
                    }
                    Ok(false) => {}
                    Err(error) => {
                        tracing::debug!(%error, "cannot tell whether ReferenceGrants are served yet; looking again");
                    }
                }
            }
        },
    );
    let watches: Vec<_> = namespaces
        .iter()
        .map(|namespace| {
            let api: Api<ReferenceGrant> = Api::namespaced(client.clone(), namespace);
            let health = health.stream(format!("referencegrants in {namespace}"));
            let scope = Scope::Namespace(namespace.clone());
            watch(
                api,
                watch_config(watch_timeout),
                vec![health],
                WatchResource::ReferenceGrants,
                move |event| ServiceInput::Grant(scope.clone(), event),
                ServiceInput::WatchError,
            )
        })
        .collect();
    // Built at once (the streams are lazy): nothing is listed before the CRD is served.
    let watch_once = stream::select_all(watches);
    read_ahead(wait.chain(watch_once).boxed())
}

/// Whether the API server serves `referencegrants` in `gateway.networking.k8s.io/v1beta1`.
async fn served(client: &Client) -> Result<bool, kube::Error> {
    match client.list_api_group_resources(GROUP_VERSION).await {
        Ok(list) => Ok(list
            .resources
            .iter()
            .any(|resource| resource.name == PLURAL)),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(error) => Err(error),
    }
}
