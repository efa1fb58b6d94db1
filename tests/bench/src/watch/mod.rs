//! `muster-bench watch`: many watchers following a write load, Muster against etcd, in one
//! command:
//!
//! ```text
//! cargo build --release --workspace --bins
//! cargo run --release -p muster-bench -- watch [--watchers 1000] [--rates 100,400] [--worker-rate 50]
//! ```
//!
//! Each system runs a 3-node cluster with client mTLS. `--watchers` watch streams on one key
//! prefix are spread evenly over every node (`--connections` connections in all, several
//! streams on each, as etcd's and Muster's clients multiplex them), then puts under the prefix
//! run at a fixed rate for a warm-up and a measured window (one row per `--rates` entry). A
//! further Muster row has workers register through the registrar at `--worker-rate` while
//! the same number of `WatchWorkers` streams follow the fleet (etcd has no counterpart).
//! The systems run in `--rounds` alternating rounds (Muster, etcd, Muster, etcd, ...), each on
//! fresh clusters: on a shared 2-core machine one round can catch someone else's burst, so the
//! tables give the medians of the rounds with their ranges, and set each Muster round against
//! the etcd round that ran right after it.
//!
//! Per row: events delivered per second (all watchers together, counted on arrival inside the
//! window), the latency from a write being sent and from its acknowledgement to each watcher
//! receiving it (p50 / p99, see [`load`]), the servers' CPU per delivered event, and events
//! that never arrived. Modules: [`load`] (payload, writer, tallies), [`muster_side`],
//! [`etcd_side`], [`result`] (one row's figures in one round), [`table`] (the printed results
//! over the rounds).

mod etcd_side;
mod load;
mod muster_side;
mod result;
mod table;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use self::load::{AckBook, Clock, Shared, Tally, Window, Writer, WriterTally, write_at_rate};
use self::result::RowResult;
use self::table::RowRounds;
use crate::System;
use crate::machine;
use crate::procs::total_cpu_seconds;

/// Every write of the benchmark goes under this prefix; every KV watcher watches it.
pub const KEY_PREFIX: &str = "bench/watch/";
/// Longest wait for every watch to be set up.
const SETUP_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait after the window for events still on their way.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Parser, Debug, Clone)]
pub struct WatchArgs {
    /// Watch streams per system, spread evenly over the three nodes.
    #[arg(long, default_value_t = 1000)]
    pub watchers: usize,
    /// Connections the watch streams share (spread over the nodes).
    #[arg(long, default_value_t = 30)]
    pub connections: usize,
    /// Puts per second under the watched prefix; one row per rate.
    #[arg(long, value_delimiter = ',', default_value = "100,400")]
    pub rates: Vec<f64>,
    /// Registrations per second of the Muster-only worker row (0: no worker row).
    #[arg(long, default_value_t = 50.0)]
    pub worker_rate: f64,
    /// Measured time per row.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Writes before the measured window (not measured).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Size of every value written.
    #[arg(long, default_value_t = 128)]
    pub value_bytes: usize,
    /// Benchmark only one system.
    #[arg(long)]
    pub only: Option<System>,
    /// The etcd server binary.
    #[arg(long, default_value = "etcd")]
    pub etcd_bin: PathBuf,
    /// Rounds of each system, alternating (Muster, etcd, Muster, etcd, ...), each on fresh
    /// clusters: the tables give the median of the rounds and their range, and the ratio of
    /// each round's Muster to the etcd that ran right after it.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,
}

impl WatchArgs {
    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.watchers > 0 && self.connections > 0, "--watchers and --connections must be positive");
        anyhow::ensure!(
            !self.rates.is_empty() && self.rates.iter().all(|rate| rate.is_finite() && *rate > 0.0),
            "--rates needs rates above zero"
        );
        anyhow::ensure!(self.worker_rate.is_finite() && self.worker_rate >= 0.0, "--worker-rate must be 0 or more");
        anyhow::ensure!(!self.duration.is_zero(), "--duration must be positive");
        Ok(())
    }
}

/// What a row writes and watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowKind {
    /// KV puts under [`KEY_PREFIX`]; prefix watches.
    Kv,
    /// Workers registering; `WatchWorkers` (Muster only).
    Workers,
}

#[derive(Clone, Debug)]
pub struct RowSpec {
    pub name: String,
    pub kind: RowKind,
    pub rate: f64,
}

