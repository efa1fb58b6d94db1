//! A local 3-node Muster cluster of real `control-plane` processes: durable (redb, fsync),
//! plaintext (`[tls] insecure = true`, like the plaintext etcd it is compared with), each node
//! with its own data directory, TOML config and log file under the benchmark's temp dir.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use muster_client::{ClientOptions, ControlPlaneClient, ReadConsistency};

use crate::procs::{Processes, free_ports};
use crate::workload::KvClient;

/// Name of the node binary (the `control-plane` bin of `muster-control-plane`).
pub const BINARY: &str = "control-plane";

/// A running cluster; its processes die with it.
pub struct MusterCluster {
    pub procs: Processes,
    /// API addresses, leader first once [`MusterCluster::wait_ready`] has run.
    pub endpoints: Vec<String>,
    /// Admin (`/metrics`) addresses, in the order of [`Self::endpoints`].
    pub admins: Vec<String>,
}

/// Where to find `control-plane`: `--muster-bin-dir`, else next to this benchmark's binary.
pub fn locate_binary(bin_dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    let dir = match bin_dir {
        Some(dir) => dir.to_path_buf(),
        None => {
            std::env::current_exe()?.parent().context("the benchmark binary has no parent directory")?.to_path_buf()
        }
    };
    let path = dir.join(BINARY);
    if !path.is_file() {
        anyhow::bail!(
            "{} not found. Build it first with `cargo build --release --bins` (or point --muster-bin-dir at \
             the directory holding `{BINARY}`).",
            path.display()
        );
    }
    Ok(path)
}

/// Fails early, naming the build command, when one of the executables the e2e harness starts
/// (looked up in `muster_e2e::binaries::bin_dir()`) is missing.
pub fn require_harness_binaries(names: &[&str]) -> anyhow::Result<()> {
    let dir = muster_e2e::binaries::bin_dir();
    for name in names {
        anyhow::ensure!(
            dir.join(name).is_file(),
            "{} not found: build the binaries first with `cargo build --release --workspace --bins` (or set \
             MUSTER_BIN_DIR to the directory holding them)",
            dir.join(name).display()
        );
    }
    Ok(())
}

struct Node {
    id: u64,
    raft: String,
    api: String,
    admin: String,
}

/// How the bench's nodes run, beyond what every node shares.
#[derive(Clone, Copy, Debug)]
pub struct NodeOptions<'a> {
    /// `telemetry.log_level`.
    pub log_level: &'a str,
    /// `raft.profile_write_path`.
    pub profile_write_path: bool,
}

impl<'a> NodeOptions<'a> {
    pub fn logging(log_level: &'a str) -> Self {
        Self { log_level, profile_write_path: false }
    }
}

/// The node's TOML configuration.
fn config_toml(node: &Node, nodes: &[Node], data_dir: &Path, options: NodeOptions) -> String {
    let mut peers = String::new();
    for (i, peer) in nodes.iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        let _ =
            write!(peers, "{sep}{{ id = {}, raft_addr = \"{}\", api_addr = \"{}\" }}", peer.id, peer.raft, peer.api);
    }
    format!(
        "data_dir = {data_dir:?}\n\n[cluster]\nmode = \"raft\"\nnode_id = {id}\npeers = [{peers}]\n\n[listen]\n\
         raft_addr = \"{raft}\"\napi_addr = \"{api}\"\nadmin_addr = \"{admin}\"\n\n[tls]\ninsecure = true\n\n\
         [telemetry]\nlog_level = \"{log_level}\"\n\n[raft]\nprofile_write_path = {profile}\n",
        data_dir = data_dir.display().to_string(),
        log_level = options.log_level,
        profile = options.profile_write_path,
        id = node.id,
        raft = node.raft,
        api = node.api,
        admin = node.admin,
    )
}

impl MusterCluster {
    /// Writes the configs and starts three nodes under `root`.
    pub fn start(binary: &Path, root: &Path, options: NodeOptions) -> anyhow::Result<Self> {
        let ports = free_ports(9)?;
        let addr = |i: usize| format!("127.0.0.1:{}", ports[i]);
        let nodes: Vec<Node> = (0..3)
            .map(|i| Node { id: i as u64 + 1, raft: addr(3 * i), api: addr(3 * i + 1), admin: addr(3 * i + 2) })
            .collect();
        let mut procs = Processes::default();
        for node in &nodes {
            let dir = root.join(format!("muster-{}", node.id));
            std::fs::create_dir_all(&dir)?;
            let config = dir.join("config.toml");
            std::fs::write(&config, config_toml(node, &nodes, &dir.join("data"), options))?;
            let mut command = Command::new(binary);
            command.arg("--config").arg(&config);
            procs.spawn(&format!("muster node {}", node.id), command, &dir.join("node.log"), "MUSTER_")?;
        }
        Ok(Self {
            procs,
            endpoints: nodes.iter().map(|n| n.api.clone()).collect(),
            admins: nodes.iter().map(|n| n.admin.clone()).collect(),
        })
    }

