//! The control-plane daemon's whole configuration. It is one serde tree so that a TOML file,
//! `MUSTER_*` variables and flags all address the same dotted keys (`raft.heartbeat_interval`,
//! `cluster.node_id`), and every field has a default so an empty file is a valid start.

#[cfg(test)]
mod tests;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::mode::{check_host_port, human, positive};
use crate::{ClusterMode, ConfigError, DEFAULT_ADMIN_PORT, DEFAULT_API_PORT, DEFAULT_RAFT_PORT, WorkerTierRole};

/// Everything the control-plane daemon reads at start-up.
///
/// ```toml
/// data_dir = "/var/lib/muster"
/// join = []
///
/// [cluster]
/// mode = "raft"
/// node_id = 1
/// peers = [{ id = 1, raft_addr = "10.0.0.1:3668" }]
///
/// [listen]
/// raft_addr = "0.0.0.0:3668"
///
/// [tls]
/// ca_file = "/etc/muster/ca.pem"
/// cert_file = "/etc/muster/node.pem"
/// key_file = "/etc/muster/node.key"
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlPlaneConfig {
    /// How this node takes part in the cluster (`[cluster]`, `mode = "..."`). Default
    /// `single-node`.
    pub cluster: ClusterMode,
    /// Where the Raft log, state machine and snapshots live. Default `./data`.
    pub data_dir: PathBuf,
    /// Addresses to bind.
    pub listen: ListenConfig,
    /// Addresses other nodes and clients dial, when they differ from what is bound.
    pub advertise: AdvertiseConfig,
    /// Certificates for mTLS between nodes and with clients.
    pub tls: TlsConfig,
    /// Raft timing and log compaction.
    pub raft: RaftTuning,
    /// Resource limits of the gRPC servers.
    pub limits: Limits,
    /// How the leader sweeps worker leases.
    pub leases: crate::LeaseTuning,
    /// How watches are served: history kept, progress, slow consumers, caps.
    pub watch: crate::WatchTuning,
    /// When the records of gone workers (left, revoked, long unreachable) are removed.
    pub worker_gc: crate::WorkerGc,
    /// Logging.
    pub telemetry: TelemetryConfig,
    /// API addresses of an existing cluster. Non-empty: join it as a learner instead of
    /// bootstrapping a new cluster. Default empty.
    pub join: Vec<String>,
}

impl Default for ControlPlaneConfig {
    fn default() -> Self {
        Self {
            cluster: ClusterMode::default(),
            data_dir: PathBuf::from("./data"),
            listen: ListenConfig::default(),
            advertise: AdvertiseConfig::default(),
            tls: TlsConfig::default(),
            raft: RaftTuning::default(),
            limits: Limits::default(),
            leases: crate::LeaseTuning::default(),
            watch: crate::WatchTuning::default(),
            worker_gc: crate::WorkerGc::default(),
            telemetry: TelemetryConfig::default(),
            join: Vec::new(),
        }
    }
}

/// Addresses the daemon binds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenConfig {
    /// Raft peer RPCs. Default `0.0.0.0:3668`.
    pub raft_addr: SocketAddr,
    /// Client and cluster-management API. Default `0.0.0.0:3669`.
    pub api_addr: SocketAddr,
    /// Plaintext admin HTTP (`/metrics`, `/healthz`, `/readyz`). Default `127.0.0.1:3680`:
    /// set `0.0.0.0:3680` where probes or scrapes come from another host or a container
    /// runtime.
    pub admin_addr: SocketAddr,
}

impl Default for ListenConfig {
    fn default() -> Self {
        let any = |port| SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
        Self {
            raft_addr: any(DEFAULT_RAFT_PORT),
            api_addr: any(DEFAULT_API_PORT),
            admin_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_ADMIN_PORT)),
        }
    }
}

/// Addresses peers and clients dial (`host:port`), for when the bound address is not
/// reachable as-is (`0.0.0.0`, NAT, containers). See
/// [`ControlPlaneConfig::advertised_raft_addr`] for what is used when they are unset.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdvertiseConfig {
    /// Raft address announced to peers.
    pub raft_addr: Option<String>,
    /// API address announced to clients and in leader hints.
    pub api_addr: Option<String>,
}

/// TLS material. All three files are required unless `insecure` is set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Serve and dial in plaintext. For development only; the daemon logs a warning. Default
    /// false.
    pub insecure: bool,
    /// PEM bundle of the cluster CA, used to verify peers and clients.
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain of this node.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of this node.
    pub key_file: Option<PathBuf>,
    /// How often the three files are checked for changes; changed files are loaded, checked
    /// and used for every new handshake (SIGHUP reloads at once too). A bad file is refused
    /// and the material in use stays. Default 10s, at least 1s; "0s" checks only on SIGHUP.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
}

