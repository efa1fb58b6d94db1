//! Failure at the largest size: `kill -9` of the Raft leader and of one gateway while the
//! whole fleet beats (no worker may be marked Unreachable; the dead gateway's workers move to
//! the others), then a batch of workers killed together, whose expiry must be seen within
//! TTL + grace + 2 s of the TTL they were issued.

use std::time::{Duration, Instant};

use anyhow::Context;
use muster_e2e::fleet::unreachable_count;

use super::grow::Fleets;
use super::tier::{GRACE, Tier};

#[derive(Clone, Debug, Default)]
pub struct Failure {
    pub workers: usize,
    /// From the leader's SIGKILL until a new one leads.
    pub election: Duration,
    /// Workers on the gateway killed.
    pub moved: usize,
    /// From the gateway's SIGKILL until none of its workers beats to it.
    pub reconnect_all: Duration,
    /// Live workers marked Unreachable at any observation through the failover window.
    pub unreachable_max: usize,
    pub killed: usize,
    pub killed_ttl: Duration,
    /// From the kill until every one of them is Unreachable.
    pub detected: Duration,
}

impl Failure {
    /// TTL + grace + 2 s: the bound on `detected`.
    pub fn detection_bound(&self) -> Duration {
        self.killed_ttl + GRACE + Duration::from_secs(2)
    }
}

/// Workers Unreachable now, besides the `dead` ones killed on purpose.
async fn live_unreachable(tier: &Tier, dead: usize) -> anyhow::Result<usize> {
    Ok(unreachable_count(&tier.cluster).await?.saturating_sub(dead))
}

/// Runs the failure stage on `fleets` (every worker beating) and `doomed` (a separate fleet,
/// also beating). First the doomed workers are killed together in the steady state and their
/// expiry timed; then the leader and a gateway are killed, and the Unreachable count watched
/// through the new leader's whole failover window and a TTL and grace past it.
pub async fn run(tier: &mut Tier, fleets: &Fleets, mut doomed: Fleets, workers: usize) -> anyhow::Result<Failure> {
    // An election during the connection storm holds every lease to its failover window.
    let waited = tier.wait_failover_window().await?;
    if waited > Duration::from_secs(1) {
        eprintln!("  waited {waited:.0?} for the end of the leader's failover window");
    }
    // Workers throttled in the connection storm were told to come back later than the TTL
    // (their ack's TTL stretched by the wait for budget); kill them once they beat at it.
    let settled_by = Instant::now() + Duration::from_secs(300);
    while doomed.max_ttl_ms() > doomed.median_ttl_ms() + doomed.median_ttl_ms() / 4 && Instant::now() < settled_by {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let killed = doomed.workers();
    let killed_ttl = Duration::from_millis(u64::from(doomed.max_ttl_ms()));
    let before = unreachable_count(&tier.cluster).await?;
    doomed.kill().await;
    let died_at = Instant::now();
    loop {
        let now = unreachable_count(&tier.cluster).await?;
        if now >= before + killed {
            break;
        }
        anyhow::ensure!(
            died_at.elapsed() < Duration::from_secs(600),
            "{} of {killed} marked after 10 minutes",
            now.saturating_sub(before)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let detected = died_at.elapsed();
    eprintln!("  {killed} workers killed at once (TTL {killed_ttl:.1?}) all Unreachable after {detected:.1?}");
    let dead = unreachable_count(&tier.cluster).await?;

    let dead_gateway = tier.gateways.first().context("a gateway")?.id.clone();
    let moved = fleets.on_gateway(&dead_gateway);
    let leader = tier.leader().await;
    let killed_at = Instant::now();
    tier.cluster.kill(leader);
    let new_leader = tier.cluster.wait_for_new_leader(leader, Duration::from_secs(60)).await;
    let election = killed_at.elapsed();
    eprintln!("  leader {leader} killed; node {new_leader} leads after {election:.1?}");

    let gateway_killed_at = Instant::now();
    tier.gateways[0].kill();
    let mut unreachable_max = 0;
    while fleets.on_gateway(&dead_gateway) > 0 {
        anyhow::ensure!(
            gateway_killed_at.elapsed() < Duration::from_secs(600),
            "{} workers still on the dead gateway after 10 minutes",
            fleets.on_gateway(&dead_gateway)
        );
        unreachable_max = unreachable_max.max(live_unreachable(tier, dead).await?);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reconnect_all = gateway_killed_at.elapsed();
    eprintln!("  {moved} workers of {dead_gateway} reconnected elsewhere in {reconnect_all:.1?}");

    // Through the failover window (once the new leader has begun it) and a TTL and grace
    // after it, nobody else may expire.
    let begun_by = Instant::now() + Duration::from_secs(30);
    while tier.failover_remaining().await?.is_zero() && Instant::now() < begun_by {
        unreachable_max = unreachable_max.max(live_unreachable(tier, dead).await?);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    loop {
        unreachable_max = unreachable_max.max(live_unreachable(tier, dead).await?);
        if tier.failover_remaining().await?.is_zero() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let watch_until = Instant::now() + Duration::from_millis(u64::from(fleets.max_ttl_ms())) + GRACE;
    while Instant::now() < watch_until {
        unreachable_max = unreachable_max.max(live_unreachable(tier, dead).await?);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("  at most {unreachable_max} live workers Unreachable through the failover");
    Ok(Failure { workers, election, moved, reconnect_all, unreachable_max, killed, killed_ttl, detected })
}
