//! The agent's configuration: the seed's `worker-tier` mode with `role = "worker"` (its
//! `servers`, `token_file`, `identity_dir`, `labels`), plus the data dir and admin listener.

use std::net::SocketAddr;
use std::path::PathBuf;

use muster_config::{ClusterMode, ConfigError, TelemetryConfig, WorkerTierRole};
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
    /// Plaintext `/healthz`, `/readyz`, `/metrics`. Default `0.0.0.0:3683`.
    pub admin_addr: SocketAddr,
    pub telemetry: TelemetryConfig,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            cluster: ClusterMode::default(),
            data_dir: PathBuf::from("./data"),
            admin_addr: SocketAddr::from(([0, 0, 0, 0], DEFAULT_ADMIN_PORT)),
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
        Ok(WorkerSettings {
            servers: servers.clone(),
            token_file: token_file.as_ref().map(PathBuf::from),
            identity_dir: identity_dir
                .as_ref()
                .map_or_else(|| self.data_dir.join("worker").join("identity"), PathBuf::from),
            labels: labels.clone(),
        })
    }
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

        let err = AgentConfig::default().validate().unwrap_err().to_string();
        assert!(err.contains("worker-tier") && err.contains("single-node"), "{err}");
        let no_servers = "[cluster]\nmode = \"worker-tier\"\nrole = \"worker\"\n";
        assert!(toml::from_str::<AgentConfig>(no_servers).unwrap().validate().is_err());
    }
}
