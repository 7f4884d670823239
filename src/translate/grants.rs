//! Pure: the ReferenceGrant kept beside each discovered Upstream with `--reference-grants`
//! (issue 16). One grant per Upstream, of the Upstream's name, in the write namespace: it lets
//! the routes of the configured kinds in the Service's own namespace (and the namespaces its
//! `upstream-discovery.io/route-namespaces` annotation adds) refer to exactly that Upstream.
//!
//! One grant per Upstream rather than per source namespace: `to` names a single Upstream, so a
//! namespace can never reach another team's Upstream through it, and the grant goes with its
//! Upstream. Its `from` holds at most 16 entries (the API's limit), one per route kind and
//! namespace: the Service's own namespace always fits, and annotated namespaces beyond the limit
//! are left out with a warning.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::{identity, TranslateWarning};
use crate::crd::{
    ReferenceGrant, ReferenceGrantFrom, ReferenceGrantSpec, ReferenceGrantTo, Upstream,
};
use crate::model::{DISCOVERED_BY_LABEL, KUBERNETES_PLUGIN};

/// Service annotation: more namespaces whose routes may use the Service's Upstreams (`a,b`).
pub const ROUTE_NAMESPACES_ANNOTATION: &str = "upstream-discovery.io/route-namespaces";

/// The most entries of a ReferenceGrant's `from` (and `to`), in Gateway API's schema.
pub const MAX_GRANT_ENTRIES: usize = 16;

/// Group of every route kind that may refer to an Upstream.
pub const ROUTE_GROUP: &str = "gateway.networking.k8s.io";

/// Gateway API's route kinds, the `from` of a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RouteKind {
    HttpRoute,
    GrpcRoute,
    TcpRoute,
    TlsRoute,
    UdpRoute,
}

impl RouteKind {
    pub const ALL: [RouteKind; 5] = [
        RouteKind::HttpRoute,
        RouteKind::GrpcRoute,
        RouteKind::TcpRoute,
        RouteKind::TlsRoute,
        RouteKind::UdpRoute,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RouteKind::HttpRoute => "HTTPRoute",
            RouteKind::GrpcRoute => "GRPCRoute",
            RouteKind::TcpRoute => "TCPRoute",
            RouteKind::TlsRoute => "TLSRoute",
            RouteKind::UdpRoute => "UDPRoute",
        }
    }
}

impl fmt::Display for RouteKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RouteKind {
    type Err = String;

    /// The kind exactly as Gateway API spells it (`HTTPRoute`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| {
                let known: Vec<&str> = Self::ALL.iter().map(|kind| kind.as_str()).collect();
                format!(
                    "{text:?} is not a Gateway API route kind ({})",
                    known.join(", ")
                )
            })
    }
}

/// What `--reference-grants` asks for: grants from routes of these kinds (at least one, no
/// duplicates, in the order given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantSettings {
    pub kinds: Vec<RouteKind>,
}

impl GrantSettings {
    pub fn new(kinds: &[RouteKind]) -> Self {
        let mut unique: Vec<RouteKind> = Vec::new();
        for kind in kinds {
            if !unique.contains(kind) {
                unique.push(*kind);
            }
        }
        if unique.is_empty() {
            unique.push(RouteKind::HttpRoute);
        }
        Self { kinds: unique }
    }
}

/// The namespaces whose routes may use `service`'s Upstreams: its own first, then those of its
/// annotation (trimmed, deduplicated, sorted), as many as `from`'s 16 entries hold with one
/// entry per kind; with a warning for each entry that is not a namespace name and for those
/// left out.
pub fn route_namespaces(
    service: &Service,
    settings: &GrantSettings,
) -> (Vec<String>, Vec<TranslateWarning>) {
    let (own, _) = identity(service);
    let mut warnings = Vec::new();
    let mut extra: Vec<String> = Vec::new();
    let annotation = service
        .metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(ROUTE_NAMESPACES_ANNOTATION));
    for entry in annotation.into_iter().flat_map(|value| value.split(',')) {
        let entry = entry.trim();
        if entry.is_empty() || entry == own {
            continue;
        }
        if !is_dns1123_label(entry) {
            warnings.push(TranslateWarning::InvalidRouteNamespace {
                value: entry.to_string(),
            });
            continue;
        }
        extra.push(entry.to_string());
    }
    extra.sort();
    extra.dedup();
    let room = (MAX_GRANT_ENTRIES / settings.kinds.len().max(1)).max(1) - 1;
    if extra.len() > room {
        let dropped = extra.split_off(room);
        warnings.push(TranslateWarning::TooManyRouteNamespaces {
            kinds: settings.kinds.len(),
            dropped,
        });
    }
    let mut namespaces = vec![own];
    namespaces.extend(extra);
    (
        namespaces,
        warnings
            .into_iter()
            .map(TranslateWarning::bounded)
            .collect(),
    )
}

