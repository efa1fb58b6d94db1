//! Client TLS that checks who the server is, not only that its certificate chains to the CA.
//!
//! Every component certificate is signed by the one cluster CA, so "signed by the CA" says
//! nothing about *which* component answered: a stolen gateway certificate served on the Raft
//! port received a leader's whole log, and a fake registrar holding one received a worker's
//! bootstrap token. Every Muster client therefore names the role it expects
//! ([`ServerCheck`]): nodes dial only `control-plane` certificates, agents give their token
//! only to a `registrar`, workers beat only to a `gateway`.
//!
//! tonic's `ClientTlsConfig` takes no custom verifier, so the handshake is done here with
//! tokio-rustls in a connector and tonic sees a plain (already encrypted) stream.

use std::sync::Arc;

use hyper_util::rt::TokioIo;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::parse::parse_err;
use crate::{Role, TlsError};

/// What a client requires of the server's certificate, beyond chaining to the CA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerCheck {
    /// The role, and the host name dialed (or the [`ClientTls::domain_name`] override).
    RoleAndHost(Role),
    /// The role only: servers behind addresses nobody can list in advance (gateways scale
    /// out to IPs of `--scale` replicas and pod IPs).
    Role(Role),
}

impl ServerCheck {
    fn role(self) -> Role {
        match self {
            ServerCheck::RoleAndHost(role) | ServerCheck::Role(role) => role,
        }
    }
}

/// Client TLS settings: the CA, our own identity (optional), and the server check.
#[derive(Clone, Debug)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
    domain: Option<String>,
}

impl ClientTls {
    /// Trusts the CA certificates in `ca_pem`, presents `identity` (certificate chain PEM,
    /// key PEM) if given, and accepts only servers that pass `check`.
    pub fn new(ca_pem: &[u8], identity: Option<(&[u8], &[u8])>, check: ServerCheck) -> Result<Self, TlsError> {
        crate::install_crypto_provider();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(ca_pem) {
            let ca = ca.map_err(|err| parse_err("CA certificate", "the CA bundle", err))?;
            roots.add(ca).map_err(|err| parse_err("CA certificate", "the CA bundle", err))?;
        }
        if roots.is_empty() {
            return Err(parse_err("CA certificate", "the CA bundle", "no CERTIFICATE block found"));
        }
        let roots = Arc::new(roots);
        let webpki = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|err| parse_err("CA certificate", "the CA bundle", err))?;
        let trust = Trust::Fixed { roots, webpki };
        let builder = Self::builder(check, trust, provider)?;
        let mut config = match identity {
            Some((chain_pem, key_pem)) => {
                let chain = CertificateDer::pem_slice_iter(chain_pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|err| parse_err("certificate", "the client identity", err))?;
                let key = PrivateKeyDer::from_pem_slice(key_pem)
                    .map_err(|err| parse_err("private key", "the client identity", err))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|err| parse_err("certificate", "the client identity", err))?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self { config: Arc::new(config), domain: None })
    }

    /// Presents the certificate `live` holds at each handshake and checks servers against the
    /// CA bundle it holds then: a client made once follows renewals and CA rotations.
    pub fn live(live: &Arc<crate::LiveTls>, check: ServerCheck) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = Self::builder(check, Trust::Live(live.clone()), provider)?;
        let mut config =
            builder.with_client_cert_resolver(Arc::new(crate::live::LiveClientCert { live: live.clone() }));
        config.alpn_protocols = vec![b"h2".to_vec()];
        // A resumed session would skip the certificates, ours and the server's (see
        // `LiveTls::server_config`).
        config.resumption = rustls::client::Resumption::disabled();
        Ok(Self { config: Arc::new(config), domain: None })
    }

    fn builder(
        check: ServerCheck,
        trust: Trust,
        provider: Arc<CryptoProvider>,
    ) -> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>, TlsError> {
        let verifier = Arc::new(RoleVerifier { check, trust, provider: provider.clone() });
        Ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|err| parse_err("TLS settings", "rustls", err))?
            .dangerous()
            .with_custom_certificate_verifier(verifier))
    }

    /// Wraps a configuration made by [`Self::rustls_config`] (kept by a client that also
    /// drives its own connections).
    pub fn from_rustls_config(config: Arc<rustls::ClientConfig>) -> Self {
        Self { config, domain: None }
    }

    /// Verifies the server as `domain` instead of the host in the address dialed (e.g. dialing
    /// an IP while checking the node name).
    pub fn domain_name(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(domain.into());
        self
    }

    /// The rustls configuration, for clients that drive their own HTTP/2 connection.
    pub fn rustls_config(&self) -> Arc<rustls::ClientConfig> {
        self.config.clone()
    }

    /// A channel for `endpoint` (an `http://host:port` endpoint: TLS is done here) that
    /// connects on first use.
    pub fn connect_lazy(&self, endpoint: Endpoint) -> Channel {
        endpoint.connect_with_connector_lazy(self.connector())
    }

    /// A channel for `endpoint` (an `http://host:port` endpoint), connected now.
    pub async fn connect(&self, endpoint: Endpoint) -> Result<Channel, tonic::transport::Error> {
        endpoint.connect_with_connector(self.connector()).await
    }

    fn connector(
        &self,
    ) -> impl tower::Service<
        Uri,
        Response = TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
        Error = std::io::Error,
        Future = impl Send,
    > + Clone
    + Send
    + 'static {
        let (config, domain) = (self.config.clone(), self.domain.clone());
        tower::service_fn(move |uri: Uri| {
            let (config, domain) = (config.clone(), domain.clone());
            async move {
                let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_string();
                let port = uri.port_u16().ok_or_else(|| std::io::Error::other(format!("{uri} has no port")))?;
                let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
                tcp.set_nodelay(true)?;
                let name = ServerName::try_from(domain.unwrap_or(host)).map_err(std::io::Error::other)?;
                let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        })
    }
}

