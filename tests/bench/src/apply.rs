//! `muster-bench apply`: what the state machine costs per entry, alone. A put's apply is
//! the largest share of its CPU at 64 clients (docs/benchmarks.md), and in a cluster its
//! time is mixed with everything else on the machine; this drives one node's real
//! `StateMachineStore` (its redb file, history and all) with batches of new-key puts, as
//! openraft hands it committed entries, and prints the cost per entry and per batch. The puts
//! come from 64 clients, each with its session (client id and sequence), as Muster's do.
//!
//! The history is kept at `--history-revisions` (less than a node's default, so the trim is
//! in its steady state from the first measured window) and filled before measuring.

use std::time::Instant;

use clap::Parser;
use futures::StreamExt;
use muster_control_plane::store::{Retention, StateMachineStore, open_database};
use muster_control_plane::types::{Entry, EntryPayload, LeaderId, LogId};
use muster_proto::v1;
use openraft::storage::RaftStateMachine;

use crate::report;
use crate::spread::Spread;

#[derive(Parser, Debug, Clone)]
pub struct ApplyArgs {
    /// Entries per apply call (openraft's batch of committed entries), one row each.
    #[arg(long, value_delimiter = ',', default_value = "1,18,64")]
    batch_sizes: Vec<usize>,
    /// Entries applied per measured window (three windows per row).
    #[arg(long, default_value_t = 20_000)]
    entries: u64,
    /// Size of every value written.
    #[arg(long, default_value_t = 128)]
    value_bytes: usize,
    /// History records kept (`watch.history_max_revisions`); filled before measuring.
    #[arg(long, default_value_t = 10_000)]
    history_revisions: u64,
}

/// Windows measured per row.
const WINDOWS: usize = 3;
/// Clients the puts come from, each with its session (as `kv` names keys: `bench/row/<client>/<seq>`).
const CLIENTS: u64 = 64;

/// One row's figures: microseconds per entry of each window.
struct Row {
    batch: usize,
    micros_per_entry: Vec<f64>,
}

/// Applies `count` new-key puts in batches of `batch`, from log index `*next`.
async fn apply_puts(
    store: &mut StateMachineStore,
    next: &mut u64,
    count: u64,
    batch: usize,
    value: &[u8],
) -> anyhow::Result<()> {
    let mut left = count;
    while left > 0 {
        let take = left.min(batch as u64);
        let entries: Vec<_> = (0..take)
            .map(|_| {
                let index = *next;
                *next += 1;
                let put =
                    v1::KvPut { key: format!("bench/row/{:03}/{index:09}", index % CLIENTS), value: value.to_vec() };
                // Each client's session, as Muster's clients send one with every write.
                let command = v1::Command {
                    client_id: index % CLIENTS + 1,
                    sequence: index,
                    op: Some(v1::command::Op::Put(put)),
                    format_version: muster_proto::COMMAND_FORMAT_VERSION,
                    ..Default::default()
                };
                let log_id = LogId::new(LeaderId { term: 1, node_id: 1 }, index);
                Ok((Entry { log_id, payload: EntryPayload::Normal(command) }, None))
            })
            .collect();
        store.apply(futures::stream::iter(entries).boxed()).await?;
        left -= take;
    }
    Ok(())
}

async fn measure_row(args: &ApplyArgs, batch: usize) -> anyhow::Result<Row> {
    let dir = tempfile::Builder::new().prefix("muster-bench-apply-").tempdir()?;
    let db = open_database(&dir.path().join("fsm.redb"))?;
    let retention = Retention { max_revisions: args.history_revisions, ..Retention::default() };
    let mut store = StateMachineStore::new(db, dir.path().join("snapshots"), retention)?;
    let value: Vec<u8> = (0..args.value_bytes).map(|i| b'a' + (i % 26) as u8).collect();
    let mut next = 1;
    // Fill the history (and warm the caches) before the first window.
    apply_puts(&mut store, &mut next, args.history_revisions + args.history_revisions / 8, batch, &value).await?;
    let mut micros_per_entry = Vec::with_capacity(WINDOWS);
    for _ in 0..WINDOWS {
        let started = Instant::now();
        apply_puts(&mut store, &mut next, args.entries, batch, &value).await?;
        micros_per_entry.push(started.elapsed().as_secs_f64() * 1e6 / args.entries as f64);
    }
    Ok(Row { batch, micros_per_entry })
}

/// The table: per batch size, µs per entry and per apply call (medians of the windows with
/// their range) and entries per second.
fn table(rows: &[Row]) -> String {
    let header = ["entries per apply", "µs per entry", "µs per apply", "entries/s"];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let per_entry = Spread::of(row.micros_per_entry.iter().copied());
            let per_apply = Spread::of(row.micros_per_entry.iter().map(|micros| micros * row.batch as f64));
            let rate = per_entry.map_or("-".into(), |spread| report::format_ops(1e6 / spread.median));
            vec![
                row.batch.to_string(),
                per_entry.map_or("-".into(), |spread| spread.format(1, "")),
                per_apply.map_or("-".into(), |spread| spread.format(0, "")),
                rate,
            ]
        })
        .collect();
    report::render(&header, &cells)
}

pub async fn run(args: ApplyArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.entries > 0, "--entries must be positive");
    anyhow::ensure!(args.history_revisions > 0, "--history-revisions must be positive");
    anyhow::ensure!(
        !args.batch_sizes.is_empty() && args.batch_sizes.iter().all(|&size| size > 0),
        "--batch-sizes must be positive"
    );
    println!(
        "apply: new-key puts of {} bytes from {CLIENTS} client sessions into one node's state machine (fsm.redb in a temporary directory), \
         history kept at {} revisions; {WINDOWS} windows of {} entries per row, medians (lowest-highest)",
        args.value_bytes, args.history_revisions, args.entries
    );
    let mut rows = Vec::new();
    for &batch in &args.batch_sizes {
        let row = measure_row(&args, batch).await?;
        eprintln!("  {batch:>3} entries per apply: {:.1} µs per entry", row.micros_per_entry[WINDOWS - 1]);
        rows.push(row);
    }
    println!();
    print!("{}", table(&rows));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_gives_each_batch_size_its_median_and_range() {
        let rows = [
            Row { batch: 1, micros_per_entry: vec![30.0, 28.0, 40.0] },
            Row { batch: 18, micros_per_entry: vec![10.0, 10.0, 10.0] },
        ];
        let table = table(&rows);
        let line =
            |batch: &str| table.lines().find(|line| line.split_whitespace().next() == Some(batch)).unwrap().to_string();
        assert!(line("1").contains("30.0 (28.0-40.0)"), "{table}");
        assert!(line("18").contains("10.0 ") && line("18").contains("180"), "{table}");
    }
}
