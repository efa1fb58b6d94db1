//! `kv --profile-write-path`: each Muster node runs with `raft.profile_write_path`, and after
//! every row the bench reads the nodes' `muster_write_hop_*` histograms and prints, per hop,
//! how often it ran per operation, its mean time and the entries it moved per call, on the
//! leader and on the followers (summed). The difference of two scrapes is the row's own.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use muster_e2e::probe::metrics_body;

/// The hops in the order a write takes them (the daemon's `hop` label values).
const HOPS: [&str; 8] =
    ["propose", "log_append", "log_flush", "fsync", "log_read", "replicate", "follower_append", "apply"];

/// One hop's running totals on one node.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct HopCounts {
    calls: f64,
    seconds: f64,
    entries: f64,
}

impl std::ops::Add for HopCounts {
    type Output = Self;
    fn add(self, other: Self) -> Self {
        Self {
            calls: self.calls + other.calls,
            seconds: self.seconds + other.seconds,
            entries: self.entries + other.entries,
        }
    }
}

impl std::ops::Sub for HopCounts {
    type Output = Self;
    fn sub(self, other: Self) -> Self {
        Self {
            calls: self.calls - other.calls,
            seconds: self.seconds - other.seconds,
            entries: self.entries - other.entries,
        }
    }
}

/// One node's running totals, per hop.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HopTotals(BTreeMap<String, HopCounts>);

impl HopTotals {
    /// Reads the totals out of a `/metrics` body (no profile series: all zero).
    pub fn parse(body: &str) -> Self {
        let mut totals: BTreeMap<String, HopCounts> = BTreeMap::new();
        for line in body.lines().filter(|line| !line.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else { continue };
            let Ok(value) = value.parse::<f64>() else { continue };
            let Some((name, labels)) = series.split_once('{') else { continue };
            let Some(hop) = labels.split("hop=\"").nth(1).and_then(|rest| rest.split('"').next()) else { continue };
            let slot = totals.entry(hop.to_string()).or_default();
            match name {
                "muster_write_hop_seconds_count" => slot.calls = value,
                "muster_write_hop_seconds_sum" => slot.seconds = value,
                "muster_write_hop_entries_sum" => slot.entries = value,
                _ => {}
            }
        }
        Self(totals)
    }

    /// Scrapes one node's admin listener.
    pub async fn scrape(admin: &str) -> anyhow::Result<Self> {
        Ok(Self::parse(&metrics_body(admin).await?))
    }

    fn get(&self, hop: &str) -> HopCounts {
        self.0.get(hop).copied().unwrap_or_default()
    }

    /// Every hop of `self` combined with the same hop of `other`.
    fn zip_with(&self, other: &Self, combine: impl Fn(HopCounts, HopCounts) -> HopCounts) -> Self {
        Self(HOPS.iter().map(|hop| (hop.to_string(), combine(self.get(hop), other.get(hop)))).collect())
    }

    /// What happened between `before` and `self`.
    pub fn since(&self, before: &Self) -> Self {
        self.zip_with(before, |now, then| now - then)
    }

    /// Adds another node's totals (the followers are reported together).
    pub fn plus(&self, other: &Self) -> Self {
        self.zip_with(other, |a, b| a + b)
    }
}

/// The per-hop table of one row: `ops` operations done, the leader's and followers' totals.
pub fn table(ops: f64, leader: &HopTotals, followers: &HopTotals) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:>14} {:>10} {:>13} {:>17} {:>10} {:>13}",
        "hop", "leader per op", "mean µs", "entries/call", "followers per op", "mean µs", "entries/call"
    );
    let _ = writeln!(out, "{}", "-".repeat(99));
    let cells = |totals: &HopTotals, hop: &str| {
        let HopCounts { calls, seconds, entries } = totals.get(hop);
        if calls < 0.5 {
            return ("-".to_string(), "-".to_string(), "-".to_string());
        }
        (
            format!("{:.2}", calls / ops.max(1.0)),
            format!("{:.0}", seconds / calls * 1e6),
            format!("{:.1}", entries / calls),
        )
    };
    for hop in HOPS {
        let (l_calls, l_mean, l_entries) = cells(leader, hop);
        let (f_calls, f_mean, f_entries) = cells(followers, hop);
        let _ = writeln!(
            out,
            "{hop:<16} {l_calls:>14} {l_mean:>10} {l_entries:>13} {f_calls:>17} {f_mean:>10} {f_entries:>13}"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = "# TYPE muster_write_hop_seconds histogram\n\
        muster_write_hop_seconds_bucket{node_id=\"1\",hop=\"fsync\",le=\"+Inf\"} 4\n\
        muster_write_hop_seconds_sum{node_id=\"1\",hop=\"fsync\"} 0.0004\n\
        muster_write_hop_seconds_count{node_id=\"1\",hop=\"fsync\"} 4\n\
        muster_write_hop_entries_sum{node_id=\"1\",hop=\"fsync\"} 8\n\
        muster_raft_term{node_id=\"1\"} 3\n";

    #[test]
    fn a_row_is_the_difference_of_two_scrapes() {
        let after = HopTotals::parse(BODY);
        assert_eq!(after.get("fsync"), HopCounts { calls: 4.0, seconds: 0.0004, entries: 8.0 });
        let row = after.since(&HopTotals::default());
        let table = table(2.0, &row, &row.plus(&row));
        let fsync = table.lines().find(|line| line.starts_with("fsync")).unwrap();
        // 2 calls per op, 100 µs each, 2 entries per call; the followers twice as many calls.
        let cells: Vec<&str> = fsync.split_whitespace().collect();
        assert_eq!(cells, ["fsync", "2.00", "100", "2.0", "4.00", "100", "2.0"]);
        assert!(table.lines().any(|line| line.starts_with("propose") && line.contains(" - ")));
    }
}
