//! Faults on the running stack, the way an operator meets them: a worker's container killed
//! and started again, the Raft leader's container killed, a control-plane node cut off from
//! the network and reconnected.

use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use muster_e2e::compose::{ComposeStack, docker};
use muster_e2e::eventually_msg;

use super::fleet::{Worker, wait_all_ready, workers};

/// compose's control-plane.toml: heartbeat_grace.
const GRACE: Duration = Duration::from_secs(5);

/// SIGKILL (no graceful leave), without the restart policy bringing the container back at
/// once: the policy is switched off first and restored by [`start`].
async fn kill(container: &str) {
    docker(&["update", "--restart", "no", container]).await.unwrap_or_else(|e| panic!("{e:#}"));
    docker(&["kill", "--signal", "KILL", container]).await.unwrap_or_else(|e| panic!("{e:#}"));
}

async fn start(container: &str) {
    docker(&["update", "--restart", "unless-stopped", container]).await.unwrap_or_else(|e| panic!("{e:#}"));
    docker(&["start", container]).await.unwrap_or_else(|e| panic!("{e:#}"));
}

/// The worker-agent container whose hostname (its short id) is the worker's name.
async fn container_of(stack: &ComposeStack, worker: &Worker) -> String {
    for id in stack.containers("worker-agent").await {
        if stack.inspect(&id, "{{.Config.Hostname}}").await.is_ok_and(|host| host == worker.name) {
            return id;
        }
    }
    panic!("no worker-agent container has the hostname {:?}", worker.name)
}

/// The leader's node id, as the cluster reports it.
async fn leader_id(stack: &ComposeStack) -> u64 {
    eventually_msg("a leader", Duration::from_secs(30), || async {
        let out = stack.musterctl_ok(&["-o", "json", "cluster", "status"]).await?;
        let status: serde_json::Value = serde_json::from_str(&out).with_context(|| out.clone())?;
        let leader = status["leader_id"].as_u64().unwrap_or_default();
        ensure!(leader != 0, "no leader yet: {out}");
        Ok(leader)
    })
    .await
}

/// Waits until `container`'s health check passes again.
async fn wait_healthy(stack: &ComposeStack, container: &str) {
    eventually_msg(format!("{container} healthy"), Duration::from_secs(90), || async {
        let health = stack.inspect(container, "{{.State.Health.Status}}").await?;
        ensure!(health == "healthy", "health {health}");
        Ok(())
    })
    .await;
}

