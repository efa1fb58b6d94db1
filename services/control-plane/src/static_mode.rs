//! The seed's `static` mode, which has no consensus log: a config-driven peer list, each node
//! probing every peer every `heartbeat_interval`, a peer Unreachable after
//! `failure_threshold` without an answer, and the lowest healthy id leading. What it
//! guarantees and what it can lose is in `docs/architecture.md` ("Static mode").
//!
//! - [`health`]: one node's view of its peers and who leads in it (pure, the clock passed in);
//! - [`store`]: the durable KV, each value tagged (epoch, leader, sequence) so replicas
//!   converge by keeping the greatest tag per key;
//! - [`peer_http`]: the peer protocol (heartbeat, push, pull) over HTTP(S), server and client;
//! - [`node`]: the prober, the write path and static mode's answers to the leadership seam;
//! - [`api`], [`metrics`] and [`app`]: the gRPC services, `/metrics` and the wiring.

pub mod api;
pub mod app;
pub mod health;
pub mod metrics;
pub mod node;
pub mod peer_http;
pub mod store;

pub use app::StaticControlPlane;
