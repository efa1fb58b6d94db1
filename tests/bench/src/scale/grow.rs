//! Growing the fleet: a registration storm through every registrar at once, then more
//! simulated workers beating (in processes of their own, [`Part`]), spread over loopback
//! source addresses.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use muster_e2e::fleet::{SimIdentity, register_all, token_for};
use muster_e2e::v1;

use super::parts::{Part, PartStatus};
use super::tier::{Tier, Usage};

/// What registering a batch of workers cost.
#[derive(Clone, Debug, Default)]
pub struct Registration {
    pub workers: usize,
    pub took: Duration,
    /// Raft log entries the batch added, per worker.
    pub raft_entries_per_worker: f64,
    /// CPU of the registrars per worker registered (the CSR check, the signature, the call to
    /// the leader), in microseconds.
    pub registrar_us_per_worker: f64,
    /// CPU of the leader per worker registered (the token, the worker and its certificate
    /// written to the log and applied), in microseconds.
    pub leader_us_per_worker: f64,
    /// CPU of the benchmark itself per worker (its key, its CSR, its calls), in microseconds:
    /// it shares the machine with the tier.
    pub client_us_per_worker: f64,
}

impl Registration {
    pub fn per_second(&self) -> f64 {
        self.workers as f64 / self.took.as_secs_f64().max(1e-9)
    }
}

/// Registers `count` workers, split evenly over the registrars, all at once.
pub async fn register(tier: &Tier, count: usize, parallel: usize) -> anyhow::Result<(Vec<SimIdentity>, Registration)> {
    let token = token_for(&tier.cluster, u32::try_from(count)?).await;
    let shares = tier.registrars.len();
    let before_index = tier.raft_index().await?;
    let leader = [tier.cluster.pid(tier.leader().await)];
    let client = [std::process::id()];
    let before = (Usage::of(&tier.registrar_pids()), Usage::of(&leader), Usage::of(&client));
    let started = Instant::now();
    let calls = tier.registrars.iter().enumerate().map(|(n, registrar)| {
        let share = count / shares + usize::from(n < count % shares);
        register_all(&registrar.addr, &tier.ca_pem, &token, share, (parallel / shares).max(1))
    });
    let mut identities = Vec::with_capacity(count);
    for share in futures::future::try_join_all(calls).await? {
        identities.extend(share);
    }
    let took = started.elapsed();
    let us_per_worker = |pids: &[u32], before: Usage| (Usage::of(pids).cpu - before.cpu) * 1e6 / count as f64;
    let registrar_us_per_worker = us_per_worker(&tier.registrar_pids(), before.0);
    let leader_us_per_worker = us_per_worker(&leader, before.1);
    let client_us_per_worker = us_per_worker(&client, before.2);
    let entries = tier.raft_index().await?.saturating_sub(before_index);
    let figures = Registration {
        workers: count,
        took,
        raft_entries_per_worker: entries as f64 / count as f64,
        registrar_us_per_worker,
        leader_us_per_worker,
        client_us_per_worker,
    };
    Ok((identities, figures))
}

/// `count` loopback addresses for workers to connect from, 127.1.0.1 upwards: one address
/// offers about 28,000 ephemeral ports towards each gateway.
pub fn sources(count: usize) -> Vec<IpAddr> {
    (0..count)
        .map(|n| {
            let n = u32::try_from(n).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 1, 0, 1)) + n))
        })
        .collect()
}

/// The fleet running, grown one batch at a time, in processes of its own ([`Part`]).
#[derive(Default)]
pub struct Fleets {
    pub parts: Vec<Part>,
}

impl Fleets {
    pub fn start(&mut self, identities: &[SimIdentity], ca_pem: &str, sources: &[IpAddr]) -> anyhow::Result<()> {
        self.parts.extend(Part::start_all(identities, ca_pem, sources)?);
        Ok(())
    }

    fn statuses(&self) -> impl Iterator<Item = PartStatus> + '_ {
        self.parts.iter().map(Part::status)
    }

    /// Workers acked at least once.
    pub fn acked(&self) -> usize {
        self.statuses().map(|s| s.acked).sum()
    }

    pub fn acks(&self) -> u64 {
        self.statuses().map(|s| s.acks).sum()
    }

    /// Workers beating to gateway `id` now.
    pub fn on_gateway(&self, id: &str) -> usize {
        self.statuses().map(|s| s.spread.get(id).copied().unwrap_or(0)).sum()
    }

    /// The median of the parts' median TTLs in the workers' last acks, in milliseconds.
    pub fn median_ttl_ms(&self) -> u32 {
        let mut ttls: Vec<u32> = self.statuses().map(|s| s.median_ttl_ms).filter(|t| *t > 0).collect();
        ttls.sort_unstable();
        ttls.get(ttls.len() / 2).copied().unwrap_or(0)
    }

    /// The longest TTL any worker's last ack carried.
    pub fn max_ttl_ms(&self) -> u32 {
        self.statuses().map(|s| s.max_ttl_ms).max().unwrap_or(0)
    }

    pub fn workers(&self) -> usize {
        self.statuses().map(|s| s.workers).sum()
    }

    /// Waits until `want` workers are acked at least once, within `timeout` (the fleet
    /// benchmark's wait, reporting progress); `check` fails the wait early (a server died).
    pub async fn wait_acked(
        &self,
        want: usize,
        timeout: Duration,
        check: impl FnMut() -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let (_, acked) = crate::fleet::measure::wait_all_acked(want, timeout, || self.acked(), check).await?;
        anyhow::ensure!(acked >= want, "only {acked} of {want} workers acked after {timeout:?}");
        Ok(())
    }

    /// SIGKILLs every part: all their workers die at once.
    pub async fn kill(&mut self) {
        for part in &mut self.parts {
            part.kill().await;
        }
    }
}

/// Waits until `want` workers of `fleets` are acked and Ready, within `timeout`; returns how
/// long it took.
pub async fn wait_ready(tier: &Tier, fleets: &Fleets, want: usize, timeout: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    fleets.wait_acked(want, timeout, || tier.check_alive()).await?;
    let ready = v1::ListWorkersRequest { state: v1::WorkerState::Ready as i32, ..Default::default() };
    loop {
        let count = tier.cluster.client().list_workers(ready.clone()).await?.len();
        if count >= want {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(started.elapsed() < timeout, "only {count} of {want} workers Ready after {timeout:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
