//! The daemon SIGKILLed in the middle of a burst of writes (N Services of 2 ports each created
//! before it starts, so it has 2N creates to make; killed when about half are made) and started
//! again: it makes exactly the creates that are missing and nothing else, and a restart after
//! that, with nothing changed, writes nothing (not even after a resync) and leaves every
//! Upstream's resourceVersion as it was. Leader election is off: a new replica would otherwise
//! first wait out the lease its killed predecessor never released, which the leadership tests
//! cover; here the point is the writes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::scenario::Scenario;
use crate::support::{list_upstreams, wait_for, wait_for_exact_upstreams, wait_until};
use crate::test_env::TestEnv;
use crate::world::{identities, put_unowned, resource_version, writes_of, World, TAKEN};

const EXIT_LIMIT: Duration = Duration::from_secs(5);

/// `UD_RESTARTS_SERVICES`, default 500 (1,000 Upstreams).
fn services() -> usize {
    std::env::var("UD_RESTARTS_SERVICES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(500)
}

async fn owned_count(admin: &kube::Client, write_ns: &str) -> Result<usize, String> {
    Ok(
        list_upstreams(admin, write_ns, Some("discovered_by=kubernetesplugin"))
            .await?
            .len(),
    )
}

pub async fn daemon_killed_mid_burst_converges_and_a_restart_writes_nothing(env: Arc<TestEnv>) {
    let n = services();
    let scenario = Scenario::builder(env, "sigkill").build().await;
    let (admin, write) = (&scenario.admin, scenario.write_ns.as_str());
    let mut world = World::new(admin, &scenario.service_ns);
    let unowned = put_unowned(admin, write, &world.ns).await;
    let unowned_version = resource_version(admin, write, &unowned).await;
    world.create(&[TAKEN.to_string()], &[80]).await;
    let names: Vec<String> = (0..n).map(|i| format!("s{i:04}")).collect();
    let made_at = Instant::now();
    world.create(&names, &[80, 9000]).await;
    let expected = world.expected();
    let total = expected.len();
    eprintln!("{n} Services made in {:.1?}", made_at.elapsed());

    let daemon = || scenario.daemon().args(&["--leader-elect=false"]);
    let first = daemon().start();
    let started = Instant::now();
    let made = wait_for("the first daemon to have made half the creates", || async {
        let made = writes_of(first.port, "create").await?;
        (made >= (total / 2) as f64).then_some(made)
    })
    .await;
    let pid = first.pid();
    first.kill();
    let killed_after = started.elapsed();
    // Writes the server had already taken land; then the count holds still.
    let last = std::cell::Cell::new(usize::MAX);
    let existing = wait_until("the Upstreams to stop changing after the kill", || async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let count = owned_count(admin, write).await?;
        (last.replace(count) == count)
            .then_some(count)
            .ok_or_else(|| format!("{count} Upstreams"))
    })
    .await;
    eprintln!(
        "daemon (pid {pid}) SIGKILLed {killed_after:.1?} after it started, at {made} creates \
         counted; {existing} of {total} Upstreams exist"
    );
    assert!(
        existing > 0 && existing < total,
        "killed mid-burst: {existing} of {total} Upstreams exist"
    );

    let second = daemon().start();
    let started = Instant::now();
    wait_for_exact_upstreams(admin, write, &expected).await;
    let converged = started.elapsed();
    second.wait_idle().await;
    let mut ops = Vec::new();
    for op in ["create", "update", "delete"] {
        ops.push(writes_of(second.port, op).await.unwrap_or(f64::NAN));
    }
    eprintln!(
        "started again: {total} Upstreams exact {converged:.1?} after the start; \
         creates {}, updates {}, deletes {}",
        ops[0], ops[1], ops[2]
    );
    assert_eq!(
        ops,
        [(total - existing) as f64, 0.0, 0.0],
        "exactly the missing creates, nothing written twice"
    );
    let versions = identities(admin, write).await;
    second.terminate(EXIT_LIMIT);

    // Nothing changed: a restart (and a periodic resync of it) writes nothing.
    let third = daemon().args(&["--resync-interval", "2s"]).ready().await;
    third.wait_idle().await;
    let synced = "upstream_discovery_last_sync_timestamp_seconds{source=\"kubernetes\"}";
    let first_sync = third.metric_sum(synced).await;
    wait_for("a periodic resync", || async {
        (third.metric_sum(synced).await >= first_sync + 2.0).then_some(())
    })
    .await;
    third.wait_idle().await;
    assert_eq!(
        third.metric_sum("upstream_discovery_writes_total").await,
        0.0,
        "nothing changed: not even an attempted write"
    );
    assert_eq!(
        identities(admin, write).await,
        versions,
        "every Upstream as it was"
    );
    wait_for_exact_upstreams(admin, write, &expected).await;
    assert_eq!(
        resource_version(admin, write, &unowned).await,
        unowned_version,
        "the unowned Upstream was written"
    );
    eprintln!("restarted with nothing changed: 0 writes, every resourceVersion unchanged");
    third.terminate(EXIT_LIMIT);
    scenario.cleanup().await;
}