    /// Waits until every node is ready and agrees on a leader that has recorded the cluster
    /// id and accepts a write; then puts the leader first in [`Self::endpoints`].
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let probe = ControlPlaneClient::new(ClientOptions {
            timeout: Duration::from_secs(1),
            ..ClientOptions::new(self.endpoints.clone())
        })?;
        let mut last = String::from("no answer yet");
        loop {
            self.procs.check_alive()?;
            if Instant::now() >= deadline {
                anyhow::bail!("Muster cluster not ready after {timeout:?}: {last}\n{}", self.procs.log_tails(15));
            }
            match self.leader_if_ready(&probe).await {
                Ok(leader) => {
                    let at = self.endpoints.iter().position(|e| *e == leader).unwrap_or(0);
                    self.endpoints.swap(0, at);
                    self.admins.swap(0, at);
                    break;
                }
                Err(err) => last = format!("{err:#}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let client = self.client()?;
        client.put("bench/probe".to_string(), b"ok".to_vec()).await.context("probe write to the Muster leader")?;
        Ok(())
    }

    async fn leader_if_ready(&self, probe: &ControlPlaneClient) -> anyhow::Result<String> {
        let mut leader = None;
        for endpoint in &self.endpoints {
            let meta = probe.metadata_of(endpoint).await?;
            if !meta.ready || meta.leader_id == 0 || meta.cluster_id.is_empty() {
                anyhow::bail!("node {} not ready (leader {}, ready {})", meta.node_id, meta.leader_id, meta.ready);
            }
            if leader.get_or_insert(meta.leader_api_addr.clone()) != &meta.leader_api_addr {
                anyhow::bail!("nodes disagree about the leader");
            }
        }
        leader.context("no endpoints")
    }

    /// A new client (own connection, own session id) that starts at the leader.
    pub fn client(&self) -> anyhow::Result<MusterKv> {
        MusterKv::connect(&self.endpoints)
    }
}

/// One benchmark client of Muster.
pub struct MusterKv(ControlPlaneClient);

impl MusterKv {
    /// A client with its own connections and session id; tries `endpoints` in order, so
    /// with the leader first every call goes straight to it.
    pub fn connect(endpoints: &[String]) -> anyhow::Result<Self> {
        Ok(Self(ControlPlaneClient::new(ClientOptions::new(endpoints.to_vec()))?))
    }
}

impl KvClient for MusterKv {
    async fn put(&self, key: String, value: Vec<u8>) -> anyhow::Result<()> {
        let result = self.0.put(&key, value).await?;
        anyhow::ensure!(result.succeeded, "put of {key} not applied: {result:?}");
        Ok(())
    }

    async fn get(&self, key: String) -> anyhow::Result<bool> {
        Ok(self.0.get(&key, ReadConsistency::Linearizable).await?.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_nodes() -> Vec<Node> {
        (1..=3)
            .map(|id| Node {
                id,
                raft: format!("127.0.0.1:{}", 1000 + id),
                api: format!("127.0.0.1:{}", 2000 + id),
                admin: format!("127.0.0.1:{}", 3000 + id),
            })
            .collect()
    }

    #[test]
    fn config_names_every_peer_and_listener() {
        let nodes = test_nodes();
        let text = config_toml(&nodes[1], &nodes, Path::new("/tmp/x/data"), NodeOptions::logging("info"));
        assert!(text.contains("node_id = 2\n"));
        assert!(text.contains("{ id = 3, raft_addr = \"127.0.0.1:1003\", api_addr = \"127.0.0.1:2003\" }"));
        assert!(text.contains("admin_addr = \"127.0.0.1:3002\""));
        assert!(text.contains("insecure = true"));
        assert!(text.starts_with("data_dir = \"/tmp/x/data\"\n"));
    }

    #[test]
    fn config_is_what_the_daemon_accepts() {
        let nodes = test_nodes();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            config_toml(
                &nodes[0],
                &nodes,
                &dir.path().join("data"),
                NodeOptions { log_level: "warn", profile_write_path: true },
            ),
        )
        .unwrap();
        let config: muster_config::ControlPlaneConfig = muster_config::ConfigLoader::new().file(&path).load().unwrap();
        config.validate().unwrap();
        assert!(config.tls.insecure);
        assert_eq!(config.advertised_api_addr(), "127.0.0.1:2001");
        assert_eq!(config.telemetry.log_level, "warn");
        assert!(config.raft.profile_write_path);
        match config.cluster {
            muster_config::ClusterMode::Raft { node_id, peers } => {
                assert_eq!(node_id, 1);
                assert_eq!(peers.len(), 3);
                assert_eq!(peers[2].api_addr, "127.0.0.1:2003");
            }
            other => panic!("wrong mode {other:?}"),
        }
    }
}
