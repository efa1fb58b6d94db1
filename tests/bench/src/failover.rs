//! `muster-bench failover`: how long a 3-node cluster takes writes again after its leader is
//! `kill -9`'d, Muster against etcd in the same run.
//!
//! Both clusters run side by side (each idle while the other is measured) and the kills
//! alternate between them, so a noisy moment of the machine falls on both. One kill: find the
//! leader every member agrees on, SIGKILL it, and from that instant start a write attempt
//! every [`ATTEMPT_EVERY`] through the surviving members (each attempt may block inside the
//! server until a leader exists, so no attempt timeout is charged to either system); the
//! figure is the time from the kill to the first acknowledged write. The killed member is then
//! restarted and the cluster must be whole again (every member agreeing on a leader that takes
//! a write) before the next kill. Both systems run with their default timing.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use muster_client::{ClientOptions, ControlPlaneClient};
use tokio::task::JoinSet;

use crate::cluster::{self, MusterCluster, NodeOptions};
use crate::etcd::{self, EtcdCluster};
use crate::etcd_rpc::EtcdKv;
use crate::machine;
use crate::procs::Processes;
use crate::report;

/// A new write attempt starts this often until one is acknowledged (the measurement's grain).
const ATTEMPT_EVERY: Duration = Duration::from_millis(20);
/// Longest a single attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// A cluster that takes no write this long after a kill fails the benchmark.
const GIVE_UP_AFTER: Duration = Duration::from_secs(30);

#[derive(Parser, Debug, Clone)]
pub struct FailoverArgs {
    /// Leader kills per system.
    #[arg(long, default_value_t = 20)]
    kills: usize,
    /// Pause after a restarted member has rejoined, before the next kill.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    settle: Duration,
    /// Keep the data directories and logs (their path is printed).
    #[arg(long)]
    keep: bool,
    /// Directory holding the `control-plane` binary (default: next to this binary).
    #[arg(long)]
    muster_bin_dir: Option<PathBuf>,
    /// The etcd server binary.
    #[arg(long, default_value = "etcd")]
    etcd_bin: PathBuf,
}

/// A 3-member cluster as the benchmark drives it. Its `endpoints` are reordered (leader first)
/// by `wait_ready`; [`Target`] keeps the process order.
trait Members {
    fn procs(&mut self) -> &mut Processes;
    fn endpoints(&mut self) -> &mut Vec<String>;
    /// Waits until every member agrees on a leader that takes a write; puts it first.
    async fn ready(&mut self, timeout: Duration) -> anyhow::Result<()>;
    /// What a write attempt needs to reach the members at `live`.
    fn writer(live: Vec<String>) -> anyhow::Result<Writer>;
}

impl Members for MusterCluster {
    fn procs(&mut self) -> &mut Processes {
        &mut self.procs
    }

    fn endpoints(&mut self) -> &mut Vec<String> {
        &mut self.endpoints
    }

    async fn ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        self.wait_ready(timeout).await
    }

    fn writer(live: Vec<String>) -> anyhow::Result<Writer> {
        Ok(Writer::Muster(live))
    }
}

impl Members for EtcdCluster {
    fn procs(&mut self) -> &mut Processes {
        &mut self.procs
    }

    fn endpoints(&mut self) -> &mut Vec<String> {
        &mut self.endpoints
    }

    async fn ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        self.wait_ready(timeout).await
    }

    fn writer(live: Vec<String>) -> anyhow::Result<Writer> {
        Ok(Writer::Etcd(live.iter().map(|addr| EtcdKv::new(addr)).collect::<anyhow::Result<_>>()?))
    }
}

/// What a write attempt needs to reach the surviving members.
#[derive(Clone)]
enum Writer {
    /// Their API addresses: every attempt makes its own client (one client sends its writes in
    /// order, so attempts through one client would queue behind each other's retries).
    Muster(Vec<String>),
    Etcd(Vec<EtcdKv>),
}

impl Writer {
    async fn write(&self, attempt: usize, key: String) -> anyhow::Result<()> {
        match self {
            Writer::Muster(live) => {
                let options = ClientOptions { timeout: ATTEMPT_TIMEOUT, ..ClientOptions::new(live.clone()) };
                let client = ControlPlaneClient::new(options)?;
                let result = client.put(&key, b"failover".to_vec()).await?;
                anyhow::ensure!(result.succeeded, "put not applied");
            }
            Writer::Etcd(members) => {
                members[attempt % members.len()].put_raw(key.into_bytes(), b"failover".to_vec()).await?;
            }
        }
        Ok(())
    }
}

/// One system under test, with its members' client addresses in process order.
struct Target<C> {
    name: &'static str,
    cluster: C,
    addrs: Vec<String>,
}

impl<C: Members> Target<C> {
    fn new(name: &'static str, mut cluster: C) -> Self {
        let addrs = cluster.endpoints().clone();
        Self { name, cluster, addrs }
    }

    /// Waits until every member agrees on a leader that takes a write; its process index.
    async fn whole_again(&mut self, timeout: Duration) -> anyhow::Result<usize> {
        *self.cluster.endpoints() = self.addrs.clone();
        self.cluster.ready(timeout).await?;
        let leader = &self.cluster.endpoints()[0];
        self.addrs.iter().position(|addr| addr == leader).context("the leader is not one of the members")
    }

