//! Proof that a registration comes from the node an earlier worker identity belonged to, so
//! the cluster can link the new worker to the old one (`replaces`). A worker whose certificate
//! expired while it was switched off registers again with its token; it sends its old
//! certificate and a request for the same key. The certificate must have been issued by the
//! worker CA signing now (its validity period is not checked: it is expected to be over), and
//! the request's self-signature proves the sender holds that certificate's key. A stolen
//! expired certificate without its key proves nothing.

use rcgen::PublicKeyData as _;

use crate::parse::{certs_from_pem, x509};
use crate::worker_id::worker_cert;

/// The worker id `old_cert_pem` names, if it proves what the module says, else why not.
pub fn replaced_worker_id(
    old_cert_pem: &str,
    csr_pem: &str,
    worker_ca_pem: &str,
    cluster_id: &str,
) -> Result<u64, String> {
    let old = certs_from_pem(old_cert_pem.as_bytes(), "replaced certificate", "replaces_cert_pem")
        .map_err(|err| err.to_string())?;
    let old_der = old.first().ok_or("replaces_cert_pem holds no certificate")?;
    let old = x509(old_der, "replaced certificate", "replaces_cert_pem").map_err(|err| err.to_string())?;
    let ca = certs_from_pem(worker_ca_pem.as_bytes(), "worker CA certificate", "the worker CA")
        .map_err(|err| err.to_string())?;
    let ca_der = ca.first().ok_or("no worker CA certificate")?;
    let ca = x509(ca_der, "worker CA certificate", "the worker CA").map_err(|err| err.to_string())?;
    old.verify_signature(Some(ca.public_key())).map_err(|_| {
        "the replaced certificate was not issued by this cluster's current worker CA (another cluster, or a CA \
         rotated away since)"
            .to_string()
    })?;
    let worker_id =
        worker_cert(old_der, cluster_id).map_err(|err| format!("the replaced certificate: {err}"))?.worker_id;
    let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem).map_err(|err| format!("csr_pem: {err}"))?;
    if csr.public_key.der_bytes() != old.public_key().subject_public_key.data.as_ref() {
        return Err(format!(
            "the request is not for the key of worker {worker_id}'s certificate: only the holder of that key may \
             replace it"
        ));
    }
    Ok(worker_id)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::CertificateAuthority;

    fn csr(key: &rcgen::KeyPair) -> String {
        rcgen::CertificateParams::new(Vec::<String>::new()).unwrap().serialize_request(key).unwrap().pem().unwrap()
    }

    #[test]
    fn only_the_key_holder_of_a_worker_certificate_of_this_ca_proves_it() {
        let ca = CertificateAuthority::generate("worker CA", Duration::from_secs(3600)).unwrap();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let issued = ca.sign_csr(&csr(&key), "worker-7", "spiffe://c1/worker/7", Duration::from_secs(60)).unwrap();
        assert_eq!(replaced_worker_id(&issued.cert_pem, &csr(&key), ca.cert_pem(), "c1"), Ok(7));

        let other_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let err = replaced_worker_id(&issued.cert_pem, &csr(&other_key), ca.cert_pem(), "c1").unwrap_err();
        assert!(err.contains("only the holder"), "{err}");
        let other_ca = CertificateAuthority::generate("another worker CA", Duration::from_secs(3600)).unwrap();
        let err = replaced_worker_id(&issued.cert_pem, &csr(&key), other_ca.cert_pem(), "c1").unwrap_err();
        assert!(err.contains("not issued by this cluster"), "{err}");
        let err = replaced_worker_id(&issued.cert_pem, &csr(&key), ca.cert_pem(), "c2").unwrap_err();
        assert!(err.contains("cluster"), "{err}");
        let err = replaced_worker_id("not a pem", &csr(&key), ca.cert_pem(), "c1").unwrap_err();
        assert!(err.contains("replaces_cert_pem"), "{err}");
    }
}
