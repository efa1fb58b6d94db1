//! What a test cluster looks like on disk and on the network: free loopback ports, each
//! node's three addresses, the cluster-wide [`Options`] and the TOML file a node starts from.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};

/// Cluster-wide settings of a test cluster.
#[derive(Clone, Debug)]
pub struct Options {
    /// mTLS with a throwaway CA (else `tls.insecure = true`).
    pub tls: bool,
    /// `raft.snapshot_after_logs`.
    pub snapshot_after_logs: u64,
    /// `raft.max_logs_to_keep`.
    pub max_logs_to_keep: u64,
    /// `limits.max_message_bytes`, when not the daemon's default.
    pub max_message_bytes: Option<usize>,
    /// `raft.snapshot_chunk_bytes` (default 64 KiB, below the smallest message limit tests use).
    pub snapshot_chunk_bytes: Option<usize>,
    /// `raft.heartbeat_interval`, `election_timeout_min` and `election_timeout_max`.
    pub raft_timing: [&'static str; 3],
    /// Extra lines for the `[raft]` table (e.g. `max_clock_drift_percent = 0`).
    pub raft_extra: &'static str,
    /// `telemetry.log_level`.
    pub log_level: &'static str,
    /// Run in `worker-tier` mode (role `server`) with this heartbeat policy, instead of `raft`.
    pub heartbeat: Option<HeartbeatPolicy>,
    /// Extra lines for the `[leases]` table (e.g. `max_expiries_per_second = 5`).
    pub leases: &'static str,
    /// Extra environment of every process started for this cluster: its nodes, and the
    /// registrars and gateways in front of it (e.g. `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub env: Vec<(String, String)>,
    /// TOML tables appended to every node's config (e.g. `[limits.listener]`).
    pub extra_toml: String,
    /// Extra environment of one node's process, after `env` (e.g. a fake clock).
    pub node_env: BTreeMap<u64, Vec<(String, String)>>,
    /// Each node in its own network namespace (see [`crate::netns`]), so tests can cut
    /// links between nodes; needs root.
    pub isolated_network: bool,
    /// Run in the seed's `static` mode with these settings, instead of `raft` (overrides
    /// `heartbeat`).
    pub static_mode: Option<StaticPolicy>,
    /// Validity of the node and component certificates (default: a day).
    pub leaf_cert_validity: Option<std::time::Duration>,
}

/// The seed's static-mode fields.
#[derive(Clone, Debug)]
pub struct StaticPolicy {
    pub heartbeat_interval: &'static str,
    pub failure_threshold: &'static str,
    pub require_majority: bool,
}

impl StaticPolicy {
    /// Short enough to watch a failover in a test: probes every 200 ms, Unreachable after 1 s.
    pub fn fast(require_majority: bool) -> Self {
        Self { heartbeat_interval: "200ms", failure_threshold: "1s", require_majority }
    }
}

/// Every process the harness starts checks its TLS files this often, so a test that renews
/// certificates need not wait the daemons' default 10 s.
pub const TLS_RELOAD_INTERVAL: &str = "reload_interval = \"1s\"\n";

/// The seed's worker-tier server fields, for tests that need short leases.
#[derive(Clone, Debug)]
pub struct HeartbeatPolicy {
    pub min_ttl: &'static str,
    pub max_ttl: &'static str,
    pub grace: &'static str,
    pub max_heartbeats_per_second: u32,
    pub failover_ttl: &'static str,
}

impl HeartbeatPolicy {
    /// Leases short enough to watch expire in a test: TTL 1–10s, grace 2s, failover 15s.
    pub fn fast() -> Self {
        Self { min_ttl: "1s", max_ttl: "10s", grace: "2s", max_heartbeats_per_second: 1000, failover_ttl: "15s" }
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            tls: false,
            snapshot_after_logs: 10_000,
            max_logs_to_keep: 1_000,
            max_message_bytes: None,
            snapshot_chunk_bytes: None,
            raft_timing: ["50ms", "300ms", "600ms"],
            raft_extra: "",
            log_level: "info",
            heartbeat: None,
            leases: "",
            env: Vec::new(),
            extra_toml: String::new(),
            node_env: BTreeMap::new(),
            isolated_network: false,
            static_mode: None,
            leaf_cert_validity: None,
        }
    }
}

impl Options {
    /// The defaults with mTLS on.
    pub fn tls() -> Self {
        Self { tls: true, ..Self::default() }
    }
}

/// A node's addresses (on 127.0.0.1, or on its namespace's address).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeAddrs {
    pub id: u64,
    pub raft: String,
    pub api: String,
    pub admin: String,
}

impl NodeAddrs {
    /// Three currently free loopback ports for node `id`.
    pub fn free(id: u64) -> Self {
        let [raft, api, admin] = free_ports::<3>();
        let addr = |port: u16| format!("127.0.0.1:{port}");
        Self { id, raft: addr(raft), api: addr(api), admin: addr(admin) }
    }

    /// Fixed ports on `ip`, for a node alone in its network namespace.
    pub fn on_ip(id: u64, ip: &str) -> Self {
        let addr = |port: u16| format!("{ip}:{port}");
        Self { id, raft: addr(7000), api: addr(7001), admin: addr(7002) }
    }

    /// The host part of the addresses.
    pub fn host(&self) -> &str {
        self.api.rsplit_once(':').map_or(self.api.as_str(), |(host, _)| host)
    }
}

