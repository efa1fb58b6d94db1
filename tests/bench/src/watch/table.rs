//! The watch benchmark's printed results over the rounds: one line per row and system, each
//! figure the median of the rounds with the lowest and highest beside it (on a shared 2-core
//! machine a single round can catch someone else's burst), then Muster's figures as multiples
//! of etcd's taken round by round: each Muster round ran right before the etcd round it is set
//! against, so the pair saw much the same machine.

use std::fmt::Write as _;
use std::time::Duration;

use super::RowSpec;
use super::result::RowResult;
use crate::spread::Spread;

/// One row's results, each system's in round order (round `i` of Muster ran right before
/// round `i` of etcd); a system that did not run the row has none.
#[derive(Clone, Debug)]
pub struct RowRounds {
    pub spec: RowSpec,
    pub muster: Vec<RowResult>,
    pub etcd: Vec<RowResult>,
}

fn secs(latency: Duration) -> Option<f64> {
    Some(latency.as_secs_f64())
}

/// A latency over the rounds in the unit `report::format_latency` would give its median
/// (`850µs (790-910)`, `1.23ms (1.10-1.50)`, `2.50s`), or `-`.
fn latency_cell(rounds: &[RowResult], latency: fn(&RowResult) -> Duration) -> String {
    let Some(spread) = Spread::over(rounds, |r| secs(latency(r))) else { return "-".to_string() };
    let (scale, decimals, unit) = match spread.median {
        m if m < 1e-3 => (1e6, 0, "µs"),
        m if m < 1.0 => (1e3, 2, "ms"),
        _ => (1.0, 2, "s"),
    };
    let scaled = Spread { median: spread.median * scale, min: spread.min * scale, max: spread.max * scale };
    Spread::cell(Some(scaled), decimals, unit)
}

/// One system's cells of a row: every figure over its rounds (`-` where none measured it).
fn cells(rounds: &[RowResult]) -> String {
    let cell = |decimals: usize, unit: &str, figure: fn(&RowResult) -> Option<f64>| {
        Spread::cell(Spread::over(rounds, figure), decimals, unit)
    };
    format!(
        "| {} | {} | {} / {} | {} / {} | {} | {} | {} |",
        cell(0, "", |r| Some(r.writes_per_sec)),
        cell(0, "", |r| Some(r.events_per_sec)),
        latency_cell(rounds, |r| r.write_p50),
        latency_cell(rounds, |r| r.write_p99),
        latency_cell(rounds, |r| r.commit_p50),
        latency_cell(rounds, |r| r.commit_p99),
        cell(1, " µs", |r| r.cpu_us_per_event),
        cell(2, "", |r| Some(r.cpu_cores())),
        cell(0, "", |r| Some(r.missing as f64)),
    )
}

/// Muster's figures over etcd's, round by round, for a row both ran.
fn ratio_line(row: &RowRounds) -> Option<String> {
    let pairs = row.muster.len().min(row.etcd.len());
    if pairs == 0 {
        return None;
    }
    let ratio =
        |figure: fn(&RowResult) -> Option<f64>| Spread::cell(Spread::ratio(&row.muster, &row.etcd, figure), 2, "×");
    let no_worse = row.muster.iter().zip(&row.etcd).filter(|(m, e)| m.commit_p99 <= e.commit_p99).count();
    Some(format!(
        "{}: events/s {}, commit→event p99 {} (no worse in {no_worse} of {pairs} rounds), CPU per event {}",
        row.spec.name,
        ratio(|r| Some(r.events_per_sec)),
        ratio(|r| secs(r.commit_p99)),
        ratio(|r| r.cpu_us_per_event),
    ))
}

