//! The seed's `static` mode, which has no consensus log: a config-driven peer list, each node
//! probing every peer every `heartbeat_interval`, a peer Unreachable after
//! `failure_threshold` without an answer, and the lowest healthy id leading.
//!
//! - [`health`]: one node's view of its peers and who leads in it (pure, the clock passed in).
//!
//! The prober, replication of KV writes and the gRPC wiring follow; until then the control
//! plane refuses `mode = "static"` at start with an error naming the supported modes.

pub mod health;
