//! One run: start a cluster, let the clients and the probe work while the nemesis injects
//! faults, heal, give the cluster a quiet moment, stop, then check the history and the probe
//! and test the checker on the real history by planting a stale read in it.

use std::fmt;
use std::time::Duration;

use anyhow::Context;
use muster_client::{ClientOptions, ControlPlaneClient};
use muster_e2e::{Cluster, Options};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::checker::{Verdict, check};
use crate::history::{Counts, History};
use crate::mutate::plant_stale_read;
use crate::nemesis::{Fault, FaultKind, FaultRecord, Nemesis};
use crate::probe::{ProbeReport, probe_loop, verify};
use crate::workload::{Shared, Workload, client_loop};

/// How long one client call keeps retrying inside the client (leader changes) before the
/// workload's own timeout records it.
const CLIENT_RETRIES: Duration = Duration::from_secs(3);
/// Fault-free operation after the last fault is healed, before the clients stop.
const QUIET: Duration = Duration::from_secs(2);

/// When the nemesis strikes.
#[derive(Clone, Debug)]
pub enum Schedule {
    /// These faults in order, each after the pause given with it; then none.
    Script(Vec<(Duration, Fault)>),
    /// A fault of a random kind after each random pause in `pause`, until the end.
    Random { kinds: Vec<FaultKind>, pause: (Duration, Duration) },
}

impl Schedule {
    /// Whether some fault cuts the network, so the nodes must run in namespaces of their own.
    pub fn partitions(&self) -> bool {
        match self {
            Schedule::Script(script) => script.iter().any(|(_, fault)| fault.partitions()),
            Schedule::Random { kinds, .. } => kinds.iter().any(|kind| kind.partitions()),
        }
    }
}

#[derive(Clone, Debug)]
pub struct RunConfig {
    pub nodes: u64,
    /// mTLS (the default), or plaintext.
    pub tls: bool,
    /// How long the clients work (the faults happen within it).
    pub duration: Duration,
    pub workload: Workload,
    pub schedule: Schedule,
    pub seed: u64,
    /// Checker search steps per key.
    pub budget: u64,
}

/// What a run found.
#[derive(Debug)]
pub struct Report {
    pub config: RunConfig,
    pub elapsed: Duration,
    pub counts: Counts,
    pub faults: Vec<FaultRecord>,
    /// Faults that could not be done (no leader to target), and a cluster that did not heal.
    pub nemesis_errors: Vec<String>,
    pub verdict: Verdict,
    pub probe: ProbeReport,
    /// Whether the checker rejected the history with a stale read planted (`None`: no read of
    /// the history allowed one).
    pub planted_rejected: Option<bool>,
    pub check_time: Duration,
}

impl Report {
    /// Linearizable, exactly once, the checker's self-test passed, and every fault healed.
    pub fn passed(&self) -> bool {
        self.verdict.is_linearizable()
            && self.probe.holds()
            && self.planted_rejected != Some(false)
            && self.faults.iter().all(|f| f.recovered_after.is_some())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        let secs = self.elapsed.as_secs_f64();
        writeln!(
            f,
            "Muster Jepsen run: {} nodes, {}, {} clients, {:.1}s of operations, seed {}",
            c.nodes,
            if c.tls { "mTLS" } else { "plaintext" },
            c.workload.clients,
            secs,
            c.seed
        )?;
        write!(f, "{}", self.counts)?;
        writeln!(f, "acknowledged operations per second: {:.0}", self.counts.all().ok as f64 / secs.max(0.001))?;
        writeln!(f, "faults ({}):", self.faults.len())?;
        for fault in &self.faults {
            writeln!(f, "  {fault}")?;
        }
        for error in &self.nemesis_errors {
            writeln!(f, "  nemesis: {error}")?;
        }
        writeln!(f, "{}", self.probe)?;
        match self.planted_rejected {
            Some(true) => writeln!(f, "checker self-test: a stale read planted in this history is rejected")?,
            Some(false) => writeln!(f, "checker self-test FAILED: a stale read planted in this history passed")?,
            None => writeln!(f, "checker self-test: no read of this history allowed planting a stale read")?,
        }
        writeln!(f, "checked in {:.1}s", self.check_time.as_secs_f64())?;
        write!(f, "verdict: {}", self.verdict)?;
        for violation in &self.verdict.violations {
            let Some(blocked) = &violation.blocked else { continue };
            let at = Duration::from_nanos(blocked.complete);
            if let Some(fault) = self.faults.iter().rev().find(|fault| fault.at <= at) {
                let fault = fault.to_string();
                writeln!(f, "  key {}: the last fault before it completed: {}", violation.key, fault.trim_start())?;
            }
        }
        if !self.verdict.is_linearizable() {
            writeln!(f)?;
        }
        writeln!(f, "\nresult: {}", if self.passed() { "PASS" } else { "FAIL" })
    }
}

