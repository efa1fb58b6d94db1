//! The files of a worker CA rotation in a PKI directory. The cluster's side (which CAs the
//! gateways and registrars trust, which one is current) is `musterctl workers rotate-ca`; here
//! the next CA is made beside the current one and, once the cluster has promoted it, put in
//! the current one's place, where registrars pick it up and sign with it.

use std::path::Path;

use crate::init::WORKER_CA_VALIDITY;
use crate::parse::{certs_from_pem, x509};
use crate::{CertificateAuthority, TlsError, WORKER_CA_CERT_FILE, WORKER_CA_KEY_FILE, write_atomic};

/// The next worker CA while a rotation is in progress.
pub const WORKER_CA_NEXT_CERT_FILE: &str = "worker-ca-next.pem";
pub const WORKER_CA_NEXT_KEY_FILE: &str = "worker-ca-next-key.pem";

/// The next worker CA of `dir`: the one a rotation already made, else a new one (written as
/// `worker-ca-next.pem` and `worker-ca-next-key.pem`), named after the current one.
pub fn next_worker_ca(dir: &Path) -> Result<CertificateAuthority, TlsError> {
    if let Some(next) = pending_worker_ca(dir)? {
        return Ok(next);
    }
    let current_path = dir.join(WORKER_CA_CERT_FILE);
    let current = crate::files::read_string("worker CA certificate", &current_path)?;
    let origin = current_path.display().to_string();
    let der = certs_from_pem(current.as_bytes(), "worker CA certificate", &origin)?.remove(0);
    let cert = x509(&der, "worker CA certificate", &origin)?;
    let name = cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).unwrap_or("Muster worker CA");
    let next = CertificateAuthority::generate(&crate::rotate::successor_name(name), WORKER_CA_VALIDITY)?;
    write_atomic(&dir.join(WORKER_CA_NEXT_KEY_FILE), next.key_pem().as_bytes(), 0o600)?;
    write_atomic(&dir.join(WORKER_CA_NEXT_CERT_FILE), next.cert_pem().as_bytes(), 0o644)?;
    Ok(next)
}

/// The next worker CA of a rotation in progress in `dir`, if any.
pub fn pending_worker_ca(dir: &Path) -> Result<Option<CertificateAuthority>, TlsError> {
    let (cert, key) = (dir.join(WORKER_CA_NEXT_CERT_FILE), dir.join(WORKER_CA_NEXT_KEY_FILE));
    if !cert.exists() && !key.exists() {
        return Ok(None);
    }
    CertificateAuthority::load(&cert, &key).map(Some)
}

/// Puts the next worker CA in the current one's place (`worker-ca.pem`, `worker-ca-key.pem`)
/// and removes the next files; the old key is gone. Registrars load the new files within
/// their reload interval. Returns the CA now current.
pub fn install_next_worker_ca(dir: &Path) -> Result<CertificateAuthority, TlsError> {
    let next = pending_worker_ca(dir)?.ok_or_else(|| {
        crate::spec::invalid(
            "worker CA rotation",
            &dir.display().to_string(),
            "no worker-ca-next.pem in it: run `musterctl workers rotate-ca begin` first",
        )
    })?;
    write_atomic(&dir.join(WORKER_CA_KEY_FILE), next.key_pem().as_bytes(), 0o600)?;
    write_atomic(&dir.join(WORKER_CA_CERT_FILE), next.cert_pem().as_bytes(), 0o644)?;
    for file in [WORKER_CA_NEXT_CERT_FILE, WORKER_CA_NEXT_KEY_FILE] {
        let path = dir.join(file);
        std::fs::remove_file(&path).map_err(|source| TlsError::Write { path, source })?;
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_next_worker_ca_is_made_once_then_takes_the_current_ones_place() {
        let dir = tempfile::tempdir().unwrap();
        crate::init_pki(&crate::PkiInit {
            dir: dir.path().to_owned(),
            cluster_name: "test".into(),
            nodes: Vec::new(),
            operator: false,
            force: false,
            validity: Duration::from_secs(3600),
            ca_validity: Duration::from_secs(3600),
        })
        .unwrap();
        let current = std::fs::read_to_string(dir.path().join(WORKER_CA_CERT_FILE)).unwrap();
        let err = install_next_worker_ca(dir.path()).unwrap_err().to_string();
        assert!(err.contains("rotate-ca begin"), "{err}");
        let next = next_worker_ca(dir.path()).unwrap();
        assert_ne!(next.cert_pem(), current);
        assert_eq!(next_worker_ca(dir.path()).unwrap().cert_pem(), next.cert_pem(), "made once");
        // The next CA's files are not a component certificate to renew.
        assert!(crate::renew::certificate_names(dir.path()).unwrap().is_empty());
        let installed = install_next_worker_ca(dir.path()).unwrap();
        assert_eq!(installed.cert_pem(), next.cert_pem());
        let loaded =
            CertificateAuthority::load(&dir.path().join(WORKER_CA_CERT_FILE), &dir.path().join(WORKER_CA_KEY_FILE))
                .unwrap();
        assert_eq!(loaded.cert_pem(), next.cert_pem());
        assert!(pending_worker_ca(dir.path()).unwrap().is_none());
    }
}
