//! The seed's `ClusterMode`: how a node takes part in cluster membership. It is the `[cluster]`
//! table of every Muster config, and its variant names, field names and defaults are the
//! contract between operators' TOML files and the daemons, so they live here once.

mod peer;
mod tagged;
mod validate;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

pub use peer::{RaftPeer, StaticPeer};
pub(crate) use tagged::TAG;
pub(crate) use validate::{check_host_port, human, positive};

/// How the daemon participates in (or doesn't) cluster membership.
///
/// In TOML this is the `[cluster]` table; its `mode` key picks the variant (kebab-case) and the
/// other keys are that variant's fields (snake_case). Unknown keys are errors, and so is a
/// missing or unknown `mode`:
///
/// ```toml
/// [cluster]
/// mode = "raft"
/// node_id = 1
/// peers = [
///   { id = 1, raft_addr = "10.0.0.1:3668" },
///   { id = 2, raft_addr = "10.0.0.2:3668", api_addr = "10.0.0.2:3669" },
/// ]
/// ```
///
/// Durations are humantime strings (`"5s"`, `"10m"`). When a config omits the table entirely,
/// the mode is [`ClusterMode::SingleNode`].
///
/// The `WorkerTier` variant is intentionally large because it carries the full server-role +
/// worker-role config inline. `ClusterMode` is parsed once at daemon startup and lives for the
/// process lifetime, so the size delta is irrelevant in practice, and boxing it would force
/// every caller of [`is_worker_tier_server()`](Self::is_worker_tier_server) /
/// [`adaptive_ttl_config()`](Self::adaptive_ttl_config) through an extra indirection for no win.
///
/// Serialization is serde's internally tagged form (`tag = "mode"`); deserialization is the same
/// format, implemented in `mode/tagged.rs` so that errors keep their full field path.
/// The seed's default `heartbeat_grace`: slack beyond a TTL before a lease expires. A worker
/// agent assumes it until its first ack says otherwise.
pub const DEFAULT_HEARTBEAT_GRACE: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum ClusterMode {
    /// Single-node daemon. No peers, no consensus. `is_leader()` is always true. Suitable for
    /// development and single-host deployments.
    #[default]
    SingleNode,

    /// openraft-backed consensus across the configured peers. The production mode for
    /// multi-node deployments.
    Raft {
        /// This node's id (must be unique within the cluster).
        node_id: u64,
        /// Peer addresses (raft RPC ports). The daemon's own entry must be present.
        peers: Vec<RaftPeer>,
    },

    /// Static-membership cluster: config-driven peer list, deterministic leader (lowest healthy
    /// node id), HTTP heartbeats for liveness. No consensus log: concurrent writers may race.
    Static {
        /// This node's id (must be unique within the cluster).
        node_id: u64,
        /// All cluster peers including self.
        peers: Vec<StaticPeer>,
        /// Heartbeat probe interval. Default 5s.
        #[serde(with = "humantime_serde")]
        heartbeat_interval: Duration,
        /// Time after which a peer with no heartbeat is Unreachable. Default 15s (3x interval).
        #[serde(with = "humantime_serde")]
        failure_threshold: Duration,
        /// Beyond the seed: a node acts as leader only while it sees a majority of `peers`
        /// healthy, so the minority side of a partition refuses writes instead of leading a
        /// second history. Default true; `false` is the seed's behaviour (every side of a
        /// partition leads, concurrent writers race).
        require_majority: bool,
    },

    /// Nomad-style worker tier: 3–7 control-plane nodes run Raft consensus; up to ~10,000
    /// worker nodes join as gRPC clients with adaptive-TTL heartbeats and never enter consensus.
    ///
    /// Workers are issued mTLS leaf certs by the cluster's worker CA during `Register`.
    /// Heartbeat cadence scales with cluster size: every `StatusAck` carries the next TTL
    /// computed from `clamp(N_workers / max_heartbeats_per_second, min_ttl, max_ttl)`.
    WorkerTier {
        /// What role THIS node plays. Required.
        role: WorkerTierRole,
        /// Server-only: this node's id within the raft control plane. Required when
        /// `role = "server"`; ignored on workers (assigned by the leader during `Register`).
        node_id: Option<u64>,
        /// Server-only: the raft control-plane peer list (3-7 nodes). Required when
        /// `role = "server"`. Default empty.
        peers: Vec<RaftPeer>,
        /// Server-only: address to bind the worker-facing gRPC server. Default `0.0.0.0:3670`
        /// (the API server uses 3669; gRPC takes 3670).
        worker_grpc_addr: SocketAddr,
        /// Worker-only: control-plane gRPC endpoints to try (round-robin fallback). Required
        /// when `role = "worker"`. Default empty.
        servers: Vec<String>,
        /// Worker-only: path to the bootstrap token file (single line, URL-safe base64 of a
        /// `WorkerBootstrapToken`).
        token_file: Option<String>,
        /// Worker-only: directory to persist the mTLS identity (`cert.pem`, `key.pem`,
        /// `ca.pem`). Defaults to `<data_dir>/worker/identity/`.
        identity_dir: Option<String>,
        /// Server-only: worker CA storage directory. Defaults to `<data_dir>/cluster/` (same as
        /// the cluster CA + signer).
        worker_ca_dir: Option<String>,
        /// Shared: minimum heartbeat TTL. Default 10s.
        #[serde(with = "humantime_serde")]
        heartbeat_min_ttl: Duration,
        /// Shared: maximum heartbeat TTL. Default 10min.
        #[serde(with = "humantime_serde")]
        heartbeat_max_ttl: Duration,
        /// Shared: grace period beyond TTL before a worker's lease is considered expired.
        /// Default 10s.
        #[serde(with = "humantime_serde")]
        heartbeat_grace: Duration,
        /// Server-only: cluster-wide cap on heartbeats/second the leader is willing to absorb.
        /// The leader hands every worker a TTL such that the total heartbeat rate stays at or
        /// below this. Default 50 (Nomad's default).
        max_heartbeats_per_second: u32,
        /// Server-only: TTL applied immediately after a leader election so workers don't all
        /// expire while the new leader is bootstrapping its FSM. Default 5min.
        #[serde(with = "humantime_serde")]
        failover_heartbeat_ttl: Duration,
        /// Free-form node labels (placement, selector matching, etc.). Default empty.
        labels: HashMap<String, String>,
    },
}

