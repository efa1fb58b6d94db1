//! The simulated fleet, split over processes of its own (`muster-bench fleet-part`, hidden).
//!
//! One process may hold at most its hard open-file limit of sockets (20,000 on the benchmark
//! machine, which a process without `CAP_SYS_RESOURCE` cannot raise), so 100,000 workers
//! cannot live in one. Each part runs a [`Fleet`] of at most [`PART_WORKERS`] workers read
//! from a file, and prints what its workers have seen four times a second as one JSON line;
//! the benchmark reads those lines. Killing a part (SIGKILL) kills its workers at once, the
//! way a rack loses power: their connections close and no LEFT report is sent.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use muster_e2e::fleet::{BeatPlan, Fleet, SimIdentity};
use muster_e2e::v1;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;

/// Most workers in one part: well under 20,000 descriptors with the runtime's own.
pub const PART_WORKERS: usize = 15_000;
/// How often a part reports.
const REPORT_EVERY: Duration = Duration::from_millis(250);

/// A [`SimIdentity`] as a part's input file holds it (one JSON document per line).
#[derive(Serialize, Deserialize)]
struct IdentityLine {
    worker_id: u64,
    chain_pem: String,
    key_pem: String,
    /// (gateway id, address).
    gateways: Vec<(String, String)>,
}

impl From<&SimIdentity> for IdentityLine {
    fn from(identity: &SimIdentity) -> Self {
        Self {
            worker_id: identity.worker_id,
            chain_pem: identity.chain_pem.clone(),
            key_pem: identity.key_pem.clone(),
            gateways: identity.gateways.iter().map(|g| (g.gateway_id.clone(), g.addr.clone())).collect(),
        }
    }
}

impl From<IdentityLine> for SimIdentity {
    fn from(line: IdentityLine) -> Self {
        let gateways =
            line.gateways.into_iter().map(|(gateway_id, addr)| v1::GatewayEndpoint { gateway_id, addr }).collect();
        Self { worker_id: line.worker_id, chain_pem: line.chain_pem, key_pem: line.key_pem, gateways }
    }
}

/// What a part's workers have seen so far.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PartStatus {
    pub workers: usize,
    /// Acks received.
    pub acks: u64,
    /// Workers acked at least once.
    pub acked: usize,
    pub stream_errors: u64,
    pub median_ttl_ms: u32,
    pub max_ttl_ms: u32,
    /// Workers beating to each gateway now.
    pub spread: BTreeMap<String, usize>,
}

fn status_of(fleet: &Fleet, workers: usize) -> PartStatus {
    let mut ttls: Vec<u32> =
        fleet.stats.last_ttl_ms.lock().unwrap_or_else(|p| p.into_inner()).iter().copied().filter(|t| *t > 0).collect();
    ttls.sort_unstable();
    PartStatus {
        workers,
        acks: fleet.stats.acks.load(Ordering::Relaxed),
        acked: ttls.len(),
        stream_errors: fleet.stats.stream_errors.load(Ordering::Relaxed),
        median_ttl_ms: ttls.get(ttls.len() / 2).copied().unwrap_or(0),
        max_ttl_ms: ttls.last().copied().unwrap_or(0),
        spread: fleet.stats.spread().into_iter().filter(|(gateway, _)| !gateway.is_empty()).collect(),
    }
}

/// `muster-bench fleet-part`: runs the workers of `--identities` until killed (or until its
/// standard input closes: the benchmark is gone).
#[derive(clap::Parser, Debug, Clone)]
pub struct FleetPartArgs {
    /// One JSON identity per line.
    #[arg(long)]
    pub identities: PathBuf,
    /// The cluster CA (gateways' certificates chain to it).
    #[arg(long)]
    pub ca: PathBuf,
    /// Local addresses to connect from, in turn.
    #[arg(long, value_delimiter = ',')]
    pub sources: Vec<IpAddr>,
}

