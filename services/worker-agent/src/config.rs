//! The agent's configuration: the seed's `worker-tier` mode with `role = "worker"` (its
//! `servers`, `token_file`, `identity_dir`, `labels`), plus the data dir, the admin listener
//! and an optional static list of heartbeat gateways for when none has been learned.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use muster_config::{AdminLimits, ClusterMode, ConfigError, TelemetryConfig, WorkerTierRole};
use serde::{Deserialize, Serialize};

/// Default port of the agent's admin listener.
pub const DEFAULT_ADMIN_PORT: u16 = 3683;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// `mode = "worker-tier"`, `role = "worker"`, with `servers` (registrar addresses).
    pub cluster: ClusterMode,
    /// Default `./data`; the identity lives in `<data_dir>/worker/identity/` unless
    /// `cluster.identity_dir` says otherwise.
    pub data_dir: PathBuf,
    /// Plaintext `/healthz`, `/readyz`, `/metrics`. Default `127.0.0.1:3683`: set
    /// `0.0.0.0:3683` where probes or scrapes come from another host or a container runtime.
    pub admin_addr: SocketAddr,
    /// Header deadline and connection cap of the admin listener (`[admin_limits]`; defaults
    /// 10s and 1024).
    pub admin_limits: AdminLimits,
    /// Heartbeat gateway addresses (`host:port`) to use while the agent knows no live list
    /// (the Register response and every ack that differs carry one; it is kept in the
    /// identity dir). Default empty: rely on the learned list.
    pub gateways: Vec<String>,
    /// The name this worker reports in its profile. Default: the host's name. Set it where
    /// several agents share a host (as `musterctl dev`'s do), so operators can tell them apart.
    pub hostname: Option<String>,
    /// A TOML file of extra capacity this node reports (`gpus = 2`), over the CPU and memory
    /// the agent measures. Re-read every `profile_refresh`. Default: none.
    pub capacity_file: Option<PathBuf>,
    /// How often the agent measures its profile again and, if it changed, sends it on the next
    /// heartbeat. Default 30s; at least 1s.
    #[serde(with = "humantime_serde")]
    pub profile_refresh: Duration,
    pub telemetry: TelemetryConfig,
}

/// Default of `profile_refresh`.
pub const DEFAULT_PROFILE_REFRESH: Duration = Duration::from_secs(30);

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            cluster: ClusterMode::default(),
            data_dir: PathBuf::from("./data"),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], DEFAULT_ADMIN_PORT)),
            admin_limits: AdminLimits::default(),
            gateways: Vec::new(),
            hostname: None,
            capacity_file: None,
            profile_refresh: DEFAULT_PROFILE_REFRESH,
            telemetry: TelemetryConfig::default(),
        }
    }
}

/// The worker-role fields the agent uses.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerSettings {
    pub servers: Vec<String>,
    pub token_file: Option<PathBuf>,
    pub identity_dir: PathBuf,
    pub labels: std::collections::HashMap<String, String>,
    pub gateways: Vec<String>,
    /// `hostname`, else the host's name.
    pub hostname: String,
}

impl AgentConfig {
    pub fn validate(&self) -> Result<WorkerSettings, ConfigError> {
        self.cluster.validate()?;
        let ClusterMode::WorkerTier { role: WorkerTierRole::Worker, servers, token_file, identity_dir, labels, .. } =
            &self.cluster
        else {
            return Err(ConfigError::Invalid {
                field: "cluster.mode".into(),
                message: format!(
                    "the worker agent needs mode = \"worker-tier\" with role = \"worker\", not `{}`",
                    self.cluster.name()
                ),
            });
        };
        if let Some(bad) = self.gateways.iter().find(|addr| !has_port(addr)) {
            return Err(ConfigError::Invalid {
                field: "gateways".into(),
                message: format!("{bad:?} is not a host:port address"),
            });
        }
        self.admin_limits.validate("admin_limits")?;
        if self.profile_refresh < Duration::from_secs(1) {
            return Err(ConfigError::Invalid {
                field: "profile_refresh".into(),
                message: format!("{:?}; it must be at least 1s", self.profile_refresh),
            });
        }
        let limit = muster_proto::limits::MAX_HOSTNAME_BYTES;
        if let Some(name) = &self.hostname
            && (name.trim().is_empty() || name.len() > limit)
        {
            // The registrar would refuse it in the profile; say so at start-up.
            return Err(ConfigError::Invalid {
                field: "hostname".into(),
                message: format!(
                    "{} bytes; it must be 1 to {limit} (max_hostname_bytes), or left out to use the host's name",
                    name.trim().len()
                ),
            });
        }
        // The registrar would refuse them anyway; say so at start-up, naming the field.
        muster_proto::limits::validate_labels("cluster.labels", labels)
            .map_err(|err| ConfigError::Invalid { field: "cluster.labels".into(), message: err.to_string() })?;
        Ok(WorkerSettings {
            servers: servers.clone(),
            token_file: token_file.as_ref().map(PathBuf::from),
            identity_dir: identity_dir
                .as_ref()
                .map_or_else(|| self.data_dir.join("worker").join("identity"), PathBuf::from),
            labels: labels.clone(),
            gateways: self.gateways.clone(),
            hostname: self
                .hostname
                .clone()
                .or_else(muster_config::hostname)
                .unwrap_or_else(|| "unknown-host".to_owned()),
        })
    }
}

