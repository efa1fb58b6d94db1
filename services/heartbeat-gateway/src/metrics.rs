//! Counters and gauges for `/metrics`: plain atomics bumped on the report path (no locks, no
//! allocation), rendered in the Prometheus text format on scrape.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    /// Every report received (accepted + throttled).
    pub heartbeats: AtomicU64,
    pub accepted: AtomicU64,
    pub throttled: AtomicU64,
    pub batches: AtomicU64,
    pub batch_failures: AtomicU64,
    pub refused: AtomicU64,
    /// Beats delivered to the leader in successful batches.
    pub beats_forwarded: AtomicU64,
    pub ttl_ms: AtomicU64,
    pub worker_count: AtomicU64,
    pub live_gateways: AtomicU64,
    /// f64 bits.
    budget_per_second: AtomicU64,
}

impl Metrics {
    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_budget(&self, budget: f64) {
        self.budget_per_second.store(budget.to_bits(), Ordering::Relaxed);
    }

    pub fn budget(&self) -> f64 {
        f64::from_bits(self.budget_per_second.load(Ordering::Relaxed))
    }

    /// The exposition, with the gauges the caller knows (connected streams, pending beats).
    pub fn render(&self, connected: u64, pending: u64) -> String {
        let mut out = String::new();
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let rows = [
            ("muster_gateway_connected_workers", "Workers with a ReportStatus stream open.", connected),
            (
                "muster_gateway_heartbeats_total",
                "Status reports received (accepted + throttled).",
                load(&self.heartbeats),
            ),
            ("muster_gateway_heartbeats_accepted_total", "Reports within the budget.", load(&self.accepted)),
            (
                "muster_gateway_heartbeats_throttled_total",
                "Reports over the budget or the per-worker minimum interval (recorded, TTL stretched).",
                load(&self.throttled),
            ),
            ("muster_gateway_batches_total", "ReportLiveness batches the leader accepted.", load(&self.batches)),
            (
                "muster_gateway_batch_failures_total",
                "ReportLiveness batches that failed (beats kept).",
                load(&self.batch_failures),
            ),
            ("muster_gateway_beats_forwarded_total", "Beats delivered to the leader.", load(&self.beats_forwarded)),
            ("muster_gateway_pending_beats", "Beats waiting for the next batch.", pending),
            (
                "muster_gateway_refused_total",
                "Workers refused by the leader (revoked or unknown).",
                load(&self.refused),
            ),
            ("muster_gateway_ttl_ms", "The base TTL (before stagger) last computed.", load(&self.ttl_ms)),
            (
                "muster_gateway_worker_count",
                "N: workers counting toward the heartbeat budget.",
                load(&self.worker_count),
            ),
            ("muster_gateway_live_gateways", "G: live gateways.", load(&self.live_gateways)),
        ];
        for (name, help, value) in rows {
            muster_admin::gauge(&mut out, name, help, "", value);
        }
        let name = "muster_gateway_budget_per_second";
        let budget = self.budget();
        let budget = if budget.is_finite() { format!("{budget}") } else { "+Inf".to_string() };
        let _ = writeln!(
            out,
            "# HELP {name} This gateway's heartbeat budget (max_heartbeats_per_second; the TTL spreads N over G gateways).\n# TYPE {name} gauge\n{name} {budget}"
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_series() {
        let metrics = Metrics::default();
        Metrics::count(&metrics.heartbeats);
        metrics.set_budget(12.5);
        let text = metrics.render(3, 0);
        assert!(text.contains("muster_gateway_connected_workers{} 3"), "{text}");
        assert!(text.contains("muster_gateway_heartbeats_total{} 1"), "{text}");
        assert!(text.contains("muster_gateway_budget_per_second 12.5"), "{text}");
        for name in [
            "heartbeats_throttled_total",
            "batches_total",
            "batch_failures_total",
            "ttl_ms",
            "worker_count",
            "live_gateways",
            "refused_total",
        ] {
            assert!(text.contains(&format!("muster_gateway_{name}{{}}")), "{name} missing from {text}");
        }
    }
}
