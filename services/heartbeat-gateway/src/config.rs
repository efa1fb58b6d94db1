//! The gateway's configuration: where workers reach it, where the control plane is, how it
//! authenticates, how often it batches, and how many heartbeats it traces. The TTL policy itself is not configured here: the
//! leader hands it out with every batch response, so every gateway runs the same one.

use std::net::SocketAddr;
use std::time::Duration;

use muster_config::{AdminLimits, ConfigError, ListenerLimits, TelemetryConfig, TlsConfig};
use serde::{Deserialize, Serialize};

/// Default port of the worker-facing heartbeat listener.
pub const DEFAULT_GATEWAY_PORT: u16 = 3671;
/// Default port of the gateway's admin listener.
pub const DEFAULT_ADMIN_PORT: u16 = 3682;
/// Default share of heartbeat reports that get an exported span.
pub const DEFAULT_HEARTBEAT_TRACE_RATIO: f64 = 0.001;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Where workers' `ReportStatus` streams are served. Default `0.0.0.0:3671`.
    pub listen_addr: SocketAddr,
    /// What workers dial (`host:port`), as registered with the control plane. Default: the
    /// listen address when it names a host, else `<hostname>:<listen port>`.
    pub advertise_addr: Option<String>,
    /// Plaintext admin HTTP (`/healthz`, `/readyz`, `/metrics`). Default `127.0.0.1:3682`:
    /// set `0.0.0.0:3682` where probes or scrapes come from another host or a container
    /// runtime.
    pub admin_addr: SocketAddr,
    /// This gateway's id in the control plane's gateway list. Default: derived from the
    /// advertised address (`gw-<host>-<port>`), so a restarted gateway keeps its id.
    pub gateway_id: Option<String>,
    /// Control-plane API addresses (any node; the client follows the leader).
    pub control_plane: Vec<String>,
    /// The gateway's own certificate (role `gateway`, from `musterctl tls init --component
    /// gateway:NAME`) and the cluster CA, or `insecure = true` (development only: plaintext,
    /// and workers name themselves with `x-muster-worker-id` metadata).
    pub tls: TlsConfig,
    /// How often the beats received are sent to the leader in one `ReportLiveness`.
    /// Default 250ms.
    #[serde(with = "humantime_serde")]
    pub batch_interval: Duration,
    /// A report sooner than this after the same worker's previous one takes no budget token
    /// and is answered `throttled`. Default 1s; 0 turns the check off.
    #[serde(with = "humantime_serde")]
    pub min_report_interval: Duration,
    /// The fraction of `ReportStatus` reports traced with an exported INFO `heartbeat.report`
    /// span (0.0 to 1.0); the rest stay quiet (DEBUG). Default 0.001: one report in a
    /// thousand, enough to see heartbeat latency without paying for a span per beat.
    pub heartbeat_trace_ratio: f64,
    /// Handshake and preface deadlines and connection caps of the heartbeat listener
    /// (`[listener_limits]`). Defaults 10s, 10s, 100000 connections and 50000 per IP: every
    /// worker holds a stream here, and NATs and load generators put thousands behind one IP.
    pub listener_limits: ListenerLimits,
    /// Header deadline and connection cap of the admin listener (`[admin_limits]`; defaults
    /// 10s and 1024).
    pub admin_limits: AdminLimits,
    pub telemetry: TelemetryConfig,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen_addr: SocketAddr::from(([0, 0, 0, 0], DEFAULT_GATEWAY_PORT)),
            advertise_addr: None,
            admin_addr: SocketAddr::from(([127, 0, 0, 1], DEFAULT_ADMIN_PORT)),
            gateway_id: None,
            control_plane: vec![format!("127.0.0.1:{}", muster_config::DEFAULT_API_PORT)],
            tls: TlsConfig::default(),
            batch_interval: Duration::from_millis(250),
            min_report_interval: Duration::from_secs(1),
            heartbeat_trace_ratio: DEFAULT_HEARTBEAT_TRACE_RATIO,
            listener_limits: ListenerLimits::heartbeat_gateway(),
            admin_limits: AdminLimits::default(),
            telemetry: TelemetryConfig::default(),
        }
    }
}

fn invalid(field: &str, message: impl Into<String>) -> Result<(), ConfigError> {
    Err(ConfigError::Invalid { field: field.into(), message: message.into() })
}

