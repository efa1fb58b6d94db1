//! The watch benchmark's printed results: one line per row and system, then Muster's figures
//! as multiples of etcd's.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::RowSpec;
use super::load::{Shared, Tally, WriterTally};
use crate::report::{format_latency, format_ops};

pub use crate::System;

/// One row's figures for one system.
#[derive(Clone, Debug)]
pub struct RowResult {
    pub writes_per_sec: f64,
    pub events_per_sec: f64,
    pub messages_per_sec: f64,
    pub write_p50: Duration,
    pub write_p99: Duration,
    pub commit_p50: Duration,
    pub commit_p99: Duration,
    /// Server CPU µs per delivered event.
    pub cpu_us_per_event: Option<f64>,
    pub server_cpu_secs: f64,
    pub window: Duration,
    /// Measured events (acknowledged writes × watchers) that never arrived.
    pub missing: u64,
    pub expected: u64,
    pub watcher_failures: u64,
    pub first_error: Option<String>,
    pub write_errors: u64,
    pub skipped_writes: u64,
    /// Time to set every watch up.
    pub setup: Duration,
}

fn quantile(histogram: &hdrhistogram::Histogram<u64>, q: f64) -> Duration {
    Duration::from_micros(histogram.value_at_quantile(q))
}

impl RowResult {
    pub fn new(
        window: Duration,
        total: &Tally,
        writer: &WriterTally,
        shared: &Shared,
        expected: u64,
        server_cpu_secs: f64,
        setup: Duration,
    ) -> Self {
        let secs = window.as_secs_f64();
        let measured = shared.measured.load(Ordering::Relaxed);
        let watcher_error = shared.first_error.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let write_error = writer.first_error.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Self {
            writes_per_sec: writer.acked_in_window.load(Ordering::Relaxed) as f64 / secs,
            events_per_sec: total.received_in_window as f64 / secs,
            messages_per_sec: total.messages_in_window as f64 / secs,
            write_p50: quantile(&total.from_write, 0.50),
            write_p99: quantile(&total.from_write, 0.99),
            commit_p50: quantile(&total.from_commit, 0.50),
            commit_p99: quantile(&total.from_commit, 0.99),
            cpu_us_per_event: (total.received_in_window > 0)
                .then(|| server_cpu_secs * 1e6 / total.received_in_window as f64),
            server_cpu_secs,
            window,
            missing: expected.saturating_sub(measured),
            expected,
            watcher_failures: shared.failed.load(Ordering::Relaxed),
            first_error: watcher_error.or(write_error),
            write_errors: writer.errors.load(Ordering::Relaxed),
            skipped_writes: writer.skipped.load(Ordering::Relaxed),
            setup,
        }
    }

    /// The line printed as soon as the row is done.
    pub fn progress_line(&self, system: &str) -> String {
        format!(
            "{system:<6} watches set up in {:.1?}; {:>6} writes/s ({} ticks skipped) {:>9} events/s in {} messages/s  \
             write→event p50 {} p99 {}  commit→event p50 {} p99 {}  \
             missing {}/{}  watch failures {}  write errors {}{}",
            self.setup,
            format_ops(self.writes_per_sec),
            self.skipped_writes,
            format_ops(self.events_per_sec),
            format_ops(self.messages_per_sec),
            format_latency(self.write_p50),
            format_latency(self.write_p99),
            format_latency(self.commit_p50),
            format_latency(self.commit_p99),
            self.missing,
            self.expected,
            self.watcher_failures,
            self.write_errors,
            self.first_error.as_ref().map(|e| format!(" (first: {e})")).unwrap_or_default(),
        )
    }

    fn cpu_cores(&self) -> f64 {
        self.server_cpu_secs / self.window.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

fn cells(result: Option<&RowResult>) -> String {
    match result {
        None => "| – | – | – | – | – | – | – | – |".to_string(),
        Some(r) => format!(
            "| {} | {} | {} / {} | {} / {} | {} | {:.2} | {} |",
            format_ops(r.writes_per_sec),
            format_ops(r.events_per_sec),
            format_latency(r.write_p50),
            format_latency(r.write_p99),
            format_latency(r.commit_p50),
            format_latency(r.commit_p99),
            r.cpu_us_per_event.map_or("–".to_string(), |us| format!("{us:.1} µs")),
            r.cpu_cores(),
            r.missing,
        ),
    }
}

/// The results table (markdown), then Muster as a multiple of etcd per KV row.
pub fn render(specs: &[RowSpec], muster: Option<&[RowResult]>, etcd: Option<&[RowResult]>, cores: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| row | system | writes/s | events/s | write→event p50 / p99 | commit→event p50 / p99 | server CPU per \
         event | server cores (of {cores}) | missing |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    let mut etcd_rows = etcd.unwrap_or_default().iter();
    let mut ratios = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let m = muster.and_then(|rows| rows.get(i));
        // etcd ran only the KV rows, in order.
        let e = if spec.kind == super::RowKind::Kv { etcd_rows.next() } else { None };
        if muster.is_some() {
            let _ = writeln!(out, "| {} | Muster {}", spec.name, cells(m));
        }
        if etcd.is_some() && spec.kind == super::RowKind::Kv {
            let _ = writeln!(out, "| {} | etcd {}", spec.name, cells(e));
        }
        if let (Some(m), Some(e)) = (m, e) {
            ratios.push(format!(
                "{}: events/s {:.2}×, commit→event p99 {:.2}× ({}), CPU per event {}",
                spec.name,
                m.events_per_sec / e.events_per_sec.max(f64::MIN_POSITIVE),
                m.commit_p99.as_secs_f64() / e.commit_p99.as_secs_f64().max(f64::MIN_POSITIVE),
                if m.commit_p99 <= e.commit_p99 { "no worse" } else { "worse" },
                match (m.cpu_us_per_event, e.cpu_us_per_event) {
                    (Some(m), Some(e)) => format!("{:.2}×", m / e),
                    _ => "–".to_string(),
                },
            ));
        }
    }
    if !ratios.is_empty() {
        let _ = writeln!(out, "\nMuster / etcd:");
        for line in ratios {
            let _ = writeln!(out, "  {line}");
        }
    }
    out
}
