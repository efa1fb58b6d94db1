//! The printed fleet results over the rounds: one row per figure with Muster and etcd side by
//! side, each the median of the rounds with the lowest and highest beside it (on a shared
//! 2-core machine a single round can catch someone else's burst), and the throughput ratio
//! taken round by round: each Muster round ran right before the etcd round it is set against,
//! so the pair saw much the same machine.

use super::measure::{Phase, SystemRun};
use crate::report;
use crate::spread::Spread;
use crate::stalls::Stalls;

/// `figure` of every phase, spread, as a cell of `decimals` places and `unit`.
fn cell(phases: &[&Phase], decimals: usize, unit: &str, figure: impl Fn(&Phase) -> Option<f64>) -> String {
    Spread::cell(Spread::over(phases, |phase| figure(phase)), decimals, unit)
}

/// Cores busy and CPU per ack, for the CPU seconds `cpu` picks from a phase.
fn cpu(phases: &[&Phase], cpu: impl Fn(&Phase) -> f64) -> String {
    format!(
        "{}, {}",
        cell(phases, 2, " cores", |p| Some(p.cores(cpu(p)))),
        cell(phases, 0, " µs/ack", |p| p.us_per_ack(cpu(p)))
    )
}

/// The stalls of all rounds together: the worst single one, the long ones and the total added up.
pub fn all_stalls<'a>(rounds: impl IntoIterator<Item = &'a Stalls>) -> Stalls {
    rounds.into_iter().fold(Stalls::default(), |all, round| Stalls {
        worst: all.worst.max(round.worst),
        long: all.long + round.long,
        total: all.total + round.total,
    })
}

fn stalls(stalls: &Stalls) -> String {
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    format!("{:.1} ms, {}, {:.0} ms", ms(stalls.worst), stalls.long, ms(stalls.total))
}

/// A row: its label, a cell per system (`-` for one with no rounds), and an empty ratio cell.
fn row(
    label: impl Into<String>,
    muster: &[SystemRun],
    etcd: &[SystemRun],
    cell: impl Fn(&[SystemRun]) -> String,
) -> Vec<String> {
    let cell = |runs: &[SystemRun]| if runs.is_empty() { "-".to_string() } else { cell(runs) };
    vec![label.into(), cell(muster), cell(etcd), String::new()]
}

/// The rows of one phase (`pick` chooses it from a run); a system none of whose rounds had
/// the phase shows `-`.
fn phase_rows(
    name: &str,
    muster: &[SystemRun],
    etcd: &[SystemRun],
    pick: impl Fn(&SystemRun) -> Option<&Phase> + Copy,
) -> Vec<Vec<String>> {
    let row = |label: &str, cell: &dyn Fn(&[&Phase]) -> String| {
        row(format!("{name}: {label}"), muster, etcd, |runs| {
            let phases: Vec<&Phase> = runs.iter().filter_map(pick).collect();
            if phases.is_empty() { "-".to_string() } else { cell(&phases) }
        })
    };
    let mut acks = row("acks/s", &|p| cell(p, 0, "", |p| Some(p.per_sec())));
    acks[3] = Spread::cell(Spread::ratio(muster, etcd, |run| pick(run).map(Phase::per_sec)), 2, "x");
    vec![
        acks,
        row("ack p50 / p99", &|p| {
            format!("{} / {} ms", cell(p, 2, "", |p| Some(p.p50_ms)), cell(p, 2, "", |p| Some(p.p99_ms)))
        }),
        row("beats reaching the leader/s", &|p| cell(p, 0, "", Phase::forwarded_per_sec)),
        row("Raft entries/s, per ack", &|p| {
            format!("{}, {}", cell(p, 1, "", |p| Some(p.raft_per_sec())), cell(p, 4, "", |p| Some(p.raft_per_ack())))
        }),
        row("gateway | etcd leader CPU", &|p| cpu(p, |p| p.front_cpu)),
        row("all servers CPU", &|p| cpu(p, |p| p.servers_cpu)),
        row("simulated workers CPU", &|p| cell(p, 2, " cores", |p| Some(p.cores(p.bench_cpu)))),
        row("everything else on the machine", &|p| cell(p, 2, " cores", |p| Some(p.cores(p.other_cpu)))),
        row("errors", &|p| cell(p, 0, "", |p| Some(p.errors as f64))),
        row("machine stalls, all rounds: worst, >= 10 ms, total", &|p| {
            stalls(&all_stalls(p.iter().map(|p| &p.stalls)))
        }),
    ]
}

/// The results table over the rounds of each system (round `i` of Muster ran right before
/// round `i` of etcd; a system not run has none).
pub fn results(muster: &[SystemRun], etcd: &[SystemRun]) -> String {
    let spread = |runs: &[SystemRun], decimals, unit, figure: fn(&SystemRun) -> f64| {
        Spread::cell(Spread::over(runs, |run| Some(figure(run))), decimals, unit)
    };
    let mut rows = vec![
        row("register all (etcd: grant all leases)", muster, etcd, |runs| {
            spread(runs, 2, " s", |r| r.setup.as_secs_f64())
        }),
        row("  Raft entries, per worker", muster, etcd, |runs| {
            format!(
                "{}, {}",
                spread(runs, 0, "", |r| r.setup_raft_entries as f64),
                spread(runs, 1, "", |r| r.setup_raft_entries as f64 / r.workers.max(1) as f64)
            )
        }),
        row("connect, each acked once", muster, etcd, |runs| {
            let time = spread(runs, 2, " s", |r| r.connect.as_secs_f64());
            match runs.iter().min_by_key(|r| r.connected) {
                Some(fewest) if fewest.connected < fewest.workers => {
                    format!("{time}; a round acked {} of {} only", fewest.connected, fewest.workers)
                }
                _ => time,
            }
        }),
    ];
    rows.extend(phase_rows("steady", muster, etcd, |r| Some(&r.steady)));
    if muster.iter().chain(etcd).any(|r| r.max.is_some()) {
        rows.extend(phase_rows("max", muster, etcd, |r| r.max.as_ref()));
    }
    const MIB: f64 = 1024.0 * 1024.0;
    rows.push(row("gateway | etcd leader RSS idle → connected", muster, etcd, |runs| {
        format!(
            "{} → {}",
            spread(runs, 0, " MiB", |r| r.front_rss_idle as f64 / MIB),
            spread(runs, 0, " MiB", |r| r.front_rss_connected as f64 / MIB)
        )
    }));
    rows.push(row("  per connected worker", muster, etcd, |runs| {
        spread(runs, 1, " KiB", |r| r.rss_per_worker() / 1024.0)
    }));
    report::render(&["", "muster", "etcd", "muster/etcd"], &rows)
}

