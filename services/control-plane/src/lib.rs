//! Muster's control plane: a Raft node (openraft) with redb storage, serving the seed's
//! gRPC services.
//!
//! Layout (folders read as the architecture):
//! - [`store`]: the redb log store, state machine, FSM logic and snapshot files;
//! - [`network`]: outbound peer RPCs (openraft's network traits over tonic);
//! - [`grpc`]: inbound services: peer RPCs on the Raft port, KV and membership on the API port;
//! - [`convert`]: protobuf ↔ openraft conversions; [`data_dir`]: 0700/0600 on disk;
//! - [`node`], [`lifecycle`]: the running node, its readiness and its join sequence;
//! - [`leadership`]: the seam the rest asks who leads (openraft fills it through [`node`],
//!   static mode through [`static_mode::node`]);
//!   [`leases`]: worker leases on the leader; [`errors`]: domain errors → `ApiError`;
//! - [`server`], [`admin_http`], [`app`]: listeners, middleware and wiring;
//! - [`leader_forward`]: followers relay operator calls to the leader;
//! - [`static_mode`]: the seed's `static` mode: peer heartbeats, the lowest healthy id leads,
//!   a tagged KV replicated without a consensus log.

pub mod admin_http;
pub mod app;
pub mod convert;
pub mod data_dir;
pub mod errors;
pub mod grpc;
pub mod leader_forward;
pub mod leadership;
pub mod leases;
pub mod lifecycle;
pub mod network;
pub mod node;
pub mod recover;
pub mod restore;
pub mod server;
pub mod static_mode;
pub mod store;
pub mod types;
pub mod watch;
pub mod worker_ca_export;
pub mod worker_gc;
pub mod write_batch;
pub mod write_profile;

pub use app::{ControlPlane, Listeners, run};

use muster_config::ControlPlaneConfig;

/// openraft's configuration from Muster's `[raft]` settings.
pub fn raft_config(config: &ControlPlaneConfig) -> anyhow::Result<openraft::Config> {
    let tuning = &config.raft;
    let raft = openraft::Config {
        cluster_name: "muster".to_string(),
        heartbeat_interval: tuning.heartbeat_interval.as_millis() as u64,
        election_timeout_min: tuning.election_timeout_min.as_millis() as u64,
        election_timeout_max: tuning.election_timeout_max.as_millis() as u64,
        install_snapshot_timeout: tuning.install_snapshot_timeout.as_millis() as u64,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(tuning.snapshot_after_logs),
        max_in_snapshot_log_to_keep: tuning.max_logs_to_keep,
        enable_pre_vote: Some(true),
        // Appends return once written and fsync on the log's sync thread, so replicating
        // while the leader's own fsync runs overlaps the two disk waits.
        broadcast_submitted_on_append: Some(false),
        ..Default::default()
    };
    Ok(raft.validate()?)
}
