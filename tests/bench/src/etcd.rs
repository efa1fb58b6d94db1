//! A local 3-node etcd cluster (default durability: every commit is fsynced), started from
//! the `etcd` binary with static bootstrap, each member with its own data dir and log file
//! under the benchmark's temp dir. Clients talk plaintext, or TLS with client certificates
//! ([`EtcdTls`]) when compared with Muster's mTLS; members always talk plaintext to each other.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use tonic::transport::ClientTlsConfig;

use crate::etcd_rpc::EtcdKv;
use crate::procs::{Processes, free_ports};

/// Client-facing TLS of every member: its certificate and key, and the CA client
/// certificates must chain to (`--client-cert-auth`); `client` is what clients present.
#[derive(Clone)]
pub struct EtcdTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client: ClientTlsConfig,
}

impl EtcdTls {
    /// From the e2e harness's throwaway CA: a control-plane certificate (it serves 127.0.0.1)
    /// for the members, the operator certificate for every client. `pki` must outlive the
    /// members (they read its files).
    pub fn from_test_pki(pki: &muster_e2e::pki::Pki) -> Self {
        let member = pki.node(1);
        Self { ca: member.ca, cert: member.cert, key: member.key, client: pki.operator_tls() }
    }
}

/// A running etcd cluster; its processes die with it.
pub struct EtcdCluster {
    pub procs: Processes,
    /// Client addresses (`host:port`), leader first once [`EtcdCluster::wait_ready`] has run.
    pub endpoints: Vec<String>,
    /// The leader's process id, once [`EtcdCluster::wait_ready`] has run.
    pub leader_pid: Option<u32>,
    /// What clients present, when the members serve TLS.
    pub client_tls: Option<ClientTlsConfig>,
}

/// `etcd --version`'s first line, or why it could not run.
pub fn version(binary: &Path) -> anyhow::Result<String> {
    let output = Command::new(binary).arg("--version").output().with_context(|| {
        format!("running `{} --version` (install it with `apt-get install etcd-server`)", binary.display())
    })?;
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text.lines().next().unwrap_or("etcd (unknown version)").trim().to_string())
}

/// The `etcd` flags of member `i` (0-based) of a cluster with these client and peer ports.
pub fn member_args(
    i: usize,
    client_ports: &[u16],
    peer_ports: &[u16],
    data_dir: &Path,
    tls: Option<&EtcdTls>,
) -> Vec<String> {
    let url = |scheme: &str, port: u16| format!("{scheme}://127.0.0.1:{port}");
    let client_scheme = if tls.is_some() { "https" } else { "http" };
    let initial_cluster: Vec<String> =
        peer_ports.iter().enumerate().map(|(j, port)| format!("e{}={}", j + 1, url("http", *port))).collect();
    let mut pairs = vec![
        ("--name", format!("e{}", i + 1)),
        ("--data-dir", data_dir.display().to_string()),
        ("--listen-client-urls", url(client_scheme, client_ports[i])),
        ("--advertise-client-urls", url(client_scheme, client_ports[i])),
        ("--listen-peer-urls", url("http", peer_ports[i])),
        ("--initial-advertise-peer-urls", url("http", peer_ports[i])),
        ("--initial-cluster", initial_cluster.join(",")),
        ("--initial-cluster-state", "new".to_string()),
        ("--initial-cluster-token", "muster-bench".to_string()),
        ("--logger", "zap".to_string()),
    ];
    if let Some(tls) = tls {
        pairs.push(("--cert-file", tls.cert.display().to_string()));
        pairs.push(("--key-file", tls.key.display().to_string()));
        pairs.push(("--trusted-ca-file", tls.ca.display().to_string()));
    }
    let mut args: Vec<String> = pairs.into_iter().flat_map(|(flag, value)| [flag.to_string(), value]).collect();
    if tls.is_some() {
        // A boolean flag: etcd takes no separate value.
        args.push("--client-cert-auth".to_string());
    }
    args
}

