//! One static-mode node's view of the cluster: which peers answered a probe recently, and who
//! leads as this node sees it — the lowest id among the peers it sees healthy, itself
//! included, as the seed says.
//!
//! A peer not heard from yet counts as healthy until `failure_threshold` has passed since this
//! node started: every node of a cluster booting together then agrees on the lowest id at
//! once, instead of each leading alone until its first probes come back. A node does not
//! probe itself and is always healthy in its own view.
//!
//! With `require_majority` (beyond the seed), a node acts as leader only while it sees a
//! majority of the peer list healthy: the minority side of a partition then has no leader and
//! refuses writes, instead of both sides leading. Without it, both sides of a partition elect
//! their own lowest id — the seed's "concurrent writers may race".

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use muster_config::StaticPeer;

/// What a peer is, in this node's view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Healthy,
    Unreachable,
}

/// A peer whose health changed, for the log and `/metrics`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub peer: u64,
    pub now: Health,
}

#[derive(Clone, Debug)]
struct Peer {
    addr: String,
    /// The last answer; `None` before the first.
    last_answer: Option<Instant>,
    health: Health,
}

/// One peer as [`PeerView::peers`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    pub id: u64,
    pub addr: String,
    pub health: Health,
    /// When it last answered (`None`: never, or this node itself).
    pub last_answer: Option<Instant>,
}

#[derive(Clone, Debug)]
pub struct PeerView {
    self_id: u64,
    /// Silence is counted from here for a peer that has not answered yet.
    started: Instant,
    peers: BTreeMap<u64, Peer>,
    failure_threshold: Duration,
    require_majority: bool,
}

impl PeerView {
    /// The view of node `self_id` starting at `now`; `peers` is the whole list, itself included.
    pub fn new(
        self_id: u64,
        peers: &[StaticPeer],
        failure_threshold: Duration,
        require_majority: bool,
        now: Instant,
    ) -> Self {
        let peers = peers
            .iter()
            .map(|peer| (peer.id, Peer { addr: peer.addr.clone(), last_answer: None, health: Health::Healthy }))
            .collect();
        Self { self_id, started: now, peers, failure_threshold, require_majority }
    }

    /// The peers to probe: every one but this node, as (id, addr).
    pub fn probe_targets(&self) -> Vec<(u64, String)> {
        self.peers.iter().filter(|(id, _)| **id != self.self_id).map(|(id, peer)| (*id, peer.addr.clone())).collect()
    }

    /// `peer` answered a probe at `now`; a change if it was Unreachable.
    pub fn answered(&mut self, peer: u64, now: Instant) -> Option<Change> {
        let state = self.peers.get_mut(&peer)?;
        state.last_answer = state.last_answer.max(Some(now));
        (state.health == Health::Unreachable).then(|| {
            state.health = Health::Healthy;
            Change { peer, now: Health::Healthy }
        })
    }

    /// Marks every peer silent for longer than `failure_threshold` at `now` Unreachable.
    pub fn expire(&mut self, now: Instant) -> Vec<Change> {
        let (self_id, started, threshold) = (self.self_id, self.started, self.failure_threshold);
        self.peers
            .iter_mut()
            .filter(|(id, peer)| {
                let heard = peer.last_answer.unwrap_or(started);
                **id != self_id && peer.health == Health::Healthy && now.saturating_duration_since(heard) > threshold
            })
            .map(|(id, peer)| {
                peer.health = Health::Unreachable;
                Change { peer: *id, now: Health::Unreachable }
            })
            .collect()
    }

    /// How many peers (this node included) this node sees healthy.
    pub fn healthy_count(&self) -> usize {
        self.peers.values().filter(|peer| peer.health == Health::Healthy).count()
    }

    /// Whether `healthy_count` is a majority of the whole peer list.
    pub fn has_majority(&self) -> bool {
        self.healthy_count() > self.peers.len() / 2
    }

    /// Who leads in this node's view: the lowest healthy id; `None` under `require_majority`
    /// while this node sees no majority.
    pub fn leader(&self) -> Option<u64> {
        if self.require_majority && !self.has_majority() {
            return None;
        }
        self.peers.iter().find(|(_, peer)| peer.health == Health::Healthy).map(|(id, _)| *id)
    }

    pub fn is_leader(&self) -> bool {
        self.leader() == Some(self.self_id)
    }

