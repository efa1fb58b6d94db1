//! `musterctl tls renew`: re-issues the component certificates of a PKI directory from its
//! cluster CA, each with the same name, role, hosts and key usages as before and a new
//! validity. The private keys stay: only each `<name>.pem` is rewritten (atomically), so a
//! process watching its files (see [`crate::LiveTls`]) loads the new certificate with the key it
//! already has, and never a certificate without its key.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use x509_parser::extensions::GeneralName;

use crate::parse::{certs_from_pem, parse_err, x509};
use crate::spec::invalid;
use crate::{CertSpec, CertificateAuthority, Role, TlsError, TlsFiles, WORKER_CA_CERT_FILE, write_atomic};

const CERT_MODE: u32 = 0o644;

/// What to renew.
#[derive(Clone, Debug)]
pub struct PkiRenew {
    /// The PKI directory `musterctl tls init` wrote (`ca.pem`, `ca-key.pem`, `<name>.pem`, ...).
    pub dir: PathBuf,
    /// Only these certificates (by name); empty: every one in the directory.
    pub only: Vec<String>,
    /// Validity of each new certificate (capped at the CA's own expiry).
    pub validity: Duration,
}

/// One certificate renewed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Renewed {
    pub name: String,
    pub role: Role,
    pub cert: PathBuf,
    /// `notAfter` before and after, Unix seconds.
    pub old_not_after_unix: i64,
    pub new_not_after_unix: i64,
}

/// The certificate names in `dir`: every `<name>.pem` with a `<name>-key.pem` beside it, other
/// than the two CAs.
pub(crate) fn certificate_names(dir: &Path) -> Result<Vec<String>, TlsError> {
    let read_err = |source| TlsError::Read { what: "PKI directory", path: dir.to_owned(), source };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let file_name = entry.map_err(read_err)?.file_name();
        let Some(name) = file_name.to_str().and_then(|name| name.strip_suffix(".pem")) else { continue };
        if name.ends_with("-key") || crate::rotate::is_ca_file(name) || format!("{name}.pem") == WORKER_CA_CERT_FILE {
            continue;
        }
        if dir.join(format!("{name}-key.pem")).is_file() {
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// What the certificate in `cert_pem` says about itself, as a spec for its successor.
fn spec_of(cert_pem: &[u8], origin: &str, validity: Duration) -> Result<(CertSpec, i64), TlsError> {
    let ders = certs_from_pem(cert_pem, "certificate", origin)?;
    let cert = x509(&ders[0], "certificate", origin)?;
    let identity = crate::peer_identity(&ders[0])
        .ok_or_else(|| parse_err("certificate", origin, "it names no spiffe://muster/<role>/<name> identity"))?;
    let mut hosts = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => hosts.push((*dns).to_string()),
                GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).map(IpAddr::from).ok(),
                        16 => <[u8; 16]>::try_from(*bytes).map(IpAddr::from).ok(),
                        _ => None,
                    };
                    hosts.push(
                        ip.ok_or_else(|| parse_err("certificate", origin, "an IP SAN of odd length"))?.to_string(),
                    );
                }
                _ => {}
            }
        }
    }
    let (server_auth, client_auth) = match cert.extended_key_usage() {
        Ok(Some(eku)) => (eku.value.server_auth, eku.value.client_auth),
        _ => (false, false),
    };
    let spec = CertSpec { name: identity.name, role: identity.role, hosts, validity, server_auth, client_auth };
    Ok((spec, cert.validity().not_after.timestamp()))
}

/// Re-issues the requested certificates (all by default) from the directory's cluster CA.
/// Everything is checked before anything is written: an unknown `--only` name, a certificate
/// without a Muster identity or a missing CA key leaves every file as it was.
pub fn renew_pki(request: &PkiRenew) -> Result<Vec<Renewed>, TlsError> {
    let ca = CertificateAuthority::load(&request.dir.join("ca.pem"), &request.dir.join("ca-key.pem"))?;
    reissue_from(&ca, request)
}

