//! Certificates for the embedded cluster, made with the same `init_pki` as `musterctl tls
//! init`, so the files and their roles are exactly what a real deployment uses. Re-running
//! on a kept data dir reuses them (and with them, every identity signed before).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use muster_tls::{CertSpec, PkiInit, Role, TlsFiles};

/// How long the dev CA and certificates last.
const VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// Certificate names (file stems in the TLS dir).
pub const CONTROL_PLANE: &str = "node-1";
pub const REGISTRAR: &str = "registrar-1";
pub const GATEWAY: &str = "gateway-1";

/// Where each component's files are.
pub struct DevPki {
    pub dir: PathBuf,
    pub control_plane: TlsFiles,
    pub registrar: TlsFiles,
    pub gateway: TlsFiles,
    pub operator: TlsFiles,
}

/// Creates the CA and the four certificates in `dir`, or reuses those already there.
pub fn ensure(dir: &Path) -> anyhow::Result<DevPki> {
    let nodes = vec![
        CertSpec::node(CONTROL_PLANE, Role::ControlPlane, VALIDITY),
        CertSpec::node(REGISTRAR, Role::Registrar, VALIDITY),
        CertSpec::node(GATEWAY, Role::Gateway, VALIDITY),
    ];
    let init = PkiInit {
        dir: dir.to_path_buf(),
        cluster_name: "muster-dev".to_string(),
        nodes,
        operator: true,
        force: false,
        validity: VALIDITY,
        ca_validity: VALIDITY,
    };
    muster_tls::init_pki(&init).with_context(|| format!("creating certificates in {}", dir.display()))?;
    Ok(DevPki {
        dir: dir.to_path_buf(),
        control_plane: TlsFiles::in_dir(dir, CONTROL_PLANE),
        registrar: TlsFiles::in_dir(dir, REGISTRAR),
        gateway: TlsFiles::in_dir(dir, GATEWAY),
        operator: TlsFiles::in_dir(dir, "operator"),
    })
}

impl DevPki {
    /// The operator's client TLS, for the dev process's own calls.
    pub fn operator_tls(&self) -> anyhow::Result<muster_tls::ClientTls> {
        Ok(self.operator.client_for(muster_tls::ServerCheck::RoleAndHost(muster_tls::Role::ControlPlane))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_written_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let pki = ensure(dir.path()).unwrap();
        for files in [&pki.control_plane, &pki.registrar, &pki.gateway, &pki.operator] {
            assert!(files.ca.is_file() && files.cert.is_file() && files.key.is_file(), "{files:?}");
        }
        assert_eq!(pki.operator.cert, dir.path().join("operator.pem"));
        let before = std::fs::read(&pki.registrar.cert).unwrap();
        ensure(dir.path()).unwrap();
        assert_eq!(std::fs::read(&pki.registrar.cert).unwrap(), before, "a second run reuses the certificates");
    }
}
