//! One watch row's figures on one system in one round, read from the row's tallies, and the
//! line printed as soon as the row is done (so a long run shows its progress; the tables over
//! the rounds come at the end, from [`super::table`]).

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::load::{Shared, Tally, WriterTally};
use crate::report::{format_latency, format_ops};

/// One row's figures for one system in one round.
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

    /// Server cores busy on average over the window.
    pub fn cpu_cores(&self) -> f64 {
        self.server_cpu_secs / self.window.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}
