//! Counters, gauges and the TTL histogram for `/metrics`: plain atomics bumped on the report
//! path (no locks, no allocation), rendered in the Prometheus text format on scrape.

use std::sync::atomic::{AtomicU64, Ordering};

use muster_admin::metrics::{Histogram, Kind, Value, header, histogram};
use muster_admin::{counter, gauge};

/// Bucket bounds (seconds) of the TTLs issued: from sub-second test policies to the 10 min
/// default `max_ttl` and beyond (throttling stretches a TTL).
pub const TTL_BUCKETS: &[f64] = &[0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0];

#[derive(Debug)]
pub struct Metrics {
    /// Every report received (accepted + throttled).
    pub heartbeats: AtomicU64,
    pub accepted: AtomicU64,
    pub throttled: AtomicU64,
    pub batches: AtomicU64,
    pub batch_failures: AtomicU64,
    pub refused: AtomicU64,
    /// Reports refused for breaking an input limit (still counted as beats).
    pub reports_refused: AtomicU64,
    /// Beats delivered to the leader in successful batches.
    pub beats_forwarded: AtomicU64,
    /// Worker profiles forwarded (each stream's first, then changes).
    pub profiles_forwarded: AtomicU64,
    pub ttl_ms: AtomicU64,
    pub worker_count: AtomicU64,
    pub live_gateways: AtomicU64,
    /// f64 bits.
    budget_per_second: AtomicU64,
    /// Every TTL sent in an ack (stagger and throttling included), in seconds.
    pub ttl_issued: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            heartbeats: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            batch_failures: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            reports_refused: AtomicU64::new(0),
            beats_forwarded: AtomicU64::new(0),
            profiles_forwarded: AtomicU64::new(0),
            ttl_ms: AtomicU64::new(0),
            worker_count: AtomicU64::new(0),
            live_gateways: AtomicU64::new(0),
            budget_per_second: AtomicU64::new(0),
            ttl_issued: Histogram::new(TTL_BUCKETS),
        }
    }
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
        let counters = [
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
            (
                "muster_gateway_profiles_forwarded_total",
                "Worker profiles forwarded to the leader (each stream's first, then changes).",
                load(&self.profiles_forwarded),
            ),
            (
                "muster_gateway_refused_total",
                "Workers refused by the leader (revoked or unknown), and certificates it refused (replaced or never issued).",
                load(&self.refused),
            ),
            (
                "muster_gateway_reports_refused_total",
                "Reports refused for breaking an input limit (oversize profile or message); the beat still counts.",
                load(&self.reports_refused),
            ),
        ];
        for (name, help, value) in counters {
            counter(&mut out, name, help, "", value);
        }
        let gauges = [
            ("muster_gateway_connected_workers", "Workers with a ReportStatus stream open.", connected),
            ("muster_gateway_pending_beats", "Beats waiting for the next batch.", pending),
            ("muster_gateway_workers", "N: workers counting toward the heartbeat budget.", load(&self.worker_count)),
            ("muster_gateway_live_gateways", "G: live gateways.", load(&self.live_gateways)),
        ];
        for (name, help, value) in gauges {
            gauge(&mut out, name, help, "", value);
        }
        let ttl_seconds = load(&self.ttl_ms) as f64 / 1000.0;
        gauge(&mut out, "muster_gateway_ttl_seconds", "The base TTL (before stagger) last computed.", "", ttl_seconds);
        histogram(
            &mut out,
            "muster_gateway_ttl_issued_seconds",
            "TTLs sent to workers in acks (stagger and throttling included).",
            [("", &self.ttl_issued)],
        );
        let name = "muster_gateway_budget_per_second";
        header(
            &mut out,
            name,
            "This gateway's heartbeat budget (max_heartbeats_per_second; the TTL spreads N over G gateways).",
            Kind::Gauge,
        );
        // An unlimited budget is +Inf; the line keeps its historical label-less spelling.
        out.push_str(&format!("{name} {}\n", Value::Float(self.budget())));
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
        metrics.ttl_issued.observe(10.5);
        let text = metrics.render(3, 0);
        assert!(text.contains("# TYPE muster_gateway_heartbeats_total counter\n"), "{text}");
        assert!(text.contains("# TYPE muster_gateway_ttl_issued_seconds histogram\n"), "{text}");
        assert!(text.contains("muster_gateway_ttl_issued_seconds_bucket{le=\"10\"} 0\n"), "{text}");
        assert!(text.contains("muster_gateway_ttl_issued_seconds_bucket{le=\"15\"} 1\n"), "{text}");
        assert!(text.contains("muster_gateway_ttl_issued_seconds_count{} 1\n"), "{text}");
        metrics.set_budget(f64::INFINITY);
        assert!(metrics.render(0, 0).contains("muster_gateway_budget_per_second +Inf\n"));
        assert!(text.contains("muster_gateway_connected_workers{} 3"), "{text}");
        assert!(text.contains("muster_gateway_heartbeats_total{} 1"), "{text}");
        assert!(text.contains("muster_gateway_budget_per_second 12.5"), "{text}");
        for name in [
            "heartbeats_throttled_total",
            "batches_total",
            "batch_failures_total",
            "ttl_seconds",
            "workers",
            "live_gateways",
            "refused_total",
            "reports_refused_total",
        ] {
            assert!(text.contains(&format!("muster_gateway_{name}{{}}")), "{name} missing from {text}");
        }
    }
}
