//! A server of the cluster killed while Services change: kube-apiserver (etcd kept), or etcd
//! (started again on its data directory, the API server kept). Changes are made just before the
//! kill (some still pending in the daemon when the server goes) and just after the server is
//! ready again. The daemon runs with leader election on (client-go's timings: a server away for
//! longer than the 10 s renew deadline makes it step down, and it takes its own Lease back when
//! the server returns).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::scenario::Scenario;
use crate::servers::{self, Server};
use crate::support::{http_get, wait_for_exact_upstreams};
use crate::test_env::TestEnv;
use crate::world::{identities, put_unowned, resource_version, writes_of, World, TAKEN};

const EXIT_LIMIT: Duration = Duration::from_secs(5);
/// How long the server stays away before it is started again.
const AWAY: Duration = Duration::from_secs(5);
/// docs/reliability.md: every pending change is written within 5 s of the server being ready.
const RECOVERY_LIMIT: Duration = Duration::from_secs(5);

pub async fn kube_apiserver_killed_and_restarted_while_services_change(env: Arc<TestEnv>) {
    outage(env, Server::KubeApiServer).await;
}

pub async fn etcd_killed_and_restarted_while_services_change(env: Arc<TestEnv>) {
    outage(env, Server::Etcd).await;
}

fn names(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("s{i}")).collect()
}

/// What the daemon's `/readyz` and `is_leader` said, each change with when it was seen (from
/// the kill).
#[derive(Default)]
struct Observed {
    changes: Vec<(Duration, String)>,
}

/// Polls the daemon on `port` every 200 ms until `stop`, noting each change of what it says.
fn observe(port: u16, since: Instant, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Observed> {
    tokio::spawn(async move {
        let address = format!("127.0.0.1:{port}");
        let mut observed = Observed::default();
        while !stop.load(Ordering::SeqCst) {
            let readyz = match http_get(&address, "/readyz").await {
                Some((status, _)) => status.to_string(),
                None => "no answer".to_string(),
            };
            let leader = match http_get(&address, "/metrics").await {
                Some((_, body)) => body
                    .lines()
                    .find_map(|l| l.strip_prefix("upstream_discovery_is_leader "))
                    .unwrap_or("?")
                    .to_string(),
                None => "?".to_string(),
            };
            let now = format!("/readyz {readyz}, is_leader {leader}");
            if observed.changes.last().map(|(_, last)| last) != Some(&now) {
                observed.changes.push((since.elapsed(), now));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        observed
    })
}

async fn outage(env: Arc<TestEnv>, server: Server) {
    let purpose = match server {
        Server::KubeApiServer => "apikill",
        Server::Etcd => "etcdkill",
    };
    let scenario = Scenario::builder(env.clone(), purpose).build().await;
    let (admin, write) = (&scenario.admin, scenario.write_ns.as_str());
    let mut world = World::new(admin, &scenario.service_ns);
    let unowned = put_unowned(admin, write, &world.ns).await;
    let unowned_version = resource_version(admin, write, &unowned).await;
    world.create(&[TAKEN.to_string()], &[80]).await;
    world.create(&names(0..10), &[80, 9000]).await;

    let daemon = scenario.daemon().ready().await;
    wait_for_exact_upstreams(admin, write, &world.expected()).await;
    daemon.wait_idle().await;
    let before = identities(admin, write).await;
    let writes_before = daemon.writes().await;

    // Changes right before the kill: some are still being written when the server goes.
    world.create(&names(10..14), &[80, 9000]).await;
    world.delete("s0").await;
    world.set_ports("s1", &[80]).await;
    world.add_label("s2", "tier", "web").await;
    let killed_at = Instant::now();
    let killed = servers::kill(&env, server);
    let stop = Arc::new(AtomicBool::new(false));
    let watching = observe(daemon.port, killed_at, stop.clone());
    tokio::time::sleep(AWAY).await;
    servers::restart(&env, killed);
    let ready_at = servers::wait_ready_after(&env, server).await;

    // Changes right after the server is ready again.
    world.create(&names(14..18), &[80, 9000]).await;
    world.delete("s3").await;
    world.add_annotation("s4", "note", "after-restart").await;
    let changed_at = Instant::now();
    wait_for_exact_upstreams(admin, write, &world.expected()).await;
    let converged_at = Instant::now();
    daemon.wait_idle().await;
    stop.store(true, Ordering::SeqCst);
    let observed = watching.await.expect("the observer");

    let recovery = converged_at - ready_at;
    let writes = daemon.writes().await - writes_before;
    let mut ops = Vec::new();
    for op in ["create", "update", "delete"] {
        ops.push(format!(
            "{op} {}",
            writes_of(daemon.port, op).await.unwrap_or(f64::NAN)
        ));
    }
    eprintln!(
        "{server:?} killed: away {:.1?} (killed to ready), converged {:.1?} after the server was ready \
         ({:.1?} after the last change); {writes} writes ({}, the first sync included)",
        ready_at - killed_at,
        recovery,
        converged_at - changed_at,
        ops.join(", "),
    );
    for (at, what) in &observed.changes {
        eprintln!("  {at:>8.1?} after the kill: {what}");
    }

    // Nothing owned lost: every Upstream that existed before and still has its Service port is
    // the same object (never deleted and created again).
    let after = identities(admin, write).await;
    for (name, (uid, _)) in &before {
        if world.still_wanted(name) {
            let now = after.get(name).map(|(uid, _)| uid);
            assert_eq!(now, Some(uid), "{name} was deleted and created again");
        }
    }
    assert_eq!(
        resource_version(admin, write, &unowned).await,
        unowned_version,
        "the unowned Upstream was written"
    );
    assert!(
        recovery <= RECOVERY_LIMIT,
        "converged {recovery:?} after the server was ready; docs/reliability.md says within {RECOVERY_LIMIT:?}\n{}",
        daemon.logs()
    );
    daemon.terminate(EXIT_LIMIT);
    scenario.cleanup().await;
}
