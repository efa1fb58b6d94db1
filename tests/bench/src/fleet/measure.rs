//! How a fleet run is measured, the same way for both systems: counters sampled at both ends
//! of a window (acks, errors, the leader's Raft index, CPU seconds of the server processes and
//! of the benchmark), ack latencies cleared at the start of the window and read at its end, and
//! the phases every run goes through (steady rate, then flat out).

use std::future::Future;
use std::time::{Duration, Instant};

use crate::procs::{cpu_seconds, machine_cpu_seconds, rss_bytes, total_cpu_seconds};
use crate::stalls::{StallMonitor, Stalls};

/// Cumulative counters of one system at one instant.
#[derive(Clone, Debug)]
pub struct Counters {
    pub at: Instant,
    /// Heartbeat acks (Muster) or keep-alive responses (etcd) received so far.
    pub acks: u64,
    /// Failed streams, throttled beats and lost leases so far.
    pub errors: u64,
    /// The leader's last Raft log index.
    pub raft_index: u64,
    /// Beats the leader has received from gateways (Muster only).
    pub forwarded: Option<u64>,
    /// CPU seconds of the process that holds the workers' connections (the gateway; the etcd
    /// leader).
    pub front_cpu: f64,
    /// CPU seconds of every server process of the system.
    pub servers_cpu: f64,
    /// CPU seconds of this benchmark process (the simulated workers).
    pub bench_cpu: f64,
    /// Busy CPU seconds of the whole machine (to see what other work took).
    pub machine_cpu: f64,
}

impl Counters {
    /// Counters with the CPU time of `front`, `servers` and this process read now.
    pub fn now(acks: u64, errors: u64, raft_index: u64, front: u32, servers: &[u32]) -> Self {
        Self {
            at: Instant::now(),
            acks,
            errors,
            raft_index,
            forwarded: None,
            front_cpu: cpu_seconds(front),
            servers_cpu: total_cpu_seconds(servers),
            bench_cpu: cpu_seconds(std::process::id()),
            machine_cpu: machine_cpu_seconds(),
        }
    }
}

/// One measured window.
#[derive(Clone, Debug, PartialEq)]
pub struct Phase {
    pub window: Duration,
    /// Reports per second the simulated workers try to send (`None`: as fast as acked).
    pub offered_per_sec: Option<f64>,
    pub acks: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub raft_entries: u64,
    /// Beats that reached the leader (Muster only).
    pub forwarded: Option<u64>,
    pub front_cpu: f64,
    pub servers_cpu: f64,
    pub bench_cpu: f64,
    /// Busy CPU seconds of the machine outside the servers and the benchmark (other work, and
    /// kernel time not charged to a process).
    pub other_cpu: f64,
    /// How much the machine itself stalled during the window ([`super::stalls`]).
    pub stalls: Stalls,
}

impl Phase {
    pub fn between(
        start: &Counters,
        end: &Counters,
        latency: (f64, f64),
        offered_per_sec: Option<f64>,
        stalls: Stalls,
    ) -> Self {
        Self {
            window: end.at - start.at,
            offered_per_sec,
            acks: end.acks.saturating_sub(start.acks),
            errors: end.errors.saturating_sub(start.errors),
            p50_ms: latency.0,
            p99_ms: latency.1,
            raft_entries: end.raft_index.saturating_sub(start.raft_index),
            forwarded: start.forwarded.zip(end.forwarded).map(|(a, b)| b.saturating_sub(a)),
            front_cpu: end.front_cpu - start.front_cpu,
            servers_cpu: end.servers_cpu - start.servers_cpu,
            bench_cpu: end.bench_cpu - start.bench_cpu,
            other_cpu: ((end.machine_cpu - start.machine_cpu)
                - (end.servers_cpu - start.servers_cpu)
                - (end.bench_cpu - start.bench_cpu))
                .max(0.0),
            stalls,
        }
    }

    fn secs(&self) -> f64 {
        self.window.as_secs_f64().max(1e-9)
    }

    /// Acks per second.
    pub fn per_sec(&self) -> f64 {
        self.acks as f64 / self.secs()
    }

    pub fn raft_per_sec(&self) -> f64 {
        self.raft_entries as f64 / self.secs()
    }

    /// Raft entries per ack (every ack counted at least once, so a window of none divides by 1).
    pub fn raft_per_ack(&self) -> f64 {
        self.raft_entries as f64 / self.acks.max(1) as f64
    }

    /// Beats per second that reached the leader (Muster only).
    pub fn forwarded_per_sec(&self) -> Option<f64> {
        self.forwarded.map(|beats| beats as f64 / self.secs())
    }

    /// Cores busy on average, for `cpu_secs` spent in this window.
    pub fn cores(&self, cpu_secs: f64) -> f64 {
        cpu_secs / self.secs()
    }

    /// CPU microseconds per ack, for `cpu_secs` spent in this window.
    pub fn us_per_ack(&self, cpu_secs: f64) -> Option<f64> {
        (self.acks > 0).then(|| cpu_secs * 1e6 / self.acks as f64)
    }
}

/// Everything one system's run yields.
#[derive(Clone, Debug)]
pub struct SystemRun {
    pub workers: usize,
    /// Registering every worker (Muster) or granting every lease (etcd).
    pub setup: Duration,
    pub setup_raft_entries: u64,
    /// From starting the simulated workers until each has had its first ack (or the wait
    /// gave up), and how many had by then.
    pub connect: Duration,
    pub connected: usize,
    /// Resident memory of the front process before the workers connect, and connected.
    pub front_rss_idle: u64,
    pub front_rss_connected: u64,
    pub steady: Phase,
    pub max: Option<Phase>,
    /// Facts worth printing under the tables.
    pub notes: Vec<String>,
}

