//! The Muster side of the fleet benchmark: a 3-node worker-tier cluster with mTLS, one
//! registrar and one heartbeat gateway (the release binaries, started by the e2e harness), and
//! N simulated workers (`muster_e2e::fleet`) registered through the registrar, each beating
//! over its own mTLS connection to the gateway.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use muster_e2e::fleet::{BeatPlan, Fleet, register_all};
use muster_e2e::gateway::Gateway;
use muster_e2e::probe::{admin_get, metric_value};
use muster_e2e::registrar::Registrar;
use muster_e2e::{Cluster, HeartbeatPolicy, Options, v1};

use super::FleetArgs;
use super::measure::{self, Counters, PhasePlan, Probe, SystemRun};
use crate::procs::{children_named, rss_bytes};

/// The executables the e2e harness starts, looked up in `muster_e2e::binaries::bin_dir()`.
pub const BINARIES: [&str; 3] = ["control-plane", "registrar", "heartbeat-gateway"];
/// Slack after a lease's TTL before it expires (the TTL itself is `FleetArgs::lease_ttl`).
pub const GRACE: Duration = Duration::from_secs(5);

/// The running worker tier, as the phases see it.
struct MusterSide {
    cluster: Cluster,
    gateway: Gateway,
    fleet: Option<Fleet>,
    leader_admin: String,
    gateway_pid: u32,
    /// The three nodes, the registrar and the gateway.
    server_pids: Vec<u32>,
}

/// One series of a node's `/metrics`.
async fn node_metric(admin: &str, name: &str) -> anyhow::Result<u64> {
    let response = admin_get(admin, "/metrics").await?;
    let value = metric_value(&response, name).with_context(|| format!("no {name} in {admin}/metrics"))?;
    Ok(value as u64)
}

impl MusterSide {
    fn check_alive(&self) -> anyhow::Result<()> {
        self.cluster.check_processes()?;
        anyhow::ensure!(self.gateway.is_running(), "the gateway exited: {}", self.gateway.log_tail(5));
        Ok(())
    }

    async fn raft_index(&self) -> anyhow::Result<u64> {
        node_metric(&self.leader_admin, "muster_raft_last_log_index").await
    }
}

impl Probe for MusterSide {
    async fn sample(&mut self) -> anyhow::Result<Counters> {
        self.check_alive()?;
        let raft_index = self.raft_index().await?;
        let forwarded = node_metric(&self.leader_admin, "muster_leases_beats_total").await?;
        let stats = &self.fleet.as_ref().context("no fleet running")?.stats;
        let errors = stats.stream_errors.load(Ordering::Relaxed) + stats.throttled.load(Ordering::Relaxed);
        let acks = stats.acks.load(Ordering::Relaxed);
        Ok(Counters {
            forwarded: Some(forwarded),
            ..Counters::now(acks, errors, raft_index, self.gateway_pid, &self.server_pids)
        })
    }

    fn take_latencies(&self) -> (f64, f64) {
        self.fleet.as_ref().map_or((0.0, 0.0), |fleet| {
            let (p50, p99, _) = fleet.stats.take_latency_percentiles();
            (p50, p99)
        })
    }

    fn set_interval(&self, interval: Duration) {
        if let Some(fleet) = &self.fleet {
            fleet.set_fixed_interval(Some(interval));
        }
    }

    fn front_pid(&self) -> u32 {
        self.gateway_pid
    }
}

/// The cluster's options: the daemon's Raft defaults, and a heartbeat policy whose TTL is
/// `lease_ttl` for any fleet size (the budget is far above any rate reached here, so no beat
/// is ever throttled and the workers' own interval sets the rate).
fn options(lease_ttl: Duration) -> Options {
    // The harness takes static strings; one short string per run.
    let ttl: &'static str = Box::leak(format!("{}ms", lease_ttl.as_millis()).into_boxed_str());
    let policy = HeartbeatPolicy {
        min_ttl: ttl,
        max_ttl: ttl,
        grace: "5s",
        max_heartbeats_per_second: 10_000_000,
        failover_ttl: "30s",
    };
    Options {
        raft_timing: ["100ms", "500ms", "1s"],
        snapshot_after_logs: 100_000,
        max_logs_to_keep: 1_000,
        snapshot_chunk_bytes: Some(1 << 20),
        heartbeat: Some(policy),
        ..Options::tls()
    }
}

