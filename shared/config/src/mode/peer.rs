//! Peer entries of the `raft`, `static` and `worker-tier` peer lists. A peer's `api_addr`
//! may be left out of the TOML: clients then dial the raft host on the default API port, which
//! is what a default deployment listens on.

use serde::{Deserialize, Serialize};

/// One member of a Raft control plane: its id and the addresses other nodes dial.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "RaftPeerFields")]
pub struct RaftPeer {
    /// The peer's node id, unique within the cluster.
    pub id: u64,
    /// `host:port` of the peer's Raft RPC listener.
    pub raft_addr: String,
    /// `host:port` of the peer's API listener. Optional in TOML: defaults to the host of
    /// `raft_addr` with port 3669.
    pub api_addr: String,
}

impl RaftPeer {
    /// A peer whose API listens on the default port of `raft_addr`'s host.
    pub fn new(id: u64, raft_addr: impl Into<String>) -> Self {
        RaftPeerFields { id, raft_addr: raft_addr.into(), api_addr: None }.into()
    }
}

/// What the TOML may say about a [`RaftPeer`]; `api_addr` is filled in from `raft_addr`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RaftPeerFields {
    id: u64,
    raft_addr: String,
    api_addr: Option<String>,
}

impl From<RaftPeerFields> for RaftPeer {
    fn from(fields: RaftPeerFields) -> Self {
        let api_addr = fields.api_addr.unwrap_or_else(|| default_api_addr(&fields.raft_addr));
        Self { id: fields.id, raft_addr: fields.raft_addr, api_addr }
    }
}

/// One member of a `static` cluster: its id, the address of its peer endpoint (heartbeats and
/// replication, HTTPS) and the API address clients are sent to when it leads.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "StaticPeerFields")]
pub struct StaticPeer {
    /// The peer's node id, unique within the cluster.
    pub id: u64,
    /// `host:port` other nodes probe for heartbeats (the node's `listen.raft_addr`: in static
    /// mode the peer port serves the static peer protocol instead of Raft).
    pub addr: String,
    /// `host:port` of the peer's API listener. Optional in TOML: defaults to the host of
    /// `addr` with port 3669.
    pub api_addr: String,
}

impl StaticPeer {
    /// A peer whose API listens on the default port of `addr`'s host.
    pub fn new(id: u64, addr: impl Into<String>) -> Self {
        StaticPeerFields { id, addr: addr.into(), api_addr: None }.into()
    }
}

/// What the TOML may say about a [`StaticPeer`]; `api_addr` is filled in from `addr`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StaticPeerFields {
    id: u64,
    addr: String,
    api_addr: Option<String>,
}

impl From<StaticPeerFields> for StaticPeer {
    fn from(fields: StaticPeerFields) -> Self {
        let api_addr = fields.api_addr.unwrap_or_else(|| default_api_addr(&fields.addr));
        Self { id: fields.id, addr: fields.addr, api_addr }
    }
}

/// The host of a peer address with the default API port.
fn default_api_addr(addr: &str) -> String {
    // `rsplit_once` keeps an IPv6 host's brackets: "[::1]:3668" -> "[::1]".
    let host = addr.rsplit_once(':').map_or(addr, |(host, _port)| host);
    format!("{host}:{}", crate::DEFAULT_API_PORT)
}
