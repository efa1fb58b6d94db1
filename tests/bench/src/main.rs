//! `muster-bench`: compares a local 3-node Muster cluster with a local 3-node etcd cluster, in
//! one command per benchmark:
//!
//! ```text
//! cargo build --release --workspace --bins
//! cargo run --release -p muster-bench -- kv [--duration 10s] [--clients 1,64] [--value-bytes 128]
//! cargo run --release -p muster-bench -- fleet [--workers 10000] [--interval 450ms]
//! cargo run --release -p muster-bench -- failover [--kills 20]
//! cargo run --release -p muster-bench -- watch [--watchers 1000] [--rates 100,400]
//! cargo run --release -p muster-bench -- scale [--sizes 1000,10000,30000,100000] [--gateways 3]
//! cargo run --release -p muster-bench -- apply [--batch-sizes 1,18,64]
//! ```
//!
//! `kv`: the same KV workload on each system. Each system runs alone: Muster's cluster is
//! started, measured and stopped, then etcd's. Both are durable (fsync before acknowledging)
//! and plaintext, every client has its own connection and talks to the leader, and the same
//! keys and values are written. `fleet`: simulated workers heartbeating through the worker
//! tier against the same number of etcd leases kept alive (see [`fleet`]). `failover`: leader
//! `kill -9` to the first acknowledged write (see [`failover`]). `watch`: watchers on every
//! node following a fixed write rate (see [`watch`]). `scale`: one worker tier grown to 100,000
//! workers, each stage's cost per size, against the transport's floor (see [`scale`]).
//! `apply`: one node's state machine alone, the cost of applying puts (see [`apply`]).
//!
//! Modules: [`cluster`] (Muster processes), [`etcd`] and [`etcd_rpc`] (etcd processes and
//! its gRPC API), [`workload`] (client loops and histograms), [`report`] (tables),
//! [`machine`] (host facts), [`procs`] (child-process guard, ports, CPU time, memory),
//! [`fleet`] (the fleet benchmark).

mod apply;
mod cluster;
mod etcd;
mod etcd_rpc;
mod failover;
mod fleet;
mod machine;
mod procs;
mod report;
mod scale;
mod spread;
mod stalls;
mod watch;
mod workload;
mod write_profile;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use crate::cluster::{MusterCluster, MusterKv, NodeOptions};
use crate::etcd::EtcdCluster;
use crate::etcd_rpc::EtcdKv;
use crate::procs::{Processes, total_cpu_seconds};
use crate::report::{Measurement, Row};
use crate::stalls::{StallMonitor, Stalls};
use crate::workload::{KvClient, Op, Plan, Window};
use crate::write_profile::HopTotals;

#[derive(Parser, Debug)]
#[command(name = "muster-bench", about = "Benchmarks Muster against etcd on a local 3-node cluster each")]
struct Cli {
    #[command(subcommand)]
    command: Bench,
}

#[derive(Subcommand, Debug)]
enum Bench {
    /// KV puts at each client count and linearizable gets at the largest, Muster vs etcd.
    Kv(KvArgs),
    /// One node's state machine alone: the cost of applying puts, per entry and per batch.
    Apply(apply::ApplyArgs),
    /// N simulated workers heartbeating through one gateway vs N etcd leases kept alive.
    Fleet(fleet::FleetArgs),
    /// Leader kill -9 to the first acknowledged write, repeated, Muster vs etcd.
    Failover(failover::FailoverArgs),
    /// Watchers spread over the nodes following puts (and, Muster only, registering
    /// workers) at a fixed rate, Muster vs etcd.
    Watch(watch::WatchArgs),
    /// One worker tier grown through fleet sizes (to 100,000): each stage's cost per size,
    /// the gateway against a bare tonic floor, and a leader and gateway kill at the largest.
    Scale(scale::ScaleArgs),
    /// The floor `scale` measures gateways against (started by `scale` itself).
    #[command(hide = true)]
    FloorServer(scale::FloorServerArgs),
    /// A share of `scale`'s simulated workers in a process of its own (started by `scale`).
    #[command(hide = true)]
    FleetPart(scale::FleetPartArgs),
}

