//! The printed results of `kv`: per workload row, each system's throughput, latency and CPU
//! per operation as the median of its rounds with the lowest and highest beside it, the ratio
//! of the two systems round by round, and how much the machine stalled while they ran.

use std::fmt::Write as _;
use std::time::Duration;

use crate::spread::Spread;
use crate::stalls::Stalls;
use crate::workload::Summary;

/// One system's numbers for one row in one round.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Measurement {
    pub summary: Summary,
    /// User + system CPU seconds of the three server processes during the measured window.
    pub server_cpu_secs: f64,
    /// Length of the measured window.
    pub window: Duration,
    /// How much the machine stalled during the window.
    pub stalls: Stalls,
}

impl Measurement {
    /// Server CPU microseconds per completed operation.
    pub fn cpu_us_per_op(&self) -> Option<f64> {
        (self.summary.ops > 0).then(|| self.server_cpu_secs * 1e6 / self.summary.ops as f64)
    }

    /// Server CPU use as a share of the whole machine (`cores` cores), in percent.
    pub fn cpu_percent(&self, cores: usize) -> f64 {
        let capacity = self.window.as_secs_f64() * cores.max(1) as f64;
        if capacity > 0.0 { 100.0 * self.server_cpu_secs / capacity } else { 0.0 }
    }
}

/// A workload row ("put c=1", "get(lin) c=64", ...) with each system's rounds, in order:
/// round `n` of Muster ran just before round `n` of etcd.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub name: String,
    pub muster: Vec<Measurement>,
    pub etcd: Vec<Measurement>,
}

impl Row {
    /// Muster's `figure` over etcd's, round by round (a round of each ran back to back).
    fn ratio(&self, figure: impl Fn(&Measurement) -> Option<f64>) -> Option<Spread> {
        Spread::ratio(&self.muster, &self.etcd, figure)
    }
}

fn ops_per_sec(m: &Measurement) -> Option<f64> {
    Some(m.summary.ops_per_sec)
}

/// The median over the rounds of one latency of each round's summary.
fn median_latency(rounds: &[Measurement], latency: impl Fn(&Summary) -> Duration) -> String {
    match Spread::over(rounds, |m| Some(latency(&m.summary).as_secs_f64())) {
        Some(spread) => format_latency(Duration::from_secs_f64(spread.median)),
        None => "-".to_string(),
    }
}

fn millis(latency: Duration) -> f64 {
    latency.as_secs_f64() * 1e3
}

/// A figure over the rounds, whole numbers, or `-` when no round measured it.
fn cell(spread: Option<Spread>) -> String {
    Spread::cell(spread, 0, "")
}

/// Muster's figure over etcd's, round by round, or `-`.
fn ratio_cell(spread: Option<Spread>) -> String {
    Spread::cell(spread, 2, "x")
}

/// `850µs`, `1.23ms`, `2.50s`.
pub fn format_latency(latency: Duration) -> String {
    let us = latency.as_micros();
    if us < 1_000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{:.2}ms", us as f64 / 1e3)
    } else {
        format!("{:.2}s", us as f64 / 1e6)
    }
}

/// Whole operations per second.
pub fn format_ops(ops_per_sec: f64) -> String {
    format!("{ops_per_sec:.0}")
}

/// Left-aligned first column, right-aligned others, two spaces apart.
pub(crate) fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let pad = " ".repeat(widths[i] - cell.chars().count());
            if i == 0 {
                let _ = write!(out, "{cell}{pad}");
            } else {
                let _ = write!(out, "  {pad}{cell}");
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(&header.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    out += &line(&widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>());
    for row in rows {
        out += &line(row);
    }
    out
}

/// The main table: each system's throughput and latency (medians of the rounds, with the
/// throughput's range), and Muster's throughput over etcd's, round by round.
pub fn results_table(rows: &[Row]) -> String {
    let header = ["workload", "muster ops/s", "p50", "p99", "etcd ops/s", "p50", "p99", "ratio (muster/etcd)"];
    let system = |rounds: &[Measurement]| {
        [cell(Spread::over(rounds, ops_per_sec)), median_latency(rounds, |s| s.p50), median_latency(rounds, |s| s.p99)]
    };
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let mut cells = vec![row.name.clone()];
            cells.extend(system(&row.muster));
            cells.extend(system(&row.etcd));
            cells.push(ratio_cell(row.ratio(ops_per_sec)));
            cells
        })
        .collect();
    render(&header, &body)
}

/// CPU of the three server processes per operation (medians of the rounds with their range),
/// Muster's over etcd's round by round, and the median share of the machine each used.
pub fn cpu_table(rows: &[Row], cores: usize) -> String {
    let share = |rounds: &[Measurement]| match Spread::over(rounds, |m| Some(m.cpu_percent(cores))) {
        Some(share) => format!("{:.0}%", share.median),
        None => "-".to_string(),
    };
    let header = ["workload", "muster cpu/op (µs)", "etcd cpu/op (µs)", "cpu/op ratio", "muster cpu", "etcd cpu"];
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            vec![
                row.name.clone(),
                cell(Spread::over(&row.muster, Measurement::cpu_us_per_op)),
                cell(Spread::over(&row.etcd, Measurement::cpu_us_per_op)),
                ratio_cell(row.ratio(Measurement::cpu_us_per_op)),
                share(&row.muster),
                share(&row.etcd),
            ]
        })
        .collect();
    render(&header, &body)
}