/// The results table (markdown), then Muster as a multiple of etcd per row both ran.
pub fn render(rows: &[RowRounds], cores: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| row | system | writes/s | events/s | write→event p50 / p99 | commit→event p50 / p99 | server CPU per \
         event | server cores (of {cores}) | missing |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        for (system, rounds) in [("Muster", &row.muster), ("etcd", &row.etcd)] {
            if !rounds.is_empty() {
                let _ = writeln!(out, "| {} | {system} {}", row.spec.name, cells(rounds));
            }
        }
    }
    let ratios: Vec<String> = rows.iter().filter_map(ratio_line).collect();
    if !ratios.is_empty() {
        let _ = writeln!(out, "\nMuster / etcd, round by round (median, lowest-highest):");
        for line in ratios {
            let _ = writeln!(out, "  {line}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::RowKind;
    use super::*;

    /// A round delivering `events` events/s with this commit→event p99 (ms) and CPU per event.
    fn round(events: f64, commit_p99_ms: u64, cpu_us: Option<f64>) -> RowResult {
        RowResult {
            writes_per_sec: 100.0,
            events_per_sec: events,
            messages_per_sec: events,
            write_p50: Duration::from_micros(1_500),
            write_p99: Duration::from_millis(4),
            commit_p50: Duration::from_micros(500),
            commit_p99: Duration::from_millis(commit_p99_ms),
            cpu_us_per_event: cpu_us,
            server_cpu_secs: 5.0,
            window: Duration::from_secs(10),
            missing: 0,
            expected: 100_000,
            watcher_failures: 0,
            first_error: None,
            write_errors: 0,
            skipped_writes: 0,
            setup: Duration::from_secs(1),
        }
    }

    fn row(name: &str, kind: RowKind, muster: Vec<RowResult>, etcd: Vec<RowResult>) -> RowRounds {
        RowRounds { spec: RowSpec { name: name.into(), kind, rate: 100.0 }, muster, etcd }
    }

    #[test]
    fn latencies_take_the_unit_of_their_median() {
        let at = |micros: &[u64]| -> Vec<RowResult> {
            micros
                .iter()
                .map(|&us| RowResult { commit_p99: Duration::from_micros(us), ..round(1.0, 1, None) })
                .collect()
        };
        assert_eq!(latency_cell(&at(&[1, 1]), |r| r.commit_p99), "1µs");
        assert_eq!(latency_cell(&at(&[790, 850, 1_200]), |r| r.commit_p99), "850µs (790-1200)");
        assert_eq!(latency_cell(&at(&[2_500_000]), |r| r.commit_p99), "2.50s");
        assert_eq!(latency_cell(&[], |r| r.commit_p99), "-");
    }

    fn line<'a>(table: &'a str, prefix: &str) -> &'a str {
        table.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix} in {table}"))
    }

    #[test]
    fn each_figure_is_the_median_of_the_rounds_with_its_range() {
        let muster = vec![round(90_000.0, 3, Some(10.0)), round(100_000.0, 5, Some(12.0)), round(95_000.0, 4, None)];
        let table = render(&[row("kv puts 100/s", RowKind::Kv, muster, vec![])], 2);
        let muster = line(&table, "| kv puts 100/s | Muster ");
        assert!(muster.contains("| 100 | 95000 (90000-100000) |"), "{muster}");
        assert!(muster.contains("| 1.50ms / 4.00ms | 500µs / 4.00ms (3.00-5.00) |"), "{muster}");
        assert!(
            muster.contains("| 11.0 µs (10.0-12.0) | 0.50 | 0 |"),
            "a round without CPU per event left out: {muster}"
        );
        assert!(!table.contains("| etcd"), "etcd did not run the row: {table}");
        assert!(!table.contains("Muster / etcd"), "no ratio without etcd: {table}");
    }

    #[test]
    fn ratios_pair_each_muster_round_with_the_etcd_round_after_it() {
        // events/s round by round: 0.50×, 2.00×, 1.00×; commit p99 1.50×, 0.50×, 1.00×.
        let muster = vec![round(500.0, 6, Some(10.0)), round(2_000.0, 2, Some(10.0)), round(1_000.0, 4, Some(10.0))];
        let etcd = vec![round(1_000.0, 4, Some(20.0)), round(1_000.0, 4, None), round(1_000.0, 4, Some(5.0))];
        let workers = row("workers registering 50/s", RowKind::Workers, vec![round(50.0, 9, None)], vec![]);
        let table = render(&[row("kv puts 100/s", RowKind::Kv, muster, etcd), workers], 2);
        assert!(table.contains("| kv puts 100/s | etcd | 100 | 1000 |"), "{table}");
        assert!(line(&table, "| workers registering 50/s | Muster ").contains("| - |"), "{table}");
        let ratio = line(&table, "  kv puts 100/s: ");
        assert_eq!(
            ratio,
            "  kv puts 100/s: events/s 1.00× (0.50-2.00), commit→event p99 1.00× (0.50-1.50) (no worse in 2 of 3 \
             rounds), CPU per event 1.25× (0.50-2.00)"
        );
        assert!(!table.contains("  workers registering"), "etcd has no worker row to compare: {table}");
    }
}