fn row_specs(args: &WatchArgs) -> Vec<RowSpec> {
    let mut rows: Vec<RowSpec> =
        args.rates.iter().map(|&rate| RowSpec { name: format!("kv puts {rate}/s"), kind: RowKind::Kv, rate }).collect();
    if args.worker_rate > 0.0 && args.only != Some(System::Etcd) {
        let rate = args.worker_rate;
        rows.push(RowSpec { name: format!("workers registering {rate}/s"), kind: RowKind::Workers, rate });
    }
    rows
}

/// What a system's watchers are given: how many, over how many connections, and the row's
/// shared counters, clock, ack book and stop signal.
pub struct Rig {
    pub watchers: usize,
    pub connections: usize,
    pub shared: Arc<Shared>,
    pub stop: watch::Receiver<bool>,
    clock: Clock,
    book: Arc<AckBook>,
}

impl Rig {
    /// A fresh tally for one watcher.
    pub fn tally(&self) -> Tally {
        Tally::new(self.clock, self.book.clone(), self.shared.clone())
    }
}

/// A system under test, running.
pub trait Side {
    type Writer: Writer;
    fn name(&self) -> &'static str;
    fn check_alive(&mut self) -> anyhow::Result<()>;
    /// The server processes whose CPU is measured.
    fn server_pids(&self) -> Vec<u32>;
    /// Starts `rig.watchers` watcher tasks; each returns its tally once `rig.stop` fires.
    fn open_watchers(&mut self, rig: &Rig, kind: RowKind) -> anyhow::Result<Vec<JoinHandle<Tally>>>;
    /// The clients the writer spreads its writes over, for at most `writes` writes.
    fn writers(&mut self, kind: RowKind, writes: usize) -> impl Future<Output = anyhow::Result<Vec<Self::Writer>>>;
}

