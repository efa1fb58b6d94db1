//! What a static node tells the admin listener: ready while it knows a leader; its epoch, who
//! leads, each peer's health and the write and replication counters on `/metrics`.

use std::sync::atomic::Ordering;

use muster_admin::metrics::{join, label};
use muster_admin::{AdminSource, counter, gauge};

use super::node::StaticNode;
use crate::leadership::Leadership as _;

impl AdminSource for StaticNode {
    fn is_ready(&self) -> bool {
        StaticNode::is_ready(self)
    }

    fn not_ready_reason(&self) -> String {
        format!("not ready: {}", self.no_leader_reason())
    }

    fn render_metrics(&self) -> String {
        let node = label("node_id", &self.settings.node_id.to_string());
        let standing = self.standing();
        let mut out = String::new();
        let gauges = [
            ("muster_static_epoch", "The epoch this node is in (static mode).", standing.term),
            ("muster_static_leader_id", "The leader in this node's view (0: none).", standing.leader.unwrap_or(0)),
            ("muster_static_is_leader", "1 while this node leads and takes writes.", u64::from(standing.leading)),
            ("muster_static_revision", "The newest local revision of this node's KV.", standing.applied_index),
            ("muster_ready", "1 while this node knows a leader.", u64::from(self.is_ready())),
        ];
        for (name, help, value) in gauges {
            gauge(&mut out, name, help, &node, value);
        }
        let mut first = true;
        for (peer, healthy) in self.peer_health() {
            let labels = join(&[&node, &label("peer", &peer.to_string())]);
            let help = "1 while the peer answers heartbeats, 0 once it is Unreachable.";
            if first {
                gauge(&mut out, "muster_static_peer_healthy", help, &labels, u64::from(healthy));
                first = false;
            } else {
                muster_admin::metrics::sample(&mut out, "muster_static_peer_healthy", &labels, u64::from(healthy));
            }
        }
        let counters = &self.counters;
        let rows = [
            ("muster_static_writes_total", "Writes this node stored as leader.", &counters.writes),
            (
                "muster_static_writes_refused_total",
                "Writes refused (not leading, no majority).",
                &counters.writes_refused,
            ),
            ("muster_static_pushes_failed_total", "Pushes of a write to a peer that failed.", &counters.pushes_failed),
            (
                "muster_static_entries_pulled_total",
                "Entries pulled from peers' change feeds.",
                &counters.entries_pulled,
            ),
            (
                "muster_static_probes_failed_total",
                "Heartbeat probes that got no valid answer.",
                &counters.probes_failed,
            ),
        ];
        for (name, help, value) in rows {
            counter(&mut out, name, help, &node, value.load(Ordering::Relaxed));
        }
        out
    }
}