#[derive(Parser, Debug, Clone)]
struct KvArgs {
    /// Measured time per row (after the warm-up).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unmeasured time per row before measuring (connections, caches).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Concurrent clients of the put rows; the get row uses the largest.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    clients: Vec<usize>,
    /// Size of every value written.
    #[arg(long, default_value_t = 128)]
    value_bytes: usize,
    /// Keep the data directories and logs (their path is printed).
    #[arg(long)]
    keep: bool,
    /// Directory holding the `control-plane` binary (default: next to this binary).
    #[arg(long)]
    muster_bin_dir: Option<PathBuf>,
    /// The etcd server binary.
    #[arg(long, default_value = "etcd")]
    etcd_bin: PathBuf,
    /// Muster nodes' `telemetry.log_level` (the daemon's default is `info`).
    #[arg(long, default_value = "info")]
    muster_log_level: String,
    /// Benchmark only one system.
    #[arg(long)]
    only: Option<System>,
    /// Rounds of each system, alternating (Muster, etcd, Muster, etcd, ...), each on fresh
    /// clusters: the tables give the median of the rounds and their range, and the ratio of
    /// each round's Muster to the etcd that ran right after it.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Run the Muster nodes with `raft.profile_write_path` and print, after each row, where a
    /// write's time went hop by hop on the leader and on the followers.
    #[arg(long)]
    profile_write_path: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum System {
    Muster,
    Etcd,
}

/// One row to run on each system.
struct RowSpec {
    name: String,
    op: Op,
    clients: usize,
}

fn row_specs(clients: &[usize]) -> Vec<RowSpec> {
    let mut rows: Vec<RowSpec> =
        clients.iter().map(|&c| RowSpec { name: format!("put c={c}"), op: Op::Put, clients: c }).collect();
    let most = clients.iter().copied().max().unwrap_or(1);
    rows.push(RowSpec { name: format!("get(lin) c={most}"), op: Op::GetLinearizable, clients: most });
    rows
}

/// Runs every row against one system; `connect` makes one client (connection, session).
/// `profiled`: the admin addresses (leader first) of nodes running the write-path profile,
/// whose per-hop table is printed after each row.
async fn run_rows<C: KvClient>(
    system: &str,
    procs: &mut Processes,
    connect: impl Fn() -> anyhow::Result<C>,
    rows: &[RowSpec],
    args: &KvArgs,
    profiled: &[String],
) -> anyhow::Result<Vec<Measurement>> {
    let value: Vec<u8> = (0..args.value_bytes).map(|i| b'a' + (i % 26) as u8).collect();
    let pids = procs.pids();
    let mut preloaded = false;
    let mut results = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let clients = (0..row.clients).map(|_| connect()).collect::<anyhow::Result<Vec<C>>>()?;
        if row.op == Op::GetLinearizable && !preloaded {
            workload::preload(&clients, &value).await?;
            preloaded = true;
        }
        let plan = Plan { op: row.op, value: value.clone(), key_prefix: format!("bench/row{i}") };
        let window = Window::after_warmup(args.warmup, args.duration);
        let usage = tokio::spawn(usage_during(pids.clone(), profiled.to_vec(), window));
        let stats = workload::run(clients, &plan, window).await?;
        let WindowUsage { cpu_secs: server_cpu_secs, stalls, hops } = usage.await.context("CPU sampler")??;
        procs.check_alive().with_context(|| format!("{system} died during {}", row.name))?;
        let summary = stats.summary();
        anyhow::ensure!(
            summary.ops > 0,
            "{system} {}: no operation succeeded; first error: {}",
            row.name,
            stats.first_error.as_deref().unwrap_or("none")
        );
        eprintln!(
            "  {system:<6} {:<14} {:>8} ops/s  p50 {:>8}  p99 {:>8}  errors {}{}",
            row.name,
            report::format_ops(summary.ops_per_sec),
            report::format_latency(summary.p50),
            report::format_latency(summary.p99),
            summary.errors,
            stats.first_error.map(|e| format!(" (first: {e})")).unwrap_or_default(),
        );
        if let Some((leader, followers)) = hops.split_first() {
            let followers = followers.iter().fold(HopTotals::default(), |sum, node| sum.plus(node));
            let ops = summary.ops_per_sec * window.length().as_secs_f64();
            println!("write path, {system} {}, per operation:", row.name);
            print!("{}", write_profile::table(ops, leader, &followers));
            println!();
        }
        results.push(Measurement { summary, server_cpu_secs, window: window.length(), stalls });
    }
    Ok(results)
}

