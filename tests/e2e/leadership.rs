//! Fenced leadership (issue 13): a leader that cannot renew its Lease stops writing within the
//! renew deadline, before another replica can take the Lease over, and a leader paused past its
//! lease refuses its own writes on waking. Writes are counted at each replica's own fault proxy,
//! so "no write from it" means no request left the process, whatever the API server would have
//! answered. Default timings (client-go's): lease 15 s, renew deadline 10 s, retry 2 s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::daemon::Daemon;
use crate::fault_proxy::{Fault, FaultProxy, Rule, Seen};
use crate::scenario::Scenario;
use crate::support::{
    create_plain_service, kube_upstream, wait_for, wait_for_exact_upstreams, wait_until_within,
};
use crate::test_env::TestEnv;

const EXIT_LIMIT: Duration = Duration::from_secs(5);
const RENEW_DEADLINE: Duration = Duration::from_secs(10);
const LEASE_DURATION: Duration = Duration::from_secs(15);
const RETRY_PERIOD: Duration = Duration::from_secs(2);
/// Scheduling and the proxy's own hop, on a shared 2-core machine.
const SLACK: Duration = Duration::from_millis(1500);

fn is_write(seen: &Seen) -> bool {
    seen.resource == "upstreams"
        && matches!(seen.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE")
}

fn writes_after(proxy: &FaultProxy, after: Instant) -> Vec<Seen> {
    proxy
        .requests()
        .into_iter()
        .filter(|seen| is_write(seen) && seen.at > after)
        .collect()
}

async fn leading(daemon: &Daemon) -> bool {
    daemon.metric_sum("upstream_discovery_is_leader").await == 1.0
}

/// Two replicas, each behind its own proxy; the first leads.
async fn two_replicas(
    scenario: &Scenario,
    env: &TestEnv,
) -> (FaultProxy, Daemon, FaultProxy, Daemon) {
    let first_proxy = FaultProxy::start(env, scenario.token()).await;
    let first = scenario.daemon().via(&first_proxy.url()).ready().await;
    wait_for("the first replica to lead", || async {
        leading(&first).await.then_some(())
    })
    .await;
    let second_proxy = FaultProxy::start(env, scenario.token()).await;
    let second = scenario.daemon().via(&second_proxy.url()).ready().await;
    assert!(!leading(&second).await);
    (first_proxy, first, second_proxy, second)
}

pub async fn a_leader_cut_off_from_its_lease_stops_writing_before_another_takes_over(
    env: Arc<TestEnv>,
) {
    let scenario = Scenario::builder(env.clone(), "fence").build().await;
    let (admin, ns, write) = (
        &scenario.admin,
        scenario.service_ns.clone(),
        scenario.write_ns.clone(),
    );
    let (first_proxy, first, second_proxy, second) = two_replicas(&scenario, &env).await;
    create_plain_service(admin, &ns, "before").await;
    wait_for_exact_upstreams(admin, &write, &[kube_upstream(&ns, "before", 80)]).await;

    // Only the leader's Lease requests vanish: its watches and writes still get through, so
    // only its own fence can stop it writing.
    first_proxy.rules.inject(Rule::new(
        "",
        &["/leases"],
        Fault::Delay(Duration::from_secs(3600)),
    ));
    let cut = Instant::now();
    // A steady stream of changes, so that the leader has work right up to its deadline.
    let mut expected = vec![kube_upstream(&ns, "before", 80)];
    let mut index = 0;
    while cut.elapsed() < LEASE_DURATION + RETRY_PERIOD + SLACK * 2 {
        let name = format!("during-{index:02}");
        create_plain_service(admin, &ns, &name).await;
        expected.push(kube_upstream(&ns, &name, 80));
        index += 1;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    expected.sort_by_key(|u| u["metadata"]["name"].as_str().map(str::to_string));
    wait_for_exact_upstreams(admin, &write, &expected).await;

    let late = writes_after(&first_proxy, cut + RENEW_DEADLINE + SLACK);
    assert!(
        late.is_empty(),
        "the cut-off leader wrote after its renew deadline: {:?}",
        late.iter()
            .map(|s| (s.at - cut, &s.method, &s.name))
            .collect::<Vec<_>>()
    );
    assert!(
        !writes_after(&first_proxy, cut).is_empty(),
        "the leader kept writing until its deadline (the test had work for it)"
    );
    let takeover = writes_after(&second_proxy, cut)
        .first()
        .map(|seen| seen.at)
        .expect("the second replica wrote");
    let last_of_first = writes_after(&first_proxy, cut)
        .last()
        .map(|seen| seen.at)
        .expect("the first replica wrote");
    assert!(
        last_of_first < takeover,
        "two writers overlapped: the first wrote at {:?}, the second from {:?}",
        last_of_first - cut,
        takeover - cut
    );
    assert!(
        takeover - cut <= LEASE_DURATION + RETRY_PERIOD + SLACK * 2,
        "takeover took {:?}",
        takeover - cut
    );
    eprintln!(
        "cut-off leader: last write {:?} after the cut, takeover {:?} after",
        last_of_first - cut,
        takeover - cut
    );
    assert!(!leading(&first).await, "is_leader went to 0");
    assert!(leading(&second).await);
    assert!(first.logs().contains("stepping down"), "{}", first.logs());

    first.terminate(EXIT_LIMIT);
    second.terminate(EXIT_LIMIT);
    scenario.cleanup().await;
}

pub async fn a_leader_paused_past_its_lease_refuses_its_own_writes_on_waking(env: Arc<TestEnv>) {
    let scenario = Scenario::builder(env.clone(), "pause").build().await;
    let (admin, ns, write) = (
        &scenario.admin,
        scenario.service_ns.clone(),
        scenario.write_ns.clone(),
    );
    let (first_proxy, first, _second_proxy, second) = two_replicas(&scenario, &env).await;
    create_plain_service(admin, &ns, "before").await;
    wait_for_exact_upstreams(admin, &write, &[kube_upstream(&ns, "before", 80)]).await;

    first.signal("STOP");
    let stopped = Instant::now();
    wait_until_within(
        LEASE_DURATION + RETRY_PERIOD + SLACK * 4,
        "the second replica to take over",
        || async {
            if leading(&second).await {
                Ok(())
            } else {
                Err("not leading yet".to_string())
            }
        },
    )
    .await;
    // Changes the paused leader will find waiting in its watch connections when it wakes.
    for name in ["while-paused-a", "while-paused-b"] {
        create_plain_service(admin, &ns, name).await;
    }
    let expected = vec![
        kube_upstream(&ns, "before", 80),
        kube_upstream(&ns, "while-paused-a", 80),
        kube_upstream(&ns, "while-paused-b", 80),
    ];
    wait_for_exact_upstreams(admin, &write, &expected).await;
    let woken = Instant::now();
    first.signal("CONT");
    eprintln!("paused for {:?}", woken - stopped);
    wait_for("the woken replica to say it stepped down", || async {
        first.logs().contains("stepping down").then_some(())
    })
    .await;
    // Its work: the two new Services, and the Upstreams the new leader wrote meanwhile.
    tokio::time::sleep(RETRY_PERIOD * 2).await;
    let late = writes_after(&first_proxy, woken);
    assert!(
        late.is_empty(),
        "the woken replica wrote: {:?}",
        late.iter()
            .map(|s| (&s.method, &s.name))
            .collect::<Vec<_>>()
    );
    assert!(!leading(&first).await);
    wait_for_exact_upstreams(admin, &write, &expected).await;
    first.terminate(EXIT_LIMIT);
    second.terminate(EXIT_LIMIT);
    scenario.cleanup().await;
}
