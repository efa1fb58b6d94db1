//! The static-mode peer protocol over HTTP(S) (the seed's "HTTP heartbeats"): three POSTs with
//! protobuf bodies on the peer port (`listen.raft_addr`), described in `proto/muster/v1/static.proto`.
//!
//! - [`server`]: the listener, built like the admin listener (hyper and the same tower-http
//!   stack, `muster_admin::http_service`: request ids, a body limit, a response timeout, a
//!   panic answered 500) but over mTLS through
//!   `muster-listener` (caps, handshake and first-bytes deadlines), admitting only
//!   control-plane certificates: a stolen worker, gateway or operator certificate cannot
//!   pose as a peer, push values or read the store;
//! - [`client`]: one kept-alive HTTP/1.1 connection per peer, re-dialled after any failure,
//!   checking that the server is a control-plane node at the address dialled.
//!
//! HTTP/1.1 rather than gRPC: the seed names HTTP heartbeats, a probe is one small request per
//! interval, and an operator can see a peer endpoint answer with nothing but curl.

pub mod client;
pub mod server;

pub use client::{PeerClient, PeerError};
pub use server::{PeerProtocol, serve};

/// The heartbeat: each side says where it stands.
pub const HEARTBEAT_PATH: &str = "/static/v1/heartbeat";
/// The leader pushing writes to a replica.
pub const ENTRIES_PATH: &str = "/static/v1/entries";
/// A node pulling the changes it missed.
pub const CHANGES_PATH: &str = "/static/v1/changes";
/// The content type of every request and answer.
pub const CONTENT_TYPE: &str = "application/x-protobuf";
