//! Limits of the listeners themselves, before any request exists: how long a connection may
//! take to finish TLS and to start HTTP, and how many connections one listener and one source
//! IP may hold. Every deployable embeds these tables, so a half-open flood costs the same
//! bounded number of descriptors everywhere (see `docs/security.md`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// Limits of a gRPC listener (control-plane raft and API ports, registrar, heartbeat gateway).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerLimits {
    /// Time from accept to a finished TLS handshake; slower connections are closed.
    /// Default 10s.
    #[serde(with = "humantime_serde")]
    pub tls_handshake_timeout: Duration,
    /// Time after the TLS handshake (after accept in plaintext mode) for the 24-byte HTTP/2
    /// client preface to arrive; slower connections are closed. Default 10s.
    #[serde(with = "humantime_serde")]
    pub preface_timeout: Duration,
    /// Connections open at once on this listener, handshaking ones included; more are closed
    /// as soon as they are accepted. Default 10000 (100000 on the heartbeat gateway).
    pub max_connections: usize,
    /// Connections open at once from one source IP. Default 1000 (50000 on the heartbeat
    /// gateway, where a NAT or a load generator puts many workers behind one address).
    pub max_connections_per_ip: usize,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            tls_handshake_timeout: Duration::from_secs(10),
            preface_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            max_connections_per_ip: 1_000,
        }
    }
}

impl ListenerLimits {
    /// The heartbeat gateway's defaults: one gateway holds a stream per worker, and tests,
    /// benchmarks and NATed sites connect thousands of workers from one address.
    pub fn heartbeat_gateway() -> Self {
        Self { max_connections: 100_000, max_connections_per_ip: 50_000, ..Self::default() }
    }

    /// Every limit must be positive; `prefix` is the table's path (e.g. `limits.listener`).
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let zero = [
            ("tls_handshake_timeout", self.tls_handshake_timeout.is_zero()),
            ("preface_timeout", self.preface_timeout.is_zero()),
            ("max_connections", self.max_connections == 0),
            ("max_connections_per_ip", self.max_connections_per_ip == 0),
        ];
        match zero.iter().find(|(_, is_zero)| *is_zero) {
            Some((name, _)) => Err(ConfigError::invalid(format!("{prefix}.{name}"), "must be greater than zero")),
            None => Ok(()),
        }
    }
}

/// Limits of the plaintext admin HTTP listener (`/healthz`, `/readyz`, `/metrics`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminLimits {
    /// Time a connection may take to send a request's headers, counted from accept and
    /// again while idle between requests; slower connections are closed. Default 10s.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Connections open at once; more are closed as soon as they are accepted. Default 1024.
    pub max_connections: usize,
}

impl Default for AdminLimits {
    fn default() -> Self {
        Self { header_read_timeout: Duration::from_secs(10), max_connections: 1024 }
    }
}

impl AdminLimits {
    /// Every limit must be positive; `prefix` is the table's path (e.g. `limits.admin`).
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if self.header_read_timeout.is_zero() {
            return Err(ConfigError::invalid(format!("{prefix}.header_read_timeout"), "must be greater than zero"));
        }
        if self.max_connections == 0 {
            return Err(ConfigError::invalid(format!("{prefix}.max_connections"), "must be greater than zero"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_limits_are_refused_by_name() {
        ListenerLimits::default().validate("limits.listener").unwrap();
        ListenerLimits::heartbeat_gateway().validate("listener").unwrap();
        AdminLimits::default().validate("limits.admin").unwrap();
        let cases = [
            (ListenerLimits { tls_handshake_timeout: Duration::ZERO, ..Default::default() }, "tls_handshake_timeout"),
            (ListenerLimits { preface_timeout: Duration::ZERO, ..Default::default() }, "preface_timeout"),
            (ListenerLimits { max_connections: 0, ..Default::default() }, "max_connections"),
            (ListenerLimits { max_connections_per_ip: 0, ..Default::default() }, "max_connections_per_ip"),
        ];
        for (limits, field) in cases {
            let err = limits.validate("limits.listener").unwrap_err().to_string();
            assert!(err.starts_with(&format!("limits.listener.{field}:")), "{err}");
        }
        let admin = AdminLimits { max_connections: 0, ..Default::default() };
        assert!(admin.validate("admin_limits").unwrap_err().to_string().starts_with("admin_limits.max_connections:"));
        let admin = AdminLimits { header_read_timeout: Duration::ZERO, ..Default::default() };
        assert!(
            admin.validate("admin_limits").unwrap_err().to_string().starts_with("admin_limits.header_read_timeout:")
        );
    }
}
