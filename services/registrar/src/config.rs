//! The registrar's configuration: the seed's `worker_grpc_addr` plus where the control plane
//! is and how to authenticate to it. The heartbeat TTL policy handed to new workers is not
//! here: it belongs to the control plane, which the registrar asks on every Register.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use muster_config::{AdminLimits, ConfigError, ListenerLimits, TelemetryConfig, TlsConfig};
use serde::{Deserialize, Serialize};

/// Default port of the registrar's admin listener.
pub const DEFAULT_ADMIN_PORT: u16 = 3681;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrarConfig {
    /// Address workers register at. Default `0.0.0.0:3670` (the seed's `worker_grpc_addr`).
    pub worker_grpc_addr: SocketAddr,
    /// Plaintext admin HTTP (`/healthz`, `/readyz`, `/metrics`). Default `127.0.0.1:3681`:
    /// set `0.0.0.0:3681` where probes or scrapes come from another host or a container
    /// runtime.
    pub admin_addr: SocketAddr,
    /// Control-plane API addresses (any node; the client follows the leader).
    pub control_plane: Vec<String>,
    /// The registrar's own certificate (role `registrar`, from `musterctl tls init
    /// --component registrar:NAME`), the cluster CA, or `insecure = true`.
    pub tls: TlsConfig,
    /// The worker CA certificate this registrar signs workers with (from `musterctl tls
    /// init`). Default `worker-ca.pem` next to `tls.ca_file`. Required unless `tls.insecure`.
    pub worker_ca_cert_file: Option<PathBuf>,
    /// The worker CA private key, mode 0600 (never sent to the control plane). Default
    /// `worker-ca-key.pem` next to `tls.ca_file`.
    pub worker_ca_key_file: Option<PathBuf>,
    /// Lifetime of worker certificates. Default 24h; at least 10s (workers renew at 50–80%).
    #[serde(with = "humantime_serde")]
    pub worker_cert_validity: Duration,
    /// Register calls allowed per client IP: a bucket of `register_burst` refilled at
    /// `register_per_second`.
    pub register_per_second: f64,
    pub register_burst: u32,
    /// Handshake and preface deadlines and connection caps of the Register listener
    /// (`[listener_limits]`; defaults 10s, 10s, 10000 connections, 1000 per IP).
    pub listener_limits: ListenerLimits,
    /// Header deadline and connection cap of the admin listener (`[admin_limits]`; defaults
    /// 10s and 1024).
    pub admin_limits: AdminLimits,
    pub telemetry: TelemetryConfig,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        Self {
            worker_grpc_addr: SocketAddr::from(([0, 0, 0, 0], muster_config::DEFAULT_WORKER_GRPC_PORT)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], DEFAULT_ADMIN_PORT)),
            control_plane: vec![format!("127.0.0.1:{}", muster_config::DEFAULT_API_PORT)],
            tls: TlsConfig::default(),
            worker_ca_cert_file: None,
            worker_ca_key_file: None,
            worker_cert_validity: Duration::from_secs(24 * 3600),
            register_per_second: 5.0,
            register_burst: 20,
            listener_limits: ListenerLimits::default(),
            admin_limits: AdminLimits::default(),
            telemetry: TelemetryConfig::default(),
        }
    }
}

impl RegistrarConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid =
            |field: &str, message: &str| Err(ConfigError::Invalid { field: field.into(), message: message.into() });
        if self.control_plane.is_empty() {
            return invalid("control_plane", "at least one control-plane API address is required");
        }
        if self.worker_cert_validity < Duration::from_secs(10) {
            return invalid("worker_cert_validity", "must be at least 10s");
        }
        if self.register_per_second.is_nan() || self.register_per_second <= 0.0 || self.register_burst == 0 {
            return invalid("register_per_second", "the Register rate and burst must be positive");
        }
        if self.worker_ca_cert_file.is_some() != self.worker_ca_key_file.is_some() {
            return invalid("worker_ca_key_file", "set both worker_ca_cert_file and worker_ca_key_file, or neither");
        }
        self.listener_limits.validate("listener_limits")?;
        self.admin_limits.validate("admin_limits")?;
        self.tls.validate()
    }

    /// The worker CA certificate and key files: as set, else `worker-ca.pem` and
    /// `worker-ca-key.pem` in the directory of `tls.ca_file`. `None` only in insecure mode
    /// without files (the registrar then makes a throwaway CA in memory).
    pub fn worker_ca_files(&self) -> Option<(PathBuf, PathBuf)> {
        if let (Some(cert), Some(key)) = (&self.worker_ca_cert_file, &self.worker_ca_key_file) {
            return Some((cert.clone(), key.clone()));
        }
        let ca_file = self.tls.ca_file.as_ref().filter(|_| !self.tls.insecure)?;
        let dir = ca_file.parent().map(PathBuf::from).unwrap_or_default();
        Some((dir.join(muster_tls::WORKER_CA_CERT_FILE), dir.join(muster_tls::WORKER_CA_KEY_FILE)))
    }
}

