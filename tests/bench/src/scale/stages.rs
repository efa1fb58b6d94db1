//! What is measured at each fleet size, once every worker beats: the steady cost of a beat on
//! the gateways and the leader, memory per worker on each, the size of the Raft state, and how
//! long the reads and restarts that touch every worker take.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use muster_client::WorkerWatchItem;
use muster_e2e::v1;

use super::grow::Fleets;
use super::tier::{PerAck, Tier, Usage, dir_bytes};

/// The figures of one size, from the moment every worker beats.
#[derive(Clone, Debug, Default)]
pub struct Steady {
    pub ttl_ms: u32,
    /// Gateway CPU per ack (every gateway's CPU over every ack), with acks per second.
    pub gateway: PerAck,
    /// Cores the leader used while the fleet beat.
    pub leader_cores: f64,
    pub gateway_rss: u64,
    pub leader_rss: u64,
}

/// Acks and CPU over `windows` windows of `window` of steady beating.
pub async fn steady(tier: &Tier, fleets: &Fleets, window: Duration, windows: usize) -> anyhow::Result<Steady> {
    let leader = tier.leader().await;
    let leader_pid = [tier.cluster.pid(leader)];
    let gateways = Tier::gateway_pids();
    let leader_before = Usage::of(&leader_pid);
    let started = Instant::now();
    let gateway = PerAck::measure(&gateways, || fleets.acks(), window, windows).await;
    tier.check_alive()?;
    let elapsed = started.elapsed().as_secs_f64();
    let (gateway_after, leader_after) = (Usage::of(&gateways), Usage::of(&leader_pid));
    Ok(Steady {
        ttl_ms: fleets.median_ttl_ms(),
        gateway,
        leader_cores: (leader_after.cpu - leader_before.cpu) / elapsed,
        gateway_rss: gateway_after.rss,
        leader_rss: leader_after.rss,
    })
}

/// How big the leader's state is and how long it takes to copy.
#[derive(Clone, Debug, Default)]
pub struct StateSize {
    /// Everything in the leader's data dir (the Raft log, the state machine, snapshots).
    pub data_dir_bytes: u64,
    pub snapshot_bytes: u64,
    /// `musterctl snapshot save` as the client library does it: the leader builds and streams.
    pub snapshot_took: Duration,
}

pub async fn state_size(tier: &Tier) -> anyhow::Result<StateSize> {
    let leader = tier.leader().await;
    let data_dir_bytes = dir_bytes(&tier.cluster.data_dir(leader));
    let started = Instant::now();
    let (_, snapshot) = tier.cluster.client().save_snapshot().await.context("saving a snapshot")?;
    Ok(StateSize { data_dir_bytes, snapshot_bytes: snapshot.len() as u64, snapshot_took: started.elapsed() })
}

/// Reads that cover every worker.
#[derive(Clone, Debug, Default)]
pub struct Reads {
    /// `ListWorkers`, every page, with leases.
    pub list_all: Duration,
    /// A new `WatchWorkers` from its open to the end of its first listing.
    pub watch_sync: Duration,
}

pub async fn reads(tier: &Tier, workers: usize) -> anyhow::Result<Reads> {
    let client = tier.cluster.client();
    let started = Instant::now();
    let listed = client.list_workers_with_leases(v1::ListWorkersRequest::default()).await?;
    let list_all = started.elapsed();
    anyhow::ensure!(listed.workers.len() >= workers, "listed {} of {workers} workers", listed.workers.len());

    let started = Instant::now();
    let mut watch = Arc::new(tier.cluster.client()).watch_workers(v1::WatchWorkersRequest::default());
    loop {
        match watch.next().await? {
            WorkerWatchItem::Listed { workers: listed, .. } => {
                anyhow::ensure!(listed.len() >= workers, "the watch listed {} of {workers}", listed.len());
                break;
            }
            WorkerWatchItem::Events { .. } | WorkerWatchItem::Progress { .. } => {}
        }
    }
    Ok(Reads { list_all, watch_sync: started.elapsed() })
}

/// Kills a follower and starts it again on its data: the time from its start until it
/// answers ready (caught up with the leader).
pub async fn restart_follower(tier: &mut Tier) -> anyhow::Result<Duration> {
    let leader = tier.leader().await;
    let follower = tier.cluster.ids().into_iter().find(|id| *id != leader).context("a follower")?;
    tier.cluster.kill(follower);
    let started = Instant::now();
    tier.cluster.restart(follower);
    tier.cluster.wait_ready(follower, Duration::from_secs(300)).await;
    Ok(started.elapsed())
}