/// The grant kept for `upstream` (a discovered Upstream in the write namespace): routes of each
/// kind in each of `namespaces` may refer to it, and to nothing else. With the Upstream's uid
/// (`owner_uid`, known once it exists) the grant names it as its owner, so that Kubernetes's
/// garbage collector removes the grant with its Upstream even while the daemon is down;
/// `blockOwnerDeletion` stays unset, so deleting the Upstream never waits for the grant.
pub fn desired_grant(
    upstream: &Upstream,
    owner_uid: Option<&str>,
    namespaces: &[String],
    settings: &GrantSettings,
) -> ReferenceGrant {
    let from = namespaces
        .iter()
        .flat_map(|namespace| {
            settings.kinds.iter().map(move |kind| ReferenceGrantFrom {
                group: ROUTE_GROUP.to_string(),
                kind: kind.as_str().to_string(),
                namespace: namespace.clone(),
            })
        })
        .take(MAX_GRANT_ENTRIES)
        .collect();
    let to = vec![ReferenceGrantTo {
        group: "gloo.solo.io".to_string(),
        kind: "Upstream".to_string(),
        name: upstream.metadata.name.clone(),
    }];
    let owner_references = owner_uid.map(|uid| {
        vec![OwnerReference {
            api_version: "gloo.solo.io/v1".to_string(),
            kind: "Upstream".to_string(),
            name: upstream.metadata.name.clone().unwrap_or_default(),
            uid: uid.to_string(),
            ..Default::default()
        }]
    });
    ReferenceGrant {
        metadata: ObjectMeta {
            name: upstream.metadata.name.clone(),
            namespace: upstream.metadata.namespace.clone(),
            labels: Some(BTreeMap::from([(
                DISCOVERED_BY_LABEL.to_string(),
                KUBERNETES_PLUGIN.to_string(),
            )])),
            owner_references,
            ..Default::default()
        },
        spec: ReferenceGrantSpec { from, to },
    }
}

