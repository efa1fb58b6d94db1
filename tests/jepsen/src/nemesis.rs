//! The nemesis: faults against the real `control-plane` processes of a
//! [`muster_e2e::Cluster`], one at a time, each healed before the next (killed nodes
//! restarted, paused ones continued), with a log of what was done and how long the cluster
//! took to have a leader again.
//!
//! - kill -9 of the leader, restarted after a delay: a short delay brings it back before any
//!   other node can win an election (the restored-leader case of issue 11);
//! - kill -9 of a random node, and of the whole cluster;
//! - SIGSTOP / SIGCONT of the leader or a random node: a paused leader is deposed, and on
//!   resuming must not serve reads from its old term;
//! - network partitions, each node in its own network namespace
//!   ([`muster_e2e::netns`]): the leader cut off from the rest, the nodes split into a random
//!   minority and majority, and a "bridge" (two halves that reach each other only through one
//!   node in the middle). Packets are dropped, not refused, as on a real cut.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use muster_e2e::{Cluster, eventually};
use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
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
    PartitionLeader,
    PartitionHalves,
    PartitionBridge,
}

impl FaultKind {
    pub const ALL: [FaultKind; 9] = [
        FaultKind::KillLeaderFast,
        FaultKind::KillLeader,
        FaultKind::KillRandom,
        FaultKind::KillAll,
        FaultKind::PauseLeader,
        FaultKind::PauseRandom,
        FaultKind::PartitionLeader,
        FaultKind::PartitionHalves,
        FaultKind::PartitionBridge,
    ];

    /// Kinds by name; `kill`, `pause` and `partition` stand for every kill, pause and
    /// partition.
    pub fn parse_list(names: &str) -> anyhow::Result<Vec<FaultKind>> {
        let mut kinds = Vec::new();
        for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "kill" => kinds.extend(&Self::ALL[..4]),
                "pause" => kinds.extend(&Self::ALL[4..6]),
                "partition" => kinds.extend(&Self::ALL[6..]),
                "all" => kinds.extend(Self::ALL),
                "none" => {}
                other => kinds.push(other.parse()?),
            }
        }
        kinds.dedup();
        Ok(kinds)
    }

    /// Whether this kind needs the nodes in network namespaces.
    pub fn partitions(self) -> bool {
        matches!(self, FaultKind::PartitionLeader | FaultKind::PartitionHalves | FaultKind::PartitionBridge)
    }

    fn name(self) -> &'static str {
        match self {
            FaultKind::KillLeaderFast => "kill-leader-fast",
            FaultKind::KillLeader => "kill-leader",
            FaultKind::KillRandom => "kill-random",
            FaultKind::KillAll => "kill-all",
            FaultKind::PauseLeader => "pause-leader",
            FaultKind::PauseRandom => "pause-random",
            FaultKind::PartitionLeader => "partition-leader",
            FaultKind::PartitionHalves => "partition-halves",
            FaultKind::PartitionBridge => "partition-bridge",
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
            FaultKind::PartitionLeader => Fault::PartitionLeader { heal_after: ms(rng, 500, 5000) },
            FaultKind::PartitionHalves => Fault::PartitionHalves { heal_after: ms(rng, 500, 5000) },
            FaultKind::PartitionBridge => Fault::PartitionBridge { heal_after: ms(rng, 500, 5000) },
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
    KillLeader {
        restart_after: Duration,
    },
    KillRandom {
        restart_after: Duration,
    },
    KillAll {
        restart_after: Duration,
    },
    PauseLeader {
        pause: Duration,
    },
    PauseRandom {
        pause: Duration,
    },
    /// The leader cut off from every other node.
    PartitionLeader {
        heal_after: Duration,
    },
    /// A random minority cut off from the majority.
    PartitionHalves {
        heal_after: Duration,
    },
    /// Two halves that reach each other only through one node in the middle.
    PartitionBridge {
        heal_after: Duration,
    },
}

