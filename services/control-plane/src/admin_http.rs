//! What this node tells the shared admin listener (`muster_admin`): readiness is the seed's
//! `server_is_ready`, and the metrics are the Raft gauges, workers by state (from this node's
//! applied FSM, so on every node) and the leader's lease counters.

use std::sync::atomic::{AtomicU64, Ordering};

use muster_admin::metrics::{Kind, family, join, label};
use muster_admin::{AdminSource, counter, gauge};

use crate::node::{NodeHandle, state_name};

/// Every value `muster_raft_state` has a series for.
const RAFT_STATES: [&str; 5] = ["leader", "follower", "candidate", "learner", "shutdown"];

impl NodeHandle {
    /// The leader's lease gauges and counters (zero on followers).
    fn render_lease_metrics(&self, out: &mut String, labels: &str) {
        let stats = &self.leases.stats;
        let (gateways, workers, leased, failover_left) = self.leases.gauges();
        let gauges = [
            ("muster_leases_live_gateways", "Heartbeat gateways heard from within their lease.", gateways as u64),
            ("muster_leases_workers", "N: workers that count toward the heartbeat budget.", workers),
            ("muster_leases_leased_workers", "Workers holding a lease that can expire.", leased as u64),
            (
                "muster_leases_failover_remaining_seconds",
                "Seconds left in the failover window after this leader's election: until then no worker it \
                 inherited is marked Unreachable.",
                failover_left,
            ),
        ];
        for (name, help, value) in gauges {
            gauge(out, name, help, labels, value);
        }
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let counters = [
            ("muster_leases_batches_total", "Liveness batches received from gateways.", load(&stats.batches)),
            (
                "muster_leases_beats_total",
                "Worker beats received in batches from gateways (the leader's view of heartbeats/s).",
                load(&stats.beats),
            ),
            ("muster_leases_expiries_total", "Workers marked Unreachable (lease expired).", load(&stats.expiries)),
            ("muster_leases_returns_total", "Unreachable or Left workers back to Ready.", load(&stats.returns)),
            (
                "muster_leases_mass_silence_pauses_total",
                "Times expiry paused because much of the fleet went silent at once.",
                load(&stats.mass_silence_pauses),
            ),
            ("muster_leases_refusals_total", "Beats refused (revoked or unknown workers).", load(&stats.refusals)),
        ];
        for (name, help, value) in counters {
            counter(out, name, help, labels, value);
        }
    }

    /// `muster_workers{state}` from the applied FSM; left out (with a warning) if storage fails.
    fn render_worker_states(&self, out: &mut String, labels: &str) {
        match self.reader.worker_states(&self.worker_states) {
            Ok(states) => family(
                out,
                "muster_workers",
                "Registered workers by state, from this node's applied state machine.",
                Kind::Gauge,
                states.by_name().map(|(state, count)| (join(&[labels, &label("state", state)]), count)),
            ),
            Err(err) => tracing::warn!(error = %err, "could not count workers by state for /metrics"),
        }
    }
}

/// `muster_raft_state{state}`: 1 for `state`, 0 for every other, so a PromQL filter on
/// `state="leader"` finds exactly the leaders.
fn render_raft_state(out: &mut String, labels: &str, state: &str) {
    family(
        out,
        "muster_raft_state",
        "1 for this node's Raft state (leader, follower, candidate, learner or shutdown), 0 for the others.",
        Kind::Gauge,
        RAFT_STATES.map(|name| (join(&[labels, &label("state", name)]), u64::from(name == state))),
    );
}

impl AdminSource for NodeHandle {
    fn is_ready(&self) -> bool {
        self.server_is_ready()
    }

    fn not_ready_reason(&self) -> String {
        format!("not ready: {}", NodeHandle::not_ready_reason(self))
    }

    fn render_metrics(&self) -> String {
        let metrics = self.metrics();
        let labels = label("node_id", &self.id.to_string());
        let mut out = String::new();
        let index = |log_id: &Option<crate::types::LogId>| log_id.as_ref().map_or(0, |l| l.index);
        let rows = [
            ("muster_raft_term", "Current Raft term.", metrics.current_term),
            ("muster_raft_leader_id", "Id of the known leader (0: none).", metrics.current_leader.unwrap_or(0)),
            (
                "muster_raft_is_leader",
                "1 if this node is the leader.",
                u64::from(metrics.current_leader == Some(self.id)),
            ),
            ("muster_raft_last_log_index", "Index of the last log entry.", metrics.last_log_index.unwrap_or(0)),
            ("muster_raft_commit_index", "Index of the last committed entry.", index(&metrics.cluster_committed)),
            ("muster_raft_applied_index", "Index of the last applied entry.", index(&metrics.last_applied)),
            ("muster_raft_snapshot_index", "Last index covered by the snapshot.", index(&metrics.snapshot)),
            ("muster_raft_purged_index", "Last purged log index.", index(&metrics.purged)),
            ("muster_ready", "1 when the node has joined and caught up.", u64::from(self.server_is_ready())),
        ];
        for (name, help, value) in rows {
            gauge(&mut out, name, help, &labels, value);
        }
        let is_voter = metrics.membership_config.membership().voter_ids().any(|id| id == self.id);
        render_raft_state(&mut out, &labels, state_name(metrics.state, is_voter));
        self.render_worker_states(&mut out, &labels);
        self.render_lease_metrics(&mut out, &labels);
        self.watches.render_metrics(&mut out, &labels);
        crate::write_profile::render(&mut out, &labels);
        out
    }
}

#[cfg(test)]
mod tests {
    use openraft::ServerState;

    use super::*;

    #[test]
    fn one_raft_state_is_set() {
        let mut out = String::new();
        render_raft_state(&mut out, "node_id=\"2\"", state_name(ServerState::Follower, true));
        let set: Vec<&str> = out.lines().filter(|line| line.ends_with(" 1")).collect();
        assert_eq!(set, ["muster_raft_state{node_id=\"2\",state=\"follower\"} 1"], "{out}");
        assert_eq!(out.lines().filter(|line| line.ends_with(" 0")).count(), 4, "{out}");
        let mut learner = String::new();
        render_raft_state(&mut learner, "", state_name(ServerState::Follower, false));
        assert!(learner.contains("muster_raft_state{state=\"learner\"} 1"), "{learner}");
    }
}