/// Which side of the worker tier this node is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkerTierRole {
    /// A control-plane node: runs Raft, signs worker certificates, owns leases.
    Server,
    /// A worker node: registers with a token, then heartbeats; never enters consensus.
    Worker,
}

/// The adaptive heartbeat-TTL policy knobs of a [`ClusterMode::WorkerTier`] config, in the
/// shape the lease and heartbeat code consumes them. `Default` is the seed's defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdaptiveTtlConfig {
    /// Lower bound of the TTL handed to workers (`heartbeat_min_ttl`).
    pub min_ttl: Duration,
    /// Upper bound of the TTL handed to workers (`heartbeat_max_ttl`).
    pub max_ttl: Duration,
    /// Slack beyond the TTL before a lease expires (`heartbeat_grace`).
    pub grace: Duration,
    /// Cluster-wide heartbeat budget per second (`max_heartbeats_per_second`).
    pub max_heartbeats_per_second: u32,
    /// TTL given to every lease right after a leader election (`failover_heartbeat_ttl`).
    pub failover_ttl: Duration,
}

impl AdaptiveTtlConfig {
    /// Most random stagger added on top of [`base_ttl`](Self::base_ttl), as a share of it,
    /// so that workers never beat in lockstep.
    pub const STAGGER_FRACTION: f64 = 0.1;

    /// The TTL for a fleet of `workers` spread over `gateways` live gateways:
    /// `clamp(N / (max_heartbeats_per_second × G), min_ttl, max_ttl)`. `G = 1` is the seed's
    /// formula; `G = 0` counts as 1.
    pub fn base_ttl(&self, workers: u64, gateways: u32) -> Duration {
        let per_second = f64::from(self.max_heartbeats_per_second.max(1)) * f64::from(gateways.max(1));
        let ideal = Duration::from_secs_f64(workers as f64 / per_second);
        ideal.clamp(self.min_ttl, self.max_ttl.max(self.min_ttl))
    }

