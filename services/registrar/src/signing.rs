//! Certifying a worker's key, the one piece Register and Renew share: check the CSR, sign it
//! with the cluster's worker CA as `spiffe://<cluster>/worker/<id>` (whatever names it asked
//! for).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use muster_middleware::ApiError;
use muster_tls::{CertificateAuthority, SignedCert};

pub struct Signer {
    /// Replaced when the worker CA files change (a worker CA rotation).
    worker_ca: RwLock<Arc<CertificateAuthority>>,
    pub cluster_id: String,
    pub validity: Duration,
}

/// A worker's new certificate, and the chain it is given (the certificate, then the worker CA
/// that signed it).
pub struct Certified {
    pub signed: SignedCert,
    pub chain_pem: String,
}

impl Signer {
    pub fn new(worker_ca: CertificateAuthority, cluster_id: String, validity: Duration) -> Self {
        Self { worker_ca: RwLock::new(Arc::new(worker_ca)), cluster_id, validity }
    }

    /// The worker CA signing now.
    pub fn worker_ca(&self) -> Arc<CertificateAuthority> {
        self.worker_ca.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Signs with `worker_ca` from now on.
    pub fn replace_worker_ca(&self, worker_ca: CertificateAuthority) {
        *self.worker_ca.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(worker_ca);
    }

    /// The URI SAN naming worker `id` of this cluster.
    pub fn worker_uri(&self, id: u64) -> String {
        format!("spiffe://{}/worker/{id}", self.cluster_id)
    }

    /// Refuses a malformed request or one whose self-signature does not verify.
    pub fn check_csr(csr_pem: &str) -> Result<(), ApiError> {
        muster_tls::verify_csr(csr_pem).map_err(|err| ApiError::InvalidArgument(format!("csr_pem: {err}")))
    }

    /// Signs the CSR's key as worker `id`.
    pub fn certify(&self, id: u64, csr_pem: &str) -> Result<Certified, ApiError> {
        let worker_ca = self.worker_ca();
        let signed = worker_ca
            .sign_csr(csr_pem, &format!("worker-{id}"), &self.worker_uri(id), self.validity)
            .map_err(|err| ApiError::Internal(format!("signing the certificate of worker {id}: {err}")))?;
        let chain_pem = format!("{}{}", signed.cert_pem, worker_ca.cert_pem());
        Ok(Certified { signed, chain_pem })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certifies_the_requesters_key_under_the_allocated_id_only() {
        let worker_ca = CertificateAuthority::generate("test worker CA", Duration::from_secs(3600)).unwrap();
        let ca_pem = worker_ca.cert_pem().to_owned();
        let signer = Signer::new(worker_ca, "c0ffee".into(), Duration::from_secs(60));
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let csr = rcgen::CertificateParams::new(vec!["evil.example".to_string()])
            .unwrap()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        Signer::check_csr(&csr).unwrap();
        assert!(Signer::check_csr("garbage").unwrap_err().to_string().contains("csr_pem"));
        let Certified { signed, chain_pem } = signer.certify(42, &csr).unwrap();
        let der = x509_parser::pem::Pem::iter_from_buffer(signed.cert_pem.as_bytes()).next().unwrap().unwrap().contents;
        let named = muster_tls::worker_cert(&der, "c0ffee").unwrap();
        assert_eq!((named.worker_id, named.serial_hex.as_str()), (42, signed.serial_hex.as_str()));
        assert!(chain_pem.ends_with(&ca_pem));
    }
}
