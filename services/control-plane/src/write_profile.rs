//! Where a write's time goes, hop by hop, on the node that does the hop: the leader's
//! proposal, the log append and its group fsync, the log reads replication and apply make,
//! each AppendEntries round trip, a follower's handling of one, and the state machine's apply.
//!
//! Off by default (`raft.profile_write_path`): when off, each hop costs one relaxed load of a
//! flag and no clock read. When on, `/metrics` carries `muster_write_hop_seconds{hop}` and
//! `muster_write_hop_entries{hop}` (entries per call: how well the hops batch).
//! docs/benchmarks.md reads a profile taken this way.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use muster_admin::Histogram;
use muster_admin::metrics::{join, label};

/// One step of a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hop {
    /// Leader: a command proposed until its result is back from the state machine (entries:
    /// the commands it carries, more than one when the write batcher joined them).
    Propose,
    /// Any node: encoding a batch of entries and writing it to the log segment (no fsync).
    LogAppend,
    /// Any node: from a batch's append until its group fsync reported it durable.
    LogFlush,
    /// The log thread's `fdatasync` itself (entries: appends it made durable at once).
    Fsync,
    /// Any node: reading entries back from the log (replication, apply).
    LogRead,
    /// Leader: one AppendEntries to one follower, request sent until answer decoded.
    Replicate,
    /// Follower: one AppendEntries handled, until its entries are durable.
    FollowerAppend,
    /// Any node: one batch of committed entries applied to the state machine.
    Apply,
}

impl Hop {
    const ALL: [Hop; 8] = [
        Hop::Propose,
        Hop::LogAppend,
        Hop::LogFlush,
        Hop::Fsync,
        Hop::LogRead,
        Hop::Replicate,
        Hop::FollowerAppend,
        Hop::Apply,
    ];

    fn name(self) -> &'static str {
        match self {
            Hop::Propose => "propose",
            Hop::LogAppend => "log_append",
            Hop::LogFlush => "log_flush",
            Hop::Fsync => "fsync",
            Hop::LogRead => "log_read",
            Hop::Replicate => "replicate",
            Hop::FollowerAppend => "follower_append",
            Hop::Apply => "apply",
        }
    }
}

/// 10 µs to 1 s: a page-cache write is microseconds, an fsync a fraction of a millisecond.
const SECONDS: &[f64] =
    &[0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];
/// Entries per call.
const ENTRIES: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

static ENABLED: AtomicBool = AtomicBool::new(false);

struct HopStats {
    seconds: Histogram,
    entries: Histogram,
}

static STATS: LazyLock<[HopStats; Hop::ALL.len()]> =
    LazyLock::new(|| Hop::ALL.map(|_| HopStats { seconds: Histogram::new(SECONDS), entries: Histogram::new(ENTRIES) }));

/// Turns the profile on or off for this process (the node's configuration decides at start).
pub fn enable(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether the profile is on.
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The start of a hop: `None` (no clock read) while the profile is off.
#[inline]
pub fn start() -> Option<Instant> {
    ENABLED.load(Ordering::Relaxed).then(Instant::now)
}

/// Records a hop that began at `started` (from [`start`]) and moved `entries` entries.
#[inline]
pub fn record(hop: Hop, started: Option<Instant>, entries: usize) {
    if let Some(started) = started {
        let stats = &STATS[hop as usize];
        stats.seconds.observe_duration(started.elapsed());
        stats.entries.observe(entries as f64);
    }
}

/// The profile's histograms, when it is on.
pub fn render(out: &mut String, labels: &str) {
    if !ENABLED.load(Ordering::Relaxed) {
        return;
    }
    let series: Vec<(String, &HopStats)> =
        Hop::ALL.iter().map(|hop| (join(&[labels, &label("hop", hop.name())]), &STATS[*hop as usize])).collect();
    muster_admin::metrics::histogram(
        out,
        "muster_write_hop_seconds",
        "Time spent in each hop of the write path (raft.profile_write_path).",
        series.iter().map(|(labels, stats)| (labels.as_str(), &stats.seconds)),
    );
    muster_admin::metrics::histogram(
        out,
        "muster_write_hop_entries",
        "Log entries moved per call of each hop of the write path (raft.profile_write_path).",
        series.iter().map(|(labels, stats)| (labels.as_str(), &stats.entries)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_reads_no_clock_and_renders_nothing_on_records_every_hop() {
        enable(false);
        assert!(start().is_none());
        let mut out = String::new();
        render(&mut out, "");
        assert!(out.is_empty());

        enable(true);
        let started = start();
        assert!(started.is_some());
        record(Hop::Fsync, started, 3);
        let mut out = String::new();
        render(&mut out, "node_id=\"1\"");
        assert!(out.contains("muster_write_hop_seconds_count{node_id=\"1\",hop=\"fsync\"} 1"), "{out}");
        assert!(out.contains("muster_write_hop_entries_bucket{node_id=\"1\",hop=\"fsync\",le=\"4\"} 1"), "{out}");
        for hop in Hop::ALL {
            assert!(out.contains(&format!("hop=\"{}\"", hop.name())), "{out}");
        }
        enable(false);
    }
}