    /// The largest TTL any gateway can have issued for a fleet of `workers`: the base TTL for a
    /// single gateway plus the largest stagger.
    pub fn largest_issuable_ttl(&self, workers: u64) -> Duration {
        self.base_ttl(workers, 1).mul_f64(1.0 + Self::STAGGER_FRACTION)
    }
}

impl Default for AdaptiveTtlConfig {
    fn default() -> Self {
        Self {
            min_ttl: defaults::heartbeat_min_ttl(),
            max_ttl: defaults::heartbeat_max_ttl(),
            grace: defaults::heartbeat_grace(),
            max_heartbeats_per_second: defaults::max_heartbeats_per_second(),
            failover_ttl: defaults::failover_heartbeat_ttl(),
        }
    }
}

impl ClusterMode {
    /// Extract an [`AdaptiveTtlConfig`] from a `WorkerTier` variant. Returns `None` for other
    /// modes.
    pub fn adaptive_ttl_config(&self) -> Option<AdaptiveTtlConfig> {
        match self {
            Self::WorkerTier {
                heartbeat_min_ttl,
                heartbeat_max_ttl,
                heartbeat_grace,
                max_heartbeats_per_second,
                failover_heartbeat_ttl,
                ..
            } => Some(AdaptiveTtlConfig {
                min_ttl: *heartbeat_min_ttl,
                max_ttl: *heartbeat_max_ttl,
                grace: *heartbeat_grace,
                max_heartbeats_per_second: *max_heartbeats_per_second,
                failover_ttl: *failover_heartbeat_ttl,
            }),
            Self::SingleNode | Self::Raft { .. } | Self::Static { .. } => None,
        }
    }

    /// Convenience: is this a worker-tier server-role config?
    pub fn is_worker_tier_server(&self) -> bool {
        matches!(self, Self::WorkerTier { role: WorkerTierRole::Server, .. })
    }

    /// Convenience: is this a worker-tier worker-role config?
    pub fn is_worker_tier_worker(&self) -> bool {
        matches!(self, Self::WorkerTier { role: WorkerTierRole::Worker, .. })
    }

    /// The mode's name as written in `mode = "..."`: `single-node`, `raft`, `static` or
    /// `worker-tier`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::SingleNode => "single-node",
            Self::Raft { .. } => "raft",
            Self::Static { .. } => "static",
            Self::WorkerTier { .. } => "worker-tier",
        }
    }

    /// This node's entry in its own Raft peer list (`raft` mode, or `worker-tier` with
    /// `role = "server"`), if there is one.
    pub fn own_raft_peer(&self) -> Option<&RaftPeer> {
        let (node_id, peers) = match self {
            Self::Raft { node_id, peers } => (*node_id, peers),
            Self::WorkerTier { role: WorkerTierRole::Server, node_id: Some(node_id), peers, .. } => (*node_id, peers),
            _ => return None,
        };
        peers.iter().find(|peer| peer.id == node_id)
    }
}

/// The seed's defaults, shared by deserialization and [`AdaptiveTtlConfig::default`].
pub(crate) mod defaults {
    use std::net::{Ipv4Addr, SocketAddr};
    use std::time::Duration;

    pub(crate) fn static_heartbeat_interval() -> Duration {
        Duration::from_secs(5)
    }

    pub(crate) fn static_failure_threshold() -> Duration {
        Duration::from_secs(15)
    }

    pub(crate) fn static_require_majority() -> bool {
        true
    }

    pub(crate) fn worker_grpc_addr() -> SocketAddr {
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, crate::DEFAULT_WORKER_GRPC_PORT))
    }

    pub(crate) fn heartbeat_min_ttl() -> Duration {
        Duration::from_secs(10)
    }

    pub(crate) fn heartbeat_max_ttl() -> Duration {
        Duration::from_secs(10 * 60)
    }

    pub(crate) fn heartbeat_grace() -> Duration {
        crate::DEFAULT_HEARTBEAT_GRACE
    }

    pub(crate) fn max_heartbeats_per_second() -> u32 {
        50
    }

    pub(crate) fn failover_heartbeat_ttl() -> Duration {
        Duration::from_secs(5 * 60)
    }
}
