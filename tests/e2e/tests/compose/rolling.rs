//! A rolling restart of the three control-plane nodes, the way docs/operations.md ("Upgrades",
//! "Rolling restart") lays it out: followers first and the leader last, each stopped and
//! started with compose, and the next one only once it is caught up (its `/readyz` answers 200
//! and the leader shows its matched index at the leader's last index). Meanwhile a writer puts
//! keys one after another and the fleet is listed: the longest stretch without an acknowledged
//! write stays within one election plus slack, no worker leaves Ready, and every acknowledged
//! write is readable afterwards.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use muster_client::{ClientOptions, ControlPlaneClient};
use muster_e2e::compose::ComposeStack;
use muster_e2e::probe::admin_get;
use muster_e2e::{eventually_msg, v1};
use muster_tls::{Role, ServerCheck, TlsFiles};

use super::fleet::workers;
use super::fleet_watch::while_every_worker_ready;

/// The longest allowed stretch without an acknowledged write. deploy/compose/control-plane.toml
/// keeps the default Raft timing: a follower campaigns `election_timeout_max` (500 ms) plus a
/// random 250–500 ms after the leader's last heartbeat, so one election takes at most 1 s. On
/// top of it: the stopping leader's own shutdown, the writer's retries finding the new leader
/// (backoff capped at 250 ms, a forwarded call given up on), and a 2-core machine busy with
/// twenty worker containers; 4 s of slack covers those without hiding a second election.
const MAX_WRITE_GAP: Duration = Duration::from_secs(5);

/// One write may take this long before the writer gives up on it and writes the next key.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a restarted node may take to be ready and caught up.
const CATCH_UP: Duration = Duration::from_secs(90);

const PREFIX: &str = "compose/rolling/";

/// A client of the host's published API ports, as the operator.
fn operator_client(stack: &ComposeStack) -> ControlPlaneClient {
    let dir = stack.tls_dir();
    let files = TlsFiles { ca: dir.join("ca.pem"), cert: dir.join("operator.pem"), key: dir.join("operator-key.pem") };
    let mut options = ClientOptions::new(stack.api_ports().iter().map(|port| format!("127.0.0.1:{port}")).collect());
    options.tls = Some(files.client_for(ServerCheck::RoleAndHost(Role::ControlPlane)).expect("the operator's files"));
    options.timeout = WRITE_TIMEOUT;
    ControlPlaneClient::new(options).expect("an operator client")
}

/// The leader's own view of the cluster (it alone knows each member's matched index), asked
/// of each node through its published port.
async fn leader_view(stack: &ComposeStack, client: &ControlPlaneClient) -> anyhow::Result<v1::ClusterMembership> {
    for port in stack.api_ports() {
        let endpoint = format!("127.0.0.1:{port}");
        if let Ok(Ok(meta)) = tokio::time::timeout(Duration::from_secs(3), client.metadata_of(&endpoint)).await
            && meta.state == "leader"
        {
            return Ok(meta);
        }
    }
    bail!("no node says it leads")
}

/// Stops and starts `control-plane-{id}`, then waits until its `/readyz` answers 200 and the
/// leader's matched index for it reaches the leader's last index as it was once it was ready.
async fn restart_node(stack: &ComposeStack, client: &ControlPlaneClient, id: u64) {
    let service = format!("control-plane-{id}");
    let container = stack.container(&service).await;
    let started = Instant::now();
    stack.compose(&["stop", &service]).await.unwrap_or_else(|e| panic!("{e:#}"));
    stack.compose(&["start", &service]).await.unwrap_or_else(|e| panic!("{e:#}"));
    eventually_msg(format!("{service} ready after its restart"), CATCH_UP, || async {
        let ip = stack.ip(&container).await?;
        let response = admin_get(&format!("{ip}:3680"), "/readyz").await?;
        ensure!(response.starts_with("HTTP/1.1 200"), "{}", response.lines().last().unwrap_or_default());
        Ok(())
    })
    .await;
    let target =
        eventually_msg("the leader's last index", CATCH_UP, || leader_view(stack, client)).await.last_log_index;
    eventually_msg(format!("{service} caught up to index {target}"), CATCH_UP, || async {
        let view = leader_view(stack, client).await?;
        let member = view.members.iter().find(|m| m.node_id == id).context("not a member")?;
        ensure!(
            member.matched_index >= target,
            "matched {} of {target} (leader {})",
            member.matched_index,
            view.node_id
        );
        Ok(())
    })
    .await;
    eprintln!("{service} restarted and caught up in {:.1?}", started.elapsed());
}