impl muster_telemetry::HasTelemetry for RegistrarConfig {
    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_seed_and_bad_values_are_named() {
        let config: RegistrarConfig =
            muster_config::ConfigLoader::new().set("tls.insecure", toml::Value::Boolean(true)).load().unwrap();
        assert_eq!(config.worker_grpc_addr.port(), 3670);
        assert_eq!(config.worker_cert_validity, Duration::from_secs(24 * 3600));
        config.validate().unwrap();

        let empty = RegistrarConfig { control_plane: Vec::new(), ..config.clone() };
        assert!(empty.validate().unwrap_err().to_string().starts_with("control_plane:"));
        let short = RegistrarConfig { worker_cert_validity: Duration::from_secs(9), ..config.clone() };
        assert!(short.validate().unwrap_err().to_string().starts_with("worker_cert_validity:"));
        let no_cap = RegistrarConfig {
            listener_limits: ListenerLimits { max_connections_per_ip: 0, ..Default::default() },
            ..config.clone()
        };
        assert!(no_cap.validate().unwrap_err().to_string().starts_with("listener_limits.max_connections_per_ip:"));
        let no_admin_cap = RegistrarConfig {
            admin_limits: AdminLimits { max_connections: 0, ..Default::default() },
            ..config.clone()
        };
        assert!(no_admin_cap.validate().unwrap_err().to_string().starts_with("admin_limits.max_connections:"));
        let no_tls = RegistrarConfig { tls: TlsConfig::default(), ..config };
        assert!(no_tls.validate().is_err(), "TLS files are required unless insecure");

        let err = muster_config::ConfigLoader::new()
            .set("worker_grpc_adr", toml::Value::String("x".into()))
            .load::<RegistrarConfig>()
            .unwrap_err();
        assert!(err.to_string().contains("worker_grpc_adr"), "{err}");
    }

    #[test]
    fn the_worker_ca_files_default_to_the_tls_directory() {
        let tls = TlsConfig {
            ca_file: Some("/etc/muster/tls/ca.pem".into()),
            cert_file: Some("/etc/muster/tls/registrar.pem".into()),
            key_file: Some("/etc/muster/tls/registrar-key.pem".into()),
            ..TlsConfig::default()
        };
        let config = RegistrarConfig { tls: tls.clone(), ..RegistrarConfig::default() };
        config.validate().unwrap();
        let (cert, key) = config.worker_ca_files().unwrap();
        assert_eq!(cert, PathBuf::from("/etc/muster/tls/worker-ca.pem"));
        assert_eq!(key, PathBuf::from("/etc/muster/tls/worker-ca-key.pem"));

        let set = RegistrarConfig {
            worker_ca_cert_file: Some("/s/ca.crt".into()),
            worker_ca_key_file: Some("/s/ca.key".into()),
            ..config.clone()
        };
        assert_eq!(set.worker_ca_files().unwrap(), (PathBuf::from("/s/ca.crt"), PathBuf::from("/s/ca.key")));
        let half = RegistrarConfig { worker_ca_key_file: None, ..set };
        assert!(half.validate().unwrap_err().to_string().starts_with("worker_ca_key_file:"));

        let insecure =
            RegistrarConfig { tls: TlsConfig { insecure: true, ..TlsConfig::default() }, ..RegistrarConfig::default() };
        assert_eq!(insecure.worker_ca_files(), None, "insecure without files: a CA in memory");
    }
}
