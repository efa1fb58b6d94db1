//! `musterctl tls init`: lays out a cluster's PKI directory (CA plus node and operator
//! certificates), safe to re-run to add nodes without touching what already exists.

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
    /// Validity of a newly generated CA and of the operator certificate.
    pub validity: Duration,
}

/// What `init_pki` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PkiReport {
    /// Every file written, in order; empty when everything already existed.
    pub files: Vec<PathBuf>,
    /// The CA's SPKI pin (see [`CertificateAuthority::public_key_sha256`]).
    pub ca_public_key_sha256: String,
}

/// Creates or extends a PKI directory.
///
/// - No `ca.pem`/`ca-key.pem` (or `force`): generates a CA and writes both.
/// - Both exist and not `force`: loads that CA and issues only the certificates whose
///   `<name>.pem` or `<name>-key.pem` is missing, so re-running adds nodes.
/// - Only one of the two CA files exists and not `force`: refuses, naming the file.
///
/// Keys are written 0600, certificates 0644, each atomically.
pub fn init_pki(init: &PkiInit) -> Result<PkiReport, TlsError> {
    let specs = requested_specs(init)?;
    create_dir(&init.dir)?;

    let ca_cert = init.dir.join("ca.pem");
    let ca_key = init.dir.join("ca-key.pem");
    let mut files = Vec::new();
    let have = (exists(&ca_cert)?, exists(&ca_key)?);
    let ca = match have {
        (true, true) if !init.force => CertificateAuthority::load(&ca_cert, &ca_key)?,
        (true, false) if !init.force => {
            return Err(TlsError::RefuseOverwrite {
                path: ca_cert,
                reason: "a CA certificate exists but its key ca-key.pem is missing".to_owned(),
            });
        }
        (false, true) if !init.force => {
            return Err(TlsError::RefuseOverwrite {
                path: ca_key,
                reason: "a CA key exists but its certificate ca.pem is missing".to_owned(),
            });
        }
        _ => {
            let name = format!("{} Muster CA", init.cluster_name);
            let ca = CertificateAuthority::generate(&name, init.validity)?;
            write_atomic(&ca_key, ca.key_pem().as_bytes(), KEY_MODE)?;
            files.push(ca_key);
            write_atomic(&ca_cert, ca.cert_pem().as_bytes(), CERT_MODE)?;
            files.push(ca_cert);
            ca
        }
    };

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
    Ok(PkiReport { files, ca_public_key_sha256: ca.public_key_sha256() })
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
        if spec.name == "ca" || spec.name.ends_with("-key") {
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