/// A finished run: the report, the history, and the cluster still running (so a failing
/// test's panic prints its logs when it is dropped).
pub struct Finished {
    pub report: Report,
    pub history: History,
    pub cluster: Cluster,
}

fn client(cluster: &Cluster) -> anyhow::Result<ControlPlaneClient> {
    let endpoints = cluster.ids().into_iter().map(|id| cluster.addrs(id).api.clone()).collect();
    let mut options = ClientOptions::new(endpoints);
    options.tls = cluster.operator_client_tls();
    options.timeout = CLIENT_RETRIES;
    Ok(ControlPlaneClient::new(options)?)
}

pub async fn run(config: RunConfig) -> anyhow::Result<Finished> {
    let options = Options { tls: config.tls, isolated_network: config.schedule.partitions(), ..Options::default() };
    let cluster = Cluster::start(config.nodes, options).await;
    let mut rng = StdRng::seed_from_u64(config.seed);
    let prefix = format!("jepsen-{:08x}", rng.random::<u32>());
    let shared = Shared::new(format!("{prefix}/kv"), config.workload.clone());
    let (stop, stopped) = watch::channel(false);

    let mut clients = Vec::new();
    for process in 0..config.workload.clients {
        let client_rng = StdRng::seed_from_u64(rng.random());
        clients.push(tokio::spawn(client_loop(
            process,
            client(&cluster)?,
            shared.clone(),
            client_rng,
            stopped.clone(),
        )));
    }
    let probe_prefix = format!("{prefix}/probe");
    let probe = tokio::spawn(probe_loop(client(&cluster)?, probe_prefix, config.workload.op_timeout, stopped.clone()));

    let end = shared.epoch + config.duration;
    let mut nemesis = Nemesis::new(cluster, shared.epoch);
    let mut nemesis_errors = Vec::new();
    match &config.schedule {
        Schedule::Script(script) => {
            for (pause, fault) in script {
                tokio::time::sleep(*pause).await;
                if let Err(err) = nemesis.inject(*fault, &mut rng).await {
                    nemesis_errors.push(format!("{fault}: {err:#}"));
                }
            }
        }
        Schedule::Random { kinds, pause } if !kinds.is_empty() => loop {
            let wait = Duration::from_millis(rng.random_range(pause.0.as_millis() as u64..=pause.1.as_millis() as u64));
            if Instant::now() + wait >= end {
                break;
            }
            tokio::time::sleep(wait).await;
            let fault = kinds[rng.random_range(0..kinds.len())].draw(&mut rng);
            if let Err(err) = nemesis.inject(fault, &mut rng).await {
                nemesis_errors.push(format!("{fault}: {err:#}"));
            }
        },
        Schedule::Random { .. } => {}
    }
    tokio::time::sleep_until(end).await;
    if let Err(err) = nemesis.wait_healthy().await {
        nemesis_errors.push(format!("the cluster did not heal: {err:#}"));
    }
    tokio::time::sleep(QUIET).await;
    stop.send(true).context("stopping the clients")?;
    let elapsed = shared.epoch.elapsed();

    let mut history = History::default();
    for client in clients {
        history.ops.extend(client.await.context("a client task panicked")?);
    }
    let probe_log = probe.await.context("the probe panicked")?;
    let probe = verify(&client(&nemesis.cluster)?, probe_log).await.context("reading the probe's keys back")?;

    let checking = Instant::now();
    let budget = config.budget;
    let (verdict, planted_rejected, history) = tokio::task::spawn_blocking(move || {
        let verdict = check(&history, budget);
        let planted = plant_stale_read(&history).map(|planted| {
            let ops = planted.history.ops.into_iter().filter(|op| op.key == planted.key).collect();
            !check(&History { ops }, budget).is_linearizable()
        });
        (verdict, planted, history)
    })
    .await
    .context("the checker panicked")?;
    let report = Report {
        config,
        elapsed,
        counts: history.counts(),
        faults: nemesis.log,
        nemesis_errors,
        verdict,
        probe,
        planted_rejected,
        check_time: checking.elapsed(),
    };
    Ok(Finished { report, history, cluster: nemesis.cluster })
}
