//! End-to-end test harness for Muster: starts real `control-plane` processes on loopback
//! ports, each in its own temporary directory, and drives them with the real client.
//!
//! - [`binaries`]: finds the built `control-plane` and `musterctl` executables;
//! - [`config`]: free ports, node addresses, cluster options and the per-node TOML file;
//! - [`kv`]: numbered keys and batch put / check helpers;
//! - [`pki`]: a throwaway CA with node and operator certificates;
//! - [`process`]: one node's child process and its log file;
//! - [`netns`]: each node in its own network namespace, for partitions;
//! - [`cluster`]: [`Cluster`], the handle tests use (start, kill, restart, join, clients);
//! - [`compose`]: the `compose.yaml` stack under its own project, removed on drop;
//! - [`gateway`]: a real `heartbeat-gateway` process in front of a cluster;
//! - [`fleet`]: hundreds to thousands of simulated workers, beating over [`grpc_stream`] on
//!   the schedule of [`beat_clock`], on the runtimes of [`client_threads`];
//! - [`flood`]: half-open, TLS-only and idle connection floods, and the server's `/proc`;
//! - [`probe`]: metadata, `/readyz` and leader agreement, as tests wait on them;
//! - [`worker_cert`]: a worker certificate's leaf, and `Renew` with it;
//! - [`wait`]: [`eventually`], the only way tests wait for anything.
//!
//! Build the binaries first (`cargo build --workspace --bins`; `tests/run.sh` does it), then
//! `cargo nextest run -p muster-e2e`. Set `MUSTER_BIN_DIR` to test binaries built elsewhere.

pub mod agent;
pub mod beat_clock;
pub mod binaries;
pub mod client_threads;
pub mod cluster;
pub mod compose;
pub mod config;
pub mod fleet;
pub mod flood;
pub mod gateway;
pub mod grpc_stream;
pub mod kv;
pub mod netns;
pub mod otlp;
pub mod pki;
pub mod probe;
pub mod process;
pub mod prometheus;
pub mod registrar;
pub mod wait;
pub mod worker_cert;
pub mod worker_tier;
pub mod writer;

pub use cluster::Cluster;
pub use config::{HeartbeatPolicy, Options, StaticPolicy};
pub use muster_client::{ClientError, ControlPlaneClient, ReadConsistency, WorkerAction};
pub use muster_proto::v1;
pub use wait::{eventually, eventually_msg};
