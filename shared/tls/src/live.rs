//! TLS material that follows its files. A deployable's certificate, key and CA bundle are read
//! once at start-up and again on SIGHUP or when the files change ([`LiveTls::spawn_reloader`]);
//! the new files are checked whole, as at start-up (they parse, the key matches, the
//! certificate is valid now, signed by the CA, and names the same Muster identity), and only
//! then swapped in. Every handshake after the swap uses the new material, while connections
//! already open keep what they were made with. A file that does not load is refused with its
//! name and the reason in the log, and the old material stays in use.
//!
//! The rustls configurations built here never change: what changes is behind them. A server
//! config resolves its certificate and verifies client certificates through [`LiveTls`] at
//! every handshake; a client config presents the current certificate and checks servers
//! against the current CA bundle. So listeners and channels made once at start-up follow
//! renewals and CA rotations without being rebuilt.
//!
//! The same material says when each certificate expires: [`LiveTls::expiries`] for metrics,
//! and a warning in the log every day from 30 days before (an error from 7 days).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::RootCertStore;
use rustls::SignatureScheme;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use sha2::Digest;

use crate::parse::{certs_from_pem, key_from_pem, parse_err, x509};
use crate::server_config::ClientAuth;
use crate::{PeerIdentity, TlsError, TlsFiles};

/// Warn about a certificate that expires within this long.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);
/// Log an error about a certificate that expires within this long.
pub const EXPIRY_ERROR: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often the expiry warnings repeat.
const EXPIRY_LOG_EVERY: Duration = Duration::from_secs(24 * 3600);

/// Whose certificate an expiry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertSource {
    /// The one this process presents.
    Own,
    /// A CA in its CA file.
    TrustedCa,
}

/// When one certificate of the material expires, labelled as the metric labels it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertExpiry {
    pub source: CertSource,
    /// The Muster role the certificate names (`control-plane`, `gateway`, ...), or `ca`.
    pub role: String,
    /// The name it carries (a CA's common name).
    pub name: String,
    /// `notAfter`, Unix seconds.
    pub not_after_unix: i64,
}

/// One consistent set of TLS material: what the files held when they were last loaded.
pub struct Material {
    pub identity: Option<PeerIdentity>,
    /// The certificate file's chain with the key.
    certified: Arc<CertifiedKey>,
    /// The same chain with the CA bundle appended (a registrar presents the whole chain, which
    /// workers check against their token's pin).
    certified_with_ca: Arc<CertifiedKey>,
    /// The CA bundle as read (it may hold several CAs during a rotation).
    pub ca_pem: String,
    pub(crate) roots: Arc<RootCertStore>,
    pub(crate) server_verifier: Arc<WebPkiServerVerifier>,
    client_optional: Arc<dyn ClientCertVerifier>,
    client_required: Arc<dyn ClientCertVerifier>,
    pub expiries: Vec<CertExpiry>,
    /// Hash of the three files' bytes: a poll that finds the same hash reloads nothing.
    digest: [u8; 32],
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material").field("identity", &self.identity).field("expiries", &self.expiries).finish()
    }
}