impl GatewayConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.control_plane.is_empty() {
            return invalid("control_plane", "at least one control-plane API address is required");
        }
        if let Some(bad) = self.control_plane.iter().find(|addr| addr.trim().is_empty()) {
            return invalid("control_plane", format!("empty address {bad:?}"));
        }
        if self.batch_interval < Duration::from_millis(10) || self.batch_interval > Duration::from_secs(10) {
            return invalid("batch_interval", "must be between 10ms and 10s");
        }
        if self.min_report_interval > Duration::from_secs(3600) {
            return invalid("min_report_interval", "must be at most 1h");
        }
        if !(0.0..=1.0).contains(&self.heartbeat_trace_ratio) {
            return invalid(
                "heartbeat_trace_ratio",
                format!(
                    "must be between 0.0 (no heartbeat traced) and 1.0 (every report traced), got {}",
                    self.heartbeat_trace_ratio
                ),
            );
        }
        if let Some(addr) = &self.advertise_addr {
            let port = addr.rsplit_once(':').and_then(|(host, port)| (!host.is_empty()).then_some(port));
            if !port.is_some_and(|port| port.parse::<u16>().is_ok_and(|port| port != 0)) {
                return invalid("advertise_addr", format!("{addr:?} is not host:port"));
            }
        }
        if let Some(id) = &self.gateway_id
            && (id.is_empty()
                || id.len() > muster_tls::GATEWAY_ID_MAX_BYTES
                || id.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return invalid("gateway_id", "must be 1 to 128 characters without spaces");
        }
        self.listener_limits.validate("listener_limits")?;
        self.admin_limits.validate("admin_limits")?;
        self.tls.validate()
    }

    /// What workers dial, given the address the listener actually bound (its port is right
    /// even when `listen_addr` asked for port 0).
    pub fn advertise_addr_for(&self, bound: SocketAddr) -> String {
        if let Some(addr) = &self.advertise_addr {
            return addr.clone();
        }
        if bound.ip().is_unspecified() {
            format!("{}:{}", muster_config::hostname().as_deref().unwrap_or("localhost"), bound.port())
        } else {
            bound.to_string()
        }
    }

    /// The configured id, or one derived from the advertised address (stable across restarts).
    /// With TLS, `cert_name` is the name in the gateway's certificate: the control plane takes
    /// batches only from a gateway id that is that name or `<name>/<instance>`, so the derived
    /// id is `<name>/<host>-<port>` and a configured one must fit.
    pub fn gateway_id_for(&self, advertise_addr: &str, cert_name: Option<&str>) -> Result<String, ConfigError> {
        let host_port: String = advertise_addr
            .trim_start_matches('[')
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c.to_ascii_lowercase() } else { '-' })
            .collect();
        let host_port = host_port.trim_matches('-');
        match (&self.gateway_id, cert_name) {
            (Some(id), Some(name)) if !muster_tls::gateway_id_allowed(name, id) => Err(ConfigError::Invalid {
                field: "gateway_id".into(),
                message: format!(
                    "{id:?} is not allowed for this gateway's certificate (named {name:?}): use {name:?} or \
                     \"{name}/<instance>\", or leave gateway_id unset"
                ),
            }),
            (Some(id), _) => Ok(id.clone()),
            (None, Some(name)) => Ok(format!("{name}/{host_port}")),
            (None, None) => Ok(format!("gw-{host_port}")),
        }
    }
}

impl muster_telemetry::HasTelemetry for GatewayConfig {
    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insecure() -> GatewayConfig {
        muster_config::ConfigLoader::new().set("tls.insecure", toml::Value::Boolean(true)).load().unwrap()
    }