/// What the servers did over the measured part of a row's window.
struct WindowUsage {
    /// Server CPU seconds.
    cpu_secs: f64,
    /// How much the machine stalled meanwhile.
    stalls: Stalls,
    /// Each profiled node's hop totals, in the order given (none unless profiled).
    hops: Vec<HopTotals>,
}

/// Samples the servers at both edges of the measured part of `window`: their CPU time, the
/// profiled nodes' hop totals, and the machine's stalls in between.
async fn usage_during(pids: Vec<u32>, admins: Vec<String>, window: Window) -> anyhow::Result<WindowUsage> {
    async fn scrape_all(admins: &[String]) -> anyhow::Result<Vec<HopTotals>> {
        let mut totals = Vec::with_capacity(admins.len());
        for admin in admins {
            totals.push(HopTotals::scrape(admin).await?);
        }
        Ok(totals)
    }
    tokio::time::sleep_until(window.measure_from.into()).await;
    let cpu_before = total_cpu_seconds(&pids);
    let hops_before = scrape_all(&admins).await?;
    let stalls = StallMonitor::start()?;
    tokio::time::sleep_until(window.end.into()).await;
    let stalls = stalls.finish();
    let cpu_secs = total_cpu_seconds(&pids) - cpu_before;
    let hops_after = scrape_all(&admins).await?;
    let hops = hops_after.iter().zip(&hops_before).map(|(now, then)| now.since(then)).collect();
    Ok(WindowUsage { cpu_secs, stalls, hops })
}

async fn bench_muster(root: &std::path::Path, rows: &[RowSpec], args: &KvArgs) -> anyhow::Result<Vec<Measurement>> {
    let binary = cluster::locate_binary(args.muster_bin_dir.as_deref())?;
    eprintln!("starting 3 Muster nodes ({})", binary.display());
    let options = NodeOptions { log_level: &args.muster_log_level, profile_write_path: args.profile_write_path };
    let mut cluster = MusterCluster::start(&binary, root, options)?;
    cluster.wait_ready(Duration::from_secs(60)).await?;
    eprintln!("Muster ready; leader at {}", cluster.endpoints[0]);
    let endpoints = cluster.endpoints.clone();
    let profiled = if args.profile_write_path { cluster.admins.clone() } else { Vec::new() };
    let results = run_rows("muster", &mut cluster.procs, || MusterKv::connect(&endpoints), rows, args, &profiled).await;
    cluster.procs.kill_all();
    results
}

async fn bench_etcd(root: &std::path::Path, rows: &[RowSpec], args: &KvArgs) -> anyhow::Result<Vec<Measurement>> {
    eprintln!("starting 3 etcd members ({})", args.etcd_bin.display());
    let mut cluster = EtcdCluster::start(&args.etcd_bin, root, None)?;
    cluster.wait_ready(Duration::from_secs(60)).await?;
    eprintln!("etcd ready; leader at {}", cluster.endpoints[0]);
    let leader = cluster.endpoints[0].clone();
    let results = run_rows("etcd", &mut cluster.procs, || EtcdKv::new(&leader), rows, args, &[]).await;
    cluster.procs.kill_all();
    results
}