/// The CA bundle as a root store, with the verifiers made from it.
pub(crate) fn roots_from_pem(ca_pem: &[u8], origin: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for ca in certs_from_pem(ca_pem, "CA certificate", origin)? {
        roots.add(ca).map_err(|err| parse_err("CA certificate", origin, err))?;
    }
    Ok(roots)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The client-certificate verifier trusting `roots`.
pub(crate) fn client_verifier(
    roots: Arc<RootCertStore>,
    auth: ClientAuth,
    origin: &str,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let builder = WebPkiClientVerifier::builder_with_provider(roots, provider());
    match auth {
        ClientAuth::Optional => builder.allow_unauthenticated().build(),
        ClientAuth::Required => builder.build(),
    }
    .map_err(|err| parse_err("CA certificate", origin, err))
}

/// Hash of the three files' bytes, which tells a poll whether anything changed.
fn digest(ca: &[u8], cert: &[u8], key: &[u8]) -> [u8; 32] {
    let mut hash = sha2::Sha256::new();
    for part in [ca, cert, key] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    hash.finalize().into()
}

/// The hash of the files as they are on disk now, without parsing them.
fn digest_on_disk(files: &TlsFiles) -> Result<[u8; 32], TlsError> {
    let read = |what, path: &std::path::Path| {
        std::fs::read(path).map_err(|source| TlsError::Read { what, path: path.to_owned(), source })
    };
    Ok(digest(
        &read("CA certificate", &files.ca)?,
        &read("certificate", &files.cert)?,
        &read("private key", &files.key)?,
    ))
}

impl Material {
    /// Loads and checks `files` (see [`TlsFiles::load`]).
    fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        let loaded = files.load()?;
        let (ca_origin, cert_origin) = (files.ca.display().to_string(), files.cert.display().to_string());
        let key_origin = files.key.display().to_string();
        let digest = digest(&loaded.ca, &loaded.cert, &loaded.key);
        let chain = certs_from_pem(&loaded.cert, "certificate", &cert_origin)?;
        let cas = certs_from_pem(&loaded.ca, "CA certificate", &ca_origin)?;
        let key = key_from_pem(&loaded.key, "private key", &key_origin)?;
        let signing_key =
            provider().key_provider.load_private_key(key).map_err(|err| parse_err("private key", &key_origin, err))?;
        let with_ca: Vec<CertificateDer<'static>> = chain.iter().chain(cas.iter()).cloned().collect();
        let certified = Arc::new(CertifiedKey::new(chain.clone(), signing_key.clone()));
        let certified_with_ca = Arc::new(CertifiedKey::new(with_ca, signing_key));

        let mut expiries = Vec::with_capacity(1 + cas.len());
        let identity = crate::peer_identity(&chain[0]);
        let leaf = x509(&chain[0], "certificate", &cert_origin)?;
        expiries.push(CertExpiry {
            source: CertSource::Own,
            role: identity.as_ref().map_or("unknown".to_string(), |id| id.role.as_str().to_string()),
            name: identity.as_ref().map_or_else(|| common_name(&leaf), |id| id.name.clone()),
            not_after_unix: leaf.validity().not_after.timestamp(),
        });
        for ca in &cas {
            let ca = x509(ca, "CA certificate", &ca_origin)?;
            expiries.push(CertExpiry {
                source: CertSource::TrustedCa,
                role: "ca".to_string(),
                name: common_name(&ca),
                not_after_unix: ca.validity().not_after.timestamp(),
            });
        }

        let roots = Arc::new(roots_from_pem(&loaded.ca, &ca_origin)?);
        let server_verifier = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|err| parse_err("CA certificate", &ca_origin, err))?;
        Ok(Self {
            identity,
            certified,
            certified_with_ca,
            ca_pem: String::from_utf8_lossy(&loaded.ca).into_owned(),
            client_optional: client_verifier(roots.clone(), ClientAuth::Optional, &ca_origin)?,
            client_required: client_verifier(roots.clone(), ClientAuth::Required, &ca_origin)?,
            roots,
            server_verifier,
            expiries,
            digest,
        })
    }

    /// The certificate and key presented to peers.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        self.certified.clone()
    }
}

fn common_name(cert: &x509_parser::certificate::X509Certificate<'_>) -> String {
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map_or_else(|| cert.subject().to_string(), str::to_string)
}

/// Counts of reloads, for metrics.
#[derive(Debug, Default)]
pub struct ReloadStats {
    /// New material swapped in.
    pub reloads: AtomicU64,
    /// Changed files refused (the old material stayed in use).
    pub failures: AtomicU64,
}

/// A deployable's TLS material, swapped whole when its files change.
#[derive(Debug)]
pub struct LiveTls {
    files: TlsFiles,
    current: RwLock<Arc<Material>>,
    pub stats: ReloadStats,
    /// The files last refused (their hash): a poll that finds them unchanged says nothing new.
    refused: std::sync::Mutex<Option<[u8; 32]>>,
    /// Client certificates verified against the cluster CA, newest per identity.
    peers: std::sync::Mutex<std::collections::HashMap<PeerIdentity, PeerSighting>>,
}

/// The most client identities remembered (one entry per component certificate name: a
/// cluster has a handful of nodes, registrars, gateways and operators).
const MAX_PEERS_REMEMBERED: usize = 4096;

/// A client certificate a handshake verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSighting {
    pub identity: PeerIdentity,
    /// `notAfter`, Unix seconds.
    pub not_after_unix: i64,
}

/// What [`LiveTls::reload`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reload {
    /// The files hold what is in use already.
    Unchanged,
    /// New material is in use.
    Swapped,
    /// The files are the ones refused before (already reported); the old material stays.
    StillRefused,
}

impl LiveTls {
    /// Loads `files` (a failure stops start-up, naming the file).
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        crate::install_crypto_provider();
        let material = Material::load(&files)?;
        Ok(Arc::new(Self {
            files,
            current: RwLock::new(Arc::new(material)),
            stats: ReloadStats::default(),
            refused: Default::default(),
            peers: Default::default(),
        }))
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The material in use now.
    pub fn current(&self) -> Arc<Material> {
        self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Reads the files again and swaps the material in if they changed and check out. On an
    /// error the material in use stays.
    /// Files refused once are not reported again until they change.
    pub fn reload(&self) -> Result<Reload, TlsError> {
        let on_disk = digest_on_disk(&self.files);
        let refused = |digest: Option<[u8; 32]>| {
            *self.refused.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = digest;
        };
        if let Ok(digest) = &on_disk {
            // Most polls find the files as they were: a read and a hash, nothing parsed.
            if *digest == self.current().digest {
                refused(None);
                return Ok(Reload::Unchanged);
            }
            if *self.refused.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) == Some(*digest) {
                return Ok(Reload::StillRefused);
            }
        }
        let result = self.try_reload();
        if result.is_err() {
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
            refused(on_disk.ok());
        }
        result
    }

