//! The scale benchmark's printed results: three tables with one row per fleet size (growth,
//! steady beating against the floor, state and reads) and the failure run's lines.

use std::fmt::Write;
use std::time::Duration;

use super::SizeRow;
use super::failure::Failure;
use super::grow::Registration;

fn secs(duration: Duration) -> String {
    if duration < Duration::from_secs(1) {
        format!("{} ms", duration.as_millis())
    } else {
        format!("{:.1} s", duration.as_secs_f64())
    }
}

fn bytes(n: f64) -> String {
    if n >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", n / (1024.0 * 1024.0))
    } else if n >= 1024.0 {
        format!("{:.1} KiB", n / 1024.0)
    } else {
        format!("{n:.0} B")
    }
}

fn ratio(measured: f64, floor: Option<f64>) -> String {
    match floor {
        Some(floor) if floor > 0.0 => format!("{:.2}x", measured / floor),
        _ => "-".into(),
    }
}

/// Lays out `rows` under `header`, columns right-aligned to their widest cell.
fn layout(header: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).chain([header[c].len()]).max().unwrap_or(0))
        .collect();
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(cell, width)| format!("{cell:>width$}")).collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

/// The progress line printed as each size completes.
pub fn one_line(row: &SizeRow) -> String {
    format!(
        "{} workers: TTL {} ms, {:.0} acks/s, gateway {:.1} us/ack and {} per worker, leader {} per lease",
        row.workers,
        row.steady.ttl_ms,
        row.steady.gateway.acks_per_second,
        row.steady.gateway.us.median,
        bytes(row.gateway_bytes_per_worker),
        bytes(row.leader_bytes_per_lease),
    )
}

/// The storm in one line, as the benchmark prints it once the storm is over.
pub fn storm_line(storm: &Registration) -> String {
    format!(
        "registration storm: {} workers at once through the registrars in {} ({:.0}/s); {:.2} Raft entries per \
         worker; CPU per worker: registrars {:.0} us, leader {:.0} us, the benchmark's clients {:.0} us",
        storm.workers,
        secs(storm.took),
        storm.per_second(),
        storm.raft_entries_per_worker,
        storm.registrar_us_per_worker,
        storm.leader_us_per_worker,
        storm.client_us_per_worker,
    )
}

pub fn render(rows: &[SizeRow], storm: Option<&Registration>, failure: Option<&Failure>) -> String {
    let mut out = String::new();
    if let Some(storm) = storm {
        let _ = writeln!(out, "{}", storm_line(storm));
        out.push('\n');
    }
    let growth: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.workers.to_string(),
                r.registration.workers.to_string(),
                secs(r.registration.took),
                format!("{:.0}", r.registration.per_second()),
                format!("{:.2}", r.registration.raft_entries_per_worker),
                format!("{:.0}", r.registration.registrar_us_per_worker),
                secs(r.ready),
            ]
        })
        .collect();
    out.push_str("growth (each size's new workers: registered at once while the rest beat, then connected)\n");
    out.push_str(&layout(
        &["workers", "new", "register", "per s", "raft/worker", "registrar us/worker", "all Ready"],
        &growth,
    ));

    let steady: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let floor = r.floor.as_ref();
            vec![
                r.workers.to_string(),
                format!("{} ms", r.steady.ttl_ms),
                format!("{:.0}", r.steady.gateway.acks_per_second),
                floor.map_or("-".into(), |f| format!("{:.0}", f.per_ack.acks_per_second)),
                r.steady.gateway.us.format(1, ""),
                floor.map_or("-".into(), |f| f.per_ack.us.format(1, "")),
                ratio(r.steady.gateway.us.median, floor.map(|f| f.per_ack.us.median)),
                bytes(r.gateway_bytes_per_worker),
                floor.map_or("-".into(), |f| bytes(f.bytes_per_connection)),
                ratio(r.gateway_bytes_per_worker, floor.map(|f| f.bytes_per_connection)),
                bytes(r.leader_bytes_per_lease),
                format!("{:.2}", r.steady.leader_cores),
            ]
        })
        .collect();
    out.push_str("\nsteady beating (gateways together; floor: a bare tonic echo server per gateway, same fleet)\n");
    out.push_str(&layout(
        &[
            "workers",
            "TTL",
            "acks/s",
            "floor acks/s",
            "gw us/ack (min-max)",
            "floor us/ack (min-max)",
            "cpu ratio (medians)",
            "gw mem/worker",
            "floor mem/conn",
            "mem ratio",
            "leader mem/lease",
            "leader cores",
        ],
        &steady,
    ));

    let state: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.workers.to_string(),
                bytes(r.state.data_dir_bytes as f64),
                bytes(r.state.snapshot_bytes as f64),
                secs(r.state.snapshot_took),
                secs(r.reads.list_all),
                secs(r.reads.watch_sync),
                secs(r.restart),
            ]
        })
        .collect();
    out.push_str("\nstate and reads (the leader's data dir; snapshot save; every page of ListWorkers; a new watch's listing; a follower's restart to ready)\n");
    out.push_str(&layout(&["workers", "data dir", "snapshot", "save", "list all", "watch sync", "restart"], &state));

    if let Some(f) = failure {
        out.push_str(&format!("\nfailure run at {} workers:\n", f.workers));
        let _ = writeln!(out, "  leader kill -9: a new leader after {}", secs(f.election));
        let _ = writeln!(
            out,
            "  gateway kill -9: its {} workers all reconnected to the others after {}",
            f.moved,
            secs(f.reconnect_all)
        );
        let _ = writeln!(
            out,
            "  live workers marked Unreachable through the failover: {} (at most, per observation)",
            f.unreachable_max
        );
        let _ = writeln!(
            out,
            "  {} workers killed at once (TTL {}): all Unreachable after {} (bound: TTL + grace + 2 s = {}) {}",
            f.killed,
            secs(f.killed_ttl),
            secs(f.detected),
            secs(f.detection_bound()),
            if f.detected <= f.detection_bound() { "ok" } else { "OVER" }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_and_missing_floors_show_a_dash() {
        let row = SizeRow { workers: 1000, ..Default::default() };
        let text = render(&[row.clone(), SizeRow { workers: 100_000, ..row }], Some(&Registration::default()), None);
        assert!(text.contains("growth"), "{text}");
        let steady: Vec<&str> = text.lines().skip_while(|l| !l.starts_with("steady")).skip(1).take(3).collect();
        assert_eq!(steady[1].len(), steady[2].len(), "{text}");
        assert!(steady[1].contains(" - "), "{text}");
        assert_eq!(ratio(2.6, Some(2.0)), "1.30x");
        assert_eq!(bytes(24.0 * 1024.0), "24.0 KiB");
    }
}
