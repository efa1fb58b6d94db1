//! The worker tier the scale benchmark grows a fleet against: a 3-node mTLS cluster, several
//! registrars and several gateways (the release binaries, started by the e2e harness), with
//! the figures read from their processes and admin ports.

use std::time::Duration;

use anyhow::Context;
use muster_e2e::gateway::Gateway;
use muster_e2e::probe::{admin_get, metric_value};
use muster_e2e::registrar::Registrar;
use muster_e2e::{Cluster, HeartbeatPolicy, Options};

use super::ScaleArgs;
use crate::procs::{children_named, rss_bytes, total_cpu_seconds};
use crate::spread::Spread;

/// The executables the harness starts.
pub const BINARIES: [&str; 3] = ["control-plane", "registrar", "heartbeat-gateway"];
/// Slack after a lease's TTL before it expires.
pub const GRACE: Duration = Duration::from_secs(5);
/// The longest TTL the policy issues.
const MAX_TTL: Duration = Duration::from_secs(600);
/// The TTL a new leader issues while it learns the fleet.
const FAILOVER_TTL: Duration = Duration::from_secs(20);
/// Most workers marked Unreachable per second (the daemon's default is 100, which takes 10 s
/// to mark 1,000 workers that died together; the failure run wants them all within 2 s).
pub const MAX_EXPIRIES_PER_SECOND: u32 = 5_000;

pub struct Tier {
    pub cluster: Cluster,
    pub registrars: Vec<Registrar>,
    pub gateways: Vec<Gateway>,
    /// The cluster CA: the registrars' and gateways' certificates chain to it.
    pub ca_pem: String,
}

/// A string the harness keeps for the run (its options take `&'static str`).
fn leak(text: String) -> &'static str {
    Box::leak(text.into_boxed_str())
}

/// Each gateway's share of the fleet's beats per second.
pub fn budget_per_gateway(beats_per_second: u32, gateways: usize) -> u32 {
    beats_per_second.div_ceil(u32::try_from(gateways.max(1)).unwrap_or(u32::MAX))
}

fn options(args: &ScaleArgs, gateways: usize) -> Options {
    let policy = HeartbeatPolicy {
        min_ttl: leak(format!("{}ms", args.min_ttl.as_millis())),
        max_ttl: leak(format!("{}s", MAX_TTL.as_secs())),
        grace: leak(format!("{}s", GRACE.as_secs())),
        max_heartbeats_per_second: budget_per_gateway(args.beats_per_second, gateways),
        failover_ttl: leak(format!("{}s", FAILOVER_TTL.as_secs())),
    };
    Options {
        // The daemon's heartbeat with a wider election window: every process shares two
        // cores, and a connection storm of tens of thousands of handshakes starves them.
        raft_timing: ["100ms", "2s", "4s"],
        snapshot_after_logs: 100_000,
        max_logs_to_keep: 1_000,
        snapshot_chunk_bytes: Some(1 << 20),
        heartbeat: Some(policy),
        leases: leak(format!("max_expiries_per_second = {MAX_EXPIRIES_PER_SECOND}\n")),
        ..Options::tls()
    }
}

impl Tier {
    pub async fn start(args: &ScaleArgs, gateways: usize) -> anyhow::Result<Self> {
        let cluster = Cluster::start(3, options(args, gateways)).await;
        let registrars = (0..args.registrars).map(|_| Registrar::start_unthrottled(&cluster)).collect();
        let gateways: Vec<Gateway> = (1..=gateways)
            .map(|n| Gateway::start_with(&cluster, &format!("gw-{n}"), "batch_interval = \"250ms\"\n"))
            .collect();
        for gateway in &gateways {
            gateway.wait_ready().await;
        }
        let ca_pem = cluster.pki().context("a TLS cluster")?.ca_pem();
        Ok(Self { cluster, registrars, gateways, ca_pem })
    }

    pub async fn leader(&self) -> u64 {
        self.cluster.wait_for_leader(Duration::from_secs(60)).await
    }

