//! TLS with the worker's identity. Registrars are dialled like Register does (the cluster CA,
//! the registrar's host name checked). Gateways are checked differently: they scale out
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
use hyper_util::rt::TokioIo;
use muster_middleware::{GrpcClientTraceLayer, TracedChannel};
use muster_tls::Role;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Uri};

use crate::identity::Identity;

/// Client TLS for Renew: trust the cluster CA, present the worker certificate.
pub fn registrar_tls(identity: &Identity) -> ClientTlsConfig {
    muster_tls::install_crypto_provider();
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&identity.ca_bundle_pem))
        .identity(tonic::transport::Identity::from_pem(&identity.cert_chain_pem, &identity.key_pem))
}

/// Accepts a server certificate that chains to `roots` and names the gateway role.
#[derive(Debug)]
struct GatewayVerifier {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for GatewayVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        match muster_tls::peer_identity(end_entity) {
            Some(peer) if peer.role == Role::Gateway => Ok(ServerCertVerified::assertion()),
            other => Err(rustls::Error::General(format!(
                "the server's certificate is signed by the cluster CA but names {}, not a heartbeat gateway",
                other.map_or("no Muster identity".to_string(), |peer| peer.spiffe_id())
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Why a registrar could not be reached: a malformed address, or no connection.
pub enum RegistrarConnectError {
    Address(anyhow::Error),
    Connect(anyhow::Error),
}

/// Calls to gateways traced at DEBUG: the heartbeat stream is the hot path.
const GATEWAY_QUIET_PATHS: &[&str] = &["/muster.v1.HeartbeatService/"];

/// A channel to the registrar at `server` (`host:port`) over `tls`, for Register and Renew.
pub async fn registrar_channel(server: &str, tls: ClientTlsConfig) -> Result<TracedChannel, RegistrarConnectError> {
    let endpoint = Endpoint::from_shared(format!("https://{server}"))
        .and_then(|e| e.tls_config(tls))
        .map_err(|err| RegistrarConnectError::Address(anyhow::anyhow!("registrar address {server}: {err}")))?;
    endpoint
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .map(|channel| GrpcClientTraceLayer::new().channel(channel))
        .map_err(|err| RegistrarConnectError::Connect(anyhow::anyhow!("connecting to registrar {server}: {err}")))
}

/// The rustls client config for gateways, presenting `identity`.
pub fn gateway_tls(identity: &Identity) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(identity.ca_bundle_pem.as_bytes()) {
        roots.add(ca.context("parsing the cluster CA bundle (ca.pem)")?).context("adding the cluster CA")?;
    }
    anyhow::ensure!(!roots.is_empty(), "the identity has no cluster CA bundle (ca.pem is empty)");
    let chain = CertificateDer::pem_slice_iter(identity.cert_chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("parsing the worker certificate (cert.pem)")?;
    let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes()).context("parsing the worker key (key.pem)")?;
    let verifier = Arc::new(GatewayVerifier { roots: Arc::new(roots), provider: provider.clone() });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(chain, key)
        .context("the worker certificate and key do not fit together")?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Connects to the gateway at `addr` (`host:port`) over TLS with `config`.
pub async fn gateway_channel(
    addr: &str,
    config: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
) -> anyhow::Result<TracedChannel> {
    // `http`: TLS is done by the connector below, not by tonic.
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .with_context(|| format!("gateway address {addr:?}"))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true);
    let connector = tower::service_fn(move |uri: Uri| {
        let config = config.clone();
        async move {
            let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_string();
            let port = uri.port_u16().ok_or_else(|| std::io::Error::other("the gateway address has no port"))?;
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(host).map_err(std::io::Error::other)?;
            let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    let channel =
        endpoint.connect_with_connector(connector).await.with_context(|| format!("connecting to gateway {addr}"))?;
    Ok(GrpcClientTraceLayer::new().with_quiet_paths(GATEWAY_QUIET_PATHS).channel(channel))
}
