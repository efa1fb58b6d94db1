//! `muster-jepsen`: a long Jepsen-style run against a local Muster cluster.
//!
//! ```text
//! cargo build --release --workspace --bins
//! cargo run --release -p muster-jepsen -- --minutes 10 --nodes 5 --nemesis kill,pause
//! ```
//!
//! Prints the operations (ok / fail / indeterminate), the faults injected, the exactly-once
//! probe and the checker's verdict; exits non-zero unless the run passed.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use muster_jepsen::checker::DEFAULT_BUDGET;
use muster_jepsen::nemesis::FaultKind;
use muster_jepsen::run::{RunConfig, Schedule, run};
use muster_jepsen::workload::Workload;

#[derive(Parser, Debug)]
#[command(
    name = "muster-jepsen",
    about = "Checks Muster's KV API for linearizability under kill -9, SIGSTOP and partitions"
)]
struct Cli {
    /// How long the clients work, in minutes.
    #[arg(long, default_value_t = 1.0)]
    minutes: f64,
    /// Nodes in the cluster.
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Faults: kill-leader-fast, kill-leader, kill-random, kill-all, pause-leader,
    /// pause-random, partition-leader, partition-halves, partition-bridge; `kill`, `pause`,
    /// `partition`, `all` or `none`. Partitions put each node in a network namespace of its
    /// own, which needs root and the ip and nft commands.
    #[arg(long, default_value = "all")]
    nemesis: String,
    /// Shortest and longest pause between two faults.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    min_interval: Duration,
    #[arg(long, default_value = "6s", value_parser = humantime::parse_duration)]
    max_interval: Duration,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Keys live at a time, and operations per key before the next generation of keys.
    #[arg(long, default_value_t = 4)]
    keys: u64,
    #[arg(long, default_value_t = 250)]
    ops_per_key: u64,
    /// Share of reads served under the leader lease.
    #[arg(long, default_value_t = 0.25)]
    lease_reads: f64,
    /// Plaintext instead of mTLS.
    #[arg(long)]
    insecure: bool,
    /// Seed of the schedule and the clients' choices (default: random).
    #[arg(long)]
    seed: Option<u64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let kinds = FaultKind::parse_list(&cli.nemesis)?;
    anyhow::ensure!(cli.min_interval <= cli.max_interval, "--min-interval is above --max-interval");
    let config = RunConfig {
        nodes: cli.nodes,
        tls: !cli.insecure,
        duration: Duration::from_secs_f64(cli.minutes * 60.0),
        workload: Workload {
            clients: cli.clients,
            keys: cli.keys,
            ops_per_key: cli.ops_per_key,
            lease_reads: cli.lease_reads,
            ..Workload::default()
        },
        schedule: Schedule::Random { kinds, pause: (cli.min_interval, cli.max_interval) },
        seed: cli.seed.unwrap_or_else(rand::random),
        budget: DEFAULT_BUDGET,
    };
    let finished = run(config).await?;
    print!("{}", finished.report);
    Ok(if finished.report.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