    pub fn check_alive(&self) -> anyhow::Result<()> {
        self.cluster.check_processes()?;
        for gateway in &self.gateways {
            anyhow::ensure!(gateway.is_running(), "gateway {} exited: {}", gateway.id, gateway.log_tail(5));
        }
        Ok(())
    }

    /// One series of node `id`'s `/metrics`.
    pub async fn node_metric(&self, id: u64, name: &str) -> anyhow::Result<f64> {
        let body = admin_get(&self.cluster.addrs(id).admin, "/metrics").await?;
        metric_value(&body, name).with_context(|| format!("no {name} in node {id}'s metrics"))
    }

    /// What is left of the leader's failover window (`muster_leases_failover_remaining_seconds`):
    /// inside it, no worker the leader inherited is marked Unreachable.
    pub async fn failover_remaining(&self) -> anyhow::Result<Duration> {
        let leader = self.leader().await;
        let seconds = self.node_metric(leader, "muster_leases_failover_remaining_seconds").await?;
        Ok(Duration::from_secs_f64(seconds.max(0.0)))
    }

    /// Waits out the leader's failover window (an election in a connection storm starts one).
    pub async fn wait_failover_window(&self) -> anyhow::Result<Duration> {
        let started = std::time::Instant::now();
        loop {
            let left = self.failover_remaining().await?;
            if left.is_zero() {
                return Ok(started.elapsed());
            }
            tokio::time::sleep(left.min(Duration::from_secs(1))).await;
        }
    }

    pub async fn raft_index(&self) -> anyhow::Result<u64> {
        let leader = self.leader().await;
        Ok(self.node_metric(leader, "muster_raft_last_log_index").await? as u64)
    }

    pub fn gateway_pids() -> Vec<u32> {
        children_named("heartbeat-gateway")
    }

    pub fn registrar_pids(&self) -> Vec<u32> {
        self.registrars.iter().filter_map(Registrar::pid).collect()
    }
}

/// Summed resident memory and CPU seconds of `pids`, read together.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    pub rss: u64,
    pub cpu: f64,
}

impl Usage {
    pub fn of(pids: &[u32]) -> Self {
        Self { rss: pids.iter().map(|pid| rss_bytes(*pid)).sum(), cpu: total_cpu_seconds(pids) }
    }
}

/// CPU per ack over consecutive windows: the median window and the spread. One window can
/// catch a burst (a batch to the leader, a scheduler hiccup on a shared 2-core machine); the
/// median of several is what a beat costs.
#[derive(Clone, Copy, Debug, Default)]
pub struct PerAck {
    /// Microseconds of CPU per ack, over the windows.
    pub us: Spread,
    pub acks_per_second: f64,
}

impl PerAck {
    /// `windows` consecutive windows of `window`: CPU seconds of `pids` over the acks `acks`
    /// counts in each.
    pub async fn measure(pids: &[u32], acks: impl Fn() -> u64, window: Duration, windows: usize) -> Self {
        let started = std::time::Instant::now();
        let (mut per_window, mut total_acks) = (Vec::new(), 0);
        for _ in 0..windows.max(1) {
            let (cpu_before, acks_before) = (Usage::of(pids).cpu, acks());
            tokio::time::sleep(window).await;
            let (cpu_after, acks_after) = (Usage::of(pids).cpu, acks());
            let counted = acks_after.saturating_sub(acks_before);
            total_acks += counted;
            per_window.push((cpu_after - cpu_before) * 1e6 / counted.max(1) as f64);
        }
        let us = Spread::of(per_window).unwrap_or_default();
        Self { us, acks_per_second: total_acks as f64 / started.elapsed().as_secs_f64() }
    }
}

/// Bytes of every file under `dir`.
pub fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(Result::ok)
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => dir_bytes(&entry.path()),
            Ok(_) => entry.metadata().map_or(0, |meta| meta.len()),
            Err(_) => 0,
        })
        .sum()
}