/// `N` distinct free ports: all bound at once (so they differ), read, then released. A port
/// is never handed out twice in one test process: once released, the kernel may offer it
/// again to the next call (seen: two nodes of one cluster given the same Raft port).
pub fn free_ports<const N: usize>() -> [u16; N] {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut listeners = Vec::with_capacity(N);
    let mut ports = Vec::with_capacity(N);
    while ports.len() < N {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a free loopback port");
        let port = listener.local_addr().expect("a bound listener has an address").port();
        // Held until all N are read, so a port already handed out is skipped, not re-offered.
        listeners.push(listener);
        if !handed_out.contains(&port) {
            handed_out.push(port);
            ports.push(port);
        }
    }
    std::array::from_fn(|i| ports[i])
}

/// TLS file paths of one node.
#[derive(Clone, Debug)]
pub struct TlsPaths {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Everything that goes into one node's config file.
#[derive(Clone, Debug)]
pub struct NodeConfig<'a> {
    pub node: &'a NodeAddrs,
    /// The `cluster.peers` list (for a joining node: only itself).
    pub peers: &'a [NodeAddrs],
    pub data_dir: &'a Path,
    /// API addresses to join through; empty to bootstrap with `peers`.
    pub join: &'a [String],
    pub tls: Option<&'a TlsPaths>,
    pub options: &'a Options,
}

/// A TOML string literal (JSON string escapes are valid TOML basic-string escapes).
pub fn toml_str(value: &str) -> String {
    serde_json::to_string(value).expect("strings serialize")
}

fn toml_path(path: &Path) -> String {
    toml_str(&path.display().to_string())
}

impl NodeConfig<'_> {
    /// The TOML text of this node's configuration.
    pub fn render(&self) -> String {
        let o = self.options;
        let mut out = String::new();
        let list = |items: &[String]| items.iter().map(|s| toml_str(s)).collect::<Vec<_>>().join(", ");
        let _ = writeln!(out, "data_dir = {}", toml_path(self.data_dir));
        let _ = writeln!(out, "join = [{}]\n", list(self.join));
        match (&o.static_mode, &o.heartbeat) {
            (Some(policy), _) => {
                let _ = writeln!(
                    out,
                    "[cluster]\nmode = \"static\"\nheartbeat_interval = \"{}\"\nfailure_threshold = \"{}\"\n\
                     require_majority = {}",
                    policy.heartbeat_interval, policy.failure_threshold, policy.require_majority
                );
            }
            (None, None) => out.push_str("[cluster]\nmode = \"raft\"\n"),
            (None, Some(policy)) => {
                let _ = writeln!(
                    out,
                    "[cluster]\nmode = \"worker-tier\"\nrole = \"server\"\nheartbeat_min_ttl = \"{}\"\n\
                     heartbeat_max_ttl = \"{}\"\nheartbeat_grace = \"{}\"\nmax_heartbeats_per_second = {}\n\
                     failover_heartbeat_ttl = \"{}\"",
                    policy.min_ttl, policy.max_ttl, policy.grace, policy.max_heartbeats_per_second, policy.failover_ttl
                );
            }
        }
        let _ = writeln!(out, "node_id = {}\npeers = [", self.node.id);
        for peer in self.peers {
            let (raft, api) = (toml_str(&peer.raft), toml_str(&peer.api));
            // A static peer's `addr` is its peer port, where a Raft peer has `raft_addr`.
            let addr_key = if o.static_mode.is_some() { "addr" } else { "raft_addr" };
            let _ = writeln!(out, "  {{ id = {}, {addr_key} = {raft}, api_addr = {api} }},", peer.id);
        }
        let _ = writeln!(out, "]\n\n[listen]");
        for (key, addr) in
            [("raft_addr", &self.node.raft), ("api_addr", &self.node.api), ("admin_addr", &self.node.admin)]
        {
            let _ = writeln!(out, "{key} = {}", toml_str(addr));
        }
        let _ = writeln!(out, "\n[tls]");
        match self.tls {
            Some(tls) => {
                let _ = writeln!(out, "ca_file = {}", toml_path(&tls.ca));
                let _ = writeln!(out, "cert_file = {}", toml_path(&tls.cert));
                let _ = writeln!(out, "key_file = {}", toml_path(&tls.key));
                out.push_str(TLS_RELOAD_INTERVAL);
            }
            None => out.push_str("insecure = true\n"),
        }
        let [heartbeat, election_min, election_max] = o.raft_timing;
        let _ = writeln!(
            out,
            "\n[raft]\nheartbeat_interval = \"{heartbeat}\"\nelection_timeout_min = \"{election_min}\"\n\
             election_timeout_max = \"{election_max}\"\nsnapshot_after_logs = {}\nmax_logs_to_keep = {}\n\
             snapshot_chunk_bytes = {}\n{}",
            o.snapshot_after_logs,
            o.max_logs_to_keep,
            o.snapshot_chunk_bytes.unwrap_or(64 * 1024),
            o.raft_extra
        );
        if let Some(bytes) = o.max_message_bytes {
            let _ = writeln!(out, "\n[limits]\nmax_message_bytes = {bytes}");
        }
        let _ = writeln!(out, "\n[leases]\n{}", o.leases);
        let _ = writeln!(out, "\n[telemetry]\nlog_level = {}", toml_str(o.log_level));
        out.push_str(&o.extra_toml);
        out
    }
}