fn has_port(addr: &str) -> bool {
    addr.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

impl muster_telemetry::HasTelemetry for AgentConfig {
    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_defaults_apply_and_other_modes_are_refused() {
        let toml = "data_dir = \"/var/lib/muster\"\n[cluster]\nmode = \"worker-tier\"\nrole = \"worker\"\n\
                    servers = [\"reg:3670\"]\ntoken_file = \"/etc/muster/token\"\n";
        let config: AgentConfig = toml::from_str(toml).unwrap();
        let settings = config.validate().unwrap();
        assert_eq!(settings.identity_dir, PathBuf::from("/var/lib/muster/worker/identity"));
        assert_eq!(settings.servers, ["reg:3670"]);
        assert!(settings.gateways.is_empty());
        assert_eq!(Some(settings.hostname), muster_config::hostname().or(Some("unknown-host".into())));
        let named: AgentConfig = toml::from_str(&format!("hostname = \"rack7-a\"\n{toml}")).unwrap();
        assert_eq!(named.validate().unwrap().hostname, "rack7-a");
        let blank: AgentConfig = toml::from_str(&format!("hostname = \" \"\n{toml}")).unwrap();
        assert!(blank.validate().unwrap_err().to_string().starts_with("hostname:"));
        let long: AgentConfig = toml::from_str(&format!("hostname = \"{}\"\n{toml}", "h".repeat(254))).unwrap();
        let err = long.validate().unwrap_err().to_string();
        assert!(err.starts_with("hostname: 254 bytes") && err.contains("max_hostname_bytes"), "{err}");
        let with_gateways: AgentConfig = toml::from_str(&format!("gateways = [\"gw:3671\"]\n{toml}")).unwrap();
        assert_eq!(with_gateways.validate().unwrap().gateways, ["gw:3671"]);
        let no_port: AgentConfig = toml::from_str(&format!("gateways = [\"gw\"]\n{toml}")).unwrap();
        assert!(no_port.validate().unwrap_err().to_string().starts_with("gateways:"));

        let err = AgentConfig::default().validate().unwrap_err().to_string();
        assert!(err.contains("worker-tier") && err.contains("single-node"), "{err}");
        let no_servers = "[cluster]\nmode = \"worker-tier\"\nrole = \"worker\"\n";
        assert!(toml::from_str::<AgentConfig>(no_servers).unwrap().validate().is_err());
    }

    #[test]
    fn oversize_labels_stop_start_up_naming_the_field_and_the_limit() {
        let toml = "[cluster]\nmode = \"worker-tier\"\nrole = \"worker\"\nservers = [\"reg:3670\"]\n";
        let long = format!("{toml}labels = {{ rack = \"{}\" }}\n", "r".repeat(300));
        let err = toml::from_str::<AgentConfig>(&long).unwrap().validate().unwrap_err().to_string();
        assert!(err.starts_with("cluster.labels:") && err.contains("max_label_value_bytes"), "{err}");
        let fine = format!("{toml}labels = {{ rack = \"r1\" }}\n");
        assert!(toml::from_str::<AgentConfig>(&fine).unwrap().validate().is_ok());
    }
}
