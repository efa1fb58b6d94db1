//! `musterctl cluster ...`: status, members, leader, join, promote, demote, remove.

use clap::Subcommand;
use muster_proto::v1;

use crate::connect::ConnectArgs;
use crate::output::{Format, print_json, print_table};

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Leader, term and log positions.
    Status,
    /// Every member with its role and addresses.
    Members,
    /// The current leader.
    Leader,
    /// Add a node as a learner (it then catches up from the leader).
    Join {
        /// The new node's id (its `node_id` setting), unique in the cluster.
        #[arg(long)]
        node_id: u64,
        /// Where the other members reach the new node's Raft port (host:port).
        #[arg(long)]
        raft_addr: String,
        /// Where clients reach the new node's API port (host:port).
        #[arg(long)]
        api_addr: String,
        /// Wait until the learner has caught up.
        #[arg(long)]
        wait: bool,
    },
    /// Make learners voters (joint consensus).
    Promote {
        /// Ids of the learners to promote.
        node_ids: Vec<u64>,
    },
    /// Make voters learners.
    Demote {
        /// Ids of the voters to demote.
        node_ids: Vec<u64>,
    },
    /// Remove members from the cluster.
    Remove {
        /// Ids of the members to remove.
        node_ids: Vec<u64>,
    },
}

fn role_name(role: i32) -> &'static str {
    match v1::MemberRole::try_from(role) {
        Ok(v1::MemberRole::Voter) => "voter",
        Ok(v1::MemberRole::Learner) => "learner",
        _ => "unknown",
    }
}

/// A member's health in the answering node's view: static mode tracks it, Raft does not.
fn health_name(health: i32) -> Option<&'static str> {
    match v1::PeerHealth::try_from(health) {
        Ok(v1::PeerHealth::Healthy) => Some("healthy"),
        Ok(v1::PeerHealth::Unreachable) => Some("unreachable"),
        _ => None,
    }
}

fn is_static(meta: &v1::ClusterMembership) -> bool {
    meta.mode == "static"
}

/// How long ago a Unix-millisecond instant was, for people ("1.2s ago"; "-" for never).
fn ago(unix_ms: u64) -> String {
    if unix_ms == 0 {
        return "-".into();
    }
    let now = muster_proto::clock::since_epoch().as_millis() as u64;
    format!("{:.1}s ago", now.saturating_sub(unix_ms) as f64 / 1000.0)
}

fn members_json(meta: &v1::ClusterMembership) -> serde_json::Value {
    meta.members
        .iter()
        .map(|m| {
            let mut member = serde_json::json!({
                "node_id": m.node_id, "role": role_name(m.role), "raft_addr": m.raft_addr,
                "api_addr": m.api_addr, "leader": m.is_leader, "matched_index": m.matched_index,
            });
            if let Some(health) = health_name(m.health) {
                member["health"] = health.into();
                member["last_heartbeat_unix_ms"] = m.last_heartbeat_unix_ms.into();
            }
            member
        })
        .collect()
}

fn status_json(meta: &v1::ClusterMembership) -> serde_json::Value {
    serde_json::json!({
        "cluster_id": meta.cluster_id, "node_id": meta.node_id, "state": meta.state,
        "leader_id": meta.leader_id, "leader_api_addr": meta.leader_api_addr, "term": meta.term,
        "commit_index": meta.commit_index, "applied_index": meta.applied_index,
        "last_log_index": meta.last_log_index, "snapshot_index": meta.snapshot_index,
        "purged_index": meta.purged_index, "joint": meta.joint, "ready": meta.ready,
        "not_ready_reason": meta.not_ready_reason, "mode": meta.mode,
        "members": members_json(meta),
    })
}

fn print_members(meta: &v1::ClusterMembership, format: Format) {
    match format {
        Format::Json => print_json(&members_json(meta)),
        Format::Table if is_static(meta) => {
            let rows: Vec<Vec<String>> = meta
                .members
                .iter()
                .map(|m| {
                    let own = m.node_id == meta.node_id;
                    vec![
                        m.node_id.to_string(),
                        health_name(m.health).unwrap_or("unknown").to_string(),
                        if m.is_leader { "yes".into() } else { String::new() },
                        m.raft_addr.clone(),
                        m.api_addr.clone(),
                        if own { "(this node)".into() } else { ago(m.last_heartbeat_unix_ms) },
                    ]
                })
                .collect();
            print_table(&["ID", "HEALTH", "LEADER", "PEER ADDR", "API ADDR", "LAST HEARTBEAT"], &rows);
        }
        Format::Table => {
            let rows: Vec<Vec<String>> = meta
                .members
                .iter()
                .map(|m| {
                    vec![
                        m.node_id.to_string(),
                        role_name(m.role).to_string(),
                        if m.is_leader { "yes".into() } else { String::new() },
                        m.raft_addr.clone(),
                        m.api_addr.clone(),
                        m.matched_index.to_string(),
                    ]
                })
                .collect();
            print_table(&["ID", "ROLE", "LEADER", "RAFT ADDR", "API ADDR", "MATCHED"], &rows);
        }
    }
}

