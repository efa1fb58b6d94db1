//! Inbound gRPC services. Handlers decode, call the Raft node or the FSM reader, and map
//! errors through [`errors`]; no protocol logic lives here.

mod client_service;
mod cluster_service;
mod liveness_service;
mod maintenance_service;
mod raft_service;
mod registry_service;
mod snapshot_service;
pub(crate) mod token_service;
mod worker_admin_service;

pub use client_service::{ClientApi, MAX_KEY_BYTES, kv_server};
pub use cluster_service::ClusterApi;
pub use liveness_service::LivenessApi;
pub use maintenance_service::MaintenanceApi;
pub use raft_service::RaftPeerApi;
pub use registry_service::RegistryApi;
pub use snapshot_service::SnapshotApi;
pub use token_service::TokenApi;
pub use worker_admin_service::WorkerAdminApi;
