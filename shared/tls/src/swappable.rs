//! A client-certificate verifier whose trusted CAs are replaced while listeners run. The
//! gateway and the registrar verify workers against the worker CAs the control plane lists,
//! and that list changes during a worker CA rotation (a next CA is added, a retired one is
//! dropped); each handshake uses the list as it is at that moment, and connections already
//! open keep what they were made with.

use std::sync::{Arc, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::{ClientAuth, TlsError, client_cert_verifier};

/// Trusts the CAs of the PEM bundle it was last given.
#[derive(Debug)]
pub struct SwappableClientVerifier {
    auth: ClientAuth,
    what: &'static str,
    current: RwLock<(String, Arc<dyn ClientCertVerifier>)>,
}

impl SwappableClientVerifier {
    /// Trusts the certificates of `ca_pem`; `what` names them in errors ("the worker CA").
    pub fn new(ca_pem: &str, auth: ClientAuth, what: &'static str) -> Result<Arc<Self>, TlsError> {
        let verifier = client_cert_verifier(ca_pem, auth, what)?;
        Ok(Arc::new(Self { auth, what, current: RwLock::new((ca_pem.to_owned(), verifier)) }))
    }

    /// Trusts `ca_pem` from the next handshake on; false when it is what is trusted already.
    /// A bundle that does not load is refused and the current one stays.
    pub fn replace(&self, ca_pem: &str) -> Result<bool, TlsError> {
        if self.current.read().unwrap_or_else(|p| p.into_inner()).0 == ca_pem {
            return Ok(false);
        }
        let verifier = client_cert_verifier(ca_pem, self.auth, self.what)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = (ca_pem.to_owned(), verifier);
        Ok(true)
    }

    /// The bundle trusted now.
    pub fn ca_pem(&self) -> String {
        self.current.read().unwrap_or_else(|p| p.into_inner()).0.clone()
    }

    fn inner(&self) -> Arc<dyn ClientCertVerifier> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).1.clone()
    }
}

impl ClientCertVerifier for SwappableClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        self.auth == ClientAuth::Required
    }

    /// No hints: a worker holds one certificate, and the hints would have to outlive a swap.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner().verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner().supported_verify_schemes()
    }
}
