//! Muster's configuration, in one crate so every deployable reads the same file format, the
//! same `MUSTER_*` environment variables and the same error messages.
//!
//! Layout:
//! - [`mode`]: the seed's [`ClusterMode`] (the `[cluster]` table) and its peers, helpers and
//!   `validate()`;
//! - [`daemon`]: [`ControlPlaneConfig`], the control-plane daemon's whole configuration;
//! - [`load`]: [`ConfigLoader`], layering serde defaults, TOML files, `MUSTER_*` environment
//!   variables and flag overrides into any `Deserialize` type;
//! - [`listener`]: [`ListenerLimits`] and [`AdminLimits`], the connection-level limits every
//!   deployable's listeners share;
//! - [`error`]: [`ConfigError`], whose every message names the offending field.
//!
//! Start-up is always `ConfigLoader::...load::<T>()` followed by `T::validate()`: loading checks
//! shape (unknown fields, types, durations), validation checks meaning (peer lists, TTL bounds,
//! TLS material). A config that fails either never falls back to a default mode.

pub mod daemon;
pub mod error;
pub mod host;
pub mod leases;
pub mod listener;
pub mod load;
pub mod mode;
pub mod watch;
pub mod worker_gc;

#[cfg(test)]
mod test_support;

pub use daemon::{
    AdvertiseConfig, ControlPlaneConfig, Limits, ListenConfig, LogFormat, RaftTuning, TelemetryConfig, TlsConfig,
};
pub use error::ConfigError;
pub use host::hostname;
pub use leases::LeaseTuning;
pub use listener::{AdminLimits, ListenerLimits};
pub use load::ConfigLoader;
pub use mode::{AdaptiveTtlConfig, ClusterMode, DEFAULT_HEARTBEAT_GRACE, RaftPeer, StaticPeer, WorkerTierRole};
pub use watch::WatchTuning;
pub use worker_gc::WorkerGc;

/// Default port of the Raft peer listener (`listen.raft_addr`).
pub const DEFAULT_RAFT_PORT: u16 = 3668;
/// Default port of the client/API listener (`listen.api_addr`, a peer's `api_addr`).
pub const DEFAULT_API_PORT: u16 = 3669;
/// Default port of the worker-facing gRPC listener (`cluster.worker_grpc_addr`).
pub const DEFAULT_WORKER_GRPC_PORT: u16 = 3670;
/// Default port of the plaintext admin HTTP listener (`listen.admin_addr`).
pub const DEFAULT_ADMIN_PORT: u16 = 3680;