pub async fn run(command: ClusterCommand, connect: &ConnectArgs, format: Format) -> anyhow::Result<()> {
    use v1::cluster_conf_change_request::Change;
    let client = connect.client()?;
    match command {
        ClusterCommand::Status => {
            let meta = client.metadata().await?;
            let certificates = crate::cluster_certs::gather(&client, &meta).await;
            match format {
                Format::Json => {
                    let mut status = status_json(&meta);
                    status["certificates"] = crate::cluster_certs::json(&certificates);
                    print_json(&status);
                }
                Format::Table => {
                    let leader = if meta.leader_id == 0 {
                        "none".to_string()
                    } else {
                        format!("{} ({})", meta.leader_id, meta.leader_api_addr)
                    };
                    let readiness =
                        if meta.ready { "ready".to_owned() } else { format!("not ready: {}", meta.not_ready_reason) };
                    if is_static(&meta) {
                        println!("mode:        static (no consensus log; see docs/architecture.md)");
                        println!("answered by: node {} ({}, {readiness})", meta.node_id, meta.state);
                        println!("leader:      {leader} (lowest healthy id in this node's view)");
                        println!("epoch:       {}", meta.term);
                        println!("revision:    {} (this node's KV)", meta.applied_index);
                        for line in crate::cluster_certs::lines(&certificates, muster_proto::clock::unix_now()) {
                            println!("{line}");
                        }
                        println!();
                        print_members(&meta, Format::Table);
                        return Ok(());
                    }
                    println!("cluster id:  {}", meta.cluster_id);
                    println!("answered by: node {} ({}, {readiness})", meta.node_id, meta.state);
                    println!("leader:      {leader}");
                    println!("term:        {}", meta.term);
                    println!(
                        "log:         last {} / committed {} / applied {} / snapshot {} / purged {}",
                        meta.last_log_index,
                        meta.commit_index,
                        meta.applied_index,
                        meta.snapshot_index,
                        meta.purged_index
                    );
                    if meta.joint {
                        println!("membership:  joint (a change is in progress)");
                    }
                    for line in crate::cluster_certs::lines(&certificates, muster_proto::clock::unix_now()) {
                        println!("{line}");
                    }
                    println!();
                    print_members(&meta, Format::Table);
                }
            }
        }
        ClusterCommand::Members => print_members(&client.metadata().await?, format),
        ClusterCommand::Leader => {
            let leader = client.discover_leader().await?;
            match format {
                Format::Json => print_json(&serde_json::json!({
                    "leader_id": leader.leader_id, "api_addr": leader.leader_api_addr,
                    "raft_addr": leader.leader_raft_addr, "term": leader.term,
                })),
                Format::Table => println!("{} {} (term {})", leader.leader_id, leader.leader_api_addr, leader.term),
            }
        }
        ClusterCommand::Join { node_id, raft_addr, api_addr, wait } => {
            let response = client.join(v1::JoinRequest { node_id, raft_addr, api_addr, wait_caught_up: wait }).await?;
            match (format, response.membership) {
                (Format::Json, Some(meta)) => print_json(&status_json(&meta)),
                (_, Some(meta)) => {
                    println!(
                        "node {node_id} joined as a learner; promote it with `musterctl cluster promote {node_id}`"
                    );
                    print_members(&meta, Format::Table);
                }
                (_, None) => println!("node {node_id} joined as a learner"),
            }
        }
        ClusterCommand::Promote { node_ids }
        | ClusterCommand::Demote { node_ids }
        | ClusterCommand::Remove { node_ids }
            if node_ids.is_empty() =>
        {
            anyhow::bail!("give at least one node id");
        }
        ClusterCommand::Promote { node_ids } => {
            change(&client, Change::Promote(v1::NodeIds { node_ids }), format).await?
        }
        ClusterCommand::Demote { node_ids } => {
            change(&client, Change::Demote(v1::NodeIds { node_ids }), format).await?
        }
        ClusterCommand::Remove { node_ids } => {
            change(&client, Change::Remove(v1::NodeIds { node_ids }), format).await?
        }
    }
    Ok(())
}

async fn change(
    client: &muster_client::ControlPlaneClient,
    change: v1::cluster_conf_change_request::Change,
    format: Format,
) -> anyhow::Result<()> {
    let response = client.update_conf(change).await?;
    match (format, response.membership) {
        (Format::Json, Some(meta)) => {
            print_json(&serde_json::json!({"index": response.index, "status": status_json(&meta)}))
        }
        (_, Some(meta)) => {
            println!("membership changed at log index {}", response.index);
            print_members(&meta, Format::Table);
        }
        (_, None) => println!("membership changed at log index {}", response.index),
    }
    Ok(())
}
