//! The short version of the 100,000-worker failure run (`muster-bench scale`), kept in the
//! suite: 2,000 simulated workers (each with its own key, certificate and mTLS stream) beat to
//! two gateways of a 3-node cluster; the Raft leader and then one gateway are killed with
//! SIGKILL. No worker may be marked Unreachable, every worker of the dead gateway must move to
//! the survivor, and afterwards 100 workers killed at once must be marked Unreachable within
//! TTL + grace + 2 s of the TTL they were issued: the failure detector still works after the
//! failover, at its normal speed.
//!
//! The test has the machine to itself (`.config/nextest.toml`): its deadlines are the failure
//! detector's, and two cores shared with other tests would measure the other tests.

use std::time::{Duration, Instant};

use anyhow::ensure;
use muster_e2e::fleet::{BeatPlan, Fleet, FleetStats, register_fleet, unreachable_count, wait_all_beating};
use muster_e2e::gateway::Gateway;
use muster_e2e::registrar::Registrar;
use muster_e2e::{Cluster, HeartbeatPolicy, Options, eventually_msg};

const WORKERS: usize = 2_000;
/// Of the fleet, killed together at the end (5%: well under the mass-silence share).
const KILLED: usize = 100;
const WAIT: Duration = Duration::from_secs(120);
const GRACE: Duration = Duration::from_secs(2);
/// How late past TTL + grace a dead worker may be marked (the bound).
const DETECTION_SLACK: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread")]
async fn two_thousand_workers_survive_a_leader_and_a_gateway_kill_and_the_dead_are_found_on_time() {
    // 500 beats/s per gateway: with 2,000 workers on two gateways the TTL is 2 s.
    let policy = HeartbeatPolicy {
        min_ttl: "1s",
        max_ttl: "10s",
        grace: "2s",
        max_heartbeats_per_second: 500,
        failover_ttl: "10s",
    };
    let mut cluster = Cluster::start(3, Options { heartbeat: Some(policy), ..Options::tls() }).await;
    let registrar = Registrar::start_unthrottled(&cluster);
    let mut doomed = Gateway::start_with(&cluster, "gw-1", "batch_interval = \"250ms\"\n");
    let survivor = Gateway::start_with(&cluster, "gw-2", "batch_interval = \"250ms\"\n");
    doomed.wait_ready().await;
    survivor.wait_ready().await;

    let started = Instant::now();
    let identities = register_fleet(&cluster, &registrar, WORKERS).await;
    eprintln!("registered {WORKERS} workers in {:.1?}", started.elapsed());
    let ca_pem = cluster.pki().expect("a TLS cluster").ca_pem();
    let (staying, leaving) = identities.split_at(WORKERS - KILLED);
    let plan = BeatPlan { fixed_interval: None };
    let fleet = Fleet::start(staying, &ca_pem, plan.clone()).expect("starting the fleet");
    let mut to_kill = Fleet::start(leaving, &ca_pem, plan).expect("starting the workers to kill");
    wait_all_beating(&cluster, WORKERS, WAIT).await;
    eprintln!("all {WORKERS} beating {:.1?} after the start", started.elapsed());
    let spread = fleet.stats.spread();
    assert!(spread.get("gw-1").is_some_and(|n| *n > 0), "some workers beat to gw-1: {spread:?}");

    // The leader, then a gateway, die without warning.
    let leader = cluster.wait_for_leader(WAIT).await;
    cluster.kill(leader);
    let new_leader = cluster.wait_for_new_leader(leader, WAIT).await;
    eprintln!("leader {leader} killed; node {new_leader} leads");
    doomed.kill();
    let killed_at = Instant::now();
    let moved = |stats: &FleetStats, count: usize| {
        let spread = stats.spread();
        ensure!(spread.get("gw-2") == Some(&count), "{spread:?}");
        Ok(())
    };
    eventually_msg("the workers of the dead gateway move to the survivor", WAIT, || async {
        moved(&fleet.stats, WORKERS - KILLED)?;
        moved(&to_kill.stats, KILLED)
    })
    .await;
    eprintln!("every worker of gw-1 reconnected to gw-2 {:.1?} after the kill", killed_at.elapsed());

    // Past the failover window (10 s + grace) and several TTLs, nobody may have expired.
    let watch_until = Instant::now() + Duration::from_secs(16);
    while Instant::now() < watch_until {
        let unreachable = unreachable_count(&cluster).await.expect("listing Unreachable workers");
        assert_eq!(unreachable, 0, "{unreachable} live workers were marked Unreachable");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    wait_all_beating(&cluster, WORKERS, WAIT).await;

    // 100 workers die at once; their leases end one TTL (as issued) + grace after their last
    // beat, and the leader must notice by then, give or take the bound.
    let issued_ttl = to_kill.stats.last_ttl_ms.lock().unwrap().iter().copied().max().expect("acks");
    let issued_ttl = Duration::from_millis(u64::from(issued_ttl));
    to_kill.stop();
    let died_at = Instant::now();
    let deadline = issued_ttl + GRACE + DETECTION_SLACK;
    eventually_msg(format!("the {KILLED} dead workers marked Unreachable"), WAIT, || async {
        let unreachable = unreachable_count(&cluster).await?;
        ensure!(unreachable >= KILLED, "{unreachable} of {KILLED} Unreachable");
        Ok(())
    })
    .await;
    let detected = died_at.elapsed();
    eprintln!("{KILLED} dead workers (TTL {issued_ttl:?}) marked Unreachable {detected:.1?} after they died");
    assert!(detected <= deadline, "detection took {detected:?}, over TTL + grace + 2 s = {deadline:?}");
    assert_eq!(unreachable_count(&cluster).await.expect("listing"), KILLED, "only the dead are Unreachable");
}
