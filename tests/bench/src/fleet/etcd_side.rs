//! The etcd side of the fleet benchmark: a local 3-node etcd serving clients over TLS with
//! client certificates (as Muster's workers use mTLS), one lease per simulated worker granted
//! up front, then one keep-alive stream per worker at the same schedule ([`super::keepalive`]).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::FleetArgs;
use super::keepalive::KeepAliveFleet;
use super::measure::{self, Counters, PhasePlan, Probe, SystemRun};
use crate::etcd::{EtcdCluster, EtcdTls};
use crate::etcd_rpc::{self, EtcdKv};
use crate::procs::rss_bytes;

/// The TTL of every etcd lease. A Muster lease starts at the worker's first beat; an etcd lease
/// at its grant, before its client has connected, so it must outlive the connection storm of
/// the whole fleet. (A keep-alive costs etcd the same whatever the TTL: it resets the expiry.)
pub const LEASE_TTL: Duration = Duration::from_secs(600);

/// The running cluster and its clients, as the phases see them.
struct EtcdSide {
    cluster: EtcdCluster,
    leader: EtcdKv,
    leader_pid: u32,
    fleet: Option<KeepAliveFleet>,
}

impl Probe for EtcdSide {
    async fn sample(&mut self) -> anyhow::Result<Counters> {
        self.cluster.procs.check_alive()?;
        let raft_index = self.leader.status().await.context("Status of the etcd leader")?.raft_index;
        let stats = &self.fleet.as_ref().context("no clients running")?.stats;
        let errors = stats.stream_errors.load(Ordering::Relaxed) + stats.expired.load(Ordering::Relaxed);
        Ok(Counters::now(
            stats.acks.load(Ordering::Relaxed),
            errors,
            raft_index,
            self.leader_pid,
            &self.cluster.procs.pids(),
        ))
    }

    fn take_latencies(&self) -> (f64, f64) {
        self.fleet.as_ref().map_or((0.0, 0.0), |fleet| measure::percentiles(fleet.stats.take_latencies()))
    }

    fn set_interval(&self, interval: Duration) {
        if let Some(fleet) = &self.fleet {
            fleet.set_interval(interval);
        }
    }

    fn front_pid(&self) -> u32 {
        self.leader_pid
    }
}

/// Grants `count` leases of `ttl_secs` through `client`, at most `parallel` at a time.
async fn grant_all(client: &EtcdKv, count: usize, ttl_secs: i64, parallel: usize) -> anyhow::Result<Vec<i64>> {
    let limit = Arc::new(Semaphore::new(parallel.max(1)));
    let mut tasks = JoinSet::new();
    for _ in 0..count {
        let (client, limit) = (client.clone(), limit.clone());
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await?;
            anyhow::Ok(client.lease_grant(ttl_secs).await?)
        });
    }
    let mut leases = Vec::with_capacity(count);
    while let Some(joined) = tasks.join_next().await {
        leases.push(joined.context("a LeaseGrant task panicked")?.context("LeaseGrant")?);
    }
    Ok(leases)
}

/// Runs the etcd side: start, grant, keep alive, measure, stop.
pub async fn bench(args: &FleetArgs, root: &Path) -> anyhow::Result<SystemRun> {
    let pki = muster_e2e::pki::Pki::new();
    let tls = EtcdTls::from_test_pki(&pki);
    eprintln!("etcd: starting 3 members (client TLS with client certificates)");
    let mut cluster = EtcdCluster::start(&args.etcd_bin, root, Some(&tls))?;
    cluster.wait_ready(Duration::from_secs(60)).await?;
    let leader_pid = cluster.leader_pid.context("the etcd leader's pid")?;
    let leader = cluster.leader_client()?;
    let mut side = EtcdSide { leader, leader_pid, fleet: None, cluster };
    eprintln!("etcd: ready; leader at {}", side.cluster.endpoints[0]);

    let ttl_secs = i64::try_from(LEASE_TTL.as_secs()).unwrap_or(i64::MAX);
    let before = side.leader.status().await?.raft_index;
    let started = Instant::now();
    let leases = grant_all(&side.leader, args.workers, ttl_secs, args.register_parallel).await?;
    let setup = started.elapsed();
    let setup_raft_entries = side.leader.status().await?.raft_index.saturating_sub(before);
    eprintln!("etcd: granted {} leases of {ttl_secs}s in {setup:.2?}", leases.len());

    let front_rss_idle = rss_bytes(leader_pid);
    let endpoint = etcd_rpc::endpoint(&side.cluster.endpoints[0], Some(&tls.client))?;
    let fleet = KeepAliveFleet::start(&endpoint, &leases, args.interval)?;
    let stats = fleet.stats.clone();
    side.fleet = Some(fleet);
    let (connect, connected) = measure::wait_all_acked(
        args.workers,
        args.connect_timeout,
        || stats.acked_once.load(Ordering::Relaxed) as usize,
        || side.cluster.procs.check_alive(),
    )
    .await?;
    eprintln!("etcd: {connected} clients kept their lease alive once after {connect:.2?}");

    let plan = PhasePlan {
        workers: args.workers,
        interval: args.interval,
        warmup: args.warmup,
        window: args.duration,
        flat_out: !args.no_max,
    };
    let (steady, front_rss_connected, max) = measure::run_phases(&mut side, &plan).await?;
    let notes = vec![format!(
        "etcd: {} keep-alive streams failed and {} responses reported a lost lease over the whole run",
        stats.stream_errors.load(Ordering::Relaxed),
        stats.expired.load(Ordering::Relaxed)
    )];
    side.fleet = None;
    side.cluster.procs.kill_all();
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
