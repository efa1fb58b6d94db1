//! `musterctl tls init`: lays out a cluster's PKI directory (CA plus node and operator
//! certificates, and the worker CA registrars sign workers with), safe to re-run to add nodes
//! or a missing worker CA without touching what already exists.
//!
//! The worker CA is a CA of its own, not the cluster CA: its key goes to registrars only, and
//! it is created here, as a file, so that it never has to travel through the control plane
//! (see docs/security.md, "The worker CA key").

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::spec::{invalid, validate_name};
use crate::{CertSpec, CertificateAuthority, TlsError, TlsFiles, write_atomic};

const KEY_MODE: u32 = 0o600;
const CERT_MODE: u32 = 0o644;
const DIR_MODE: u32 = 0o700;

/// What `init_pki` should produce.
#[derive(Clone, Debug)]
pub struct PkiInit {
    /// Output directory; created with mode 0700 if missing (an existing one is left as is).
    pub dir: PathBuf,
    /// Goes into the CA's common name: "<cluster_name> Muster CA".
    pub cluster_name: String,
    /// One certificate per spec, written as `<name>.pem` and `<name>-key.pem`.
    pub nodes: Vec<CertSpec>,
    /// Also issue the client-only `operator.pem` / `operator-key.pem`.
    pub operator: bool,
    /// Replace the CA and every requested certificate even if they exist.
    pub force: bool,
    /// Validity of the operator certificate.
    pub validity: Duration,
    /// Validity of a newly generated cluster CA: longer than the certificates it issues, so
    /// `musterctl tls renew` can extend them (a renewal never outlives the CA). A new worker
    /// CA gets [`WORKER_CA_VALIDITY`].
    pub ca_validity: Duration,
}

/// What `init_pki` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PkiReport {
    /// Every file written, in order; empty when everything already existed.
    pub files: Vec<PathBuf>,
    /// The CA's SPKI pin (see [`CertificateAuthority::public_key_sha256`]).
    pub ca_public_key_sha256: String,
    /// SHA-256 of the worker CA certificate (DER), as the control plane records it.
    pub worker_ca_sha256: String,
}

/// Lifetime of a newly generated worker CA, whatever `PkiInit::validity` says: the CA every
/// worker certificate chains to must outlive them all, and the registrar-generated CA it
/// replaces lasted as long.
pub const WORKER_CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The worker CA's certificate in a PKI directory (given to registrars; gateways get it from
/// the control plane).
pub const WORKER_CA_CERT_FILE: &str = "worker-ca.pem";
/// The worker CA's private key in a PKI directory (registrars only, mode 0600).
pub const WORKER_CA_KEY_FILE: &str = "worker-ca-key.pem";

/// Creates or extends a PKI directory.
///
/// - No `ca.pem`/`ca-key.pem` (or `force`): generates a CA and writes both.
/// - Both exist and not `force`: loads that CA and issues only the certificates whose
///   `<name>.pem` or `<name>-key.pem` is missing, so re-running adds nodes.
/// - Only one of the two CA files exists and not `force`: refuses, naming the file.
///
/// The same rules apply to the worker CA (`worker-ca.pem`, `worker-ca-key.pem`): created when
/// both are missing (so re-running on an older directory adds it), kept when both exist.
///
/// Keys are written 0600, certificates 0644, each atomically.
pub fn init_pki(init: &PkiInit) -> Result<PkiReport, TlsError> {
    let specs = requested_specs(init)?;
    create_dir(&init.dir)?;

    let mut files = Vec::new();
    let name = format!("{} Muster CA", init.cluster_name);
    let ca = ensure_ca(init, "ca.pem", "ca-key.pem", &name, init.ca_validity, &mut files)?;
    let name = format!("{} Muster worker CA", init.cluster_name);
    let worker_ca = ensure_ca(init, WORKER_CA_CERT_FILE, WORKER_CA_KEY_FILE, &name, WORKER_CA_VALIDITY, &mut files)?;

    for spec in &specs {
        let paths = TlsFiles::in_dir(&init.dir, &spec.name);
        if !init.force && exists(&paths.cert)? && exists(&paths.key)? {
            continue;
        }
        let pem = ca.issue(spec)?;
        write_atomic(&paths.key, pem.key_pem.as_bytes(), KEY_MODE)?;
        files.push(paths.key);
        write_atomic(&paths.cert, pem.cert_pem.as_bytes(), CERT_MODE)?;
        files.push(paths.cert);
    }
    Ok(PkiReport { files, ca_public_key_sha256: ca.public_key_sha256(), worker_ca_sha256: worker_ca.cert_sha256() })
}

/// Loads the CA in `cert_file`/`key_file` under `init.dir`, or generates and writes one when
/// both are missing (or `force`); refuses when only one of the two exists.
fn ensure_ca(
    init: &PkiInit,
    cert_file: &str,
    key_file: &str,
    common_name: &str,
    validity: Duration,
    files: &mut Vec<PathBuf>,
) -> Result<CertificateAuthority, TlsError> {
    let cert = init.dir.join(cert_file);
    let key = init.dir.join(key_file);
    match (exists(&cert)?, exists(&key)?) {
        (true, true) if !init.force => CertificateAuthority::load(&cert, &key),
        (true, false) if !init.force => Err(TlsError::RefuseOverwrite {
            path: cert,
            reason: format!("a CA certificate exists but its key {key_file} is missing"),
        }),
        (false, true) if !init.force => Err(TlsError::RefuseOverwrite {
            path: key,
            reason: format!("a CA key exists but its certificate {cert_file} is missing"),
        }),
        _ => {
            let ca = CertificateAuthority::generate(common_name, validity)?;
            write_atomic(&key, ca.key_pem().as_bytes(), KEY_MODE)?;
            files.push(key);
            write_atomic(&cert, ca.cert_pem().as_bytes(), CERT_MODE)?;
            files.push(cert);
            Ok(ca)
        }
    }
}

/// The node specs plus the operator's, all validated before anything is written.
fn requested_specs(init: &PkiInit) -> Result<Vec<CertSpec>, TlsError> {
    if init.cluster_name.trim().is_empty() {
        return Err(invalid("PkiInit.cluster_name", &init.cluster_name, "must not be empty"));
    }
    let mut specs = init.nodes.clone();
    if init.operator {
        specs.push(CertSpec::operator(init.validity));
    }
    let mut seen = HashSet::new();
    for spec in &specs {
        validate_name(&spec.name, "CertSpec.name")?;
        if crate::rotate::is_ca_file(&spec.name) || spec.name == "worker-ca" || spec.name.ends_with("-key") {
            return Err(invalid("CertSpec.name", &spec.name, "clashes with the CA or key file names"));
        }
        if !seen.insert(spec.name.as_str()) {
            return Err(invalid("CertSpec.name", &spec.name, "requested twice"));
        }
        spec.validate()?;
    }
    Ok(specs)
}

fn create_dir(dir: &Path) -> Result<(), TlsError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, DIR_MODE);
    #[cfg(not(unix))]
    let _ = DIR_MODE;
    builder.create(dir).map_err(|source| TlsError::CreateDir { path: dir.to_owned(), source })
}

fn exists(path: &Path) -> Result<bool, TlsError> {
    path.try_exists().map_err(|source| TlsError::Read { what: "PKI file", path: path.to_owned(), source })
}
