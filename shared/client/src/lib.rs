//! A client for the control plane's API port that finds and follows the leader.
//!
//! Any endpoint will do to start: a follower's "not leader" error carries the leader's id and
//! address ([`muster_middleware::leader_hint`]) and the client retries there at once. Writes
//! carry this client's id and a sequence number, so retrying after a lost answer or a leader
//! change applies the write exactly once. Every call is a `grpc.client` span whose
//! `traceparent` the control plane adopts (liveness batches are traced at DEBUG only).

mod backup;
mod channels;
mod client;
mod error;
mod liveness;
mod registry;
mod tokens;
mod watch;
mod workers;

pub use client::{ClientOptions, ControlPlaneClient};
pub use error::{ClientError, TransportMismatch};
pub use muster_proto::v1::ReadConsistency;
pub use watch::{KvWatch, KvWatchItem, ResumableWatch, WorkerWatch, WorkerWatchItem};
pub use workers::WorkerAction;
