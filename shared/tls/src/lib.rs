//! PKI generation and rustls configuration for mTLS between Muster components.
//!
//! `musterctl tls init` uses [`init_pki`] to create the cluster CA and the per-node
//! certificates (SPIFFE-style URI SANs `spiffe://muster/<role>/<name>`); services load theirs
//! with [`TlsFiles`] and authorize peers by [`peer_identity`]; clients check the server's role
//! too ([`ClientTls`]).

mod ca;
mod client;
mod error;
mod files;
mod following;
mod identity;
mod init;
mod live;
mod parse;
mod renew;
mod replaced;
pub mod rotate;
pub mod rotate_worker;
mod server_config;
pub use parse::{CertSummary, cert_summary, public_key_pin};
mod spec;
mod swappable;
mod worker_id;

pub use ca::{CertificateAuthority, SignedCert, verify_csr};
pub use client::{ClientTls, ServerCheck};
pub use error::TlsError;
pub use files::{TlsFiles, install_crypto_provider, write_atomic};
pub use identity::{
    GATEWAY_ID_MAX_BYTES, PeerIdentity, gateway_cert_name, gateway_id_allowed, peer_identity, peer_identity_and_expiry,
};
pub use init::{PkiInit, PkiReport, WORKER_CA_CERT_FILE, WORKER_CA_KEY_FILE, init_pki};
pub use live::{
    CertExpiry, CertSource, EXPIRY_ERROR, EXPIRY_WARNING, LiveTls, Material, PeerSighting, Reload, ReloadStats,
    Reloader, humanize,
};
pub use renew::{PkiRenew, Renewed, renew_pki};
pub use replaced::replaced_worker_id;
pub use server_config::{ClientAuth, client_cert_verifier};
pub use spec::{CertSpec, Pem, Role, TRUST_DOMAIN_PREFIX, default_node_hosts, spiffe_id};
pub use swappable::SwappableClientVerifier;
pub use worker_id::{WorkerCert, WorkerCertError, worker_cert, worker_identity};
