//! The printed fleet results: one row per figure with Muster and etcd side by side (and the
//! throughput ratio), then the targets, each with the figure that decides it.

use std::time::Duration;

use super::measure::{Phase, SystemRun};
use crate::report::{self, format_ops};
use crate::stalls::Stalls;

/// The targets (for 10,000 workers on the 2-core development machine).
pub const TARGET_REGISTER: Duration = Duration::from_secs(20);
pub const TARGET_BEATS_PER_SEC: f64 = 20_000.0;
pub const TARGET_P99_MS: f64 = 20.0;
pub const TARGET_RATIO: f64 = 2.0;

fn secs(duration: Duration) -> String {
    format!("{:.2} s", duration.as_secs_f64())
}

fn mib(bytes: f64) -> String {
    format!("{:.0} MiB", bytes / (1024.0 * 1024.0))
}

fn cpu(phase: &Phase, cpu_secs: f64) -> String {
    match phase.us_per_ack(cpu_secs) {
        Some(us) => format!("{:.2} cores, {us:.0} µs/ack", phase.cores(cpu_secs)),
        None => format!("{:.2} cores", phase.cores(cpu_secs)),
    }
}

fn stalls(stalls: &Stalls) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!("{:.1} ms, {}, {:.0} ms", ms(stalls.worst), stalls.long, ms(stalls.total))
}

fn ratio(muster: Option<f64>, etcd: Option<f64>) -> String {
    match (muster, etcd) {
        (Some(m), Some(e)) if e > 0.0 => format!("{:.2}x", m / e),
        _ => "-".to_string(),
    }
}

/// A row: its label, a cell per system, and the ratio cell.
fn row(
    label: String,
    muster: Option<&SystemRun>,
    etcd: Option<&SystemRun>,
    cell: impl Fn(&SystemRun) -> String,
) -> Vec<String> {
    let cell = |run: Option<&SystemRun>| run.map_or("-".to_string(), &cell);
    vec![label, cell(muster), cell(etcd), String::new()]
}

/// The rows of one phase (`pick` chooses it from a run).
fn phase_rows(
    name: &str,
    muster: Option<&SystemRun>,
    etcd: Option<&SystemRun>,
    pick: impl Fn(&SystemRun) -> Option<&Phase> + Copy,
) -> Vec<Vec<String>> {
    let on = |f: fn(&Phase) -> String| move |run: &SystemRun| pick(run).map_or("-".to_string(), f);
    let mut acks = row(format!("{name}: acks/s"), muster, etcd, on(|p| format_ops(p.per_sec())));
    acks[3] = ratio(muster.and_then(pick).map(Phase::per_sec), etcd.and_then(pick).map(Phase::per_sec));
    vec![
        acks,
        row(format!("{name}: ack p50 / p99"), muster, etcd, on(|p| format!("{:.2} / {:.2} ms", p.p50_ms, p.p99_ms))),
        row(
            format!("{name}: beats reaching the leader/s"),
            muster,
            etcd,
            on(|p| p.forwarded.map_or("-".to_string(), |n| format_ops(n as f64 / p.window.as_secs_f64().max(1e-9)))),
        ),
        row(
            format!("{name}: Raft entries/s (per ack)"),
            muster,
            etcd,
            on(|p| format!("{:.1} ({:.4})", p.raft_per_sec(), p.raft_entries as f64 / p.acks.max(1) as f64)),
        ),
        row(format!("{name}: gateway | etcd leader CPU"), muster, etcd, on(|p| cpu(p, p.front_cpu))),
        row(format!("{name}: all servers CPU"), muster, etcd, on(|p| cpu(p, p.servers_cpu))),
        row(
            format!("{name}: simulated workers CPU"),
            muster,
            etcd,
            on(|p| format!("{:.2} cores", p.cores(p.bench_cpu))),
        ),
        row(
            format!("{name}: everything else on the machine"),
            muster,
            etcd,
            on(|p| format!("{:.2} cores", p.cores(p.other_cpu))),
        ),
        row(format!("{name}: errors"), muster, etcd, on(|p| p.errors.to_string())),
        row(format!("{name}: machine stalls: worst, >= 10 ms, total"), muster, etcd, on(|p| stalls(&p.stalls))),
    ]
}

/// The results table.
pub fn results(muster: Option<&SystemRun>, etcd: Option<&SystemRun>) -> String {
    let mut rows = vec![
        row("register all (etcd: grant all leases)".into(), muster, etcd, |r| secs(r.setup)),
        row("  Raft entries (per worker)".into(), muster, etcd, |r| {
            format!("{} ({:.1})", r.setup_raft_entries, r.setup_raft_entries as f64 / r.workers.max(1) as f64)
        }),
        row("connect, each acked once".into(), muster, etcd, |r| {
            if r.connected < r.workers {
                format!("{} ({} of {} only)", secs(r.connect), r.connected, r.workers)
            } else {
                secs(r.connect)
            }
        }),
    ];
    rows.extend(phase_rows("steady", muster, etcd, |r| Some(&r.steady)));
    if muster.is_some_and(|r| r.max.is_some()) || etcd.is_some_and(|r| r.max.is_some()) {
        rows.extend(phase_rows("max", muster, etcd, |r| r.max.as_ref()));
    }
    rows.push(row("gateway | etcd leader RSS idle → connected".into(), muster, etcd, |r| {
        format!("{} → {}", mib(r.front_rss_idle as f64), mib(r.front_rss_connected as f64))
    }));
    rows.push(row("  per connected worker".into(), muster, etcd, |r| {
        format!("{:.1} KiB", r.rss_per_worker() / 1024.0)
    }));
    report::render(&["", "muster", "etcd", "muster/etcd"], &rows)
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}

