//! The seed's `Node::run` sequence: connect peers → health check → join (bootstrap or join
//! as learner) → readiness, then keep readiness and the cluster id up to date.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use muster_middleware::leader_hint;
use muster_proto::v1;
use muster_proto::v1::cluster_management_service_client::ClusterManagementServiceClient;
use openraft::async_runtime::WatchReceiver;
use tokio::sync::watch;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::leadership::Leadership as _;
use crate::node::{NodeHandle, is_caught_up, is_serving_member, waiting_for};
use crate::types::{NodeAddr, NodeId};

/// How a node becomes a member.
#[derive(Clone, Debug)]
pub enum Membership {
    /// First start of a configured cluster: initialize with these voters (idempotent when
    /// every initial member does it with the same set).
    Bootstrap(BTreeMap<NodeId, NodeAddr>),
    /// Join an existing cluster through any of these API addresses, as a learner.
    Join(Vec<String>),
}

pub async fn run(node: Arc<NodeHandle>, membership: Membership, mut shutdown: watch::Receiver<bool>) {
    let initialized = node.raft.is_initialized().await.unwrap_or(false);
    if !initialized {
        let joined = tokio::select! {
            result = become_member(&node, membership) => result,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        if let Err(err) = joined {
            tracing::error!(error = %err, "could not become a cluster member");
            return;
        }
    }
    tokio::spawn(record_cluster_id(node.clone(), shutdown.clone()));
    let mut metrics = node.raft.metrics();
    loop {
        let current = metrics.borrow_and_update().clone();
        // Catching up gates readiness once; after that the apply loop trailing the commit
        // index by a few entries is normal operation, not "behind".
        let ready =
            if node.server_is_ready() { is_serving_member(node.id, &current) } else { is_caught_up(node.id, &current) };
        node.set_ready(ready);
        if !ready {
            node.set_not_ready_reason(waiting_for(node.id, &current));
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            _ = shutdown.wait_for(|stop| *stop) => {
                node.set_ready(false);
                return;
            }
        }
    }
}

async fn become_member(node: &Arc<NodeHandle>, membership: Membership) -> anyhow::Result<()> {
    match membership {
        Membership::Bootstrap(members) => {
            wait_for_peers(node, &members).await;
            match node.raft.initialize(members).await {
                Ok(()) => tracing::info!(node = node.id, "initialized the cluster membership"),
                Err(err) => tracing::info!(node = node.id, %err, "not initializing (already initialized elsewhere)"),
            }
            Ok(())
        }
        Membership::Join(addrs) => join(node, &addrs).await,
    }
}

/// Health-checks every initial peer's Raft port until all answer or 10 s pass, so the first
/// election does not start against peers still booting. Missing peers are only logged: a
/// majority is enough to elect.
async fn wait_for_peers(node: &Arc<NodeHandle>, members: &BTreeMap<NodeId, NodeAddr>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let peers: Vec<String> = members
        .iter()
        .filter(|(id, _)| **id != node.id)
        .map(|(id, addr)| format!("{id} ({})", addr.raft_addr))
        .collect();
    if !peers.is_empty() {
        node.set_not_ready_reason(format!(
            "waiting up to 10 s for peers {} to answer before the first election",
            peers.join(", ")
        ));
    }
    for (id, addr) in members.iter().filter(|(id, _)| **id != node.id) {
        loop {
            let healthy = match node.channels.channel(&addr.raft_addr) {
                Ok(channel) => {
                    let request = HealthCheckRequest { service: String::new() };
                    tokio::time::timeout(Duration::from_secs(1), HealthClient::new(channel).check(request))
                        .await
                        .is_ok_and(|r| r.is_ok())
                }
                Err(_) => false,
            };
            if healthy {
                tracing::info!(peer = id, addr = %addr.raft_addr, "peer is reachable");
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(peer = id, addr = %addr.raft_addr, "peer not reachable yet; continuing");
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Asks the cluster to add this node as a learner, following leader hints, retrying with
/// backoff until it succeeds.
async fn join(node: &Arc<NodeHandle>, addrs: &[String]) -> anyhow::Result<()> {
    let request = v1::JoinRequest {
        node_id: node.id,
        raft_addr: node.addr.raft_addr.clone(),
        api_addr: node.addr.api_addr.clone(),
        wait_caught_up: false,
    };
    let mut backoff = Duration::from_millis(200);
    let mut targets: Vec<String> = addrs.to_vec();
    loop {
        for addr in targets.clone() {
            let Ok(channel) = node.channels.channel(&addr) else { continue };
            match ClusterManagementServiceClient::new(channel).join_cluster(request.clone()).await {
                Ok(response) => {
                    tracing::info!(
                        node = node.id,
                        leader = response.get_ref().leader_id,
                        "joined the cluster as a learner"
                    );
                    return Ok(());
                }
                Err(status) => {
                    if let Some(hint) = leader_hint(&status) {
                        targets.retain(|a| *a != hint.addr);
                        targets.insert(0, hint.addr);
                    }
                    if matches!(status.code(), tonic::Code::InvalidArgument | tonic::Code::AlreadyExists) {
                        anyhow::bail!("the cluster refused to let node {} join: {}", node.id, status.message());
                    }
                    tracing::warn!(via = %addr, error = %status.message(), "join attempt failed; retrying");
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// The first leader of a new cluster names it; the FSM keeps the first name written. Runs
/// until some leader (this node or another) has recorded one.
async fn record_cluster_id(node: Arc<NodeHandle>, mut shutdown: watch::Receiver<bool>) {
    let mut metrics = node.raft.metrics();
    loop {
        if node.reader.cluster_id().ok().flatten().is_some() {
            return;
        }
        if node.raft.is_leader() {
            let cluster_id = format!("{:016x}{:016x}", rand::random::<u64>(), rand::random::<u64>());
            match node.propose(v1::command::Op::InitCluster(v1::InitCluster { cluster_id })).await {
                Ok(_) => continue,
                Err(err) => tracing::debug!(error = %err, "could not record the cluster id yet; retrying"),
            }
        }
        // Wake on the next Raft state change, or retry after a short pause.
        tokio::select! {
            _ = metrics.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}
