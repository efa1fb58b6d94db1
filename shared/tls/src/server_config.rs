//! rustls server configurations for listeners that do TLS themselves (`muster-listener`, to
//! put deadlines on the handshake and on the HTTP/2 preface after it). They are built the way
//! tonic's `ServerTlsConfig` builds its own: our chain and key, client certificates verified
//! against the given CA roots, and ALPN `h2`.

use std::sync::Arc;

use rustls::server::danger::ClientCertVerifier;

use crate::TlsError;
use crate::files::TlsFiles;
use crate::parse::{certs_from_pem, key_from_pem, parse_err};

/// Whether a client must present a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// Ask for one, verify it if sent, let certificate-less clients in (a tower layer
    /// enforces certificates per method).
    Optional,
    /// The handshake fails without a certificate from the client CA.
    Required,
}

/// A server config presenting `chain_pem` (leaf first) with `key_pem`, verifying client
/// certificates against `client_ca_pem`.
pub fn server_config(
    chain_pem: &str,
    key_pem: &str,
    client_ca_pem: &str,
    client_auth: ClientAuth,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certs_from_pem(chain_pem.as_bytes(), "certificate", "server certificate")?;
    let key = key_from_pem(key_pem.as_bytes(), "private key", "server key")?;
    let verifier = client_cert_verifier(client_ca_pem, client_auth, "client CA")?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| parse_err("certificate", "server certificate", e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| parse_err("private key", "server key", e))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A verifier of client certificates that trusts the CAs in `client_ca_pem` (`origin` names
/// where they came from in errors).
pub fn client_cert_verifier(
    client_ca_pem: &str,
    client_auth: ClientAuth,
    origin: &str,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let roots = crate::live::roots_from_pem(client_ca_pem.as_bytes(), origin)?;
    crate::live::client_verifier(Arc::new(roots), client_auth, origin)
}

impl TlsFiles {
    /// The rustls twin of [`TlsFiles::server_tls`]: our identity, client certificates
    /// optional and verified against the cluster CA, after the same start-up checks.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let ca = text(self.load()?.ca, "CA certificate", self)?;
        self.server_config_trusting(&ca, ClientAuth::Optional)
    }

    /// Our identity (checked against the cluster CA as [`TlsFiles::server_tls`] does), with
    /// client certificates verified against `client_ca_pem` only.
    pub fn server_config_trusting(
        &self,
        client_ca_pem: &str,
        client_auth: ClientAuth,
    ) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let loaded = self.load()?;
        server_config(
            &text(loaded.cert, "certificate", self)?,
            &text(loaded.key, "private key", self)?,
            client_ca_pem,
            client_auth,
        )
    }
}

fn text(bytes: Vec<u8>, what: &'static str, files: &TlsFiles) -> Result<String, TlsError> {
    String::from_utf8(bytes).map_err(|e| parse_err(what, &files.cert.display().to_string(), e))
}
