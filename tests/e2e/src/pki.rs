//! A throwaway PKI per test cluster (`muster_tls::init_pki`): the CA, one `control-plane`
//! certificate per node (issued on demand, so joining nodes get one too) and the operator's.

use std::path::{Path, PathBuf};
use std::time::Duration;

use muster_tls::{CertSpec, PkiInit, Role, ServerCheck, TlsFiles, default_node_hosts};
use tempfile::TempDir;
use tonic::transport::ClientTlsConfig;

use crate::config::TlsPaths;

const VALIDITY: Duration = Duration::from_secs(24 * 3600);

/// A CA directory with the operator certificate; node certificates are added as needed.
pub struct Pki {
    dir: TempDir,
    /// Validity of node and component certificates issued from now on (the CA and the
    /// operator's get [`VALIDITY`]).
    leaf_validity: Duration,
}

fn init(dir: &Path, cluster_name: &str, nodes: Vec<CertSpec>, operator: bool) {
    let init = PkiInit {
        dir: dir.to_path_buf(),
        cluster_name: cluster_name.to_string(),
        nodes,
        operator,
        force: false,
        validity: VALIDITY,
        ca_validity: VALIDITY,
    };
    muster_tls::init_pki(&init).unwrap_or_else(|err| panic!("creating test PKI in {}: {err}", dir.display()));
}

fn paths(files: TlsFiles) -> TlsPaths {
    TlsPaths { ca: files.ca, cert: files.cert, key: files.key }
}

impl Pki {
    /// A fresh CA plus the operator certificate.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new().prefix("muster-e2e-pki").tempdir().expect("creating a PKI temp dir");
        init(dir.path(), "e2e", Vec::new(), true);
        Self { dir, leaf_validity: VALIDITY }
    }

    /// A fresh CA whose node and component certificates are valid for `leaf_validity` only.
    pub fn with_leaf_validity(leaf_validity: Duration) -> Self {
        Self { leaf_validity, ..Self::new() }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The certificate of node `id` (`node-<id>`), issued now if it does not exist yet.
    /// The cluster CA certificate (PEM).
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.dir().join("ca.pem")).expect("reading the cluster CA")
    }

    pub fn node(&self, id: u64) -> TlsPaths {
        self.node_on(id, "127.0.0.1")
    }

    /// [`node`](Self::node), also valid for `host` (a node in its own network namespace).
    pub fn node_on(&self, id: u64, host: &str) -> TlsPaths {
        let name = format!("node-{id}");
        let mut hosts = default_node_hosts(&name);
        for extra in ["127.0.0.1", host] {
            if !hosts.iter().any(|h| h == extra) {
                hosts.push(extra.to_string());
            }
        }
        let spec = CertSpec { hosts, ..CertSpec::node(&name, Role::ControlPlane, self.leaf_validity) };
        init(self.dir.path(), "e2e", vec![spec], false);
        paths(TlsFiles::in_dir(self.dir.path(), &name))
    }

    /// The operator's files (`ca.pem`, `operator.pem`, `operator-key.pem`).
    pub fn operator(&self) -> TlsPaths {
        paths(TlsFiles::in_dir(self.dir.path(), "operator"))
    }

    /// Client TLS presenting the operator certificate.
    pub fn operator_tls(&self) -> ClientTlsConfig {
        TlsFiles::in_dir(self.dir.path(), "operator").client_tls().expect("loading the operator certificate")
    }

    /// The operator's TLS for Muster's own client, which checks the server's role too.
    pub fn operator_client_tls(&self) -> muster_tls::ClientTls {
        let files = TlsFiles::in_dir(self.dir.path(), "operator");
        files.client_for(ServerCheck::RoleAndHost(Role::ControlPlane)).expect("loading the operator certificate")
    }

    /// Files of a certificate for another Muster role (issued now if needed; serves on
    /// localhost and 127.0.0.1 too).
    pub fn component(&self, role: Role, name: &str) -> TlsPaths {
        init(self.dir.path(), "e2e", vec![CertSpec::node(name, role, self.leaf_validity)], false);
        paths(TlsFiles::in_dir(self.dir.path(), name))
    }

    /// Client TLS presenting a certificate of another Muster role (issued now if needed).
    pub fn component_tls(&self, role: Role, name: &str) -> ClientTlsConfig {
        init(self.dir.path(), "e2e", vec![CertSpec::node(name, role, self.leaf_validity)], false);
        TlsFiles::in_dir(self.dir.path(), name).client_tls().expect("loading a component certificate")
    }

    /// [`Pki::component_tls`] as rustls material, for clients other than tonic's.
    pub fn component_client_tls(&self, role: Role, name: &str) -> muster_tls::ClientTls {
        init(self.dir.path(), "e2e", vec![CertSpec::node(name, role, self.leaf_validity)], false);
        let files = TlsFiles::in_dir(self.dir.path(), name);
        files.client_for(ServerCheck::RoleAndHost(Role::ControlPlane)).expect("loading a component certificate")
    }

    /// Client TLS presenting node `id`'s certificate (the Raft port admits only nodes).
    pub fn node_tls(&self, id: u64) -> ClientTlsConfig {
        self.node(id);
        TlsFiles::in_dir(self.dir.path(), &format!("node-{id}")).client_tls().expect("loading a node certificate")
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

/// An operator certificate from a *different* CA, kept with its directory alive.
pub struct RoguePki {
    pub dir: TempDir,
}

impl RoguePki {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new().prefix("muster-e2e-rogue").tempdir().expect("creating a PKI temp dir");
        init(dir.path(), "rogue", Vec::new(), true);
        Self { dir }
    }

    /// Client TLS that trusts the real cluster CA (`trusted_ca`) but presents this CA's
    /// operator certificate.
    pub fn client_tls(&self, trusted_ca: &Path) -> ClientTlsConfig {
        let read = |path: PathBuf| std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let files = TlsFiles::in_dir(self.dir.path(), "operator");
        no_client_cert(trusted_ca).identity(tonic::transport::Identity::from_pem(read(files.cert), read(files.key)))
    }
}

impl Default for RoguePki {
    fn default() -> Self {
        Self::new()
    }
}

/// Client TLS that trusts `trusted_ca` and presents no certificate at all.
pub fn no_client_cert(trusted_ca: &Path) -> ClientTlsConfig {
    let ca = std::fs::read(trusted_ca).unwrap_or_else(|e| panic!("reading {}: {e}", trusted_ca.display()));
    muster_tls::install_crypto_provider();
    ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(ca))
}