/// Runs the Muster side: start, register, beat, measure, stop.
pub async fn bench(args: &FleetArgs, lease_ttl: Duration) -> anyhow::Result<SystemRun> {
    eprintln!("muster: starting 3 worker-tier nodes, a registrar and a gateway (mTLS)");
    let cluster = Cluster::start(3, options(lease_ttl)).await;
    let registrar = Registrar::start_unthrottled(&cluster);
    let gateway = Gateway::start_with(&cluster, "gw-1", "batch_interval = \"250ms\"\nmin_report_interval = \"0s\"\n");
    gateway.wait_ready().await;
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
    let gateway_pid = *children_named("heartbeat-gateway").first().context("the gateway's pid")?;
    let mut server_pids = children_named("control-plane");
    server_pids.extend(children_named("registrar"));
    server_pids.push(gateway_pid);
    let leader_admin = cluster.addrs(leader).admin.clone();
    let mut side = MusterSide { cluster, gateway, fleet: None, leader_admin, gateway_pid, server_pids };
    eprintln!("muster: ready; leader node {leader}");

    let ca_pem = side.cluster.pki().context("a TLS cluster")?.ca_pem();
    let uses = u32::try_from(args.workers).context("--workers")?;
    let token_request = v1::CreateTokenRequest { ttl_seconds: 3600, uses, ..Default::default() };
    let token = side.cluster.client().create_token(token_request).await?.token;
    let before = side.raft_index().await?;
    let started = Instant::now();
    let identities = register_all(&registrar.addr, &ca_pem, &token, args.workers, args.register_parallel).await?;
    let setup = started.elapsed();
    let setup_raft_entries = side.raft_index().await?.saturating_sub(before);
    eprintln!("muster: registered {} workers in {setup:.2?}", identities.len());

    let front_rss_idle = rss_bytes(gateway_pid);
    let fleet = Fleet::start(&identities, &ca_pem, BeatPlan { fixed_interval: Some(args.interval) })?;
    let stats = fleet.stats.clone();
    side.fleet = Some(fleet);
    let acked = || stats.last_ttl_ms.lock().unwrap_or_else(|p| p.into_inner()).iter().filter(|t| **t > 0).count();
    let (connect, connected) =
        measure::wait_all_acked(args.workers, args.connect_timeout, acked, || side.check_alive()).await?;
    eprintln!("muster: {connected} workers beat once after {connect:.2?}");

    let plan = PhasePlan {
        workers: args.workers,
        interval: args.interval,
        warmup: args.warmup,
        window: args.duration,
        flat_out: !args.no_max,
    };
    let (steady, front_rss_connected, max) = measure::run_phases(&mut side, &plan).await?;
    let is_leader = node_metric(&side.leader_admin, "muster_raft_is_leader").await?;
    let filter = v1::ListWorkersRequest { state: v1::WorkerState::Unreachable as i32, ..Default::default() };
    let unreachable = side.cluster.client().list_workers(filter).await?.len();
    let mut notes = vec![
        format!(
            "muster: {unreachable} workers Unreachable at the end; {} streams failed and {} beats were throttled over \
             the whole run",
            stats.stream_errors.load(Ordering::Relaxed),
            stats.throttled.load(Ordering::Relaxed)
        ),
        format!(
            "muster: gateway serves {} connected workers",
            side.gateway.metric("muster_gateway_connected_workers").await?
        ),
    ];
    if is_leader != 1 {
        notes.push(format!("muster: node {leader} lost the leadership during the run; Raft figures are its log's"));
    }
    side.fleet = None;
    Ok(SystemRun {
        workers: args.workers,
        setup,
        setup_raft_entries,
        connect,
        connected,
        front_rss_idle,
        front_rss_connected,
        steady,
        max,
        notes,
    })
}
