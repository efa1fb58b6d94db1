//! Shared PEM and X.509 decoding so the CA loader and the rustls/tonic loaders report
//! malformed input the same way, naming where it came from.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use crate::TlsError;

/// Every CERTIFICATE block in `pem`; at least one is required.
pub(crate) fn certs_from_pem(
    pem: &[u8],
    what: &'static str,
    origin: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs =
        CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().map_err(|e| parse_err(what, origin, e))?;
    if certs.is_empty() {
        return Err(parse_err(what, origin, "no CERTIFICATE block found"));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, SEC1 or PKCS#1) in `pem`.
pub(crate) fn key_from_pem(pem: &[u8], what: &'static str, origin: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| parse_err(what, origin, e))
}

/// Decodes one DER certificate, rejecting trailing garbage.
pub(crate) fn x509<'a>(der: &'a [u8], what: &'static str, origin: &str) -> Result<X509Certificate<'a>, TlsError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(parse_err(what, origin, "trailing bytes after certificate")),
        Err(e) => Err(parse_err(what, origin, e)),
    }
}

pub(crate) fn parse_err(what: &'static str, origin: &str, reason: impl ToString) -> TlsError {
    TlsError::Parse { what, origin: origin.to_owned(), reason: reason.to_string() }
}

/// SHA-256 of the SubjectPublicKeyInfo of the first certificate in `cert_pem`: the pin a
/// bootstrap token carries for the CA (kubeadm's discovery hash does the same).
pub fn public_key_pin(cert_pem: &str, origin: &str) -> Result<[u8; 32], TlsError> {
    use sha2::Digest;
    let certs = certs_from_pem(cert_pem.as_bytes(), "CA certificate", origin)?;
    let cert = x509(&certs[0], "CA certificate", origin)?;
    Ok(sha2::Sha256::digest(cert.public_key().raw).into())
}

/// A certificate's fingerprint and expiry, as the control plane records a worker CA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertSummary {
    /// Hex SHA-256 of the DER certificate (what `openssl x509 -fingerprint -sha256` shows).
    pub sha256: String,
    /// `notAfter`, Unix seconds.
    pub not_after_unix: i64,
}

/// Fingerprint and expiry of the first certificate in `cert_pem`.
pub fn cert_summary(cert_pem: &str, what: &'static str, origin: &str) -> Result<CertSummary, TlsError> {
    use sha2::Digest;
    let certs = certs_from_pem(cert_pem.as_bytes(), what, origin)?;
    let cert = x509(&certs[0], what, origin)?;
    Ok(CertSummary {
        sha256: hex::encode(sha2::Sha256::digest(&certs[0])),
        not_after_unix: cert.validity().not_after.timestamp(),
    })
}
