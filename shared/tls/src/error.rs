//! The one error type of the crate. Every variant names the file, PEM source or field at fault,
//! so an operator reading a startup failure knows what to fix without a debugger.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong generating, writing or loading Muster's PKI.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("reading {what} {}: {source}{}", .path.display(), missing_hint(.source))]
    Read {
        /// What the file was meant to hold, e.g. "CA certificate".
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// A file could not be written (or its temp file created, synced or renamed).
    #[error("writing {}: {source}", .path.display())]
    Write { path: PathBuf, source: io::Error },
    /// The PKI directory could not be created.
    #[error("creating directory {}: {source}", .path.display())]
    CreateDir { path: PathBuf, source: io::Error },
    /// PEM or DER content is malformed or not what was expected.
    #[error("parsing {what} {origin}: {reason}")]
    Parse {
        what: &'static str,
        /// A file path, or the name of the argument the PEM came in.
        origin: String,
        reason: String,
    },
    /// A certificate and the private key next to it do not belong together.
    #[error("certificate {cert} does not match private key {key}")]
    KeyMismatch { cert: String, key: String },
    /// A certificate does not chain to the configured CA.
    #[error("certificate {cert} is not signed by the CA in {ca}")]
    NotSignedByCa { cert: String, ca: String },
    /// A certificate is expired or not yet valid.
    #[error("certificate {cert} is not valid now (valid from {not_before} to {not_after})")]
    NotValidNow { cert: String, not_before: String, not_after: String },
    /// A caller-supplied value (certificate spec, init request) is unusable.
    #[error("invalid {field} {value:?}: {reason}")]
    Invalid {
        /// The field at fault, e.g. "CertSpec.hosts".
        field: String,
        value: String,
        reason: String,
    },
    /// A role string is not one of Muster's roles.
    #[error("invalid role {0:?}: expected one of control-plane, registrar, gateway, worker, operator, watcher")]
    UnknownRole(String),
    /// rcgen refused to build a key or certificate.
    #[error("generating {what}: {source}")]
    Generate { what: String, source: rcgen::Error },
    /// `init_pki` found existing PKI material it would have to overwrite.
    #[error(
        "refusing to overwrite {}: {reason} (pass --force to regenerate the CA and every requested certificate)",
        .path.display()
    )]
    RefuseOverwrite { path: PathBuf, reason: String },
    /// A `rotate-ca` step does not fit the state the PKI directory is in.
    #[error("CA rotation in {}: {reason}", .dir.display())]
    Rotation { dir: PathBuf, reason: String },
}

fn missing_hint(err: &io::Error) -> &'static str {
    if err.kind() == io::ErrorKind::NotFound { " (run `musterctl tls init` or pass --insecure)" } else { "" }
}