    #[test]
    fn defaults_and_env_layering() {
        let config = insecure();
        assert_eq!(config.listen_addr.port(), 3671);
        assert_eq!(config.admin_addr.port(), 3682);
        assert_eq!(config.batch_interval, Duration::from_millis(250));
        assert_eq!(config.min_report_interval, Duration::from_secs(1));
        assert_eq!(config.control_plane, ["127.0.0.1:3669"]);
        assert_eq!(config.heartbeat_trace_ratio, 0.001);
        assert_eq!(config.admin_addr.ip(), std::net::Ipv4Addr::LOCALHOST);
        // One gateway holds every worker's stream, thousands of them from one address.
        assert_eq!(config.listener_limits.max_connections_per_ip, 50_000);
        config.validate().unwrap();

        let env = [
            ("MUSTER_BATCH_INTERVAL".to_string(), "500ms".to_string()),
            ("MUSTER_TLS__INSECURE".to_string(), "true".to_string()),
        ];
        let config: GatewayConfig = muster_config::ConfigLoader::new().env_vars(env).load().unwrap();
        assert_eq!(config.batch_interval, Duration::from_millis(500));

        // A whole number is a ratio too (`heartbeat_trace_ratio = 1` traces every report).
        for (raw, ratio) in [("1", 1.0), ("0", 0.0), ("0.25", 0.25)] {
            let env = [("MUSTER_HEARTBEAT_TRACE_RATIO".to_string(), raw.to_string())];
            let config: GatewayConfig = muster_config::ConfigLoader::new().env_vars(env).load().unwrap();
            assert_eq!(config.heartbeat_trace_ratio, ratio);
        }
    }

    #[test]
    fn bad_values_are_named() {
        let config = insecure();
        let check = |config: GatewayConfig, field: &str| {
            let err = config.validate().unwrap_err().to_string();
            assert!(err.starts_with(&format!("{field}:")), "{err}");
        };
        check(GatewayConfig { control_plane: Vec::new(), ..config.clone() }, "control_plane");
        check(GatewayConfig { batch_interval: Duration::from_millis(1), ..config.clone() }, "batch_interval");
        check(GatewayConfig { advertise_addr: Some("no-port".into()), ..config.clone() }, "advertise_addr");
        check(GatewayConfig { advertise_addr: Some(":3671".into()), ..config.clone() }, "advertise_addr");
        check(GatewayConfig { gateway_id: Some("a b".into()), ..config.clone() }, "gateway_id");
        let no_cap = ListenerLimits { max_connections: 0, ..ListenerLimits::heartbeat_gateway() };
        check(GatewayConfig { listener_limits: no_cap, ..config.clone() }, "listener_limits.max_connections");
        let no_deadline = AdminLimits { header_read_timeout: Duration::ZERO, ..AdminLimits::default() };
        check(GatewayConfig { admin_limits: no_deadline, ..config.clone() }, "admin_limits.header_read_timeout");
        for ratio in [-0.1, 1.5, f64::NAN] {
            check(GatewayConfig { heartbeat_trace_ratio: ratio, ..config.clone() }, "heartbeat_trace_ratio");
        }
        check(GatewayConfig { tls: TlsConfig::default(), ..config }, "tls.ca_file");

        let err = muster_config::ConfigLoader::new()
            .set("batch_intervall", toml::Value::String("1s".into()))
            .load::<GatewayConfig>()
            .unwrap_err();
        assert!(err.to_string().contains("batch_intervall"), "{err}");
    }

    #[test]
    fn advertise_address_and_id_are_derived_stably() {
        let config = insecure();
        let bound: SocketAddr = "10.0.0.5:3671".parse().unwrap();
        assert_eq!(config.advertise_addr_for(bound), "10.0.0.5:3671");
        let id = |config: &GatewayConfig, addr: &str, cert: Option<&str>| config.gateway_id_for(addr, cert).unwrap();
        assert_eq!(id(&config, "10.0.0.5:3671", None), "gw-10.0.0.5-3671");
        assert_eq!(id(&config, "[::1]:3671", None), "gw-1--3671");
        assert_eq!(id(&config, "GW.Example:80", None), "gw-gw.example-80");
        assert_eq!(id(&config, "10.0.0.5:3671", Some("edge")), "edge/10.0.0.5-3671");

        let any: SocketAddr = "0.0.0.0:4000".parse().unwrap();
        let derived = config.advertise_addr_for(any);
        assert!(derived.ends_with(":4000") && !derived.starts_with("0.0.0.0"), "{derived}");

        let pinned =
            GatewayConfig { advertise_addr: Some("gw.example:1".into()), gateway_id: Some("edge-7".into()), ..config };
        assert_eq!(pinned.advertise_addr_for(any), "gw.example:1");
        assert_eq!(id(&pinned, "gw.example:1", None), "edge-7");
        assert_eq!(id(&pinned, "gw.example:1", Some("edge-7")), "edge-7");
        let err = pinned.gateway_id_for("gw.example:1", Some("edge")).unwrap_err();
        assert!(err.to_string().starts_with("gateway_id:"), "{err}");
    }
}
