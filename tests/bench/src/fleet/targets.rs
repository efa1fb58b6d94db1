//! The targets for the fleet, each judged on the median of the rounds (one round that
//! caught a burst of someone else's work neither meets nor misses a target alone) and printed
//! with that figure's range, so a verdict resting on rounds far apart shows it.

use std::time::Duration;

use super::measure::{Phase, SystemRun};
use crate::report::format_ops;
use crate::spread::Spread;

/// The targets (for 10,000 workers on the 2-core development machine).
pub const TARGET_REGISTER: Duration = Duration::from_secs(20);
pub const TARGET_BEATS_PER_SEC: f64 = 20_000.0;
pub const TARGET_P99_MS: f64 = 20.0;
pub const TARGET_RATIO: f64 = 2.0;

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}

/// One line per target, with the figure that decides it; none without Muster rounds. The
/// throughput ratio is taken round by round (Muster's round `i` over etcd's round `i`), and
/// needs etcd rounds.
pub fn targets(muster: &[SystemRun], etcd: &[SystemRun]) -> Vec<String> {
    let Some(first) = muster.first() else { return Vec::new() };
    // Every figure below is measured in every round, so each spread is there.
    let over = |runs: &[SystemRun], figure: fn(&SystemRun) -> f64| {
        Spread::over(runs, |run| Some(figure(run))).unwrap_or_default()
    };
    let show = |spread: Spread, decimals, unit| Spread::cell(Some(spread), decimals, unit);
    let setup = over(muster, |r| r.setup.as_secs_f64());
    let per_sec = over(muster, |r| r.steady.per_sec());
    let p99 = over(muster, |r| r.steady.p99_ms);
    let raft = over(muster, |r| r.steady.raft_entries as f64);
    let acks = over(muster, |r| r.steady.acks as f64);
    let mut lines = vec![
        format!(
            "register {} workers in under {:.2} s: {} ({})",
            first.workers,
            TARGET_REGISTER.as_secs_f64(),
            show(setup, 2, " s"),
            verdict(setup.median < TARGET_REGISTER.as_secs_f64())
        ),
        format!(
            "one gateway absorbs >= {} heartbeats/s at p99 ack < {TARGET_P99_MS} ms: {} at p99 {} ({})",
            format_ops(TARGET_BEATS_PER_SEC),
            show(per_sec, 0, "/s"),
            show(p99, 2, " ms"),
            verdict(per_sec.median >= TARGET_BEATS_PER_SEC && p99.median < TARGET_P99_MS)
        ),
        format!(
            "zero Raft entries per steady-state heartbeat: {} for {} ({})",
            show(raft, 0, " entries"),
            show(acks, 0, " beats"),
            verdict(raft.median == 0.0)
        ),
    ];
    if !etcd.is_empty() {
        // Flat out when every round of both ran that phase, else steady.
        let flat_out = muster.iter().chain(etcd).all(|r| r.max.is_some());
        let (name, pick): (&str, fn(&SystemRun) -> Option<&Phase>) =
            if flat_out { ("flat out", |r| r.max.as_ref()) } else { ("steady", |r| Some(&r.steady)) };
        let throughput =
            |runs: &[SystemRun]| Spread::cell(Spread::over(runs, |r| pick(r).map(Phase::per_sec)), 0, "/s");
        let ratio = Spread::ratio(muster, etcd, |r| pick(r).map(Phase::per_sec));
        lines.push(format!(
            ">= {TARGET_RATIO}x etcd's keep-alive throughput ({name}): {} vs {} = {} ({})",
            throughput(muster),
            throughput(etcd),
            Spread::cell(ratio, 2, "x"),
            ratio.map_or("not judged: no round of etcd acked", |r| verdict(r.median >= TARGET_RATIO))
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::super::table::tests::run;
    use super::*;

    #[test]
    fn targets_judge_the_medians_and_name_their_figures() {
        // Muster registers in 12, 25 and 14 s: one slow round, median 14 s, met.
        let muster = [run(12, 220_000, 500_000), run(25, 150_000, 600_000), run(14, 210_000, 400_000)];
        let etcd = [run(30, 220_000, 300_000), run(31, 220_000, 200_000), run(29, 220_000, 200_000)];
        let lines = targets(&muster, &etcd);
        assert_eq!(lines[0], "register 10000 workers in under 20.00 s: 14.00 s (12.00-25.00) (met)");
        assert!(lines[1].contains("21000/s (15000-22000) at p99 8.00 ms (met)"), "{}", lines[1]);
        assert!(lines[2].ends_with("0 entries for 210000 beats (150000-220000) (met)"), "{}", lines[2]);
        // Flat out round by round: 1.67x, 3.00x, 2.00x.
        assert!(
            lines[3].contains("(flat out): 50000/s (40000-60000) vs 20000/s (20000-30000) = 2.00x (1.67-3.00) (met)"),
            "{}",
            lines[3]
        );
    }

    #[test]
    fn a_median_below_the_target_is_not_met_and_no_etcd_no_ratio() {
        let slow = [run(25, 150_000, 1), run(21, 150_000, 1), run(12, 150_000, 1)];
        let lines = targets(&slow, &[]);
        assert_eq!(lines.len(), 3, "no ratio without etcd: {lines:?}");
        assert!(lines[0].ends_with("21.00 s (12.00-25.00) (NOT met)"), "{}", lines[0]);
        assert!(lines[1].ends_with("(NOT met)"), "15000/s is below the target: {}", lines[1]);
        assert!(targets(&[], &slow).is_empty(), "targets are Muster's");
    }
}