/// The default `tls.reload_interval`.
pub const DEFAULT_TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(10);
/// The shortest `tls.reload_interval` other than 0 (SIGHUP only).
pub const MIN_TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(1);

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            insecure: false,
            ca_file: None,
            cert_file: None,
            key_file: None,
            reload_interval: DEFAULT_TLS_RELOAD_INTERVAL,
        }
    }
}

impl TlsConfig {
    /// Unless `insecure`, every file must be named. Files are not opened here.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.insecure {
            return Ok(());
        }
        let files = [("ca_file", &self.ca_file), ("cert_file", &self.cert_file), ("key_file", &self.key_file)];
        if let Some((name, _)) = files.iter().find(|(_, file)| file.is_none()) {
            return Err(ConfigError::invalid(
                format!("tls.{name}"),
                "required unless tls.insecure = true: run `musterctl tls init` to create the \
                 cluster CA and certificates, or pass --insecure for a plaintext development setup",
            ));
        }
        if !self.reload_interval.is_zero() && self.reload_interval < MIN_TLS_RELOAD_INTERVAL {
            return Err(ConfigError::invalid(
                "tls.reload_interval",
                format!(
                    "{:?} would read the files over and over: use at least {MIN_TLS_RELOAD_INTERVAL:?}, or \"0s\" \
                     to reload on SIGHUP only",
                    self.reload_interval
                ),
            ));
        }
        Ok(())
    }
}

/// The largest `raft.max_clock_drift_percent` accepted.
pub const MAX_CLOCK_DRIFT_PERCENT: u32 = 50;

/// Raft timing and log compaction. Durations are humantime strings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftTuning {
    /// Leader heartbeat period. Default 100ms; must be below `election_timeout_min`.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Lower bound of the randomized election timeout. Default 250ms.
    ///
    /// A follower campaigns only once the leader's lease has run out as well, and openraft
    /// sets that lease to `election_timeout_max`: after the last heartbeat a follower waits
    /// `election_timeout_max` plus a random `[min, max)`, 0.75–1 s with the defaults (7 to 10
    /// missed heartbeats), before it asks for votes.
    #[serde(with = "humantime_serde")]
    pub election_timeout_min: Duration,
    /// Upper bound of the randomized election timeout, and the leader lease. Default 500ms.
    #[serde(with = "humantime_serde")]
    pub election_timeout_max: Duration,
    /// How far apart, in percent, the clock rates of two nodes may be and lease reads stay
    /// linearizable. Default 5; at most 50.
    ///
    /// A follower refuses to vote for `election_timeout_max` on its own clock after a
    /// heartbeat, and a leader serves lease reads while a quorum acknowledged a heartbeat it
    /// sent less than `election_timeout_max × (100 − p) / (100 + p)` ago on *its* clock; so a
    /// leader whose clock runs slow (or a follower's fast) by up to `p` percent never serves a
    /// lease read after another node may have been elected. Past that the lease read falls
    /// back to a read index (one quorum round trip). Drift beyond the bound can return stale
    /// lease reads; linearizable (read-index) reads do not depend on clocks at all.
    pub max_clock_drift_percent: u32,
    /// Build a snapshot after this many log entries since the last one. Default 100000.
    pub snapshot_after_logs: u64,
    /// Log entries kept behind the last snapshot for slow followers. Default 1000.
    pub max_logs_to_keep: u64,
    /// Size of one snapshot chunk on the wire. Default 1 MiB.
    pub snapshot_chunk_bytes: usize,
    /// Deadline for installing a whole snapshot on a follower. Default 30s.
    #[serde(with = "humantime_serde")]
    pub install_snapshot_timeout: Duration,
    /// Time every hop of the write path (proposal, log append, fsync, replication, apply) and
    /// publish the histograms on `/metrics` as `muster_write_hop_seconds{hop}`. Default false:
    /// off, a hop costs one flag check.
    pub profile_write_path: bool,
}

impl Default for RaftTuning {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_millis(100),
            election_timeout_min: Duration::from_millis(250),
            election_timeout_max: Duration::from_millis(500),
            max_clock_drift_percent: 5,
            snapshot_after_logs: 100_000,
            max_logs_to_keep: 1_000,
            snapshot_chunk_bytes: 1024 * 1024,
            install_snapshot_timeout: Duration::from_secs(30),
            profile_write_path: false,
        }
    }
}