    /// A writer through every member but `dead`.
    fn writer(&self, dead: usize) -> anyhow::Result<Writer> {
        let live = self.addrs.iter().enumerate().filter(|(i, _)| *i != dead).map(|(_, addr)| addr.clone());
        C::writer(live.collect())
    }
}

/// Kills the leader of `target` and times the first acknowledged write after it; restarts
/// the killed member and waits until the cluster is whole again.
async fn one_kill<C: Members>(target: &mut Target<C>, round: usize, settle: Duration) -> anyhow::Result<Duration> {
    let leader = target.whole_again(Duration::from_secs(60)).await?;
    tokio::time::sleep(settle).await;
    let writer = target.writer(leader)?;
    let killed_at = Instant::now();
    target.cluster.procs().kill(leader);
    let mut attempts = JoinSet::new();
    let mut next = tokio::time::Instant::now();
    let mut attempt = 0;
    let took = loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {
                let (writer, key) = (writer.clone(), format!("failover/{}/{round}/{attempt}", target.name));
                let index = attempt;
                attempts.spawn(async move {
                    tokio::time::timeout(ATTEMPT_TIMEOUT, writer.write(index, key)).await.map_err(anyhow::Error::from)?
                });
                attempt += 1;
                next += ATTEMPT_EVERY;
            }
            Some(done) = attempts.join_next() => {
                if let Ok(Ok(())) = done {
                    break killed_at.elapsed();
                }
            }
        }
        anyhow::ensure!(
            killed_at.elapsed() < GIVE_UP_AFTER,
            "{}: no write acknowledged {GIVE_UP_AFTER:?} after killing the leader",
            target.name
        );
    };
    attempts.abort_all();
    target.cluster.procs().restart(leader)?;
    Ok(took)
}

/// Median, 90th and 99th percentile, min and max of `samples` (nearest rank).
fn percentiles(samples: &[Duration]) -> [Duration; 5] {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = |q: f64| sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1];
    [rank(0.5), rank(0.9), rank(0.99), sorted[0], sorted[sorted.len() - 1]]
}

fn seconds(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

pub async fn run(args: FailoverArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.kills > 0, "--kills must be at least 1");
    let binary = cluster::locate_binary(args.muster_bin_dir.as_deref())?;
    let etcd_version = etcd::version(&args.etcd_bin)?;
    let mut dir = tempfile::Builder::new().prefix("muster-bench-").tempdir()?;
    if args.keep {
        dir.disable_cleanup(true);
    }
    machine::print_header("failover", dir.path());
    println!("etcd: {etcd_version} (default flags)");
    println!(
        "workload: {} leader kills (SIGKILL) per system, alternating; time from the kill to the first acknowledged \
         write through the surviving members (an attempt every {ATTEMPT_EVERY:?}); default timing on both",
        args.kills
    );
    println!();

    let mut muster = Target::new("muster", MusterCluster::start(&binary, dir.path(), NodeOptions::logging("info"))?);
    let mut etcd = Target::new("etcd", EtcdCluster::start(&args.etcd_bin, dir.path(), None)?);
    let (mut muster_times, mut etcd_times) = (Vec::new(), Vec::new());
    for round in 0..args.kills {
        let took = one_kill(&mut muster, round, args.settle).await?;
        eprintln!("  kill {:>2}: muster {}", round + 1, seconds(took));
        muster_times.push(took);
        let took = one_kill(&mut etcd, round, args.settle).await?;
        eprintln!("  kill {:>2}: etcd   {}", round + 1, seconds(took));
        etcd_times.push(took);
    }

    let header = ["system", "kills", "median", "p90", "p99", "min", "max"];
    let row = |name: &str, samples: &[Duration]| -> Vec<String> {
        let mut cells = vec![name.to_string(), samples.len().to_string()];
        cells.extend(percentiles(samples).iter().map(|d| seconds(*d)));
        cells
    };
    println!();
    print!("{}", report::render(&header, &[row("muster", &muster_times), row("etcd", &etcd_times)]));
    let [muster_median, .., muster_max] = percentiles(&muster_times);
    let [etcd_median, .., etcd_max] = percentiles(&etcd_times);
    println!(
        "\nmuster/etcd: median {:.2}x, max {:.2}x (below 1 is faster)",
        muster_median.as_secs_f64() / etcd_median.as_secs_f64(),
        muster_max.as_secs_f64() / etcd_max.as_secs_f64()
    );
    if args.keep {
        println!("\nkept data dirs and logs in {}", dir.path().display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<Duration> = (1..=20).map(Duration::from_millis).collect();
        let [median, p90, p99, min, max] = percentiles(&samples);
        assert_eq!(
            (median, p90, p99, min, max),
            (
                Duration::from_millis(10),
                Duration::from_millis(18),
                Duration::from_millis(20),
                Duration::from_millis(1),
                Duration::from_millis(20)
            )
        );
        assert_eq!(percentiles(&[Duration::from_millis(7)]), [Duration::from_millis(7); 5]);
    }
}