#[cfg(test)]
pub(super) mod tests {
    use std::time::Duration;

    use super::*;

    pub fn phase(acks: u64, p99_ms: f64, raft: u64) -> Phase {
        Phase {
            window: Duration::from_secs(10),
            offered_per_sec: Some(22_000.0),
            acks,
            errors: 0,
            p50_ms: 1.0,
            p99_ms,
            raft_entries: raft,
            forwarded: None,
            front_cpu: 4.0,
            servers_cpu: 6.0,
            bench_cpu: 5.0,
            other_cpu: 1.0,
            stalls: Stalls { worst: Duration::from_millis(27), long: 3, total: Duration::from_millis(61) },
        }
    }

    /// A round of 10,000 workers registered in `setup_secs`, with these steady and flat-out acks.
    pub fn run(setup_secs: u64, acks: u64, max_acks: u64) -> SystemRun {
        SystemRun {
            workers: 10_000,
            setup: Duration::from_secs(setup_secs),
            setup_raft_entries: 20_000,
            connect: Duration::from_secs(8),
            connected: 10_000,
            front_rss_idle: 20 << 20,
            front_rss_connected: 120 << 20,
            steady: phase(acks, 8.0, 0),
            max: Some(phase(max_acks, 8.0, 0)),
            notes: Vec::new(),
        }
    }

    pub fn line(table: &str, prefix: &str) -> String {
        table.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix} in {table}")).to_string()
    }

    #[test]
    fn each_figure_is_the_median_of_the_rounds_with_its_range() {
        let muster = [run(12, 220_000, 500_000), run(14, 200_000, 600_000), run(13, 210_000, 400_000)];
        let etcd = [run(30, 220_000, 200_000), run(31, 220_000, 200_000), run(29, 220_000, 200_000)];
        let table = results(&muster, &etcd);
        let register = line(&table, "register all");
        assert!(register.contains("13.00 s (12.00-14.00)") && register.contains("30.00 s (29.00-31.00)"), "{table}");
        assert!(line(&table, "steady: acks/s").contains("21000 (20000-22000)"), "{table}");
        assert!(line(&table, "  per connected worker").contains("10.2 KiB"), "equal rounds, no range: {table}");
        let cpu = line(&table, "steady: gateway | etcd leader CPU");
        assert!(cpu.contains("0.40 cores, 19 µs/ack (18-20)"), "{table}");
        assert!(line(&table, "steady: ack p50 / p99").contains("1.00 / 8.00 ms"), "{table}");
        assert!(line(&table, "steady: beats reaching the leader/s").contains(" - "), "not measured: {table}");
    }

    #[test]
    fn the_ratio_pairs_each_muster_round_with_the_etcd_round_after_it() {
        // Flat out, round by round: 2.50x, 3.00x, 2.00x; steady 1.00x, 0.91x, 0.95x.
        let muster = [run(12, 220_000, 500_000), run(14, 200_000, 600_000), run(13, 210_000, 400_000)];
        let etcd = [run(30, 220_000, 200_000), run(31, 220_000, 200_000), run(29, 220_000, 200_000)];
        let table = results(&muster, &etcd);
        assert!(line(&table, "max: acks/s").ends_with("2.50x (2.00-3.00)"), "{table}");
        assert!(line(&table, "steady: acks/s").ends_with("0.95x (0.91-1.00)"), "{table}");
        assert!(line(&results(&muster, &[]), "steady: acks/s").ends_with('-'), "no etcd, no ratio");
    }

    #[test]
    fn stalls_are_the_worst_and_the_sums_over_the_rounds() {
        let mut muster = [run(12, 1, 1), run(12, 1, 1)];
        muster[1].steady.stalls =
            Stalls { worst: Duration::from_millis(40), long: 2, total: Duration::from_millis(50) };
        let table = results(&muster, &[]);
        assert!(line(&table, "steady: machine stalls").contains("40.0 ms, 5, 111 ms"), "{table}");
    }

    #[test]
    fn a_figure_no_round_measured_prints_a_dash() {
        let muster = [run(12, 220_000, 500_000)];
        let only_muster = results(&muster, &[]);
        let acks = line(&only_muster, "steady: acks/s");
        assert!(acks.contains("22000") && acks.ends_with('-'), "{only_muster}");
        let no_max = [SystemRun { max: None, ..run(12, 220_000, 0) }];
        assert!(!results(&no_max, &[]).contains("max:"), "no flat-out phase, no rows for it");
        let mut partial = [run(12, 1, 1), run(12, 1, 1)];
        partial[0].connected = 9_000;
        let table = results(&partial, &[]);
        assert!(
            line(&table, "connect, each acked once").contains("8.00 s; a round acked 9000 of 10000 only"),
            "{table}"
        );
    }
}