/// Waits until every watcher is set up, failing on the first watcher error or a dead server.
async fn wait_watchers_ready(side: &mut impl Side, shared: &Shared, watchers: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        side.check_alive()?;
        if shared.failed.load(Ordering::Relaxed) > 0 {
            let first = shared.first_error.lock().unwrap_or_else(|p| p.into_inner()).clone();
            anyhow::bail!("{}: a watch failed to start: {}", side.name(), first.unwrap_or_default());
        }
        if shared.ready.load(Ordering::Relaxed) as usize >= watchers {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(
            started.elapsed() < SETUP_TIMEOUT,
            "{}: {} of {watchers} watches set up after {SETUP_TIMEOUT:?}",
            side.name(),
            shared.ready.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs one row on one system: watchers up, writes for warm-up and window, drain, tally.
async fn run_row<S: Side>(side: &mut S, spec: &RowSpec, args: &WatchArgs) -> anyhow::Result<RowResult> {
    let clock = Clock::start();
    let writes = ((args.warmup + args.duration).as_secs_f64() * spec.rate * 1.2) as usize + 64;
    let book = Arc::new(AckBook::new(writes));
    let shared = Arc::new(Shared::default());
    let (stop_all, stop) = watch::channel(false);
    let rig = Rig { watchers: args.watchers, connections: args.connections, shared: shared.clone(), stop, clock, book };
    let watchers = side.open_watchers(&rig, spec.kind)?;
    let setup = wait_watchers_ready(side, &shared, args.watchers).await?;

    let writers = side.writers(spec.kind, writes).await?;
    let from = Instant::now() + args.warmup;
    let end = from + args.duration;
    let window = Window { from: clock.nanos(from), to: clock.nanos(end) };
    shared.set_window(window);
    let writer_tally = Arc::new(WriterTally::default());
    let writer =
        tokio::spawn(write_at_rate(writers, spec.rate, clock, window, end, rig.book.clone(), writer_tally.clone()));
    let pids = side.server_pids();
    tokio::time::sleep_until(from.into()).await;
    let cpu_before = total_cpu_seconds(&pids);
    tokio::time::sleep_until(end.into()).await;
    let server_cpu_secs = total_cpu_seconds(&pids) - cpu_before;
    writer.await.context("the writer panicked")?;
    side.check_alive()?;

    let expected = writer_tally.acked_in_window.load(Ordering::Relaxed) * args.watchers as u64;
    let drain_deadline = Instant::now() + DRAIN_TIMEOUT;
    while shared.measured.load(Ordering::Relaxed) < expected && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_all.send(true);
    let mut total = rig.tally();
    for watcher in watchers {
        total.merge(&watcher.await.context("a watcher panicked")?);
    }
    let result = RowResult::new(window.length(), &total, &writer_tally, &shared, expected, server_cpu_secs, setup);
    eprintln!("  {}", result.progress_line(side.name()));
    Ok(result)
}

async fn run_rows<S: Side>(side: &mut S, specs: &[RowSpec], args: &WatchArgs) -> anyhow::Result<Vec<RowResult>> {
    let mut results = Vec::with_capacity(specs.len());
    for spec in specs {
        results.push(run_row(side, spec, args).await.with_context(|| format!("{}: {}", side.name(), spec.name))?);
    }
    Ok(results)
}

pub async fn run(args: WatchArgs) -> anyhow::Result<()> {
    args.validate()?;
    let run_muster = args.only != Some(System::Etcd);
    let run_etcd = args.only != Some(System::Muster);
    if run_muster {
        crate::cluster::require_harness_binaries(&muster_side::BINARIES)?;
    }
    let etcd_version = if run_etcd { Some(crate::etcd::version(&args.etcd_bin)?) } else { None };
    let dir = tempfile::Builder::new().prefix("muster-bench-watch-").tempdir()?;
    machine::print_header("watch", dir.path());
    if let Some(version) = &etcd_version {
        println!("etcd: {version} (3 members, client TLS with client certificates, default flags)");
    }
    println!(
        "workload: {} watchers over {} connections spread over 3 nodes, each its own stream on one prefix; \
         puts of {}-byte values to the leader at a fixed rate; {} measured after {} warm-up per row",
        args.watchers,
        args.connections,
        args.value_bytes,
        humantime::format_duration(args.duration),
        humantime::format_duration(args.warmup),
    );
    println!();

    let specs = row_specs(&args);
    let mut rows: Vec<RowRounds> =
        specs.iter().map(|spec| RowRounds { spec: spec.clone(), muster: Vec::new(), etcd: Vec::new() }).collect();
    // etcd runs the KV rows only, in order.
    let kv_specs: Vec<RowSpec> = specs.iter().filter(|spec| spec.kind == RowKind::Kv).cloned().collect();
    for round in 1..=args.rounds {
        eprintln!("round {round} of {}", args.rounds);
        if run_muster {
            // The cluster stops when `side` is dropped, before etcd's round starts.
            let mut side = muster_side::MusterSide::start(&args).await?;
            for (row, result) in rows.iter_mut().zip(run_rows(&mut side, &specs, &args).await?) {
                row.muster.push(result);
            }
        }
        if run_etcd {
            let mut side = etcd_side::EtcdSide::start(&args, &dir.path().join(format!("round-{round}"))).await?;
            let results = run_rows(&mut side, &kv_specs, &args).await;
            side.stop();
            let kv_rows = rows.iter_mut().filter(|row| row.spec.kind == RowKind::Kv);
            for (row, result) in kv_rows.zip(results?) {
                row.etcd.push(result);
            }
        }
    }
    println!();
    println!(
        "medians of {} rounds (lowest-highest); Muster / etcd: each round's Muster over the etcd round right after it",
        args.rounds
    );
    print!("{}", table::render(&rows, machine::cores()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_command() {
        let args = WatchArgs::try_parse_from(["watch"]).unwrap();
        assert_eq!((args.watchers, args.connections), (1000, 30));
        assert_eq!(args.rates, [100.0, 400.0]);
        assert_eq!(args.rounds, 3);
        assert!(WatchArgs::try_parse_from(["watch", "--rounds", "0"]).is_err(), "a run of no rounds");
        assert_eq!(WatchArgs::try_parse_from(["watch", "--rounds", "1"]).unwrap().rounds, 1);
        let names: Vec<String> = row_specs(&args).into_iter().map(|row| row.name).collect();
        assert_eq!(names, ["kv puts 100/s", "kv puts 400/s", "workers registering 50/s"]);
        let etcd_only = WatchArgs::try_parse_from(["watch", "--only", "etcd"]).unwrap();
        assert_eq!(row_specs(&etcd_only).len(), 2, "no worker row without Muster");
    }

    #[test]
    fn bad_arguments_are_refused_by_name() {
        let zero = WatchArgs::try_parse_from(["watch", "--rates", "0"]).unwrap();
        assert!(zero.validate().unwrap_err().to_string().contains("--rates"));
        let none = WatchArgs::try_parse_from(["watch", "--watchers", "0"]).unwrap();
        assert!(none.validate().unwrap_err().to_string().contains("--watchers"));
    }
}
