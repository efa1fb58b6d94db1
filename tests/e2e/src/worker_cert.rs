//! A worker certificate chain as tests inspect it (its leaf), and `Renew` called with it.

use muster_proto::v1;
use muster_proto::v1::worker_registration_service_client::WorkerRegistrationServiceClient;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};
use x509_parser::extensions::GeneralName;

use crate::cluster::channel;

/// The first certificate of a worker's chain.
pub struct WorkerLeaf {
    pub der: Vec<u8>,
    /// `spiffe://<cluster-id>/worker/<id>`.
    pub uri: String,
    pub not_after_unix: i64,
    /// The certified public key (SubjectPublicKeyInfo).
    pub public_key: Vec<u8>,
}

impl WorkerLeaf {
    /// Parses the leaf of `chain_pem`; panics unless it is a certificate naming one URI.
    pub fn of(chain_pem: &str) -> Self {
        let block =
            x509_parser::pem::Pem::iter_from_buffer(chain_pem.as_bytes()).next().expect("a PEM block").expect("PEM");
        let cert = block.parse_x509().expect("a certificate");
        let sans = cert.subject_alternative_name().expect("SAN").expect("a SAN").value.general_names.clone();
        let [GeneralName::URI(uri)] = sans.as_slice() else { panic!("a worker certificate names one URI: {sans:?}") };
        Self {
            uri: uri.to_string(),
            not_after_unix: cert.validity().not_after.timestamp(),
            public_key: cert.public_key().raw.to_vec(),
            der: block.contents.clone(),
        }
    }

    /// The certificate serial in hex, as the cluster records it.
    pub fn serial_hex(&self) -> String {
        let cluster = self.uri.trim_start_matches("spiffe://").split('/').next().expect("a cluster id");
        muster_tls::worker_cert(&self.der, cluster).expect("a worker certificate").serial_hex
    }
}

/// A fresh P-256 key and a CSR for it.
pub fn key_and_csr() -> (rcgen::KeyPair, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let csr = muster_worker_agent::register::csr_pem(&key).expect("csr");
    (key, csr)
}

/// `Renew` on the registrar at `addr`, presenting `chain_pem` and `key_pem` and trusting the
/// cluster CA `ca_pem`: the answer and the new key it certifies.
pub async fn renew(
    addr: &str,
    ca_pem: &str,
    chain_pem: &str,
    key_pem: &str,
) -> Result<(v1::RenewResponse, rcgen::KeyPair), tonic::Status> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .identity(Identity::from_pem(chain_pem, key_pem));
    let mut client = WorkerRegistrationServiceClient::new(channel(addr, Some(tls)));
    let (key, csr_pem) = key_and_csr();
    let response = client.renew(v1::RenewRequest { csr_pem }).await?.into_inner();
    Ok((response, key))
}
