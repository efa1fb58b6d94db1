//! PKI material on disk: where a node's files live, writing them safely, and turning them into
//! tonic TLS configs after checking they fit together (so mistakes surface at startup, naming
//! the file, rather than as an opaque handshake failure later).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustls::pki_types::CertificateDer;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::TlsError;
use crate::parse::{certs_from_pem, key_from_pem, x509};

/// Installs ring as rustls' process-wide crypto provider. Idempotent; a provider that is
/// already installed (by us or anyone else) is kept.
pub fn install_crypto_provider() {
    let _already_installed = rustls::crypto::ring::default_provider().install_default();
}

/// The three files a node needs for mTLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The cluster CA certificate (may hold several during a rotation).
    pub ca: PathBuf,
    /// This node's certificate (chain).
    pub cert: PathBuf,
    /// This node's private key.
    pub key: PathBuf,
}

impl TlsFiles {
    /// The files a `[tls]` section names, or `None` when it says `insecure = true`. A file it
    /// leaves out is an empty path, refused when loading it (`TlsConfig::validate` has already
    /// named the missing key by then).
    pub fn from_config(config: &muster_config::TlsConfig) -> Option<Self> {
        (!config.insecure).then(|| Self {
            ca: config.ca_file.clone().unwrap_or_default(),
            cert: config.cert_file.clone().unwrap_or_default(),
            key: config.key_file.clone().unwrap_or_default(),
        })
    }
}

/// The validated contents of a [`TlsFiles`].
pub(crate) struct Loaded {
    pub(crate) ca: Vec<u8>,
    pub(crate) cert: Vec<u8>,
    pub(crate) key: Vec<u8>,
}

impl TlsFiles {
    /// `dir/ca.pem`, `dir/<name>.pem`, `dir/<name>-key.pem`: the layout `init_pki` writes.
    pub fn in_dir(dir: &Path, name: &str) -> Self {
        TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}-key.pem")),
        }
    }

    /// Server side: presents our identity, verifies client certificates against the CA but
    /// lets certificate-less clients in (health and reflection stay open; a tower layer
    /// enforces certificates on the other services). A client certificate from another CA
    /// still fails the handshake.
    pub fn server_tls(&self) -> Result<ServerTlsConfig, TlsError> {
        install_crypto_provider();
        let loaded = self.load()?;
        Ok(ServerTlsConfig::new()
            .identity(Identity::from_pem(loaded.cert, loaded.key))
            .client_ca_root(Certificate::from_pem(loaded.ca))
            .client_auth_optional(true))
    }

    /// Client side: trusts only the cluster CA and presents our certificate.
    pub fn client_tls(&self) -> Result<ClientTlsConfig, TlsError> {
        install_crypto_provider();
        let loaded = self.load()?;
        Ok(ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(loaded.ca))
            .identity(Identity::from_pem(loaded.cert, loaded.key)))
    }

    /// Client side, checking the server's role (and host) as well: what every Muster client
    /// uses ([`ClientTls`](crate::ClientTls)).
    pub fn client_for(&self, check: crate::ServerCheck) -> Result<crate::ClientTls, TlsError> {
        let loaded = self.load()?;
        crate::ClientTls::new(&loaded.ca, Some((&loaded.cert, &loaded.key)), check)
    }

    /// [`client_tls`](Self::client_tls), verifying the server as `domain` instead of the
    /// host in the URI (e.g. dialing an IP while checking the node name).
    pub fn client_tls_for(&self, domain: &str) -> Result<ClientTlsConfig, TlsError> {
        Ok(self.client_tls()?.domain_name(domain))
    }

    /// Reads all three files and checks: each parses, the key matches the certificate, the
    /// certificate is valid now and is signed by a certificate in the CA file.
    pub(crate) fn load(&self) -> Result<Loaded, TlsError> {
        let ca = read("CA certificate", &self.ca)?;
        let cert = read("certificate", &self.cert)?;
        let key = read("private key", &self.key)?;
        let (ca_name, cert_name) = (self.ca.display().to_string(), self.cert.display().to_string());
        let key_name = self.key.display().to_string();

        let ca_ders = certs_from_pem(&ca, "CA certificate", &ca_name)?;
        let cert_ders = certs_from_pem(&cert, "certificate", &cert_name)?;
        let key_der = key_from_pem(&key, "private key", &key_name)?;

        let leaf = x509(&cert_ders[0], "certificate", &cert_name)?;
        let signing_key = rustls::crypto::ring::sign::any_supported_type(&key_der)
            .map_err(|e| crate::parse::parse_err("private key", &key_name, e))?;
        if let Some(spki) = signing_key.public_key()
            && spki.as_ref() != leaf.public_key().raw
        {
            return Err(TlsError::KeyMismatch { cert: cert_name, key: key_name });
        }
        let validity = leaf.validity();
        if !validity.is_valid() {
            return Err(TlsError::NotValidNow {
                cert: cert_name,
                not_before: validity.not_before.to_string(),
                not_after: validity.not_after.to_string(),
            });
        }
        if !signed_by_any(&cert_ders, &ca_ders, &ca_name)? {
            return Err(TlsError::NotSignedByCa { cert: cert_name, ca: ca_name });
        }
        Ok(Loaded { ca, cert, key })
    }
}

/// Whether some certificate of the chain (the leaf, or an intermediate it carries) is signed
/// by one of the CAs.
fn signed_by_any(chain: &[CertificateDer<'_>], cas: &[CertificateDer<'_>], ca_name: &str) -> Result<bool, TlsError> {
    for ca_der in cas {
        let ca = x509(ca_der, "CA certificate", ca_name)?;
        for cert in chain {
            let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert) else {
                continue;
            };
            if parsed.verify_signature(Some(ca.public_key())).is_ok() {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Read { what, path: path.to_owned(), source })
}

pub(crate) fn read_string(what: &'static str, path: &Path) -> Result<String, TlsError> {
    fs::read_to_string(path).map_err(|source| TlsError::Read { what, path: path.to_owned(), source })
}

/// Writes `contents` to `path` atomically: a temp file in the same directory with `mode`
/// (unix permission bits), fsync, rename over `path`, fsync of the directory. Readers see the
/// old file or the new one, never a torn or briefly world-readable key.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let err = |source| TlsError::Write { path: path.to_owned(), source };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has no file name")))?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}.{}",
        file_name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = write_then_rename(&tmp, path, contents, mode);
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(err)?;
    sync_dir(dir).map_err(err)
}

fn write_then_rename(tmp: &Path, path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(mode);
        let mut file = options.open(tmp)?;
        // The umask may have narrowed `mode`; set it exactly.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()?;
    }
    #[cfg(not(unix))]
    {
        let _ = mode;
        let mut file = options.open(tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
    }
    fs::rename(tmp, path)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}
