//! The nemesis: faults against the real `control-plane` processes of a
//! [`muster_e2e::Cluster`], one at a time, each healed before the next (killed nodes
//! restarted, paused ones continued), with a log of what was done and how long the cluster
//! took to have a leader again.
//!
//! - kill -9 of the leader, restarted after a delay: a short delay brings it back before any
//!   other node can win an election (the restored-leader case of issue 11);
//! - kill -9 of a random node, and of the whole cluster;
//! - SIGSTOP / SIGCONT of the leader or a random node: a paused leader is deposed, and on
//!   resuming must not serve reads from its old term.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use muster_e2e::{Cluster, eventually};
use rand::Rng;
use rand::rngs::StdRng;
use rustix::process::{Pid, Signal, kill_process};
use tokio::time::Instant;

/// How long the nemesis waits for a leader before giving a fault up, and for the cluster to
/// recover after one.
const LEADER_TIMEOUT: Duration = Duration::from_secs(20);
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(60);

/// The kinds of fault, as the command line names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// kill -9 the leader, restart it within the election timeout.
    KillLeaderFast,
    /// kill -9 the leader, restart it after a new leader is likely elected.
    KillLeader,
    KillRandom,
    KillAll,
    PauseLeader,
    PauseRandom,
}

impl FaultKind {
    pub const ALL: [FaultKind; 6] = [
        FaultKind::KillLeaderFast,
        FaultKind::KillLeader,
        FaultKind::KillRandom,
        FaultKind::KillAll,
        FaultKind::PauseLeader,
        FaultKind::PauseRandom,
    ];

    /// Kinds by name; `kill` and `pause` stand for every kill and every pause.
    pub fn parse_list(names: &str) -> anyhow::Result<Vec<FaultKind>> {
        let mut kinds = Vec::new();
        for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "kill" => kinds.extend(&Self::ALL[..4]),
                "pause" => kinds.extend(&Self::ALL[4..]),
                "all" => kinds.extend(Self::ALL),
                "none" => {}
                other => kinds.push(other.parse()?),
            }
        }
        kinds.dedup();
        Ok(kinds)
    }

    fn name(self) -> &'static str {
        match self {
            FaultKind::KillLeaderFast => "kill-leader-fast",
            FaultKind::KillLeader => "kill-leader",
            FaultKind::KillRandom => "kill-random",
            FaultKind::KillAll => "kill-all",
            FaultKind::PauseLeader => "pause-leader",
            FaultKind::PauseRandom => "pause-random",
        }
    }

    /// The fault with its delays drawn from `rng`.
    pub fn draw(self, rng: &mut StdRng) -> Fault {
        let ms = |rng: &mut StdRng, lo, hi| Duration::from_millis(rng.random_range(lo..hi));
        match self {
            FaultKind::KillLeaderFast => Fault::KillLeader { restart_after: ms(rng, 50, 250) },
            FaultKind::KillLeader => Fault::KillLeader { restart_after: ms(rng, 1000, 3000) },
            FaultKind::KillRandom => Fault::KillRandom { restart_after: ms(rng, 100, 3000) },
            FaultKind::KillAll => Fault::KillAll { restart_after: ms(rng, 100, 2000) },
            FaultKind::PauseLeader => Fault::PauseLeader { pause: ms(rng, 200, 3000) },
            FaultKind::PauseRandom => Fault::PauseRandom { pause: ms(rng, 200, 3000) },
        }
    }
}

impl FromStr for FaultKind {
    type Err = anyhow::Error;
    fn from_str(name: &str) -> anyhow::Result<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name).with_context(|| {
            let names: Vec<_> = Self::ALL.iter().map(|k| k.name()).collect();
            format!("unknown fault {name:?}: use kill, pause, all, none or any of {}", names.join(", "))
        })
    }
}

/// One fault with its delays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    KillLeader { restart_after: Duration },
    KillRandom { restart_after: Duration },
    KillAll { restart_after: Duration },
    PauseLeader { pause: Duration },
    PauseRandom { pause: Duration },
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::KillLeader { restart_after } => write!(f, "kill -9 leader, restart after {restart_after:?}"),
            Fault::KillRandom { restart_after } => write!(f, "kill -9 a node, restart after {restart_after:?}"),
            Fault::KillAll { restart_after } => write!(f, "kill -9 every node, restart after {restart_after:?}"),
            Fault::PauseLeader { pause } => write!(f, "SIGSTOP leader for {pause:?}"),
            Fault::PauseRandom { pause } => write!(f, "SIGSTOP a node for {pause:?}"),
        }
    }
}