    fn try_reload(&self) -> Result<Reload, TlsError> {
        let old = self.current();
        let new = Material::load(&self.files)?;
        if new.digest == old.digest {
            return Ok(Reload::Unchanged);
        }
        if let Some(old_identity) = &old.identity
            && new.identity.as_ref() != Some(old_identity)
        {
            return Err(parse_err(
                "certificate",
                &self.files.cert.display().to_string(),
                format!(
                    "it names {} but this process serves as {}; a reload may renew a certificate, not change \
                     who it is (restart with the new identity instead)",
                    new.identity.as_ref().map_or("no Muster identity".to_string(), PeerIdentity::spiffe_id),
                    old_identity.spiffe_id()
                ),
            ));
        }
        *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(new);
        self.stats.reloads.fetch_add(1, Ordering::Relaxed);
        Ok(Reload::Swapped)
    }

    /// When every certificate in use expires.
    pub fn expiries(&self) -> Vec<CertExpiry> {
        self.current().expiries.clone()
    }

    /// The client certificates handshakes on this process's listeners verified (against the
    /// cluster CA), the latest per identity.
    pub fn peers_seen(&self) -> Vec<PeerSighting> {
        let peers = self.peers.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut seen: Vec<PeerSighting> = peers.values().cloned().collect();
        seen.sort_by(|a, b| {
            (a.not_after_unix, a.identity.spiffe_id()).cmp(&(b.not_after_unix, b.identity.spiffe_id()))
        });
        seen
    }

    fn record_peer(&self, der: &[u8]) {
        let Some((identity, not_after_unix)) = crate::peer_identity_and_expiry(der) else { return };
        let mut peers = self.peers.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if peers.len() >= MAX_PEERS_REMEMBERED && !peers.contains_key(&identity) {
            return;
        }
        peers.insert(identity.clone(), PeerSighting { identity, not_after_unix });
    }

    /// A server config presenting the current certificate and verifying client certificates
    /// against the current CA bundle.
    pub fn server_config(self: &Arc<Self>, auth: ClientAuth) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let verifier = Arc::new(crate::following::FollowingVerifier { source: self.clone(), auth });
        self.server_config_with(verifier, false)
    }

    /// A server config presenting the current certificate (with the CA bundle appended when
    /// `present_ca`) and verifying client certificates with `verifier` (e.g. against the worker
    /// CA instead of the cluster CA).
    pub fn server_config_with(
        self: &Arc<Self>,
        verifier: Arc<dyn ClientCertVerifier>,
        present_ca: bool,
    ) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let resolver = Arc::new(LiveServerCert { live: self.clone(), present_ca });
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|err| parse_err("TLS settings", "rustls", err))?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(resolver);
        config.alpn_protocols = vec![b"h2".to_vec()];
        no_resumption(&mut config);
        Ok(Arc::new(config))
    }

    /// Watches the files: reloads on SIGHUP and, unless `poll` is zero, whenever a check every
    /// `poll` finds them changed; logs the expiry warnings at start, after every reload and
    /// once a day. `what` names the deployable in the log.
    /// The task stops when the returned guard is dropped.
    #[must_use = "the reloader stops when its guard is dropped"]
    pub fn spawn_reloader(self: &Arc<Self>, poll: Duration, what: &'static str) -> Reloader {
        let live = self.clone();
        live.log_expiries(what);
        // Installed before returning, so a SIGHUP from now on reloads instead of ending the
        // process (the signal's default).
        let mut hangups = hangup_signals();
        Reloader(tokio::spawn(async move {
            let mut last_expiry_log = tokio::time::Instant::now();
            let period = if poll.is_zero() { EXPIRY_LOG_EVERY } else { poll };
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let signalled = tokio::select! {
                    _ = ticks.tick() => false,
                    Some(()) = next_hangup(&mut hangups) => true,
                };
                if signalled || !poll.is_zero() {
                    match live.reload() {
                        Ok(Reload::Swapped) => {
                            let leaf = live.expiries().into_iter().next();
                            tracing::info!(
                                component = what,
                                cause = if signalled { "SIGHUP" } else { "the files changed" },
                                expires_at_unix = leaf.map_or(0, |leaf| leaf.not_after_unix),
                                "reloaded the TLS certificate, key and CA files; new handshakes use them"
                            );
                            live.log_expiries(what);
                            last_expiry_log = tokio::time::Instant::now();
                        }
                        Ok(Reload::Unchanged) => {
                            if signalled {
                                tracing::info!(component = what, "SIGHUP: the TLS files are unchanged");
                            }
                        }
                        Ok(Reload::StillRefused) => {
                            if signalled {
                                tracing::error!(
                                    component = what,
                                    "SIGHUP: the TLS files are still the ones refused before; the material loaded \
                                     before stays in use"
                                );
                            }
                        }
                        Err(err) => tracing::error!(
                            component = what,
                            error = %err,
                            "refused the changed TLS files; the material loaded before stays in use"
                        ),
                    }
                }
                if last_expiry_log.elapsed() >= EXPIRY_LOG_EVERY {
                    live.log_expiries(what);
                    last_expiry_log = tokio::time::Instant::now();
                }
            }
        }))
    }

    /// Logs a warning for each certificate in use that expires within 30 days, an error within
    /// 7 days or once expired.
    pub fn log_expiries(&self, what: &'static str) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| i64::try_from(since.as_secs()).unwrap_or(i64::MAX));
        for expiry in self.expiries() {
            let left = expiry.not_after_unix - now;
            if left > EXPIRY_WARNING.as_secs() as i64 {
                continue;
            }
            let when = if left <= 0 { "has EXPIRED".to_string() } else { format!("expires in {}", humanize(left)) };
            let (role, name, at) = (&expiry.role, &expiry.name, expiry.not_after_unix);
            let help = "renew it (`musterctl tls renew`, docs/operations.md); the files reload without a restart";
            if left <= EXPIRY_ERROR.as_secs() as i64 {
                tracing::error!(component = what, role, name, expires_at_unix = at, "TLS certificate {when}: {help}");
            } else {
                tracing::warn!(component = what, role, name, expires_at_unix = at, "TLS certificate {when}: {help}");
            }
        }
    }
}