async fn kv(args: KvArgs) -> anyhow::Result<()> {
    anyhow::ensure!(!args.clients.is_empty() && !args.clients.contains(&0), "--clients needs counts above zero");
    anyhow::ensure!(!args.duration.is_zero(), "--duration must be positive");
    let run_muster = args.only != Some(System::Etcd);
    let run_etcd = args.only != Some(System::Muster);
    // Fail fast, before any cluster starts, if a binary is missing.
    if run_muster {
        cluster::locate_binary(args.muster_bin_dir.as_deref())?;
    }
    let etcd_version = if run_etcd { Some(etcd::version(&args.etcd_bin)?) } else { None };

    let mut dir = tempfile::Builder::new().prefix("muster-bench-").tempdir()?;
    if args.keep {
        dir.disable_cleanup(true);
    }
    machine::print_header("kv", dir.path());
    if let Some(version) = &etcd_version {
        println!("etcd: {version} (default flags: fsync on every commit)");
    }
    println!(
        "workload: {} per row after {} warm-up; {}-byte values; each client a sequential loop to the leader over \
         its own connection; plaintext; Muster log level {}",
        humantime::format_duration(args.duration),
        humantime::format_duration(args.warmup),
        args.value_bytes,
        args.muster_log_level,
    );
    println!();

    let rows = row_specs(&args.clients);
    let mut table: Vec<Row> =
        rows.iter().map(|spec| Row { name: spec.name.clone(), muster: Vec::new(), etcd: Vec::new() }).collect();
    for round in 1..=args.rounds {
        eprintln!("round {round} of {}", args.rounds);
        let round_dir = dir.path().join(format!("round-{round}"));
        if run_muster {
            for (row, measured) in table.iter_mut().zip(bench_muster(&round_dir, &rows, &args).await?) {
                row.muster.push(measured);
            }
        }
        if run_etcd {
            for (row, measured) in table.iter_mut().zip(bench_etcd(&round_dir, &rows, &args).await?) {
                row.etcd.push(measured);
            }
        }
    }

    println!();
    println!(
        "medians of {} rounds (lowest-highest); ratio: each round's Muster over the etcd run after it",
        args.rounds
    );
    print!("{}", report::results_table(&table));
    println!();
    println!("server CPU (user+sys of the 3 server processes during the measured window; 100% = all cores):");
    print!("{}", report::cpu_table(&table, machine::cores()));
    println!();
    println!("the machine's stalls during the measured windows (a sleeping thread's overruns past 1 ms):");
    print!("{}", report::stalls_table(&table));
    for note in report::error_notes(&table) {
        println!("note: {note}");
    }
    if args.keep {
        println!("\nkept data dirs and logs in {}", dir.path().display());
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn interrupted() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let bench = async {
        match cli.command {
            Bench::Kv(args) => kv(args).await,
            Bench::Apply(args) => apply::run(args).await,
            Bench::Fleet(args) => fleet::run(args).await,
            Bench::Failover(args) => failover::run(args).await,
            Bench::Watch(args) => watch::run(args).await,
            Bench::Scale(args) => scale::run(args).await,
            Bench::FloorServer(args) => scale::serve_floor(args).await,
            Bench::FleetPart(args) => scale::run_part(args).await,
        }
    };
    // Dropping the benchmark future (on a signal) kills every server and removes the temp dir.
    let result = tokio::select! {
        result = bench => result,
        _ = interrupted() => Err(anyhow::anyhow!("interrupted; stopped every server")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("muster-bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_puts_then_one_get_at_the_most_clients() {
        let names: Vec<String> = row_specs(&[1, 64]).into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["put c=1", "put c=64", "get(lin) c=64"]);
    }

    #[test]
    fn defaults_match_the_documented_command() {
        let cli = Cli::try_parse_from(["muster-bench", "kv"]).unwrap();
        let Bench::Kv(args) = cli.command else { panic!("not kv") };
        assert_eq!(args.duration, Duration::from_secs(10));
        assert_eq!(args.clients, [1, 64]);
        assert_eq!(args.value_bytes, 128);
        assert!(!args.keep);
        assert_eq!(args.rounds, 3);
        assert!(Cli::try_parse_from(["muster-bench", "kv", "--rounds", "0"]).is_err(), "a run of no rounds");
        let cli = Cli::try_parse_from(["muster-bench", "kv", "--duration", "5s", "--clients", "1,8,64"]).unwrap();
        let Bench::Kv(args) = cli.command else { panic!("not kv") };
        assert_eq!(args.duration, Duration::from_secs(5));
        assert_eq!(args.clients, [1, 8, 64]);
    }
}
