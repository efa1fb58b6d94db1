//! The leadership seam: the few questions the rest of the control plane asks about who leads,
//! so leases, the sweeper and the worker-tier handlers never reach into openraft. openraft
//! answers them for `raft` and `worker-tier` (`NodeHandle`, in `node.rs`, so this module
//! depends on nothing that depends on it); a backend without a consensus
//! log (the seed's `static` mode) answers the same questions its own way.
//!
//! - [`Leadership::standing`]: where this node believes it stands now (cheap, unconfirmed);
//! - [`Leadership::confirm`]: that it still leads, checked with the cluster, and that its
//!   applied state is current, before a read that must not be stale;
//! - [`Leadership::propose`]: one state-machine command, answered once applied here;
//! - [`Leadership::applied`]: the applied state; [`Leadership::not_leader`]: the answer (with
//!   a hint where to go) for a leader-only request on a node that does not lead.

use std::future::Future;

use muster_middleware::ApiError;
use muster_proto::v1;

use crate::store::FsmReader;

/// Where a node believes it stands, without asking anyone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Standing {
    /// The term (or epoch) this node is in.
    pub term: u64,
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

pub trait Leadership: Send + Sync + 'static {
    fn standing(&self) -> Standing;

    /// Confirms that this node leads and has applied everything it must before serving.
    fn confirm(&self, how: Confirmation) -> impl Future<Output = Result<(), ApiError>> + Send;

    /// Proposes `op`; what applying it produced, once applied on this node.
    fn propose(&self, op: v1::command::Op) -> impl Future<Output = Result<v1::CommandResult, ApiError>> + Send;

    /// The state machine as applied on this node.
    fn applied(&self) -> &FsmReader;

    /// The error a node that does not lead answers a leader-only request with.
    fn not_leader(&self) -> ApiError;
}