impl RaftTuning {
    /// `0 < heartbeat_interval < election_timeout_min < election_timeout_max`; clock drift at
    /// most [`MAX_CLOCK_DRIFT_PERCENT`]; chunk size and snapshot timeout positive.
    pub fn validate(&self) -> Result<(), ConfigError> {
        positive("raft.heartbeat_interval", self.heartbeat_interval)?;
        if self.election_timeout_min >= self.election_timeout_max {
            return Err(ConfigError::invalid(
                "raft.election_timeout_min",
                format!(
                    "{} must be shorter than election_timeout_max ({})",
                    human(self.election_timeout_min),
                    human(self.election_timeout_max)
                ),
            ));
        }
        if self.heartbeat_interval >= self.election_timeout_min {
            return Err(ConfigError::invalid(
                "raft.heartbeat_interval",
                format!(
                    "{} must be shorter than election_timeout_min ({})",
                    human(self.heartbeat_interval),
                    human(self.election_timeout_min)
                ),
            ));
        }
        if self.max_clock_drift_percent > MAX_CLOCK_DRIFT_PERCENT {
            return Err(ConfigError::invalid(
                "raft.max_clock_drift_percent",
                format!(
                    "{} is more than {MAX_CLOCK_DRIFT_PERCENT}: clocks that far apart leave no lease worth having \
                     (linearizable reads do not need one)",
                    self.max_clock_drift_percent
                ),
            ));
        }
        if self.snapshot_chunk_bytes == 0 {
            return Err(ConfigError::invalid("raft.snapshot_chunk_bytes", "must be greater than zero"));
        }
        positive("raft.install_snapshot_timeout", self.install_snapshot_timeout)
    }

    /// How old a quorum's acknowledgement may be (on this node's clock, from when the
    /// acknowledged heartbeat was sent) for a lease read: the lease `election_timeout_max`
    /// shrunk so that it ends before any follower's vote lease, with clock rates up to
    /// `max_clock_drift_percent` apart.
    pub fn lease_read_max_age(&self) -> Duration {
        let p = self.max_clock_drift_percent.min(MAX_CLOCK_DRIFT_PERCENT);
        self.election_timeout_max * (100 - p) / (100 + p)
    }
}

/// Resource limits of the gRPC servers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest encoded or decoded gRPC message. Default 4 MiB.
    pub max_message_bytes: usize,
    /// Deadline of one unary request. Default 10s.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Requests served at once per listener; more wait. Default 1024.
    pub max_concurrent_requests: usize,
    /// HTTP/2 streams per connection. Default 256.
    pub max_concurrent_streams: u32,
    /// Handshake and preface deadlines and connection caps of the raft and API listeners
    /// (`[limits.listener]`, each listener counts its own connections).
    pub listener: crate::ListenerLimits,
    /// Header deadline and connection cap of the admin listener (`[limits.admin]`).
    pub admin: crate::AdminLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 4 * 1024 * 1024,
            request_timeout: Duration::from_secs(10),
            max_concurrent_requests: 1024,
            max_concurrent_streams: 256,
            listener: crate::ListenerLimits::default(),
            admin: crate::AdminLimits::default(),
        }
    }
}

impl Limits {
    /// Every limit must be positive.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let zero = [
            ("max_message_bytes", self.max_message_bytes == 0),
            ("max_concurrent_requests", self.max_concurrent_requests == 0),
            ("max_concurrent_streams", self.max_concurrent_streams == 0),
        ];
        if let Some((name, _)) = zero.iter().find(|(_, is_zero)| *is_zero) {
            return Err(ConfigError::invalid(format!("limits.{name}"), "must be greater than zero"));
        }
        self.listener.validate("limits.listener")?;
        self.admin.validate("limits.admin")?;
        positive("limits.request_timeout", self.request_timeout)
    }
}

/// Logging settings (the OTLP exporter is configured by `OTEL_*` variables).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Log line format. Default `pretty`.
    pub log_format: LogFormat,
    /// `tracing` filter directive, e.g. `info` or `muster=debug,openraft=info`. Default
    /// [`DEFAULT_LOG_LEVEL`].
    pub log_level: String,
}

