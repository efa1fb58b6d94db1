//! Trust on first contact, pinned: before a worker has any certificate it learns which CA to
//! trust from the registrar's own TLS chain, accepting it only if one certificate in the chain
//! has the public key whose SHA-256 the bootstrap token carries (kubeadm's discovery hash).
//!
//! The probe handshake only collects the chain; the Register call itself then runs over a
//! normal verified connection trusting just that CA, so hostname and signatures are checked
//! by the regular rustls path.

use std::sync::{Arc, Mutex};

use anyhow::Context;
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};

/// Records the presented chain; checks only the handshake signatures.
#[derive(Debug)]
struct ChainCollector {
    chain: Mutex<Vec<CertificateDer<'static>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for ChainCollector {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut chain = vec![end_entity.clone().into_owned()];
        chain.extend(intermediates.iter().map(|c| c.clone().into_owned()));
        *self.chain.lock().unwrap_or_else(|p| p.into_inner()) = chain;
        Ok(ServerCertVerified::assertion())
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

/// SHA-256 of a certificate's SubjectPublicKeyInfo.
pub fn spki_sha256(der: &[u8]) -> anyhow::Result<[u8; 32]> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).context("parsing a presented certificate")?;
    Ok(Sha256::digest(cert.public_key().raw).into())
}

/// Connects to `addr`, collects the registrar's chain and returns (as PEM) the certificate
/// whose key matches `pin`; an error names the mismatch.
pub async fn discover_ca(addr: &str, pin: &[u8]) -> anyhow::Result<String> {
    anyhow::ensure!(
        pin.len() == 32,
        "the bootstrap token carries no CA pin (was it created by an --insecure cluster?)"
    );
    muster_tls::install_crypto_provider();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let collector = Arc::new(ChainCollector { chain: Mutex::default(), provider: provider.clone() });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(collector.clone())
        .with_no_client_auth();
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host).trim_start_matches('[').trim_end_matches(']');
    let server_name = ServerName::try_from(host.to_string()).with_context(|| format!("invalid host in {addr}"))?;
    let tcp = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    connector.connect(server_name, tcp).await.with_context(|| format!("TLS handshake with {addr}"))?;
    let chain = collector.chain.lock().unwrap_or_else(|p| p.into_inner()).clone();
    for cert in &chain {
        if spki_sha256(cert)?.as_slice() == pin {
            return Ok(pem(cert));
        }
    }
    Err(PinMismatch { addr: addr.to_string(), presented: chain.len() }.into())
}

/// The registrar's chain does not contain the pinned CA key: never retried.
#[derive(Debug, thiserror::Error)]
#[error(
    "{addr} presented {presented} certificate(s) and none has the public key pinned by the bootstrap token; \
     refusing to register (wrong address, or someone in the middle)"
)]
pub struct PinMismatch {
    pub addr: String,
    pub presented: usize,
}

fn pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> =
        b64.as_bytes().chunks(64).map(|line| std::str::from_utf8(line).unwrap_or_default()).collect();
    format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trips_through_the_x509_parser() {
        let ca = muster_tls::CertificateAuthority::generate("pin test", std::time::Duration::from_secs(60)).unwrap();
        let der = x509_parser::pem::Pem::iter_from_buffer(ca.cert_pem().as_bytes()).next().unwrap().unwrap().contents;
        let again = pem(&der);
        assert_eq!(again.replace('\n', ""), ca.cert_pem().replace(['\n', '\r'], ""));
        assert_eq!(hex(&spki_sha256(&der).unwrap()), ca.public_key_sha256());
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}