impl EtcdCluster {
    /// Starts three members under `root`, serving clients over TLS when `tls` is given.
    pub fn start(binary: &Path, root: &Path, tls: Option<&EtcdTls>) -> anyhow::Result<Self> {
        let ports = free_ports(6)?;
        let (client_ports, peer_ports) = ports.split_at(3);
        let mut procs = Processes::default();
        for i in 0..3 {
            let dir = root.join(format!("etcd-{}", i + 1));
            std::fs::create_dir_all(&dir)?;
            let mut command = Command::new(binary);
            command.args(member_args(i, client_ports, peer_ports, &dir.join("data"), tls));
            procs.spawn(&format!("etcd member e{}", i + 1), command, &dir.join("etcd.log"), "ETCD_")?;
        }
        let endpoints = client_ports.iter().map(|port| format!("127.0.0.1:{port}")).collect();
        Ok(Self { procs, endpoints, leader_pid: None, client_tls: tls.map(|tls| tls.client.clone()) })
    }

    /// A client of the first endpoint (the leader once [`Self::wait_ready`] has run).
    pub fn leader_client(&self) -> anyhow::Result<EtcdKv> {
        EtcdKv::with_tls(&self.endpoints[0], self.client_tls.as_ref())
    }

    /// Waits until every member answers `Status` naming the same leader and the leader
    /// accepts a write; then puts the leader first in [`Self::endpoints`].
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let clients: Vec<EtcdKv> =
            self.endpoints.iter().map(|e| EtcdKv::with_tls(e, self.client_tls.as_ref())).collect::<Result<_, _>>()?;
        let pids = self.procs.pids();
        let mut last = String::from("no answer yet");
        loop {
            self.procs.check_alive()?;
            if Instant::now() >= deadline {
                anyhow::bail!("etcd cluster not healthy after {timeout:?}: {last}\n{}", self.procs.log_tails(15));
            }
            match leader_index(&clients).await {
                Ok(leader) => {
                    let probe = clients[leader].put_raw(b"bench/probe".to_vec(), b"ok".to_vec()).await;
                    match probe {
                        Ok(_) => {
                            self.leader_pid = pids.get(leader).copied();
                            let addr = self.endpoints.remove(leader);
                            self.endpoints.insert(0, addr);
                            return Ok(());
                        }
                        Err(status) => last = format!("probe write: {}", status.message()),
                    }
                }
                Err(err) => last = format!("{err:#}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Which of `clients` is connected to the leader all members agree on.
async fn leader_index(clients: &[EtcdKv]) -> anyhow::Result<usize> {
    let mut leader = None;
    let mut members = Vec::new();
    for client in clients {
        let status = client.status().await?;
        anyhow::ensure!(status.leader != 0, "a member knows no leader yet");
        anyhow::ensure!(*leader.get_or_insert(status.leader) == status.leader, "members disagree about the leader");
        members.push(status.header.map_or(0, |h| h.member_id));
    }
    let leader = leader.context("no members")?;
    members.iter().position(|id| *id == leader).context("the leader is not one of the members")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_share_the_initial_cluster() {
        let args = member_args(1, &[1, 2, 3], &[11, 12, 13], Path::new("/d"), None);
        let value = |flag: &str| args.iter().position(|a| a == flag).map(|i| args[i + 1].as_str());
        assert_eq!(value("--name"), Some("e2"));
        assert_eq!(value("--listen-client-urls"), Some("http://127.0.0.1:2"));
        assert_eq!(value("--initial-advertise-peer-urls"), Some("http://127.0.0.1:12"));
        assert_eq!(
            value("--initial-cluster"),
            Some("e1=http://127.0.0.1:11,e2=http://127.0.0.1:12,e3=http://127.0.0.1:13")
        );
        assert_eq!(value("--initial-cluster-state"), Some("new"));
        assert!(!args.iter().any(|a| a == "--client-cert-auth"));
    }

    #[test]
    fn tls_members_serve_clients_over_https_and_peers_over_http() {
        let tls = EtcdTls {
            ca: "/pki/ca.pem".into(),
            cert: "/pki/node.pem".into(),
            key: "/pki/node-key.pem".into(),
            client: ClientTlsConfig::new(),
        };
        let args = member_args(0, &[1, 2, 3], &[11, 12, 13], Path::new("/d"), Some(&tls));
        let value = |flag: &str| args.iter().position(|a| a == flag).map(|i| args[i + 1].as_str());
        assert_eq!(value("--listen-client-urls"), Some("https://127.0.0.1:1"));
        assert_eq!(value("--listen-peer-urls"), Some("http://127.0.0.1:11"));
        assert_eq!(value("--trusted-ca-file"), Some("/pki/ca.pem"));
        assert_eq!(args.last().map(String::as_str), Some("--client-cert-auth"));
    }
}