/// Muster's own events at `info`; openraft's at `error` only: its `info` lines print its
/// internal state structures at every start and stop, and its `warn` lines repeat every
/// failed vote request several times a second while peers are down, which the node's own
/// "not ready: no leader ... waiting for peers" line already says once (`openraft=info`
/// brings them all back).
pub const DEFAULT_LOG_LEVEL: &str = "info,openraft=error";

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self { log_format: LogFormat::default(), log_level: DEFAULT_LOG_LEVEL.to_owned() }
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable, for terminals.
    #[default]
    Pretty,
    /// One JSON object per line, for log collectors.
    Json,
}

impl ControlPlaneConfig {
    /// The Raft address peers dial: `advertise.raft_addr`, else this node's `raft_addr` in its
    /// own `cluster.peers` entry (raft mode, worker-tier server), else `listen.raft_addr` with
    /// a loopback address in place of `0.0.0.0` / `::`.
    pub fn advertised_raft_addr(&self) -> String {
        self.advertise
            .raft_addr
            .clone()
            .or_else(|| self.cluster.own_raft_peer().map(|p| p.raft_addr.clone()))
            .unwrap_or_else(|| dialable(self.listen.raft_addr))
    }

    /// The API address clients dial and leader hints carry: `advertise.api_addr`, else this
    /// node's `api_addr` in its own `cluster.peers` entry, else `listen.api_addr` with a
    /// loopback address in place of `0.0.0.0` / `::`.
    pub fn advertised_api_addr(&self) -> String {
        self.advertise
            .api_addr
            .clone()
            .or_else(|| self.cluster.own_raft_peer().map(|p| p.api_addr.clone()))
            .unwrap_or_else(|| dialable(self.listen.api_addr))
    }

    /// Check the whole configuration; the first problem found is returned, naming its field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.cluster.validate()?;
        if let ClusterMode::WorkerTier { role: WorkerTierRole::Worker, .. } = self.cluster {
            return Err(ConfigError::invalid(
                "cluster.role",
                "the control plane runs role = \"server\"; \"worker\" belongs in the worker agent's config",
            ));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid("data_dir", "must not be empty"));
        }
        self.check_listen()?;
        if let Some(addr) = &self.advertise.raft_addr {
            check_host_port("advertise.raft_addr", addr)?;
        }
        if let Some(addr) = &self.advertise.api_addr {
            check_host_port("advertise.api_addr", addr)?;
        }
        self.tls.validate()?;
        self.raft.validate()?;
        self.limits.validate()?;
        self.leases.validate()?;
        self.worker_gc.validate()?;
        self.watch.validate()?;
        if self.raft.snapshot_chunk_bytes >= self.limits.max_message_bytes {
            return Err(ConfigError::invalid(
                "raft.snapshot_chunk_bytes",
                format!(
                    "{} must be smaller than limits.max_message_bytes ({}) so a chunk fits in one message",
                    self.raft.snapshot_chunk_bytes, self.limits.max_message_bytes
                ),
            ));
        }
        if self.telemetry.log_level.trim().is_empty() {
            return Err(ConfigError::invalid("telemetry.log_level", "must not be empty (e.g. \"info\")"));
        }
        self.check_join()
    }

    /// The three listeners must not share an address (port 0, "any free port", excepted).
    fn check_listen(&self) -> Result<(), ConfigError> {
        let listen = [
            ("raft_addr", self.listen.raft_addr),
            ("api_addr", self.listen.api_addr),
            ("admin_addr", self.listen.admin_addr),
        ];
        for (i, (name, addr)) in listen.iter().enumerate() {
            let clash = listen[..i].iter().find(|(_, other)| addr.port() != 0 && other == addr);
            if let Some((other, _)) = clash {
                return Err(ConfigError::invalid(format!("listen.{name}"), format!("{addr} is also listen.{other}")));
            }
        }
        Ok(())
    }

    fn check_join(&self) -> Result<(), ConfigError> {
        if self.join.is_empty() {
            return Ok(());
        }
        if !matches!(self.cluster, ClusterMode::Raft { .. }) && !self.cluster.is_worker_tier_server() {
            return Err(ConfigError::invalid(
                "join",
                format!(
                    "joining an existing cluster needs cluster.mode = \"raft\" or \"worker-tier\" \
                     (role = \"server\"), not \"{}\"",
                    self.cluster.name()
                ),
            ));
        }
        match self.join.iter().position(|addr| addr.trim().is_empty()) {
            Some(i) => Err(ConfigError::invalid(format!("join[{i}]"), "must not be empty")),
            None => Ok(()),
        }
    }
}

/// `addr` as something a client on this host can dial: the unspecified address becomes
/// loopback.
fn dialable(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port()).to_string()
}
