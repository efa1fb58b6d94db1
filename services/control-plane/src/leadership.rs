//! The leadership seam: the few questions the rest of the control plane asks about who leads,
//! so leases, the sweeper and the worker-tier handlers never reach into openraft. openraft
//! answers them for `raft` and `worker-tier` (`NodeHandle`, in `node.rs`, so this module
//! depends on nothing that depends on it); a backend without a consensus
//! log (the seed's `static` mode) answers the same questions its own way.
//!
//! - [`Leadership::standing`]: where this node believes it stands now (cheap, unconfirmed);
//! - [`Leadership::confirm`]: that it still leads, checked with the cluster, and that its
//!   applied state is current, before a read that must not be stale;
//! - [`Leadership::propose_command`] (and [`Leadership::propose`], without a client session):
//!   one state-machine command, answered once applied here;
//! - [`Leadership::applied`]: the applied state, as the backend keeps it ([`Leadership::Applied`]:
//!   the FSM for Raft, the tagged KV for static; both answer [`AppliedKv`], which is all the
//!   KV API reads); [`Leadership::not_leader`]: the answer (with a hint where to go) for a
//!   leader-only request on a node that does not lead; [`Leadership::membership`]: the members
//!   and their health as this node sees them.

use std::future::Future;
use std::io;
use std::sync::Arc;

use muster_middleware::ApiError;
use muster_proto::v1;

use crate::store::FsmReader;
use crate::watch::WatchHub;

/// Where a node believes it stands, without asking anyone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Standing {
    /// The term (or epoch) this node is in.
    pub term: u64,
    /// Who leads that term as this node sees it (itself included); `None` when nobody is known.
    pub leader: Option<u64>,
    /// Whether it believes it leads that term.
    pub leading: bool,
    /// The last command applied to its state machine.
    pub applied_index: u64,
}

/// How a read is confirmed before it is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Confirmation {
    /// A round trip to a majority: never stale.
    Quorum,
    /// A recent majority acknowledgement stands in for the round trip while it is young.
    Lease,
}

/// The KV reads every backend's applied state answers.
pub trait AppliedKv {
    fn get(&self, key: &str) -> io::Result<Option<v1::KeyValue>>;
    /// Keys starting with `prefix`, in key order; at most `limit` (0: all), and whether more matched.
    fn list(&self, prefix: &str, limit: usize) -> io::Result<(Vec<v1::KeyValue>, bool)>;
}

impl AppliedKv for FsmReader {
    fn get(&self, key: &str) -> io::Result<Option<v1::KeyValue>> {
        FsmReader::get(self, key)
    }
    fn list(&self, prefix: &str, limit: usize) -> io::Result<(Vec<v1::KeyValue>, bool)> {
        FsmReader::list(self, prefix, limit)
    }
}

pub trait Leadership: Send + Sync + 'static {
    /// The applied state as this backend keeps it.
    type Applied: AppliedKv;

    /// This node's id.
    fn id(&self) -> u64;

    fn standing(&self) -> Standing;

    /// Confirms that this node leads and has applied everything it must before serving.
    fn confirm(&self, how: Confirmation) -> impl Future<Output = Result<(), ApiError>> + Send;

    /// Proposes `command` (with its client session, if any); what applying it produced, once
    /// applied on this node.
    fn propose_command(&self, command: v1::Command)
    -> impl Future<Output = Result<v1::CommandResult, ApiError>> + Send;

    /// Proposes `op` without a client session.
    fn propose(&self, op: v1::command::Op) -> impl Future<Output = Result<v1::CommandResult, ApiError>> + Send {
        self.propose_command(v1::Command { op: Some(op), ..Default::default() })
    }

    /// The state as applied on this node.
    fn applied(&self) -> &Self::Applied;

    /// The error a node that does not lead answers a leader-only request with.
    fn not_leader(&self) -> ApiError;

    /// The members, their roles or health, and the leader, as this node sees them (the seed's
    /// `GetClusterMetadata`).
    fn membership(&self) -> v1::ClusterMembership;

    /// This node's watches, where the backend keeps revisions (static mode keeps none).
    fn watches(&self) -> Option<&Arc<WatchHub>> {
        None
    }

    /// Waits until this node has applied everything the cluster had committed when it was
    /// called, on a follower as on the leader: a watch that starts after it misses no write
    /// acknowledged before.
    fn caught_up(&self) -> impl Future<Output = Result<(), ApiError>> + Send {
        self.confirm(Confirmation::Quorum)
    }
}