/// Turns TLS session resumption off. A resumed session skips the certificates: the server
/// would go on seeing the client certificate of the session it resumes (renewed, or from a CA
/// dropped since) and the client the server's. Muster's connections are long-lived HTTP/2, so
/// a full handshake per connection costs next to nothing.
fn no_resumption(config: &mut rustls::ServerConfig) {
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
}

/// Keeps a [`LiveTls::spawn_reloader`] task running; dropping it stops the task.
#[derive(Debug)]
pub struct Reloader(tokio::task::JoinHandle<()>);

impl Drop for Reloader {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `3d 4h`, `2h 5m`, `2m 5s`, `45s`: how long until (or since) an expiry, for people.
pub fn humanize(seconds: i64) -> String {
    let (days, hours, minutes) = (seconds / 86_400, seconds % 86_400 / 3600, seconds % 3600 / 60);
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{seconds}s"),
        (0, 0, m) => format!("{m}m {}s", seconds % 60),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = Option<()>;

fn hangup_signals() -> Hangups {
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(signal) => Some(signal),
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGHUP; TLS files reload only when they change");
                None
            }
        }
    }
    #[cfg(not(unix))]
    None
}

async fn next_hangup(hangups: &mut Hangups) -> Option<()> {
    #[cfg(unix)]
    if let Some(signal) = hangups {
        return signal.recv().await;
    }
    let _ = hangups;
    std::future::pending().await
}

/// Presents the certificate in use at each handshake.
#[derive(Debug)]
struct LiveServerCert {
    live: Arc<LiveTls>,
    present_ca: bool,
}

impl ResolvesServerCert for LiveServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let material = self.live.current();
        Some(if self.present_ca { material.certified_with_ca.clone() } else { material.certified.clone() })
    }
}

/// Client certificates are verified against the CA bundle in use at each handshake, and the
/// verified ones noted for `cluster status`.
impl crate::following::VerifierSource for Arc<LiveTls> {
    fn verifier(&self, auth: ClientAuth) -> Arc<dyn ClientCertVerifier> {
        let material = self.current();
        match auth {
            ClientAuth::Optional => material.client_optional.clone(),
            ClientAuth::Required => material.client_required.clone(),
        }
    }

    fn verified(&self, end_entity: &CertificateDer<'_>) {
        self.record_peer(end_entity);
    }
}

/// Presents the client certificate in use at each handshake.
#[derive(Debug)]
pub(crate) struct LiveClientCert {
    pub(crate) live: Arc<LiveTls>,
}

impl rustls::client::ResolvesClientCert for LiveClientCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.live.current().certified_key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_durations_read_as_people_say_them() {
        assert_eq!(humanize(45), "45s");
        assert_eq!(humanize(125), "2m 5s");
        assert_eq!(humanize(7_500), "2h 5m");
        assert_eq!(humanize(3 * 86_400 + 4 * 3600 + 5), "3d 4h");
    }
}
