//! The port layout, bound all at once before anything starts: a port in use is then one clear
//! error naming it, instead of a component failing halfway through start-up. With the default
//! base (3668) every port is the matching deployable's default, so the commands in the docs
//! work unchanged; `--base-port 0` puts every listener on an ephemeral port (tests).

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr};

use anyhow::Context;
use muster_control_plane::Listeners;
use tokio::net::TcpListener;

/// Offsets from `--base-port`: control plane Raft, API, registrar, gateway, then the admin
/// HTTP listeners of the control plane, registrar and gateway.
const LAYOUT: [(u16, &str); 7] = [
    (0, "control-plane Raft"),
    (1, "control-plane API"),
    (2, "registrar"),
    (3, "heartbeat gateway"),
    (12, "control-plane admin HTTP"),
    (13, "registrar admin HTTP"),
    (14, "heartbeat gateway admin HTTP"),
];

/// The highest base whose whole layout fits below 65536.
pub const MAX_BASE_PORT: u16 = u16::MAX - 14;

/// Every listener of the dev cluster, bound on 127.0.0.1.
pub struct Bound {
    pub control_plane: Listeners,
    pub services: ServiceListeners,
}

/// The listeners of the components the supervisor runs.
pub struct ServiceListeners {
    pub registrar: TcpListener,
    pub registrar_admin: TcpListener,
    pub gateway: TcpListener,
    pub gateway_admin: TcpListener,
    /// One per agent, always on an ephemeral port.
    pub agents_admin: Vec<TcpListener>,
}

/// The addresses [`Bound`] listens on (known before the listeners move into components).
#[derive(Clone, Debug)]
pub struct Addrs {
    pub raft: SocketAddr,
    pub api: SocketAddr,
    pub control_plane_admin: SocketAddr,
    pub registrar: SocketAddr,
    pub registrar_admin: SocketAddr,
    pub gateway: SocketAddr,
    pub gateway_admin: SocketAddr,
    pub agents_admin: Vec<SocketAddr>,
}

/// Binds the layout at `base` (0: ephemeral ports) plus `agents` admin listeners.
pub async fn bind(base: u16, agents: usize) -> anyhow::Result<(Bound, Addrs)> {
    anyhow::ensure!(
        base <= MAX_BASE_PORT,
        "--base-port {base} is too high: the layout uses base..base+14, so the base must be at most {MAX_BASE_PORT}"
    );
    let mut listeners = Vec::with_capacity(LAYOUT.len());
    for (offset, component) in LAYOUT {
        let port = if base == 0 { 0 } else { base + offset };
        listeners.push(bind_one(port, component, base).await?);
    }
    let mut agents_admin = Vec::with_capacity(agents);
    for n in 1..=agents {
        agents_admin.push(bind_one(0, &format!("worker agent {n} admin HTTP"), base).await?);
    }
    let addr = |listener: &TcpListener| listener.local_addr().context("reading a bound listener's address");
    let [raft, api, registrar, gateway, cp_admin, registrar_admin, gateway_admin]: [TcpListener; 7] =
        listeners.try_into().map_err(|_| anyhow::anyhow!("the port layout has seven listeners"))?;
    let addrs = Addrs {
        raft: addr(&raft)?,
        api: addr(&api)?,
        control_plane_admin: addr(&cp_admin)?,
        registrar: addr(&registrar)?,
        registrar_admin: addr(&registrar_admin)?,
        gateway: addr(&gateway)?,
        gateway_admin: addr(&gateway_admin)?,
        agents_admin: agents_admin.iter().map(addr).collect::<anyhow::Result<_>>()?,
    };
    let services = ServiceListeners { registrar, registrar_admin, gateway, gateway_admin, agents_admin };
    let bound = Bound { control_plane: Listeners { raft, api, admin: cp_admin }, services };
    Ok((bound, addrs))
}

async fn bind_one(port: u16, component: &str, base: u16) -> anyhow::Result<TcpListener> {
    match TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await {
        Ok(listener) => Ok(listener),
        Err(err) if err.kind() == ErrorKind::AddrInUse => Err(anyhow::anyhow!(
            "port {port} (the {component}) is already in use on 127.0.0.1 (is another Muster running?); \
             pick another range with --base-port (the layout uses base..base+14), e.g. --base-port {}, \
             or --base-port 0 for ephemeral ports",
            suggested_base(base)
        )),
        Err(err) => Err(err).with_context(|| format!("binding 127.0.0.1:{port} for the {component}")),
    }
}

/// A base 10000 above `base` when it fits, else a low unprivileged one.
fn suggested_base(base: u16) -> u16 {
    base.checked_add(10_000).filter(|b| *b <= MAX_BASE_PORT).unwrap_or(13_668)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn base_zero_binds_every_listener_on_its_own_ephemeral_port() {
        let (bound, addrs) = bind(0, 3).await.unwrap();
        let mut ports = vec![addrs.raft, addrs.api, addrs.registrar, addrs.gateway, addrs.control_plane_admin];
        ports.extend([addrs.registrar_admin, addrs.gateway_admin]);
        ports.extend(&addrs.agents_admin);
        assert!(ports.iter().all(|addr| addr.ip() == Ipv4Addr::LOCALHOST && addr.port() != 0));
        ports.sort();
        ports.dedup();
        assert_eq!(ports.len(), 10);
        assert_eq!(bound.services.agents_admin.len(), 3);
    }

    #[tokio::test]
    async fn a_port_in_use_is_named_with_its_component_and_the_way_out() {
        // Find a base whose whole layout is free, then occupy its API port.
        let probe = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let taken = probe.local_addr().unwrap().port();
        let base = taken.checked_sub(1).filter(|b| *b > 0).expect("an ephemeral port above 1");
        let err = format!("{:#}", bind(base, 0).await.err().expect("the API port is taken"));
        // Normally the API port is the one reported; the Raft one (base) may be taken by
        // another process, which is reported the same way.
        assert!(err.contains("already in use") && err.contains("--base-port"), "{err}");
        assert!(err.contains(&format!("port {taken} (the control-plane API)")) || err.contains("Raft"), "{err}");
        drop(probe);
    }

    #[tokio::test]
    async fn a_base_too_high_for_the_layout_is_refused() {
        let err = bind(MAX_BASE_PORT + 1, 0).await.err().unwrap().to_string();
        assert!(err.contains("--base-port"), "{err}");
    }
}