    /// Every peer, lowest id first.
    pub fn peers(&self) -> Vec<PeerStatus> {
        self.peers
            .iter()
            .map(|(id, peer)| PeerStatus {
                id: *id,
                addr: peer.addr.clone(),
                health: peer.health,
                last_answer: peer.last_answer,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THRESHOLD: Duration = Duration::from_secs(15);

    fn peers(ids: &[u64]) -> Vec<StaticPeer> {
        ids.iter().map(|id| StaticPeer::new(*id, format!("n{id}:3680"))).collect()
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn a_cluster_booting_together_agrees_on_the_lowest_id_at_once() {
        let t0 = Instant::now();
        for me in [1, 2, 3] {
            let view = PeerView::new(me, &peers(&[3, 1, 2]), THRESHOLD, false, t0);
            assert_eq!(view.leader(), Some(1), "node {me}");
            assert_eq!(view.is_leader(), me == 1);
            assert_eq!(view.probe_targets().len(), 2);
            assert!(view.probe_targets().iter().all(|(id, _)| *id != me));
        }
    }

    #[test]
    fn a_silent_peer_is_unreachable_after_the_threshold_and_healthy_on_its_next_answer() {
        let t0 = Instant::now();
        let mut view = PeerView::new(2, &peers(&[1, 2, 3]), THRESHOLD, false, t0);
        view.answered(3, t0 + secs(5));
        assert!(view.expire(t0 + secs(15)).is_empty(), "silent for exactly the threshold is still healthy");
        let changes = view.expire(t0 + secs(16));
        assert_eq!(changes, [Change { peer: 1, now: Health::Unreachable }]);
        assert_eq!(view.leader(), Some(2), "the lowest healthy id leads");
        assert!(view.is_leader());
        assert_eq!(view.answered(1, t0 + secs(20)), Some(Change { peer: 1, now: Health::Healthy }));
        assert_eq!(view.answered(1, t0 + secs(21)), None, "already healthy");
        assert_eq!(view.leader(), Some(1), "back, and leading again");
        let listed = view.peers();
        assert_eq!(listed.iter().map(|p| p.id).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(listed[1].last_answer, None, "this node itself");
        assert_eq!(listed[0].last_answer, Some(t0 + secs(21)));
    }

    #[test]
    fn a_late_answer_never_moves_the_last_answer_back() {
        let t0 = Instant::now();
        let mut view = PeerView::new(1, &peers(&[1, 2]), THRESHOLD, false, t0);
        view.answered(2, t0 + secs(10));
        view.answered(2, t0 + secs(4));
        assert!(view.expire(t0 + secs(24)).is_empty());
        assert_eq!(view.answered(9, t0), None, "not a peer");
    }

    /// Nodes 1 and 2 of three after node 1 was cut off from the others from the start: (node
    /// 1's view, node 2's view, the start).
    fn partitioned(require_majority: bool) -> (PeerView, PeerView, Instant) {
        let t0 = Instant::now();
        let all = peers(&[1, 2, 3]);
        let mut minority = PeerView::new(1, &all, THRESHOLD, require_majority, t0);
        let mut majority = PeerView::new(2, &all, THRESHOLD, require_majority, t0);
        majority.answered(3, t0 + secs(10));
        minority.expire(t0 + secs(16));
        majority.expire(t0 + secs(16));
        (minority, majority, t0)
    }

    #[test]
    fn without_require_majority_both_sides_of_a_partition_lead() {
        let (minority, majority, _) = partitioned(false);
        assert!(minority.is_leader(), "node 1 alone leads its side");
        assert!(majority.is_leader(), "node 2 leads the other side");
    }

    #[test]
    fn with_require_majority_the_minority_side_has_no_leader() {
        let (mut minority, mut majority, t0) = partitioned(true);
        assert_eq!((minority.healthy_count(), minority.has_majority()), (1, false));
        assert_eq!(minority.leader(), None, "refuses writes instead of splitting the brain");
        assert_eq!(majority.leader(), Some(2));
        // Healed: node 1 is back for everyone and leads again.
        minority.answered(2, t0 + secs(20));
        majority.answered(1, t0 + secs(20));
        assert_eq!((minority.leader(), majority.leader()), (Some(1), Some(1)));
    }

    #[test]
    fn a_two_node_cluster_needs_both_for_a_majority() {
        let t0 = Instant::now();
        let mut view = PeerView::new(2, &peers(&[1, 2]), THRESHOLD, true, t0);
        view.expire(t0 + secs(16));
        assert_eq!(view.leader(), None);
    }
}
