//! What rustls server configurations are built from (by [`crate::LiveTls`], for listeners that
//! do TLS themselves under `muster-listener`'s deadlines): whether a client must present a
//! certificate, and the verifier of client certificates against a given CA bundle.

use std::sync::Arc;

use rustls::server::danger::ClientCertVerifier;

use crate::TlsError;

/// Whether a client must present a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// Ask for one, verify it if sent, let certificate-less clients in (a tower layer
    /// enforces certificates per method).
    Optional,
    /// The handshake fails without a certificate from the client CA.
    Required,
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
