//! A client-certificate verifier that asks, at each handshake, which verifier is in force:
//! the one built from the CA file as last reloaded ([`crate::LiveTls`]), or from the worker
//! CAs the control plane last listed ([`crate::SwappableClientVerifier`]). The rustls server
//! config holds this wrapper for its whole life; what it delegates to changes underneath.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::ClientAuth;

/// Where the verifier in force comes from.
pub(crate) trait VerifierSource: std::fmt::Debug + Send + Sync {
    /// The verifier for this handshake.
    fn verifier(&self, auth: ClientAuth) -> Arc<dyn ClientCertVerifier>;
    /// Told of each client certificate that verified.
    fn verified(&self, _end_entity: &CertificateDer<'_>) {}
}

#[derive(Debug)]
pub(crate) struct FollowingVerifier<S> {
    pub(crate) source: S,
    pub(crate) auth: ClientAuth,
}

impl<S: VerifierSource> FollowingVerifier<S> {
    fn inner(&self) -> Arc<dyn ClientCertVerifier> {
        self.source.verifier(self.auth)
    }
}

impl<S: VerifierSource> ClientCertVerifier for FollowingVerifier<S> {
    fn client_auth_mandatory(&self) -> bool {
        self.auth == ClientAuth::Required
    }

    /// No hints: every Muster client holds one certificate, and the hints would have to
    /// outlive a swap.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.inner().verify_client_cert(end_entity, intermediates, now)?;
        self.source.verified(end_entity);
        Ok(verified)
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