/// For `window`, every worker stays Ready; the fleet is listed every half second.
async fn none_unreachable_for(stack: &ComposeStack, count: usize, window: Duration) {
    let end = Instant::now() + window;
    while Instant::now() < end {
        if let Ok(workers) = workers(stack).await {
            let down: Vec<_> = workers.iter().filter(|w| w.state != "ready").collect();
            assert!(down.is_empty(), "a live worker was marked down: {down:?}");
            assert_eq!(workers.len(), count, "{workers:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `docker stop -s KILL` of a worker: Unreachable within its TTL + grace + 2 s (+ the
/// sweeper's and musterctl's own latency); `docker start`: Ready again with the same id, and
/// the others were never disturbed.
pub async fn killed_worker_comes_back(stack: &ComposeStack) {
    let before = wait_all_ready(stack, 3, Duration::from_secs(30)).await;
    let victim = before[0].clone();
    let container = container_of(stack, &victim).await;
    kill(&container).await;
    let killed_at = Instant::now();
    let bound = Duration::from_millis(victim.ttl_ms) + GRACE + Duration::from_secs(2);
    eventually_msg(format!("worker {} Unreachable", victim.id), bound + Duration::from_secs(10), || async {
        let workers = workers(stack).await?;
        let state = workers.iter().find(|w| w.id == victim.id).map(|w| w.state.clone()).unwrap_or_default();
        ensure!(state == "unreachable", "worker {} is {state}", victim.id);
        let others_down: Vec<_> = workers.iter().filter(|w| w.id != victim.id && w.state != "ready").collect();
        assert!(others_down.is_empty(), "bystanders marked down: {others_down:?}");
        Ok(())
    })
    .await;
    let took = killed_at.elapsed();
    // One sweep (250 ms) and one musterctl round trip of slack on top of the bound.
    assert!(took <= bound + Duration::from_secs(2), "Unreachable after {took:?}; TTL + grace + 2 s is {bound:?}");

    start(&container).await;
    let after = wait_all_ready(stack, 3, Duration::from_secs(60)).await;
    let back = after.iter().find(|w| w.name == victim.name).expect("the restarted worker is listed");
    assert_eq!(back.id, victim.id, "the restarted container registered again instead of reusing its identity");
}

/// Kill the leader's container: a new leader takes writes, heartbeats keep every worker Ready
/// through the failover, and the old leader rejoins when started.
pub async fn leader_kill_loses_nothing(stack: &ComposeStack) {
    let count = workers(stack).await.expect("workers").len();
    let leader = leader_id(stack).await;
    let container = stack.container(&format!("control-plane-{leader}")).await;
    stack.musterctl_ok(&["kv", "put", "compose/before-kill", "kept"]).await.unwrap_or_else(|e| panic!("{e:#}"));
    kill(&container).await;

    eventually_msg("a write after the leader's death", Duration::from_secs(30), || async {
        stack.musterctl_ok(&["--timeout", "5s", "kv", "put", "compose/after-kill", "written"]).await?;
        Ok(())
    })
    .await;
    let new_leader = leader_id(stack).await;
    assert_ne!(new_leader, leader, "the dead node is still reported as leader");
    // Past TTL + grace of the largest lease: anything the failover dropped would show.
    none_unreachable_for(stack, count, Duration::from_secs(20)).await;

    start(&container).await;
    wait_healthy(stack, &container).await;
    let value = stack.musterctl_ok(&["kv", "get", "compose/before-kill"]).await.unwrap_or_else(|e| panic!("{e:#}"));
    assert!(value.contains("kept"), "a committed write was lost across the leader kill: {value}");
}

/// Disconnect the leader's container from the network: the other two elect a leader and
/// serve; the isolated node refuses writes and linearizable reads (it never answers them
/// from its stale state); reconnected, it catches up and serves the majority's value.
pub async fn partitioned_node_refuses_then_rejoins(stack: &ComposeStack) {
    let leader = leader_id(stack).await;
    let service = format!("control-plane-{leader}");
    let container = stack.container(&service).await;
    stack.musterctl_ok(&["kv", "put", "compose/partition", "before"]).await.unwrap_or_else(|e| panic!("{e:#}"));
    let network = stack.network();
    docker(&["network", "disconnect", &network, &container]).await.unwrap_or_else(|e| panic!("{e:#}"));

    // The majority (reached through the two other published ports) elects and serves.
    eventually_msg("a write on the majority side", Duration::from_secs(30), || async {
        stack.musterctl_ok(&["--timeout", "5s", "kv", "put", "compose/partition", "after"]).await?;
        Ok(())
    })
    .await;

    let write =
        stack.musterctl_inside(&container, &["--timeout", "5s", "kv", "put", "compose/partition", "isolated"]).await;
    assert!(!write.ok, "the isolated node accepted a write: {}", write.text());
    let read = stack.musterctl_inside(&container, &["--timeout", "5s", "kv", "get", "compose/partition"]).await;
    assert!(!read.ok, "the isolated node answered a linearizable read (stale: {}):", read.text());

    docker(&["network", "connect", "--alias", &service, &network, &container])
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    eventually_msg("the reconnected node serves the majority's value", Duration::from_secs(60), || async {
        let read = stack.musterctl_inside(&container, &["--timeout", "5s", "kv", "get", "compose/partition"]).await;
        ensure!(read.ok, "{}", read.text());
        ensure!(read.stdout.contains("after"), "reads {}", read.stdout.trim());
        Ok(())
    })
    .await;
    let value = stack.musterctl_ok(&["kv", "get", "compose/partition"]).await.unwrap_or_else(|e| panic!("{e:#}"));
    assert!(!value.contains("isolated"), "the isolated node's refused write surfaced: {value}");
    wait_healthy(stack, &container).await;
}