/// A namespace name: at most 63 of `a-z`, `0-9` and `-`, starting and ending alphanumeric.
fn is_dns1123_label(text: &str) -> bool {
    let bytes = text.as_bytes();
    let alphanumeric = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.first().is_some_and(alphanumeric)
        && bytes.last().is_some_and(alphanumeric)
        && bytes.iter().all(|b| alphanumeric(b) || *b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(namespace: &str, annotation: Option<&str>) -> Service {
        let mut value = serde_json::json!({
            "metadata": {"name": "web", "namespace": namespace},
            "spec": {"ports": [{"port": 80}]},
        });
        if let Some(annotation) = annotation {
            value["metadata"]["annotations"] =
                serde_json::json!({ROUTE_NAMESPACES_ANNOTATION: annotation});
        }
        serde_json::from_value(value).expect("service")
    }

    fn http() -> GrantSettings {
        GrantSettings::new(&[RouteKind::HttpRoute])
    }

    #[test]
    fn route_kinds_are_read_as_gateway_api_spells_them() {
        assert_eq!("HTTPRoute".parse(), Ok(RouteKind::HttpRoute));
        assert_eq!(" GRPCRoute ".parse(), Ok(RouteKind::GrpcRoute));
        assert_eq!("UDPRoute".parse(), Ok(RouteKind::UdpRoute));
        assert!("httproute".parse::<RouteKind>().is_err());
        assert!("Gateway".parse::<RouteKind>().is_err());
        let settings = GrantSettings::new(&[RouteKind::TcpRoute, RouteKind::TcpRoute]);
        assert_eq!(settings.kinds, [RouteKind::TcpRoute]);
        assert_eq!(GrantSettings::new(&[]).kinds, [RouteKind::HttpRoute]);
    }

    #[test]
    fn the_own_namespace_alone_without_the_annotation() {
        assert_eq!(
            route_namespaces(&service("team-a", None), &http()),
            (vec!["team-a".to_string()], vec![])
        );
    }

    #[test]
    fn the_annotation_adds_namespaces_trimmed_deduplicated_and_sorted() {
        let service = service("team-a", Some(" web ,api,, team-a,api ,edge"));
        assert_eq!(
            route_namespaces(&service, &http()),
            (
                ["team-a", "api", "edge", "web"].map(String::from).to_vec(),
                vec![]
            )
        );
    }

    #[test]
    fn entries_that_are_not_namespace_names_are_refused_with_a_warning() {
        let long = "a".repeat(64);
        let annotation = format!("ok,Upper,-dash,dash-,under_score,{long},a.b");
        let (namespaces, warnings) = route_namespaces(&service("t", Some(&annotation)), &http());
        assert_eq!(namespaces, ["t", "ok"]);
        let refused: Vec<String> = warnings
            .iter()
            .map(|warning| match warning {
                TranslateWarning::InvalidRouteNamespace { value } => value.clone(),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            refused,
            ["Upper", "-dash", "dash-", "under_score", &long, "a.b"]
        );
        assert_eq!(
            warnings[0].reason(),
            crate::model::SkipReason::InvalidRouteNamespace
        );
    }

    #[test]
    fn beyond_sixteen_entries_the_last_namespaces_are_left_out_and_the_own_one_kept() {
        // 3 kinds: 5 namespaces fit (15 entries), the own one first.
        let settings = GrantSettings::new(&[
            RouteKind::HttpRoute,
            RouteKind::GrpcRoute,
            RouteKind::TlsRoute,
        ]);
        let service = service("zz-own", Some("n1,n2,n3,n4,n5,n6"));
        let (namespaces, warnings) = route_namespaces(&service, &settings);
        assert_eq!(namespaces, ["zz-own", "n1", "n2", "n3", "n4"]);
        assert_eq!(
            warnings,
            [TranslateWarning::TooManyRouteNamespaces {
                kinds: 3,
                dropped: vec!["n5".into(), "n6".into()]
            }]
        );
        // One kind: 16 namespaces, the own one and 15 more.
        let many: Vec<String> = (10..30).map(|i| format!("ns{i}")).collect();
        let (namespaces, warnings) =
            route_namespaces(&self::service("own", Some(&many.join(","))), &http());
        assert_eq!(namespaces.len(), 16);
        assert_eq!(namespaces[0], "own");
        assert_eq!(namespaces[15], "ns24");
        assert_eq!(warnings.len(), 1);
    }

    #[test]
    fn the_grant_names_exactly_its_upstream_and_each_kind_in_each_namespace() {
        let upstream: Upstream = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "team-a-web-80", "namespace": "gloo-system"},
            "spec": {},
        }))
        .expect("upstream");
        let settings = GrantSettings::new(&[RouteKind::HttpRoute, RouteKind::GrpcRoute]);
        let grant = desired_grant(
            &upstream,
            Some("u-1"),
            &["team-a".into(), "edge".into()],
            &settings,
        );
        let expected = serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1beta1",
            "kind": "ReferenceGrant",
            "metadata": {
                "name": "team-a-web-80",
                "namespace": "gloo-system",
                "labels": {"discovered_by": "kubernetesplugin"},
                "ownerReferences": [{"apiVersion": "gloo.solo.io/v1", "kind": "Upstream",
                                     "name": "team-a-web-80", "uid": "u-1"}],
            },
            "spec": {
                "from": [
                    {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "team-a"},
                    {"group": "gateway.networking.k8s.io", "kind": "GRPCRoute", "namespace": "team-a"},
                    {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "edge"},
                    {"group": "gateway.networking.k8s.io", "kind": "GRPCRoute", "namespace": "edge"},
                ],
                "to": [{"group": "gloo.solo.io", "kind": "Upstream", "name": "team-a-web-80"}],
            },
        });
        assert_eq!(serde_json::to_value(&grant).expect("json"), expected);
        // Before its Upstream exists (and offline, in `render`) there is no uid to own it by.
        let unowned = desired_grant(&upstream, None, &["team-a".into()], &settings);
        assert_eq!(unowned.metadata.owner_references, None);
    }
}
