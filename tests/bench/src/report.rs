//! The printed results: one table row per workload with Muster's and etcd's throughput and
//! latency side by side, and a second table with the servers' CPU cost per operation.

use std::fmt::Write as _;
use std::time::Duration;

use crate::workload::Summary;

/// One system's numbers for one row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Measurement {
    pub summary: Summary,
    /// User + system CPU seconds of the three server processes during the measured window.
    pub server_cpu_secs: f64,
    /// Length of the measured window.
    pub window: Duration,
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

/// A workload row: "put c=1", "get(lin) c=64", ...
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub name: String,
    pub muster: Option<Measurement>,
    pub etcd: Option<Measurement>,
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

/// Muster's throughput as a multiple of etcd's.
pub fn format_ratio(muster: Option<&Measurement>, etcd: Option<&Measurement>) -> String {
    match (muster, etcd) {
        (Some(m), Some(e)) if e.summary.ops_per_sec > 0.0 => {
            format!("{:.2}x", m.summary.ops_per_sec / e.summary.ops_per_sec)
        }
        _ => "-".to_string(),
    }
}

fn cells(m: Option<&Measurement>) -> [String; 3] {
    match m {
        Some(m) => [format_ops(m.summary.ops_per_sec), format_latency(m.summary.p50), format_latency(m.summary.p99)],
        None => ["-".to_string(), "-".to_string(), "-".to_string()],
    }
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

/// The main table: throughput and latency of both systems and the throughput ratio.
pub fn results_table(rows: &[Row]) -> String {
    let header = ["workload", "muster ops/s", "p50", "p99", "etcd ops/s", "p50", "p99", "ratio (muster/etcd)"];
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let mut cellsv = vec![row.name.clone()];
            cellsv.extend(cells(row.muster.as_ref()));
            cellsv.extend(cells(row.etcd.as_ref()));
            cellsv.push(format_ratio(row.muster.as_ref(), row.etcd.as_ref()));
            cellsv
        })
        .collect();
    render(&header, &body)
}

/// CPU cost of the three server processes per operation and as a share of the machine.
pub fn cpu_table(rows: &[Row], cores: usize) -> String {
    let per_op = |m: Option<&Measurement>| match m.and_then(Measurement::cpu_us_per_op) {
        Some(us) => format!("{us:.0}µs"),
        None => "-".to_string(),
    };
    let share = |m: Option<&Measurement>| m.map_or("-".to_string(), |m| format!("{:.0}%", m.cpu_percent(cores)));
    let header = ["workload", "muster cpu/op", "muster cpu", "etcd cpu/op", "etcd cpu"];
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            vec![
                row.name.clone(),
                per_op(row.muster.as_ref()),
                share(row.muster.as_ref()),
                per_op(row.etcd.as_ref()),
                share(row.etcd.as_ref()),
            ]
        })
        .collect();
    render(&header, &body)
}

/// Errors seen per row and system, if any.
pub fn error_notes(rows: &[Row]) -> Vec<String> {
    let mut notes = Vec::new();
    for row in rows {
        for (system, m) in [("muster", &row.muster), ("etcd", &row.etcd)] {
            if let Some(m) = m.filter(|m| m.summary.errors > 0) {
                notes.push(format!("{system} {}: {} failed operations (not counted)", row.name, m.summary.errors));
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
        }
    }

    #[test]
    fn latencies_pick_a_readable_unit() {
        assert_eq!(format_latency(Duration::from_micros(850)), "850µs");
        assert_eq!(format_latency(Duration::from_micros(1_234)), "1.23ms");
        assert_eq!(format_latency(Duration::from_millis(2_500)), "2.50s");
    }

    #[test]
    fn table_lines_up_and_shows_the_ratio() {
        let rows = vec![
            Row {
                name: "put c=1".into(),
                muster: Some(measurement(500.0, 1_900, 4_100)),
                etcd: Some(measurement(1000.0, 950, 2_000)),
            },
            Row { name: "get(lin) c=64".into(), muster: None, etcd: Some(measurement(20000.0, 3_000, 9_000)) },
        ];
        let table = results_table(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].starts_with("workload"));
        assert!(lines[0].ends_with("ratio (muster/etcd)"));
        assert!(lines[2].starts_with("put c=1 "));
        assert!(lines[2].contains("1.90ms"));
        assert!(lines[2].ends_with("0.50x"));
        assert!(lines[3].ends_with('-'));
        // Every data line is as wide as the header rule (right-aligned final column).
        assert_eq!(lines[1].chars().count(), lines[2].chars().count());
    }

    #[test]
    fn cpu_cost_per_op_and_share() {
        let m = measurement(1000.0, 1, 1);
        assert_eq!(m.cpu_us_per_op(), Some(500.0));
        assert!((m.cpu_percent(2) - 25.0).abs() < 1e-9);
        let table = cpu_table(&[Row { name: "put c=1".into(), muster: Some(m), etcd: None }], 2);
        assert!(table.lines().nth(2).unwrap().contains("500µs"));
    }
}
