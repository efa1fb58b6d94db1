//! What this node tells the shared admin listener (`muster_admin`): readiness is the seed's
//! `server_is_ready`, and the metrics are the Raft gauges.

use muster_admin::{AdminSource, gauge};

use crate::node::NodeHandle;

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
        out
    }
}