/// [`renew_pki`] from `ca`, whichever CA of the directory that is (a CA rotation re-issues
/// from the new one).
pub(crate) fn reissue_from(ca: &CertificateAuthority, request: &PkiRenew) -> Result<Vec<Renewed>, TlsError> {
    let dir = &request.dir;
    let present = certificate_names(dir)?;
    for name in &request.only {
        if !present.contains(name) {
            return Err(invalid(
                "--only",
                name,
                &format!("no {name}.pem with {name}-key.pem in {} (there are: {})", dir.display(), present.join(", ")),
            ));
        }
    }
    let wanted: Vec<&String> =
        present.iter().filter(|name| request.only.is_empty() || request.only.contains(name)).collect();
    let mut planned = Vec::with_capacity(wanted.len());
    for name in wanted {
        let files = TlsFiles::in_dir(dir, name);
        let origin = files.cert.display().to_string();
        let cert_pem = std::fs::read(&files.cert).map_err(|source| TlsError::Read {
            what: "certificate",
            path: files.cert.clone(),
            source,
        })?;
        let (spec, old_not_after) = spec_of(&cert_pem, &origin, request.validity)?;
        let key_pem = crate::files::read_string("private key", &files.key)?;
        let new_pem = ca.reissue(&spec, &key_pem, &files.key.display().to_string())?;
        planned.push((files.cert, spec, old_not_after, new_pem));
    }
    let mut renewed = Vec::with_capacity(planned.len());
    for (cert, spec, old_not_after, new_pem) in planned {
        let (_, new_not_after) = spec_of(new_pem.as_bytes(), "the new certificate", request.validity)?;
        write_atomic(&cert, new_pem.as_bytes(), CERT_MODE)?;
        renewed.push(Renewed {
            name: spec.name,
            role: spec.role,
            cert,
            old_not_after_unix: old_not_after,
            new_not_after_unix: new_not_after,
        });
    }
    Ok(renewed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PkiInit;

    fn init(dir: &Path, validity: Duration) {
        crate::init_pki(&PkiInit {
            dir: dir.to_path_buf(),
            cluster_name: "test".into(),
            nodes: vec![
                CertSpec::node("node-1", Role::ControlPlane, validity),
                CertSpec::node("gw-1", Role::Gateway, validity),
            ],
            operator: true,
            force: false,
            // The CA (and the operator) outlive the node certificates, as in a real directory.
            validity: validity * 100,
            ca_validity: validity * 100,
        })
        .unwrap();
    }

    #[test]
    fn renewal_keeps_name_role_hosts_usages_and_key_and_extends_the_expiry() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), Duration::from_secs(120));
        let files = TlsFiles::in_dir(dir.path(), "node-1");
        let (before, old_expiry) = spec_of(&std::fs::read(&files.cert).unwrap(), "x", Duration::from_secs(1)).unwrap();
        let key_before = std::fs::read(&files.key).unwrap();

        let request = PkiRenew { dir: dir.path().into(), only: Vec::new(), validity: Duration::from_secs(3600) };
        let renewed = renew_pki(&request).unwrap();
        let names: Vec<&str> = renewed.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["gw-1", "node-1", "operator"]);
        let (after, new_expiry) = spec_of(&std::fs::read(&files.cert).unwrap(), "x", Duration::from_secs(1)).unwrap();
        assert_eq!((after.name.as_str(), after.role, &after.hosts), (before.name.as_str(), before.role, &before.hosts));
        assert_eq!((after.server_auth, after.client_auth), (true, true));
        assert!(new_expiry >= old_expiry + 3000, "{old_expiry} -> {new_expiry}");
        assert_eq!(std::fs::read(&files.key).unwrap(), key_before, "the key stays");
        // The renewed files load as a process would load them.
        files.client_tls().unwrap();
        let operator = spec_of(&std::fs::read(dir.path().join("operator.pem")).unwrap(), "x", Duration::from_secs(1));
        assert!(!operator.unwrap().0.server_auth, "the operator's stays client-only");
    }

    #[test]
    fn only_renews_the_named_and_refuses_unknown_names_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), Duration::from_secs(120));
        let gateway = dir.path().join("gw-1.pem");
        let before = std::fs::read(&gateway).unwrap();
        let only = |names: &[&str]| PkiRenew {
            dir: dir.path().into(),
            only: names.iter().map(|n| n.to_string()).collect(),
            validity: Duration::from_secs(3600),
        };
        let err = renew_pki(&only(&["gw-1", "nope"])).unwrap_err().to_string();
        assert!(err.contains("nope") && err.contains("node-1"), "{err}");
        assert_eq!(std::fs::read(&gateway).unwrap(), before, "nothing written");
        let renewed = renew_pki(&only(&["node-1"])).unwrap();
        assert_eq!(renewed.len(), 1);
        assert_eq!(std::fs::read(&gateway).unwrap(), before, "only node-1");
    }
}