/// How a refusal names the component that was expected.
fn component(role: Role) -> &'static str {
    match role {
        Role::ControlPlane => "control-plane node",
        Role::Registrar => "registrar",
        Role::Gateway => "heartbeat gateway",
        Role::Worker => "worker",
        Role::Operator => "operator",
        Role::Watcher => "watcher",
    }
}

/// The CAs a client trusts: fixed when it was made, or whatever a [`LiveTls`](crate::LiveTls)
/// holds at the handshake.
#[derive(Debug)]
enum Trust {
    Fixed { roots: Arc<RootCertStore>, webpki: Arc<WebPkiServerVerifier> },
    Live(Arc<crate::LiveTls>),
}

/// Chain (and host, if asked) as webpki checks them, then the Muster role in the certificate.
#[derive(Debug)]
struct RoleVerifier {
    check: ServerCheck,
    trust: Trust,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for RoleVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let material;
        let (roots, webpki) = match &self.trust {
            Trust::Fixed { roots, webpki } => (roots, webpki),
            Trust::Live(live) => {
                material = live.current();
                (&material.roots, &material.server_verifier)
            }
        };
        match self.check {
            ServerCheck::RoleAndHost(_) => {
                webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
            }
            ServerCheck::Role(_) => {
                let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
                rustls::client::verify_server_cert_signed_by_trust_anchor(
                    &cert,
                    roots,
                    intermediates,
                    now,
                    self.provider.signature_verification_algorithms.all,
                )?;
            }
        }
        let expected = self.check.role();
        match crate::peer_identity(end_entity) {
            Some(peer) if peer.role == expected => Ok(ServerCertVerified::assertion()),
            other => Err(rustls::Error::General(format!(
                "the server's certificate is signed by the cluster CA but names {}, not a {}",
                other.map_or("no Muster identity".to_string(), |peer| peer.spiffe_id()),
                component(expected)
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
