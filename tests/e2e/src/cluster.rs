//! [`Cluster`]: a set of real `control-plane` processes on loopback, each with its own
//! temporary directory, plus the controls and clients tests need. Dropping it SIGKILLs every
//! node; when the test is panicking it first prints the tail of every node's log.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use muster_client::{ClientOptions, ControlPlaneClient};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::config::{NodeAddrs, NodeConfig, Options};
use crate::netns::NamespaceNetwork;
use crate::pki::Pki;
use crate::process::NodeProcess;

/// How long `start` waits for the first leader and for every node to be ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How many times `start` tries fresh ports after a port clash.
const START_ATTEMPTS: u32 = 3;
/// How long a client keeps retrying one call (leader changes, unreachable nodes).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);
/// Log lines printed per node when a test fails.
const LOG_TAIL_LINES: usize = 60;

pub struct Cluster {
    pub options: Options,
    pki: Option<Pki>,
    nodes: BTreeMap<u64, NodeProcess>,
    /// The nodes' namespaces when `options.isolated_network` (dropped after the nodes).
    network: Option<NamespaceNetwork>,
    /// Operator channels by API address, reused by every probe (a channel reconnects by
    /// itself after its node restarts).
    api_channels: Mutex<HashMap<String, Channel>>,
}

impl Cluster {
    /// Starts nodes `1..=n` as one bootstrapping cluster, then waits (bounded) for a leader
    /// and for every node to report ready. A start that fails only because another process
    /// took one of the picked ports is retried on fresh ports.
    pub async fn start(n: u64, options: Options) -> Self {
        for attempt in 1..=START_ATTEMPTS {
            let cluster = Self::spawn(n, options.clone());
            match cluster.wait_started(START_TIMEOUT).await {
                Ok(()) => return cluster,
                Err(err) if attempt < START_ATTEMPTS && cluster.port_clash() => {
                    eprintln!("e2e: cluster start attempt {attempt} hit a port clash, retrying: {err:#}");
                }
                Err(err) => panic!("a {n}-node cluster did not start: {err:#}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Whether some node exited because one of its ports was taken.
    fn port_clash(&self) -> bool {
        self.nodes.values().any(NodeProcess::port_clash)
    }

    /// Writes the configs of nodes `1..=n` and starts them, without waiting for anything.
    pub fn spawn(n: u64, options: Options) -> Self {
        let pki = options.tls.then(|| match options.leaf_cert_validity {
            Some(validity) => Pki::with_leaf_validity(validity),
            None => Pki::new(),
        });
        let network = options
            .isolated_network
            .then(|| NamespaceNetwork::new().unwrap_or_else(|err| panic!("building the test network: {err:#}")));
        let mut cluster = Self { options, pki, nodes: BTreeMap::new(), network, api_channels: Mutex::default() };
        let peers: Vec<NodeAddrs> = (1..=n).map(|id| cluster.new_addrs(id)).collect();
        for addrs in &peers {
            cluster.create_node(addrs.clone(), &peers, &[]);
        }
        cluster
    }

    /// Addresses for a new node `id`: free loopback ports, or a namespace of its own.
    fn new_addrs(&mut self, id: u64) -> NodeAddrs {
        match &mut self.network {
            None => NodeAddrs::free(id),
            Some(network) => {
                network.add_node(id).unwrap_or_else(|err| panic!("a namespace for node {id}: {err:#}"));
                NodeAddrs::on_ip(id, &network.ip(id))
            }
        }
    }

    fn create_node(&mut self, addrs: NodeAddrs, peers: &[NodeAddrs], join: &[String]) {
        let id = addrs.id;
        assert!(!self.nodes.contains_key(&id), "node {id} already exists");
        let dir = tempfile::Builder::new().prefix(&format!("muster-e2e-node{id}-")).tempdir().expect("node temp dir");
        let tls = self.pki.as_ref().map(|pki| pki.node_on(id, addrs.host()));
        let data_dir = NodeProcess::data_dir(dir.path());
        let config =
            NodeConfig { node: &addrs, peers, data_dir: &data_dir, join, tls: tls.as_ref(), options: &self.options };
        let text = config.render();
        let mut node = NodeProcess::new(addrs, dir, &text);
        node.set_env(self.process_env(id));
        if let Some(network) = &self.network {
            node.set_prefix(network.exec_prefix(id));
        }
        node.start();
        self.nodes.insert(id, node);
    }

    /// Starts node `id` on fresh ports with `join = [<api addr of join_via>]`: it asks the
    /// cluster to add it as a learner. Does not wait.
    pub fn add_node(&mut self, id: u64, join_via: u64) {
        let via = self.addrs(join_via).api.clone();
        let addrs = self.new_addrs(id);
        self.create_node(addrs.clone(), std::slice::from_ref(&addrs), &[via]);
    }

    /// Every node id the harness created, running or not.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// Ids of the nodes the harness started and has not killed.
    pub fn live_ids(&self) -> Vec<u64> {
        self.nodes.iter().filter(|(_, node)| node.is_started()).map(|(id, _)| *id).collect()
    }

    pub fn addrs(&self, id: u64) -> &NodeAddrs {
        &self.node(id).addrs
    }

    /// Node `id`'s `data_dir`.
    pub fn data_dir(&self, id: u64) -> std::path::PathBuf {
        NodeProcess::data_dir(self.node(id).dir())
    }

    /// Node `id`'s configuration file (what its process is started with).
    pub fn config_path(&self, id: u64) -> std::path::PathBuf {
        self.node(id).config_path()
    }

    fn node(&self, id: u64) -> &NodeProcess {
        self.nodes.get(&id).unwrap_or_else(|| panic!("no node {id} in this cluster"))
    }

    fn node_mut(&mut self, id: u64) -> &mut NodeProcess {
        self.nodes.get_mut(&id).unwrap_or_else(|| panic!("no node {id} in this cluster"))
    }

    /// SIGKILLs node `id`.
    pub fn kill(&mut self, id: u64) {
        self.node_mut(id).kill();
    }

    /// Starts a killed node again from the same config and data directory. Does not wait.
    pub fn restart(&mut self, id: u64) {
        self.node_mut(id).start();
    }

    /// Replaces node `id`'s own environment (`options.node_env`) from its next start on,
    /// e.g. to restart it with another clock rate.
    pub fn set_node_env(&mut self, id: u64, env: Vec<(String, String)>) {
        self.options.node_env.insert(id, env);
        let env = self.process_env(id);
        self.node_mut(id).set_env(env);
    }

    /// The extra environment of node `id`'s process: the cluster's, then the node's own.
    fn process_env(&self, id: u64) -> Vec<(String, String)> {
        let node_env = self.options.node_env.get(&id).into_iter().flatten();
        self.options.env.iter().chain(node_env).cloned().collect()
    }

    /// Whether node `id`'s process is alive (false after a kill or a crash).
    pub fn is_running(&self, id: u64) -> bool {
        self.node(id).is_running()
    }

    /// Fails naming every node the harness started that has exited on its own.
    pub fn check_processes(&self) -> anyhow::Result<()> {
        let dead: Vec<String> = self
            .nodes
            .iter()
            .filter_map(|(id, node)| {
                let status = node.exited()?;
                Some(format!("node {id} exited ({status}): {}", node.log_tail(1)))
            })
            .collect();
        anyhow::ensure!(dead.is_empty(), "{}", dead.join("; "));
        Ok(())
    }

    /// The nodes' network namespaces, to cut and heal links (`options.isolated_network`).
    pub fn network(&mut self) -> &mut NamespaceNetwork {
        self.network.as_mut().expect("the cluster was started with options.isolated_network")
    }

    pub fn pki(&self) -> Option<&Pki> {
        self.pki.as_ref()
    }

    /// Client TLS as the operator, or `None` for an insecure cluster.
    pub fn operator_tls(&self) -> Option<ClientTlsConfig> {
        self.pki.as_ref().map(Pki::operator_tls)
    }

    /// A leader-following client over every live node's API address.
    pub fn client(&self) -> ControlPlaneClient {
        let endpoints = self.live_ids().into_iter().map(|id| self.addrs(id).api.clone()).collect();
        self.client_with(endpoints, self.operator_client_tls())
    }

    /// A client whose only endpoint is node `id` (it still follows leader hints).
    pub fn client_for(&self, id: u64) -> ControlPlaneClient {
        self.client_with(vec![self.addrs(id).api.clone()], self.operator_client_tls())
    }

    /// The operator's TLS as Muster's clients use it (checking the server is a control-plane
    /// node), or `None` for an insecure cluster.
    pub fn operator_client_tls(&self) -> Option<muster_tls::ClientTls> {
        self.pki.as_ref().map(Pki::operator_client_tls)
    }

    pub fn client_with(&self, endpoints: Vec<String>, tls: Option<muster_tls::ClientTls>) -> ControlPlaneClient {
        let mut options = ClientOptions::new(endpoints);
        options.tls = tls;
        options.timeout = CLIENT_TIMEOUT;
        ControlPlaneClient::new(options).expect("building a client")
    }

    /// A raw channel to node `id`'s API port, as the operator (shared, connected on first use).
    pub fn api_channel(&self, id: u64) -> Channel {
        let addr = &self.addrs(id).api;
        let mut channels = self.api_channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        channels.entry(addr.clone()).or_insert_with(|| channel(addr, self.operator_tls())).clone()
    }

    /// A raw channel to node `id`'s Raft port; under TLS it presents a node certificate,
    /// since that port admits only control-plane peers.
    pub fn raft_channel(&self, id: u64) -> Channel {
        channel(&self.addrs(id).raft, self.pki.as_ref().map(|pki| pki.node_tls(id)))
    }

    /// Node `id`'s process id.
    pub fn pid(&self, id: u64) -> u32 {
        self.node(id).pid().unwrap_or_else(|| panic!("node {id} is not running"))
    }

    /// Node `id`'s whole log.
    pub fn log_text(&self, id: u64) -> String {
        std::fs::read_to_string(self.node(id).log_path()).unwrap_or_default()
    }

    /// The tail of node `id`'s log.
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        self.node(id).log_tail(lines)
    }
}

/// A lazily connecting channel to `addr`, over TLS when given.
pub fn channel(addr: &str, tls: Option<ClientTlsConfig>) -> Channel {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .expect("a valid endpoint")
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10));
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).expect("a valid client TLS config");
    }
    endpoint.connect_lazy()
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            node.kill();
        }
        if std::thread::panicking() {
            for (id, node) in &self.nodes {
                eprintln!(
                    "\n===== node {id} ({}): last {LOG_TAIL_LINES} log lines of {} =====\n{}",
                    node.addrs.api,
                    node.log_path().display(),
                    node.log_tail(LOG_TAIL_LINES)
                );
            }
        }
    }
}