/// One line per target of the issue, with the figure that decides it.
pub fn targets(muster: &SystemRun, etcd: Option<&SystemRun>) -> Vec<String> {
    let steady = &muster.steady;
    let mut lines = vec![
        format!(
            "register {} workers in under {}: {} ({})",
            muster.workers,
            secs(TARGET_REGISTER),
            secs(muster.setup),
            verdict(muster.setup < TARGET_REGISTER)
        ),
        format!(
            "one gateway absorbs >= {} heartbeats/s at p99 ack < {TARGET_P99_MS} ms: {}/s at p99 {:.2} ms ({})",
            format_ops(TARGET_BEATS_PER_SEC),
            format_ops(steady.per_sec()),
            steady.p99_ms,
            verdict(steady.per_sec() >= TARGET_BEATS_PER_SEC && steady.p99_ms < TARGET_P99_MS)
        ),
        format!(
            "zero Raft entries per steady-state heartbeat: {} entries for {} beats ({})",
            steady.raft_entries,
            steady.acks,
            verdict(steady.raft_entries == 0)
        ),
    ];
    if let Some(etcd) = etcd {
        let (name, m, e) = match (&muster.max, &etcd.max) {
            (Some(m), Some(e)) => ("flat out", m.per_sec(), e.per_sec()),
            _ => ("steady", steady.per_sec(), etcd.steady.per_sec()),
        };
        let ratio = if e > 0.0 { m / e } else { f64::INFINITY };
        lines.push(format!(
            ">= {TARGET_RATIO}x etcd's keep-alive throughput ({name}): {}/s vs {}/s = {ratio:.2}x ({})",
            format_ops(m),
            format_ops(e),
            verdict(ratio >= TARGET_RATIO)
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(acks: u64, raft: u64) -> Phase {
        Phase {
            window: Duration::from_secs(10),
            offered_per_sec: Some(22_000.0),
            acks,
            errors: 0,
            p50_ms: 1.0,
            p99_ms: 8.0,
            raft_entries: raft,
            forwarded: None,
            front_cpu: 4.0,
            servers_cpu: 6.0,
            bench_cpu: 5.0,
            other_cpu: 1.0,
            stalls: Stalls { worst: Duration::from_millis(27), long: 3, total: Duration::from_millis(61) },
        }
    }

    fn run(acks: u64, max_acks: u64) -> SystemRun {
        SystemRun {
            workers: 10_000,
            setup: Duration::from_secs(12),
            setup_raft_entries: 20_000,
            connect: Duration::from_secs(8),
            connected: 10_000,
            front_rss_idle: 20 << 20,
            front_rss_connected: 120 << 20,
            steady: phase(acks, 0),
            max: Some(phase(max_acks, 0)),
            notes: Vec::new(),
        }
    }

    fn line(table: &str, prefix: &str) -> String {
        table.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix} in {table}")).to_string()
    }

    #[test]
    fn the_table_has_both_systems_and_the_ratio() {
        let (muster, etcd) = (run(220_000, 500_000), run(220_000, 200_000));
        let table = results(Some(&muster), Some(&etcd));
        assert!(line(&table, "steady: acks/s").ends_with("1.00x"), "{table}");
        assert!(line(&table, "max: acks/s").ends_with("2.50x"), "{table}");
        assert!(line(&table, "  per connected worker").contains("10.2 KiB"), "{table}");
        assert!(line(&table, "steady: gateway | etcd leader CPU").contains("0.40 cores, 18 µs/ack"), "{table}");
        assert!(line(&table, "steady: machine stalls").contains("27.0 ms, 3, 61 ms"), "{table}");
        let partial = SystemRun { connected: 9_000, ..etcd };
        let table = results(Some(&muster), Some(&partial));
        assert!(line(&table, "connect, each acked once").ends_with("8.00 s (9000 of 10000 only)"), "{table}");
        let only_muster = results(Some(&muster), None);
        assert!(line(&only_muster, "steady: acks/s").ends_with('-'));
    }

    #[test]
    fn targets_name_their_figures() {
        let (muster, etcd) = (run(220_000, 500_000), run(220_000, 300_000));
        let lines = targets(&muster, Some(&etcd));
        assert!(lines[0].ends_with("12.00 s (met)"), "{}", lines[0]);
        assert!(lines[1].contains("22000/s at p99 8.00 ms (met)"), "{}", lines[1]);
        assert!(lines[2].ends_with("(met)"));
        assert!(lines[3].contains("50000/s vs 30000/s = 1.67x (NOT met)"), "{}", lines[3]);
    }
}