impl SystemRun {
    /// Extra resident memory of the front process per connected worker, in bytes.
    pub fn rss_per_worker(&self) -> f64 {
        self.front_rss_connected.saturating_sub(self.front_rss_idle) as f64 / self.workers.max(1) as f64
    }
}

/// (p50, p99) in milliseconds of latency samples in microseconds (nearest rank, as
/// `muster_e2e::fleet::FleetStats::take_latency_percentiles` computes them).
pub fn percentiles(mut samples: Vec<u32>) -> (f64, f64) {
    if samples.is_empty() {
        return (0.0, 0.0);
    }
    samples.sort_unstable();
    let at = |q: f64| f64::from(samples[((samples.len() - 1) as f64 * q) as usize]) / 1000.0;
    (at(0.50), at(0.99))
}

/// A system with simulated workers running, as the phases see it.
pub trait Probe {
    /// The counters now.
    fn sample(&mut self) -> impl Future<Output = anyhow::Result<Counters>>;
    /// (p50, p99) ack latency in ms since the previous call; clears the samples.
    fn take_latencies(&self) -> (f64, f64);
    /// Changes how often every simulated worker reports (zero: as soon as acked).
    fn set_interval(&self, interval: Duration);
    /// The pid of the front process (for its memory).
    fn front_pid(&self) -> u32;
}

/// How the phases run.
#[derive(Clone, Copy, Debug)]
pub struct PhasePlan {
    pub workers: usize,
    pub interval: Duration,
    pub warmup: Duration,
    pub window: Duration,
    /// Also measure with every worker reporting again as soon as it is acked.
    pub flat_out: bool,
}

/// One window: latencies and counters cleared/sampled at its start and end, the machine's
/// stalls watched in between.
pub async fn measure(probe: &mut impl Probe, window: Duration, offered: Option<f64>) -> anyhow::Result<Phase> {
    probe.take_latencies();
    let start = probe.sample().await?;
    let stalls = StallMonitor::start()?;
    tokio::time::sleep(window).await;
    let stalls = stalls.finish();
    let end = probe.sample().await?;
    Ok(Phase::between(&start, &end, probe.take_latencies(), offered, stalls))
}

/// The steady phase (warm-up, window), the front's connected RSS, then optionally the flat-out
/// phase (warm-up, window), leaving the workers at the steady interval again.
pub async fn run_phases(probe: &mut impl Probe, plan: &PhasePlan) -> anyhow::Result<(Phase, u64, Option<Phase>)> {
    let offered = plan.workers as f64 / plan.interval.as_secs_f64().max(1e-9);
    tokio::time::sleep(plan.warmup).await;
    let steady = measure(probe, plan.window, Some(offered)).await?;
    let rss = rss_bytes(probe.front_pid());
    let max = if plan.flat_out {
        probe.set_interval(Duration::ZERO);
        tokio::time::sleep(plan.warmup).await;
        let max = measure(probe, plan.window, None).await?;
        probe.set_interval(plan.interval);
        Some(max)
    } else {
        None
    };
    Ok((steady, rss, max))
}

/// Polls `acked` (workers acked at least once) every 100 ms until it reaches `workers` or
/// `timeout` passes; `check` fails the wait early (a dead server). Returns the time taken and
/// how many workers were acked by then (fewer than `workers` after a timeout: the system could
/// not bring them all up, which the results show rather than hide).
pub async fn wait_all_acked(
    workers: usize,
    timeout: Duration,
    mut acked: impl FnMut() -> usize,
    mut check: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<(Duration, usize)> {
    let started = Instant::now();
    let mut last_report = started;
    loop {
        let done = acked();
        if done >= workers || started.elapsed() >= timeout {
            if done < workers {
                eprintln!("  giving up: only {done} of {workers} workers acked after {timeout:?}; measuring anyway");
            }
            return Ok((started.elapsed(), done));
        }
        check()?;
        if last_report.elapsed() >= Duration::from_secs(5) {
            eprintln!("  {done} of {workers} acked after {:.0?}", started.elapsed());
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(at: Instant, acks: u64, raft: u64, cpu: f64) -> Counters {
        Counters {
            at,
            acks,
            errors: 0,
            raft_index: raft,
            forwarded: Some(acks),
            front_cpu: cpu,
            servers_cpu: 2.0 * cpu,
            bench_cpu: cpu,
            machine_cpu: 4.0 * cpu,
        }
    }

    #[test]
    fn a_phase_is_the_difference_of_its_ends() {
        let t0 = Instant::now();
        let phase = Phase::between(
            &counters(t0, 1_000, 50, 1.0),
            &counters(t0 + Duration::from_secs(10), 201_000, 50, 6.0),
            (1.5, 9.0),
            Some(20_000.0),
            Stalls::default(),
        );
        assert_eq!(phase.acks, 200_000);
        assert!((phase.per_sec() - 20_000.0).abs() < 1e-6);
        assert_eq!(phase.raft_entries, 0);
        assert_eq!(phase.forwarded, Some(200_000));
        assert!((phase.other_cpu - 5.0).abs() < 1e-9);
        assert!((phase.cores(phase.front_cpu) - 0.5).abs() < 1e-9);
        assert!((phase.us_per_ack(phase.servers_cpu).unwrap() - 50.0).abs() < 1e-9);
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        assert_eq!(percentiles(Vec::new()), (0.0, 0.0));
        let samples: Vec<u32> = (1..=1000).rev().map(|ms| ms * 1000).collect();
        assert_eq!(percentiles(samples), (500.0, 990.0));
    }
}
