//! Heartbeats end to end with real agents: workers register and are Ready with a lease; a
//! killed worker is Unreachable within TTL + grace + 2 s and comes back Ready with the same id
//! and no new token; a graceful stop is Left; a revoked worker is refused and stops, and none of
//! it disturbs the other workers.

use std::time::{Duration, Instant};

use anyhow::ensure;
use muster_e2e::agent::Agent;
use muster_e2e::gateway::Gateway;
use muster_e2e::registrar::Registrar;
use muster_e2e::{Cluster, HeartbeatPolicy, Options, WorkerAction, eventually_msg, v1};

const WAIT: Duration = Duration::from_secs(60);

async fn token(cluster: &Cluster, uses: u32) -> String {
    let request = v1::CreateTokenRequest { ttl_seconds: 600, uses, ..Default::default() };
    cluster.client().create_token(request).await.expect("token").token
}

async fn state_of(cluster: &Cluster, id: u64) -> anyhow::Result<(v1::WorkerState, Option<v1::WorkerLease>)> {
    let response = cluster.client().worker_call(WorkerAction::Get, id).await?;
    let state = v1::WorkerState::try_from(response.worker.unwrap_or_default().state)?;
    Ok((state, response.lease))
}

async fn wait_state(cluster: &Cluster, id: u64, want: v1::WorkerState, within: Duration) {
    eventually_msg(format!("worker {id} becomes {want:?}"), within, || async move {
        let (state, _) = state_of(cluster, id).await?;
        ensure!(state == want, "worker {id} is {state:?}");
        Ok(())
    })
    .await;
}

/// Fails if any of `ids` is not Ready.
async fn all_ready(cluster: &Cluster, ids: &[u64]) -> anyhow::Result<()> {
    for id in ids {
        let (state, _) = state_of(cluster, *id).await?;
        ensure!(state == v1::WorkerState::Ready, "worker {id} is {state:?}");
    }
    Ok(())
}

struct Tier {
    cluster: Cluster,
    registrar: Registrar,
    _gateway: Gateway,
}

async fn tier() -> Tier {
    let options = Options { heartbeat: Some(HeartbeatPolicy::fast()), ..Options::tls() };
    let cluster = Cluster::start(1, options).await;
    let registrar = Registrar::start(&cluster);
    let gateway = Gateway::start_with(&cluster, "gw-1", "batch_interval = \"100ms\"\n");
    gateway.wait_ready().await;
    Tier { cluster, registrar, _gateway: gateway }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_worker_is_unreachable_in_time_and_returns_with_its_id() {
    let tier = tier().await;
    let cluster = &tier.cluster;
    let registrars = vec![tier.registrar.addr.clone()];
    let mut agents: Vec<Agent> = Vec::new();
    for _ in 0..3 {
        // One-use tokens: a restarted agent cannot register again, only reuse its identity.
        let mut agent = Agent::new(&registrars, &token(cluster, 1).await);
        agent.start();
        agents.push(agent);
    }
    let mut ids = Vec::new();
    for agent in &agents {
        ids.push(agent.wait_beating(WAIT).await);
    }
    for id in &ids {
        wait_state(cluster, *id, v1::WorkerState::Ready, WAIT).await;
        eventually_msg(format!("worker {id} has a lease from gw-1"), WAIT, || async move {
            let (_, lease) = state_of(cluster, *id).await?;
            ensure!(lease.is_some_and(|l| l.gateway_id == "gw-1" && l.last_beat_unix_ms > 0), "no lease yet");
            Ok(())
        })
        .await;
    }

    // kill -9 one worker: Unreachable within TTL + grace + 2 s of its last beat.
    let (_, lease) = state_of(cluster, ids[0]).await.expect("state");
    let lease = lease.expect("a lease");
    let limit = Duration::from_millis(u64::from(lease.ttl_ms)) + Duration::from_secs(2 + 2);
    agents[0].kill().await;
    let killed_at = Instant::now();
    wait_state(cluster, ids[0], v1::WorkerState::Unreachable, limit + Duration::from_secs(1)).await;
    let took = killed_at.elapsed();
    assert!(took <= limit, "marked Unreachable after {took:?}, more than TTL + grace + 2s = {limit:?}");
    all_ready(cluster, &ids[1..]).await.expect("the other workers stay Ready");

    // The same worker restarted: Ready again, same id, with its token already spent.
    agents[0].start();
    assert_eq!(agents[0].wait_beating(WAIT).await, ids[0], "same identity");
    wait_state(cluster, ids[0], v1::WorkerState::Ready, WAIT).await;

    // SIGTERM: the worker reports Left and exits cleanly.
    let status = agents[1].terminate().await;
    assert!(status.success(), "a SIGTERM'd agent exits 0, got {status}");
    wait_state(cluster, ids[1], v1::WorkerState::Left, WAIT).await;
    all_ready(cluster, &[ids[0], ids[2]]).await.expect("the others stay Ready");

    // worker_ca_dir (default <data_dir>/cluster/) holds the worker CA certificate, not its key.
    let exported = cluster.data_dir(1).join("cluster/worker-ca.pem");
    let pem = std::fs::read_to_string(&exported).expect("the worker CA certificate was exported");
    let identity = std::fs::read_to_string(agents[0].identity_dir().join("cert.pem")).expect("cert.pem");
    assert!(identity.contains(pem.trim()), "the exported CA is the one that signed the workers");
    assert!(!pem.contains("PRIVATE KEY"), "the key stays in the cluster");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_worker_is_refused_and_stops_without_disturbing_the_others() {
    let tier = tier().await;
    let cluster = &tier.cluster;
    let registrars = vec![tier.registrar.addr.clone()];
    let shared = token(cluster, 2).await;
    let mut agents = [Agent::new(&registrars, &shared), Agent::new(&registrars, &shared)];
    for agent in &mut agents {
        agent.start();
    }
    let victim = agents[0].wait_beating(WAIT).await;
    let bystander = agents[1].wait_beating(WAIT).await;

    cluster.client().worker_action(WorkerAction::Revoke, victim).await.expect("revoke");
    let status = agents[0].wait_exit(WAIT).await;
    assert!(!status.success(), "a revoked agent stops with an error");
    let log = agents[0].log();
    assert!(log.contains("revoked"), "the agent says it was revoked:\n{log}");

    // The other worker keeps beating and stays Ready for longer than a TTL + grace.
    let (_, before) = state_of(cluster, bystander).await.expect("state");
    let first_beat = before.expect("lease").last_beat_unix_ms;
    eventually_msg("the bystander keeps beating", WAIT, || async {
        let (state, lease) = state_of(cluster, bystander).await?;
        ensure!(state == v1::WorkerState::Ready, "bystander is {state:?}");
        let beat = lease.map_or(0, |l| l.last_beat_unix_ms);
        ensure!(beat >= first_beat + 4000, "last beat {beat}, waiting for 4 s past {first_beat}");
        Ok(())
    })
    .await;
    assert_eq!(state_of(cluster, victim).await.expect("state").0, v1::WorkerState::Revoked);
}