impl Fault {
    /// Whether this fault needs the nodes in network namespaces.
    pub fn partitions(&self) -> bool {
        matches!(self, Fault::PartitionLeader { .. } | Fault::PartitionHalves { .. } | Fault::PartitionBridge { .. })
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::KillLeader { restart_after } => write!(f, "kill -9 leader, restart after {restart_after:?}"),
            Fault::KillRandom { restart_after } => write!(f, "kill -9 a node, restart after {restart_after:?}"),
            Fault::KillAll { restart_after } => write!(f, "kill -9 every node, restart after {restart_after:?}"),
            Fault::PauseLeader { pause } => write!(f, "SIGSTOP leader for {pause:?}"),
            Fault::PauseRandom { pause } => write!(f, "SIGSTOP a node for {pause:?}"),
            Fault::PartitionLeader { heal_after } => write!(f, "cut the leader off, heal after {heal_after:?}"),
            Fault::PartitionHalves { heal_after } => write!(f, "split minority | majority, heal after {heal_after:?}"),
            Fault::PartitionBridge { heal_after } => write!(f, "bridge partition, heal after {heal_after:?}"),
        }
    }
}

/// What one fault did.
#[derive(Clone, Debug)]
pub struct FaultRecord {
    /// When it began, since the run's start.
    pub at: Duration,
    pub fault: Fault,
    /// The nodes killed or paused; for a partition, the groups cut from each other (a node in
    /// none, the bridge's middle, kept its links to all).
    pub nodes: Vec<u64>,
    pub groups: Vec<Vec<u64>>,
    /// From healing until a majority agreed on a leader again (`None`: it did not, in time).
    pub recovered_after: Option<Duration>,
    pub leader_after: Option<u64>,
}

impl fmt::Display for FaultRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.groups.is_empty() {
            write!(f, "{:>8.3}s  {} (nodes {:?}): ", self.at.as_secs_f64(), self.fault, self.nodes)?;
        } else {
            write!(f, "{:>8.3}s  {} (groups {:?}): ", self.at.as_secs_f64(), self.fault, self.groups)?;
        }
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

    /// The groups `fault` cuts apart (empty for a fault that is no partition).
    async fn partition_groups(&self, fault: Fault, rng: &mut StdRng) -> anyhow::Result<Vec<Vec<u64>>> {
        let mut ids = self.cluster.ids();
        ids.shuffle(rng);
        Ok(match fault {
            Fault::PartitionLeader { .. } => {
                let leader = self.leader().await?;
                vec![vec![leader], ids.into_iter().filter(|id| *id != leader).collect()]
            }
            Fault::PartitionHalves { .. } => {
                let minority = rng.random_range(1..=(ids.len() / 2).max(1));
                let majority = ids.split_off(minority);
                vec![ids, majority]
            }
            Fault::PartitionBridge { .. } => {
                let (_middle, rest) = ids.split_first().context("an empty cluster")?;
                let (left, right) = rest.split_at(rest.len() / 2);
                vec![left.to_vec(), right.to_vec()]
            }
            _ => Vec::new(),
        })
    }

    /// Does `fault`, heals it, and waits (bounded) for a leader. A fault whose target cannot
    /// be found (no leader in time) is skipped with an error.
    pub async fn inject(&mut self, fault: Fault, rng: &mut StdRng) -> anyhow::Result<&FaultRecord> {
        let nodes = match fault {
            Fault::KillLeader { .. } | Fault::PauseLeader { .. } => vec![self.leader().await?],
            Fault::KillRandom { .. } | Fault::PauseRandom { .. } => vec![self.random_node(rng)],
            Fault::KillAll { .. } => self.cluster.ids(),
            Fault::PartitionLeader { .. } | Fault::PartitionHalves { .. } | Fault::PartitionBridge { .. } => Vec::new(),
        };
        let groups = self.partition_groups(fault, rng).await?;
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
            Fault::PartitionLeader { heal_after }
            | Fault::PartitionHalves { heal_after }
            | Fault::PartitionBridge { heal_after } => {
                self.cluster.network().partition(&groups)?;
                tokio::time::sleep(heal_after).await;
                self.cluster.network().heal()?;
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
        self.log.push(FaultRecord { at, fault, nodes, groups, recovered_after, leader_after: leader });
        Ok(self.log.last().expect("just pushed"))
    }

    /// Waits until every node is up and ready and a leader is agreed on.
    pub async fn wait_healthy(&self) -> anyhow::Result<()> {
        self.cluster.wait_started(RECOVERY_TIMEOUT).await
    }
}
