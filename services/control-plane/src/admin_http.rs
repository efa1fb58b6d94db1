//! What this node tells the shared admin listener (`muster_admin`): readiness is the seed's
//! `server_is_ready`, and the metrics are the Raft gauges.

use muster_admin::{AdminSource, gauge};

use crate::node::NodeHandle;

impl NodeHandle {
    /// The leader's lease gauges and counters (zero on followers).
    fn render_lease_metrics(&self, out: &mut String, labels: &str) {
        let stats = &self.leases.stats;
        let (gateways, workers, leased) = self.leases.gauges();
        let load = |counter: &std::sync::atomic::AtomicU64| counter.load(std::sync::atomic::Ordering::Relaxed);
        let rows = [
            ("muster_leases_live_gateways", "Heartbeat gateways heard from within their lease.", gateways as u64),
            ("muster_leases_worker_count", "N: workers that count toward the heartbeat budget.", workers),
            ("muster_leases_leased_workers", "Workers holding a lease that can expire.", leased as u64),
            ("muster_leases_batches_total", "Liveness batches received from gateways.", load(&stats.batches)),
            ("muster_leases_beats_total", "Worker beats received in batches.", load(&stats.beats)),
            ("muster_leases_expiries_total", "Workers marked Unreachable.", load(&stats.expiries)),
            ("muster_leases_returns_total", "Unreachable or Left workers back to Ready.", load(&stats.returns)),
            (
                "muster_leases_mass_silence_pauses_total",
                "Times expiry paused because much of the fleet went silent at once.",
                load(&stats.mass_silence_pauses),
            ),
            ("muster_leases_refusals_total", "Beats refused (revoked or unknown workers).", load(&stats.refusals)),
        ];
        for (name, help, value) in rows {
            gauge(out, name, help, labels, value);
        }
    }
}

impl AdminSource for NodeHandle {
    fn is_ready(&self) -> bool {
        self.server_is_ready()
    }

    fn not_ready_reason(&self) -> String {
        "not ready: not yet joined or catching up".into()
    }

    fn render_metrics(&self) -> String {
        let metrics = self.metrics();
        let labels = format!("node_id=\"{}\"", self.id);
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
        self.render_lease_metrics(&mut out, &labels);
        out
    }
}