/// What the writer saw: the keys acknowledged, the longest stretch without one, and how many
/// writes failed or timed out.
struct Written {
    acked: Vec<String>,
    longest_gap: Duration,
    failed: usize,
}

/// Puts `PREFIX<n>` one after another until `stop`, counting acknowledgements in `acks`.
async fn write_until(client: &ControlPlaneClient, stop: &AtomicBool, acks: &AtomicUsize) -> Written {
    let mut written = Written { acked: Vec::new(), longest_gap: Duration::ZERO, failed: 0 };
    let mut last_ack = Instant::now();
    for n in 0.. {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let key = format!("{PREFIX}{n:06}");
        let put = tokio::time::timeout(WRITE_TIMEOUT + Duration::from_secs(1), client.put(&key, key.as_bytes()));
        match put.await {
            Ok(Ok(result)) if result.succeeded => {
                written.longest_gap = written.longest_gap.max(last_ack.elapsed());
                last_ack = Instant::now();
                written.acked.push(key);
                acks.fetch_add(1, Ordering::SeqCst);
            }
            _ => {
                written.failed += 1;
                // A call refused at once (a node mid-restart) is tried again after a beat.
                tokio::time::sleep(muster_e2e::wait::POLL_INTERVAL).await;
            }
        }
    }
    written.longest_gap = written.longest_gap.max(last_ack.elapsed());
    written
}

/// Followers, then the leader, restarted under a steady writer and a watched fleet.
pub async fn rolling_restart_keeps_writes_and_workers(stack: &ComposeStack) {
    let client = operator_client(stack);
    let count = workers(stack).await.expect("workers").len();
    let leader = eventually_msg("a leader", CATCH_UP, || leader_view(stack, &client)).await.node_id;
    let mut order: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();
    order.push(leader);

    let (stop, acks) = (AtomicBool::new(false), AtomicUsize::new(0));
    let written = while_every_worker_ready(stack, count, async {
        let restarts = async {
            eventually_msg("the writer's first write", Duration::from_secs(30), || async {
                ensure!(acks.load(Ordering::SeqCst) > 0, "no write acknowledged yet");
                Ok(())
            })
            .await;
            for &id in &order {
                restart_node(stack, &client, id).await;
            }
            stop.store(true, Ordering::SeqCst);
        };
        tokio::join!(restarts, write_until(&client, &stop, &acks)).1
    })
    .await;
    eprintln!(
        "rolling restart ({order:?}): {} writes acknowledged, {} failed or timed out, longest gap {:.2?}",
        written.acked.len(),
        written.failed,
        written.longest_gap
    );
    assert!(
        written.longest_gap < MAX_WRITE_GAP,
        "no write was acknowledged for {:?} (bound {MAX_WRITE_GAP:?}: one election plus slack)",
        written.longest_gap
    );

    let listed = eventually_msg("the rolling-restart keys", Duration::from_secs(30), || async {
        let list = client.list(PREFIX, 0, v1::ReadConsistency::Linearizable).await?;
        ensure!(!list.truncated, "the listing was truncated");
        Ok(list.items)
    })
    .await;
    let stored: std::collections::HashMap<_, _> =
        listed.iter().map(|kv| (kv.key.as_str(), kv.value.as_slice())).collect();
    let lost: Vec<&String> =
        written.acked.iter().filter(|key| stored.get(key.as_str()) != Some(&key.as_bytes())).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes are missing or wrong: {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );

    for id in 1..=3 {
        let container = stack.container(&format!("control-plane-{id}")).await;
        eventually_msg(format!("control-plane-{id} healthy"), CATCH_UP, || async {
            let health = stack.inspect(&container, "{{.State.Health.Status}}").await?;
            ensure!(health == "healthy", "health {health}");
            Ok(())
        })
        .await;
    }
    let after = workers(stack).await.expect("workers after the rolling restart");
    let down: Vec<_> = after.iter().filter(|w| w.state != "ready").collect();
    assert!(down.is_empty() && after.len() == count, "after the rolling restart: {after:?}");
}