/// How much the machine stalled while each system ran each row: the worst single stall over
/// the rounds, and stalls of 10 ms or more added over the rounds.
pub fn stalls_table(rows: &[Row]) -> String {
    let stalls = |rounds: &[Measurement]| {
        let worst = rounds.iter().map(|m| m.stalls.worst).max().unwrap_or_default();
        let long: u32 = rounds.iter().map(|m| m.stalls.long).sum();
        format!("{:.1} ms, {long}", millis(worst))
    };
    let header = ["workload", "muster: worst stall, long stalls", "etcd: worst stall, long stalls"];
    let body: Vec<Vec<String>> =
        rows.iter().map(|row| vec![row.name.clone(), stalls(&row.muster), stalls(&row.etcd)]).collect();
    render(&header, &body)
}

/// Errors seen per row and system, if any.
pub fn error_notes(rows: &[Row]) -> Vec<String> {
    let mut notes = Vec::new();
    for row in rows {
        for (system, rounds) in [("muster", &row.muster), ("etcd", &row.etcd)] {
            for (round, m) in rounds.iter().enumerate().filter(|(_, m)| m.summary.errors > 0) {
                notes.push(format!(
                    "{system} {} round {}: {} failed operations (not counted)",
                    row.name,
                    round + 1,
                    m.summary.errors
                ));
            }
        }
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measurement(ops_per_sec: f64, p50_us: u64, p99_us: u64) -> Measurement {
        Measurement {
            summary: Summary {
                ops_per_sec,
                p50: Duration::from_micros(p50_us),
                p99: Duration::from_micros(p99_us),
                ops: (ops_per_sec * 10.0) as u64,
                errors: 0,
            },
            server_cpu_secs: 5.0,
            window: Duration::from_secs(10),
            stalls: Stalls::default(),
        }
    }

    #[test]
    fn latencies_pick_a_readable_unit() {
        assert_eq!(format_latency(Duration::from_micros(850)), "850µs");
        assert_eq!(format_latency(Duration::from_micros(1_234)), "1.23ms");
        assert_eq!(format_latency(Duration::from_millis(2_500)), "2.50s");
    }

    #[test]
    fn the_ratio_is_the_median_of_the_rounds_paired_in_order() {
        // Round by round: 0.50x, 2.00x, 1.00x; the medians of each side would give 1.00x too,
        // but the range shows how far a single round strays.
        let row = Row {
            name: "put c=1".into(),
            muster: vec![
                measurement(500.0, 1_900, 4_100),
                measurement(2000.0, 900, 2_000),
                measurement(1000.0, 1_000, 3_000),
            ],
            etcd: vec![
                measurement(1000.0, 950, 2_000),
                measurement(1000.0, 950, 2_000),
                measurement(1000.0, 950, 2_000),
            ],
        };
        let table = results_table(&[
            row,
            Row { name: "get(lin) c=64".into(), muster: vec![], etcd: vec![measurement(20000.0, 3_000, 9_000)] },
        ]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].starts_with("workload"));
        assert!(lines[0].ends_with("ratio (muster/etcd)"));
        assert!(lines[2].starts_with("put c=1 "));
        assert!(lines[2].contains("1000 (500-2000)"), "{}", lines[2]);
        assert!(lines[2].contains("1.00ms"), "the median p50: {}", lines[2]);
        assert!(lines[2].ends_with("1.00x (0.50-2.00)"), "{}", lines[2]);
        assert!(lines[3].ends_with('-'), "no Muster rounds, no ratio: {}", lines[3]);
        // Every data line is as wide as the header rule (right-aligned final column).
        assert_eq!(lines[1].chars().count(), lines[2].chars().count());
    }

    #[test]
    fn cpu_cost_per_op_and_share() {
        let m = measurement(1000.0, 1, 1);
        assert_eq!(m.cpu_us_per_op(), Some(500.0));
        assert!((m.cpu_percent(2) - 25.0).abs() < 1e-9);
        let e = measurement(2000.0, 1, 1);
        let table = cpu_table(&[Row { name: "put c=1".into(), muster: vec![m], etcd: vec![e] }], 2);
        let line = table.lines().nth(2).unwrap();
        assert!(line.contains(" 500 ") && line.contains(" 250 "), "{line}");
        assert!(line.contains("2.00x"), "Muster's CPU per op over etcd's: {line}");
    }

    #[test]
    fn stalls_are_the_worst_and_the_long_ones_over_the_rounds() {
        let stalled = |worst_ms: u64, long: u32| Measurement {
            stalls: Stalls { worst: Duration::from_millis(worst_ms), long, total: Duration::ZERO },
            ..measurement(1.0, 1, 1)
        };
        let row =
            Row { name: "put c=1".into(), muster: vec![stalled(12, 1), stalled(30, 2)], etcd: vec![stalled(3, 0)] };
        let line = stalls_table(&[row]).lines().nth(2).unwrap().to_string();
        assert!(line.contains("30.0 ms, 3") && line.contains("3.0 ms, 0"), "{line}");
    }
}
