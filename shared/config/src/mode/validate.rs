//! Semantic checks of a [`ClusterMode`]: what serde cannot see, such as a node missing from its
//! own peer list or TTL bounds the wrong way round. Each error names the field to fix under
//! `cluster.`, the table the mode lives in.

use std::collections::HashMap;
use std::time::Duration;

use super::{ClusterMode, RaftPeer, StaticPeer, WorkerTierRole};
use crate::ConfigError;

impl ClusterMode {
    /// Check that the mode makes sense: peer lists are non-empty, hold this node and have
    /// unique ids and addresses; a worker-tier server has a `node_id` and peers, a worker has
    /// `servers`; durations are positive and `heartbeat_min_ttl <= heartbeat_max_ttl`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self {
            Self::SingleNode => Ok(()),
            Self::Raft { node_id, peers } => check_peers(*node_id, peers),
            Self::Static { node_id, peers, heartbeat_interval, failure_threshold, .. } => {
                check_peers(*node_id, peers)?;
                positive("cluster.heartbeat_interval", *heartbeat_interval)?;
                if failure_threshold <= heartbeat_interval {
                    return Err(ConfigError::invalid(
                        "cluster.failure_threshold",
                        format!(
                            "{} must be longer than heartbeat_interval ({})",
                            human(*failure_threshold),
                            human(*heartbeat_interval)
                        ),
                    ));
                }
                Ok(())
            }
            Self::WorkerTier {
                role,
                node_id,
                peers,
                servers,
                heartbeat_min_ttl,
                heartbeat_max_ttl,
                heartbeat_grace,
                max_heartbeats_per_second,
                failover_heartbeat_ttl,
                labels,
                ..
            } => {
                match role {
                    WorkerTierRole::Server => {
                        let node_id = node_id.ok_or_else(|| {
                            ConfigError::invalid("cluster.node_id", "required when role = \"server\"")
                        })?;
                        check_peers(node_id, peers)?;
                    }
                    WorkerTierRole::Worker => {
                        if servers.is_empty() {
                            return Err(ConfigError::invalid(
                                "cluster.servers",
                                "at least one control-plane endpoint is required when role = \"worker\"",
                            ));
                        }
                        if let Some(i) = servers.iter().position(|s| s.trim().is_empty()) {
                            return Err(ConfigError::invalid(format!("cluster.servers[{i}]"), "must not be empty"));
                        }
                    }
                }
                positive("cluster.heartbeat_min_ttl", *heartbeat_min_ttl)?;
                if heartbeat_min_ttl > heartbeat_max_ttl {
                    return Err(ConfigError::invalid(
                        "cluster.heartbeat_min_ttl",
                        format!(
                            "{} is greater than heartbeat_max_ttl ({})",
                            human(*heartbeat_min_ttl),
                            human(*heartbeat_max_ttl)
                        ),
                    ));
                }
                positive("cluster.heartbeat_grace", *heartbeat_grace)?;
                positive("cluster.failover_heartbeat_ttl", *failover_heartbeat_ttl)?;
                if *max_heartbeats_per_second == 0 {
                    return Err(ConfigError::invalid("cluster.max_heartbeats_per_second", "must be greater than zero"));
                }
                if labels.keys().any(|key| key.is_empty()) {
                    return Err(ConfigError::invalid("cluster.labels", "label keys must not be empty"));
                }
                Ok(())
            }
        }
    }
}

/// The parts of a peer entry the membership checks look at.
trait Peer {
    fn id(&self) -> u64;
    /// `(field name, address)` pairs, each of which must be `host:port`.
    fn addrs(&self) -> Vec<(&'static str, &str)>;
}

impl Peer for RaftPeer {
    fn id(&self) -> u64 {
        self.id
    }
    fn addrs(&self) -> Vec<(&'static str, &str)> {
        vec![("raft_addr", &self.raft_addr), ("api_addr", &self.api_addr)]
    }
}

impl Peer for StaticPeer {
    fn id(&self) -> u64 {
        self.id
    }
    fn addrs(&self) -> Vec<(&'static str, &str)> {
        vec![("addr", &self.addr), ("api_addr", &self.api_addr)]
    }
}

fn check_peers<P: Peer>(node_id: u64, peers: &[P]) -> Result<(), ConfigError> {
    if peers.is_empty() {
        return Err(ConfigError::invalid(
            "cluster.peers",
            "at least one peer is required, including this node's own entry",
        ));
    }
    let mut ids = HashMap::new();
    let mut addrs = HashMap::new();
    for (i, peer) in peers.iter().enumerate() {
        if let Some(first) = ids.insert(peer.id(), i) {
            return Err(ConfigError::invalid(
                format!("cluster.peers[{i}].id"),
                format!("duplicate peer id {} (peers[{first}] has it too)", peer.id()),
            ));
        }
        for (name, addr) in peer.addrs() {
            let field = format!("cluster.peers[{i}].{name}");
            check_host_port(&field, addr)?;
            if let Some((first, first_name)) = addrs.insert(addr, (i, name)) {
                return Err(ConfigError::invalid(field, format!("`{addr}` is also peers[{first}].{first_name}")));
            }
        }
    }
    if !ids.contains_key(&node_id) {
        return Err(ConfigError::invalid("cluster.peers", format!("node_id {node_id} is not in the peer list")));
    }
    Ok(())
}

/// `value` must look like `host:port` (a name or IP, brackets around IPv6, a numeric port).
pub(crate) fn check_host_port(field: &str, value: &str) -> Result<(), ConfigError> {
    let well_formed = match value.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && !host.contains(char::is_whitespace) && port.parse::<u16>().is_ok(),
        None => false,
    };
    if well_formed { Ok(()) } else { Err(ConfigError::invalid(field, format!("`{value}` is not a host:port address"))) }
}

pub(crate) fn positive(field: &str, value: Duration) -> Result<(), ConfigError> {
    if value.is_zero() { Err(ConfigError::invalid(field, "must be greater than zero")) } else { Ok(()) }
}

pub(crate) fn human(value: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(value)
}