/// What one fault did.
#[derive(Clone, Debug)]
pub struct FaultRecord {
    /// When it began, since the run's start.
    pub at: Duration,
    pub fault: Fault,
    pub nodes: Vec<u64>,
    /// From healing until a majority agreed on a leader again (`None`: it did not, in time).
    pub recovered_after: Option<Duration>,
    pub leader_after: Option<u64>,
}

impl fmt::Display for FaultRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:>8.3}s  {} (nodes {:?}): ", self.at.as_secs_f64(), self.fault, self.nodes)?;
        match (self.recovered_after, self.leader_after) {
            (Some(after), Some(leader)) => write!(f, "leader {leader} {:.3}s after healing", after.as_secs_f64()),
            _ => write!(f, "NO LEADER within {RECOVERY_TIMEOUT:?} of healing"),
        }
    }
}

/// The cluster under test and the faults done to it.
pub struct Nemesis {
    pub cluster: Cluster,
    epoch: Instant,
    pub log: Vec<FaultRecord>,
}

fn signal(cluster: &Cluster, id: u64, sig: Signal) -> anyhow::Result<()> {
    let pid = i32::try_from(cluster.pid(id)).context("pid out of range")?;
    let pid = Pid::from_raw(pid).context("pid 0")?;
    kill_process(pid, sig).with_context(|| format!("signalling node {id}"))
}

impl Nemesis {
    pub fn new(cluster: Cluster, epoch: Instant) -> Self {
        Self { cluster, epoch, log: Vec::new() }
    }

    async fn leader(&self) -> anyhow::Result<u64> {
        eventually(LEADER_TIMEOUT, || self.cluster.current_leader()).await
    }

    fn random_node(&self, rng: &mut StdRng) -> u64 {
        let ids = self.cluster.ids();
        ids[rng.random_range(0..ids.len())]
    }

    /// Does `fault`, heals it, and waits (bounded) for a leader. A fault whose target cannot
    /// be found (no leader in time) is skipped with an error.
    pub async fn inject(&mut self, fault: Fault, rng: &mut StdRng) -> anyhow::Result<&FaultRecord> {
        let nodes = match fault {
            Fault::KillLeader { .. } | Fault::PauseLeader { .. } => vec![self.leader().await?],
            Fault::KillRandom { .. } | Fault::PauseRandom { .. } => vec![self.random_node(rng)],
            Fault::KillAll { .. } => self.cluster.ids(),
        };
        let at = self.epoch.elapsed();
        match fault {
            Fault::KillLeader { restart_after }
            | Fault::KillRandom { restart_after }
            | Fault::KillAll { restart_after } => {
                for &id in &nodes {
                    self.cluster.kill(id);
                }
                tokio::time::sleep(restart_after).await;
                for &id in &nodes {
                    self.cluster.restart(id);
                }
            }
            Fault::PauseLeader { pause } | Fault::PauseRandom { pause } => {
                for &id in &nodes {
                    signal(&self.cluster, id, Signal::STOP)?;
                }
                tokio::time::sleep(pause).await;
                for &id in &nodes {
                    signal(&self.cluster, id, Signal::CONT)?;
                }
            }
        }
        let healed = Instant::now();
        let leader = eventually(RECOVERY_TIMEOUT, || async {
            self.cluster.check_processes()?;
            self.cluster.current_leader().await
        })
        .await
        .ok();
        let recovered_after = leader.map(|_| healed.elapsed());
        self.log.push(FaultRecord { at, fault, nodes, recovered_after, leader_after: leader });
        Ok(self.log.last().expect("just pushed"))
    }

    /// Waits until every node is up and ready and a leader is agreed on.
    pub async fn wait_healthy(&self) -> anyhow::Result<()> {
        self.cluster.wait_started(RECOVERY_TIMEOUT).await
    }
}