pub async fn run_part(args: FleetPartArgs) -> anyhow::Result<()> {
    crate::procs::raise_open_files(PART_WORKERS as u64 + 4096);
    let text = std::fs::read_to_string(&args.identities).context("reading the identities")?;
    let identities = text
        .lines()
        .map(|line| serde_json::from_str::<IdentityLine>(line).map(SimIdentity::from))
        .collect::<Result<Vec<_>, _>>()
        .context("parsing the identities")?;
    let ca_pem = std::fs::read_to_string(&args.ca).context("reading the CA")?;
    let fleet = Fleet::start_from(&identities, &ca_pem, BeatPlan { fixed_interval: None }, &args.sources)?;
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut ticks = tokio::time::interval(REPORT_EVERY);
    loop {
        tokio::select! {
            _ = ticks.tick() => println!("{}", serde_json::to_string(&status_of(&fleet, identities.len()))?),
            line = stdin.next_line() => if !matches!(line, Ok(Some(_))) { return Ok(()) },
        }
    }
}

/// A running part, seen from the benchmark.
pub struct Part {
    child: tokio::process::Child,
    status: Arc<Mutex<PartStatus>>,
    _dir: tempfile::TempDir,
}

impl Part {
    /// Starts a part for `identities` (at most [`PART_WORKERS`]).
    pub fn start(identities: &[SimIdentity], ca_pem: &str, sources: &[IpAddr]) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("muster-bench-part-").tempdir()?;
        let file = dir.path().join("identities.jsonl");
        let mut text = String::new();
        for identity in identities {
            text.push_str(&serde_json::to_string(&IdentityLine::from(identity))?);
            text.push('\n');
        }
        std::fs::write(&file, text)?;
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, ca_pem)?;
        let sources: Vec<String> = sources.iter().map(ToString::to_string).collect();
        let mut command = tokio::process::Command::new(std::env::current_exe()?);
        command.arg("fleet-part").arg("--identities").arg(&file).arg("--ca").arg(&ca);
        if !sources.is_empty() {
            command.arg("--sources").arg(sources.join(","));
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting a fleet part")?;
        let stdout = child.stdout.take().context("the part's output")?;
        let status = Arc::new(Mutex::new(PartStatus { workers: identities.len(), ..Default::default() }));
        let latest = status.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(status) = serde_json::from_str::<PartStatus>(&line) {
                    *latest.lock().unwrap_or_else(|p| p.into_inner()) = status;
                }
            }
        });
        Ok(Self { child, status, _dir: dir })
    }

    /// Starts as many parts as `identities` need.
    pub fn start_all(identities: &[SimIdentity], ca_pem: &str, sources: &[IpAddr]) -> anyhow::Result<Vec<Self>> {
        identities.chunks(PART_WORKERS).map(|chunk| Self::start(chunk, ca_pem, sources)).collect()
    }

    pub fn status(&self) -> PartStatus {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// SIGKILL: every worker of the part dies at once.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_line_keeps_every_field() {
        let identity = SimIdentity {
            worker_id: 7,
            chain_pem: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
            key_pem: "key\n".into(),
            gateways: vec![v1::GatewayEndpoint { gateway_id: "gw-1".into(), addr: "127.0.0.1:1".into() }],
        };
        let line = serde_json::to_string(&IdentityLine::from(&identity)).unwrap();
        assert!(!line.contains('\n'), "one line: {line}");
        let back = SimIdentity::from(serde_json::from_str::<IdentityLine>(&line).unwrap());
        assert_eq!((back.worker_id, back.chain_pem, back.key_pem), (7, identity.chain_pem, identity.key_pem));
        assert_eq!(back.gateways[0].gateway_id, "gw-1");
        assert_eq!(back.gateways[0].addr, "127.0.0.1:1");
    }

    #[test]
    fn a_status_line_round_trips() {
        let status =
            PartStatus { workers: 3, acks: 9, acked: 3, spread: [("gw-1".into(), 3)].into(), ..Default::default() };
        let back: PartStatus = serde_json::from_str(&serde_json::to_string(&status).unwrap()).unwrap();
        assert_eq!((back.workers, back.acks, back.acked, back.spread), (3, 9, 3, status.spread));
    }
}
