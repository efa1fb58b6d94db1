//! The openraft type configuration of the control plane and the aliases the rest of the
//! crate uses, so no other module spells out openraft's generic parameters.

use std::fmt;

use muster_proto::v1;

use crate::store::SnapshotFile;

/// Where a control-plane node can be reached: its peer (Raft) and API addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct NodeAddr {
    pub raft_addr: String,
    pub api_addr: String,
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "raft={} api={}", self.raft_addr, self.api_addr)
    }
}

openraft::declare_raft_types!(
    /// Muster's Raft: u64 node ids, protobuf commands, results from the FSM.
    pub TypeConfig:
        D = v1::Command,
        R = v1::CommandResult,
        NodeId = u64,
        Node = NodeAddr,
);

pub type NodeId = u64;
pub type Raft = openraft::Raft<TypeConfig, crate::store::StateMachineStore>;
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type LeaderId = openraft::alias::LeaderIdOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
pub type EntryPayload = openraft::alias::EntryPayloadOf<TypeConfig>;
pub type Membership = openraft::Membership<NodeId, NodeAddr>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>;
pub type RaftMetrics = openraft::RaftMetrics<TypeConfig>;
