//! TLS with the worker's identity, through `muster_tls::ClientTls`, which checks the server's
//! role. Registrars are dialled like Register does (the cluster CA, the registrar's host name
//! and role checked). Gateways are checked differently: they scale out
//! behind addresses nobody can list in advance (IPs of `--scale` replicas, compose service
//! names, 127.0.0.1 in tests), so a gateway is accepted when its certificate chains to the
//! cluster CA, has the serverAuth usage and names the `gateway` role
//! (`spiffe://muster/gateway/<name>`, as `musterctl tls init --component gateway:NAME`
//! issues); the host name in the address is not checked. A control-plane node or registrar
//! certificate, also signed by the cluster CA, is refused: only a gateway can take beats.
//!
//! Both channels carry the client trace layer: Register and Renew are `grpc.client` spans
//! whose `traceparent` the registrar adopts; the heartbeat stream's span is DEBUG, so at
//! `info` beats are neither logged nor exported.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use muster_middleware::{GrpcClientTraceLayer, TracedChannel};
use muster_tls::{ClientTls, Role, ServerCheck};
use tonic::transport::Endpoint;

use crate::identity::Identity;

/// Client TLS for Renew: trust the cluster CA, present the worker certificate, and talk only
/// to a `registrar` certificate for the host dialed.
pub fn registrar_tls(identity: &Identity) -> anyhow::Result<ClientTls> {
    let ours = (identity.cert_chain_pem.as_bytes(), identity.key_pem.as_bytes());
    ClientTls::new(identity.ca_bundle_pem.as_bytes(), Some(ours), ServerCheck::RoleAndHost(Role::Registrar))
        .context("the saved identity cannot be used for TLS (cert.pem, key.pem, ca.pem)")
}

/// Why a registrar could not be reached: a malformed address, or no connection.
pub enum RegistrarConnectError {
    Address(anyhow::Error),
    Connect(anyhow::Error),
}

/// Calls to gateways traced at DEBUG: the heartbeat stream is the hot path.
const GATEWAY_QUIET_PATHS: &[&str] = &["/muster.v1.HeartbeatService/"];

/// A channel to the registrar at `server` (`host:port`) over `tls`, for Register and Renew.
pub async fn registrar_channel(server: &str, tls: &ClientTls) -> Result<TracedChannel, RegistrarConnectError> {
    // `http`: the handshake (and the registrar's role check) is ClientTls's.
    let endpoint = Endpoint::from_shared(format!("http://{server}"))
        .map_err(|err| RegistrarConnectError::Address(anyhow::anyhow!("registrar address {server}: {err}")))?;
    let endpoint = endpoint.connect_timeout(Duration::from_secs(5)).timeout(Duration::from_secs(30));
    tls.connect(endpoint)
        .await
        .map(|channel| GrpcClientTraceLayer::new().channel(channel))
        .map_err(|err| RegistrarConnectError::Connect(anyhow::anyhow!("connecting to registrar {server}: {err}")))
}

/// The rustls client config for gateways, presenting `identity`: any host, `gateway` role.
pub fn gateway_tls(identity: &Identity) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    anyhow::ensure!(
        !identity.ca_bundle_pem.trim().is_empty(),
        "the identity has no cluster CA bundle (ca.pem is empty)"
    );
    let ours = (identity.cert_chain_pem.as_bytes(), identity.key_pem.as_bytes());
    let tls = ClientTls::new(identity.ca_bundle_pem.as_bytes(), Some(ours), ServerCheck::Role(Role::Gateway))
        .context("the worker certificate, key and cluster CA do not fit together")?;
    Ok(tls.rustls_config())
}

/// Connects to the gateway at `addr` (`host:port`) over TLS with `config`.
pub async fn gateway_channel(
    addr: &str,
    config: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
) -> anyhow::Result<TracedChannel> {
    // `http`: TLS is ClientTls's, not tonic's.
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .with_context(|| format!("gateway address {addr:?}"))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true);
    let channel = ClientTls::from_rustls_config(config)
        .connect(endpoint)
        .await
        .with_context(|| format!("connecting to gateway {addr}"))?;
    Ok(GrpcClientTraceLayer::new().with_quiet_paths(GATEWAY_QUIET_PATHS).channel(channel))
}
