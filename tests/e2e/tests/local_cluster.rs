//! `deploy/scripts/local-cluster.sh`, the README's "without Docker" path: it starts a whole
//! worker tier (3 nodes, registrar, gateway, 3 agents), so the README's `workers` lines work
//! against it, and `stop` leaves no process behind.
//!
//! The script runs the binaries under test (`MUSTER_BIN_DIR`) on a block of free ports
//! (`MUSTER_LOCAL_BASE_PORT`) in a temporary `MUSTER_LOCAL_DIR`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use muster_e2e::binaries::bin_dir;
use muster_e2e::compose::{repo_root, run};

/// Ports the script uses from its base (see its header).
const PORTS: u16 = 37;

/// The lowest port the kernel hands out for port 0 and outgoing connections.
fn ephemeral_low() -> u16 {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    range.split_whitespace().next().and_then(|low| low.parse().ok()).unwrap_or(32_768)
}

/// A base port with `PORTS` free ports from it, all bound at once to check, then released.
///
/// The block lies below the kernel's ephemeral range: the other tests running beside this one
/// bind port 0 and connect out all the time, and a port from that range could be taken between
/// this check and the script's own bind.
fn free_block() -> u16 {
    let low = 10_000;
    let span = ephemeral_low().saturating_sub(low + PORTS).max(1_000);
    for _ in 0..200 {
        let base = low + rand::random::<u16>() % span;
        let held: Vec<_> =
            (base..base + PORTS).map_while(|port| std::net::TcpListener::bind(("127.0.0.1", port)).ok()).collect();
        if held.len() == usize::from(PORTS) {
            return base;
        }
    }
    panic!("no block of {PORTS} free loopback ports found");
}

struct LocalCluster {
    dir: tempfile::TempDir,
    base: u16,
}

impl LocalCluster {
    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new("bash");
        command.arg(repo_root().join("deploy/scripts/local-cluster.sh")).args(args);
        muster_e2e::process::without_muster_env(&mut command);
        command
            .env("MUSTER_LOCAL_DIR", self.dir.path())
            .env("MUSTER_BIN_DIR", bin_dir())
            .env("MUSTER_LOCAL_BASE_PORT", self.base.to_string());
        command
    }

    async fn script(&self, args: &[&str]) -> (bool, String) {
        let outcome = run(self.command(args), Duration::from_secs(180)).await.expect("running local-cluster.sh");
        (outcome.ok, outcome.text())
    }

    fn pids(&self) -> Vec<PathBuf> {
        let pids = std::fs::read_dir(self.dir.path()).map(|entries| {
            entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "pid"))
        });
        pids.map(Iterator::collect).unwrap_or_default()
    }

    fn musterctl(&self, args: &[&str]) -> tokio::process::Command {
        let base = self.base;
        let endpoints = format!("127.0.0.1:{},127.0.0.1:{},127.0.0.1:{}", base + 1, base + 11, base + 21);
        let mut command = tokio::process::Command::new(bin_dir().join("musterctl"));
        let tls = self.dir.path().join("tls");
        muster_e2e::process::without_muster_env(&mut command);
        command.arg("--tls-dir").arg(tls).args(["--endpoints", &endpoints]).args(args);
        command
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        // Whatever happened, stop every process the script started.
        for pid_file in self.pids() {
            if let Some(pid) = std::fs::read_to_string(&pid_file).ok().and_then(|p| p.trim().parse::<i32>().ok()) {
                let _ = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
    }
}

fn log_tails(dir: &Path) -> String {
    let mut out = String::new();
    for name in ["node1", "registrar", "gateway", "agent1"] {
        let log = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(8).collect();
        out.push_str(&format!("--- {name}.log\n{}\n", tail.into_iter().rev().collect::<Vec<_>>().join("\n")));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn the_local_cluster_starts_a_worker_tier_the_readme_lines_work_on_and_stops_clean() {
    let cluster = LocalCluster { dir: tempfile::tempdir().unwrap(), base: free_block() };
    let (ok, out) = cluster.script(&["start"]).await;
    assert!(ok, "local-cluster.sh start failed:\n{out}\n{}", log_tails(cluster.dir.path()));
    for n in 1..=3 {
        assert!(out.contains(&format!("local-agent-{n}")), "agent {n} is not in the workers list:\n{out}");
    }
    assert_eq!(out.matches("  ready  ").count(), 3, "three Ready workers:\n{out}");

    // The README's worker lines, on a worker the cluster has.
    let listed = run(cluster.musterctl(&["workers", "list", "-o", "json"]), Duration::from_secs(30)).await.unwrap();
    let workers: serde_json::Value = serde_json::from_str(&listed.stdout).expect("workers list -o json");
    let id = workers[0]["id"].as_u64().expect("a worker id").to_string();
    for args in [
        vec!["workers", "get", id.as_str()],
        vec!["workers", "label", id.as_str(), "tier=gpu"],
        vec!["workers", "drain", id.as_str()],
    ] {
        let outcome = run(cluster.musterctl(&args), Duration::from_secs(30)).await.unwrap();
        assert!(outcome.ok, "musterctl {args:?}: {}", outcome.text());
    }

    let (ok, out) = cluster.script(&["stop"]).await;
    assert!(ok, "local-cluster.sh stop failed:\n{out}");
    assert!(cluster.pids().is_empty(), "stop left pid files: {:?}", cluster.pids());
    let leaves = std::fs::read_to_string(cluster.dir.path().join("agent1.log")).unwrap_or_default();
    assert!(leaves.contains("reported the graceful leave"), "agent 1 did not leave gracefully:\n{leaves}");
}
