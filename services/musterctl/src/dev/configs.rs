//! Each embedded component's configuration, built from the deployables' own config types with
//! their defaults, so dev mode runs the settings a real deployment starts from and differs
//! only in addresses (loopback, as bound), files (under the dev dir) and the agents' labels.

use std::path::{Path, PathBuf};

use anyhow::Context;
use muster_config::{ClusterMode, ConfigLoader, ControlPlaneConfig, ListenConfig, TlsConfig};
use muster_heartbeat_gateway::GatewayConfig;
use muster_registrar::RegistrarConfig;
use muster_tls::TlsFiles;
use muster_worker_agent::AgentConfig;
use toml::{Table, Value};

use super::dir::DevDir;
use super::ports::Addrs;

/// The gateway's id, fixed so that a kept data dir does not collect a new gateway per port;
/// the name in its certificate, as the control plane requires of a gateway.
const GATEWAY_ID: &str = super::pki::GATEWAY;
/// The label that tells the dev agents apart (`dev-agent=1`, `dev-agent=2`, ...).
pub const AGENT_LABEL: &str = "dev-agent";

fn tls(files: &TlsFiles) -> TlsConfig {
    TlsConfig {
        insecure: false,
        ca_file: Some(files.ca.clone()),
        cert_file: Some(files.cert.clone()),
        key_file: Some(files.key.clone()),
        ..TlsConfig::default()
    }
}

fn string(text: impl Into<String>) -> Value {
    Value::String(text.into())
}

fn path(path: &Path) -> Value {
    string(path.display().to_string())
}

/// A `[cluster]` table read the way a config file is, so the mode's defaults apply.
fn cluster(table: Table) -> anyhow::Result<ClusterMode> {
    #[derive(serde::Deserialize)]
    struct Only {
        cluster: ClusterMode,
    }
    let only: Only = ConfigLoader::new().set("cluster", Value::Table(table)).load()?;
    Ok(only.cluster)
}

/// The seed's worker tier, server role: node 1 whose only peer is itself.
pub fn control_plane(dir: &DevDir, files: &TlsFiles, addrs: &Addrs) -> anyhow::Result<ControlPlaneConfig> {
    let mut peer = Table::new();
    peer.insert("id".into(), Value::Integer(1));
    peer.insert("raft_addr".into(), string(addrs.raft.to_string()));
    peer.insert("api_addr".into(), string(addrs.api.to_string()));
    let mut table = Table::new();
    table.insert("mode".into(), string("worker-tier"));
    table.insert("role".into(), string("server"));
    table.insert("node_id".into(), Value::Integer(1));
    table.insert("peers".into(), Value::Array(vec![Value::Table(peer)]));
    let config = ControlPlaneConfig {
        cluster: cluster(table).context("the control plane's [cluster]")?,
        data_dir: dir.control_plane(),
        listen: ListenConfig { raft_addr: addrs.raft, api_addr: addrs.api, admin_addr: addrs.control_plane_admin },
        tls: tls(files),
        ..ControlPlaneConfig::default()
    };
    config.validate().context("the control plane's configuration")?;
    Ok(config)
}

pub fn registrar(files: &TlsFiles, addrs: &Addrs) -> RegistrarConfig {
    RegistrarConfig {
        worker_grpc_addr: addrs.registrar,
        admin_addr: addrs.registrar_admin,
        control_plane: vec![addrs.api.to_string()],
        tls: tls(files),
        ..RegistrarConfig::default()
    }
}

pub fn gateway(files: &TlsFiles, addrs: &Addrs) -> GatewayConfig {
    GatewayConfig {
        listen_addr: addrs.gateway,
        advertise_addr: Some(addrs.gateway.to_string()),
        admin_addr: addrs.gateway_admin,
        gateway_id: Some(GATEWAY_ID.to_string()),
        control_plane: vec![addrs.api.to_string()],
        tls: tls(files),
        ..GatewayConfig::default()
    }
}

/// The seed's worker tier, worker role, for agent `n` (1-based).
pub fn agent(dir: &DevDir, n: usize, addrs: &Addrs) -> anyhow::Result<AgentConfig> {
    let mut labels = Table::new();
    labels.insert(AGENT_LABEL.into(), string(n.to_string()));
    let mut table = Table::new();
    table.insert("mode".into(), string("worker-tier"));
    table.insert("role".into(), string("worker"));
    table.insert("servers".into(), Value::Array(vec![string(addrs.registrar.to_string())]));
    table.insert("token_file".into(), path(&dir.token_file()));
    table.insert("identity_dir".into(), path(&identity_dir(dir, n)));
    table.insert("labels".into(), Value::Table(labels));
    let admin_addr = *addrs.agents_admin.get(n - 1).with_context(|| format!("no admin listener for agent {n}"))?;
    Ok(AgentConfig {
        cluster: cluster(table).with_context(|| format!("agent {n}'s [cluster]"))?,
        data_dir: dir.agent(n),
        admin_addr,
        gateways: vec![addrs.gateway.to_string()],
        hostname: Some(format!("{AGENT_LABEL}-{n}")),
        ..AgentConfig::default()
    })
}

/// Where agent `n` keeps its identity.
pub fn identity_dir(dir: &DevDir, n: usize) -> PathBuf {
    dir.agent(n).join("identity")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn addrs() -> Addrs {
        let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        Addrs {
            raft: at(3668),
            api: at(3669),
            control_plane_admin: at(3680),
            registrar: at(3670),
            registrar_admin: at(3681),
            gateway: at(3671),
            gateway_admin: at(3682),
            agents_admin: vec![at(40001), at(40002), at(40003)],
        }
    }

    #[test]
    fn every_component_config_validates() {
        let dir = DevDir::open(None).unwrap();
        let pki = super::super::pki::ensure(&dir.tls()).unwrap();
        let addrs = addrs();
        let cp = control_plane(&dir, &pki.control_plane, &addrs).unwrap();
        assert!(cp.cluster.is_worker_tier_server());
        assert_eq!(cp.advertised_api_addr(), "127.0.0.1:3669");
        registrar(&pki.registrar, &addrs).validate().unwrap();
        gateway(&pki.gateway, &addrs).validate().unwrap();
        for n in 1..=3 {
            let settings = agent(&dir, n, &addrs).unwrap().validate().unwrap();
            assert_eq!(settings.servers, ["127.0.0.1:3670"]);
            assert_eq!(settings.labels, [(AGENT_LABEL.to_string(), n.to_string())].into());
            assert_eq!(settings.identity_dir, identity_dir(&dir, n));
            assert_eq!(settings.hostname, format!("dev-agent-{n}"), "agents on one host tell themselves apart");
        }
    }
}
