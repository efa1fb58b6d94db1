//! The worker CA this registrar signs with: loaded from files only registrars are given, so
//! the key never travels through the control plane (whose log and snapshots are copied to
//! every node and every backup). The control plane is told the certificate, and every replica
//! must bring the same one: a registrar whose CA differs from the cluster's refuses to start.

use std::path::{Path, PathBuf};
use std::time::Duration;

use muster_client::ControlPlaneClient;
use muster_proto::v1;
use muster_tls::CertificateAuthority;

/// Lifetime of the throwaway CA an insecure registrar without files makes.
const IN_MEMORY_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// Why the worker CA files cannot be used; each names the file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum WorkerCaError {
    #[error(
        "the worker CA key {path} is readable or writable by others (mode {mode:o}); run `chmod 600 {path}`",
        path = .path.display()
    )]
    KeyTooOpen { path: PathBuf, mode: u32 },
    #[error(
        "{source}; the registrar needs the worker CA certificate and key (worker_ca_cert_file, \
         worker_ca_key_file): `musterctl tls init --dir {dir}` adds them to an existing PKI directory",
        dir = .dir.display()
    )]
    Load { dir: PathBuf, source: muster_tls::TlsError },
    #[error(
        "this registrar's worker CA (sha256 {ours}, from {path}) is not the cluster's (sha256 {cluster}): \
         give every registrar the same worker-ca.pem and worker-ca-key.pem",
        path = .path.display()
    )]
    Mismatch { ours: String, cluster: String, path: PathBuf },
}

/// Loads the worker CA from `cert` and `key`, refusing a key file others may read.
pub fn load(cert: &Path, key: &Path) -> Result<CertificateAuthority, WorkerCaError> {
    let dir = cert.parent().map(PathBuf::from).unwrap_or_default();
    if let Ok(meta) = std::fs::metadata(key) {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let mode = meta.permissions().mode() & 0o777;
        let own_uid = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
        if mode & 0o077 != 0 && !read_only_group_mount(mode, meta.uid(), own_uid) {
            return Err(WorkerCaError::KeyTooOpen { path: key.to_owned(), mode });
        }
    }
    CertificateAuthority::load(cert, key).map_err(|source| WorkerCaError::Load { dir, source })
}

/// A key owned by root and readable by its group only (0440/0640), read by a registrar that
/// is not root: how a Kubernetes Secret reaches a non-root pod (`fsGroup`). The registrar can
/// neither tighten it nor read it otherwise, and no other user can read it.
fn read_only_group_mount(mode: u32, file_uid: u32, own_uid: Option<u32>) -> bool {
    mode & 0o037 == 0 && file_uid == 0 && own_uid.is_some_and(|uid| uid != 0)
}

/// The configured CA, or (insecure mode without files) a throwaway one made in memory.
pub fn from_config(files: Option<(PathBuf, PathBuf)>) -> anyhow::Result<(CertificateAuthority, PathBuf)> {
    match files {
        Some((cert, key)) => Ok((load(&cert, &key)?, cert)),
        None => {
            tracing::warn!(
                "INSECURE MODE: no worker CA files; signing with a CA made in memory (only the first such \
                 registrar of a cluster can start, and workers lose their trust when it restarts)"
            );
            let ca = CertificateAuthority::generate("muster worker CA (in memory)", IN_MEMORY_VALIDITY)?;
            Ok((ca, PathBuf::from("(generated in memory)")))
        }
    }
}

/// How often the registrar asks the control plane which worker CAs to trust for Renew, and
/// checks its worker CA files for a new CA to sign with (a worker CA rotation).
pub const REFRESH: Duration = Duration::from_secs(5);

/// Every [`REFRESH`]: makes `trust` follow the cluster's worker CAs, and when the files hold a
/// CA other than the one signing, loads it, has the cluster confirm it, and signs with it. A
/// file that does not load, or a CA the cluster does not trust, is logged and the old one
/// stays. Runs until dropped.
pub async fn follow(
    client: std::sync::Arc<ControlPlaneClient>,
    files: Option<(PathBuf, PathBuf)>,
    signer: &crate::signing::Signer,
    trust: &muster_tls::SwappableClientVerifier,
) {
    let mut last_problem = String::new();
    loop {
        tokio::time::sleep(REFRESH).await;
        match client.refresh_worker_trust(trust).await {
            Ok(true) => tracing::info!("the worker CAs trusted for Renew changed (a worker CA rotation)"),
            Ok(false) => {}
            Err(err) => tracing::debug!(error = %err, "worker CAs not refreshed; trusting the ones known"),
        }
        let Some((cert, key)) = &files else { continue };
        let on_disk = std::fs::read_to_string(cert).unwrap_or_default();
        if on_disk.is_empty() || on_disk == signer.worker_ca().cert_pem() {
            continue;
        }
        let switched = async {
            let ca = load(cert, key)?;
            let proposed = v1::InitWorkerCa { cert_pem: ca.cert_pem().into(), ..Default::default() };
            let response = client.ensure_worker_ca(proposed).await?;
            let recorded =
                response.worker_ca.ok_or_else(|| anyhow::anyhow!("the control plane returned no worker CA"))?;
            let standing = check(&ca, cert, &recorded)?;
            anyhow::Ok((ca, standing))
        };
        match switched.await {
            Ok((ca, standing)) => {
                tracing::info!(sha256 = %ca.cert_sha256(), ?standing, "signing with the worker CA from the files now");
                signer.replace_worker_ca(ca);
                last_problem.clear();
            }
            Err(err) => {
                let problem = format!("{err:#}");
                if problem != last_problem {
                    tracing::warn!(error = %problem, "the worker CA files changed but cannot be used; signing with the CA loaded");
                    last_problem = problem;
                }
            }
        }
    }
}

/// Where our CA stands in the cluster's record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// The cluster's worker CA.
    Current,
    /// The CA a rotation moves to: trusted, promoted next.
    Next,
    /// A CA a rotation moved off: still trusted for a while (sign with the current one).
    Retired,
}

/// Checks the cluster's answer against our CA: it must be the cluster's worker CA, or one a
/// rotation in progress trusts (the next or a retired one, while registrars load the files).
pub fn check(ours: &CertificateAuthority, path: &Path, cluster: &v1::InitWorkerCa) -> Result<Standing, WorkerCaError> {
    let sha256 = ours.cert_sha256();
    if cluster.sha256 == sha256 {
        return Ok(Standing::Current);
    }
    if cluster.next_sha256 == sha256 {
        return Ok(Standing::Next);
    }
    if cluster.retired.iter().any(|retired| retired.sha256 == sha256) {
        return Ok(Standing::Retired);
    }
    Err(WorkerCaError::Mismatch { ours: sha256, cluster: cluster.sha256.clone(), path: path.to_owned() })
}

/// Tells the control plane our certificate (never the key), retrying until it answers;
/// returns the cluster's record of it and the cluster id.
pub async fn agree(
    client: &ControlPlaneClient,
    ours: &CertificateAuthority,
    path: &Path,
) -> anyhow::Result<(v1::InitWorkerCa, String)> {
    let mut backoff = Duration::from_millis(200);
    loop {
        let proposed = v1::InitWorkerCa { cert_pem: ours.cert_pem().into(), ..Default::default() };
        match client.ensure_worker_ca(proposed).await {
            Ok(response) => {
                let ca =
                    response.worker_ca.ok_or_else(|| anyhow::anyhow!("the control plane returned no worker CA"))?;
                match check(ours, path, &ca)? {
                    Standing::Current => {}
                    standing => tracing::warn!(
                        ?standing,
                        sha256 = %ours.cert_sha256(),
                        current = %ca.sha256,
                        "signing with a worker CA a rotation is moving to or off; give this registrar the \
                         cluster's current worker-ca.pem and worker-ca-key.pem"
                    ),
                }
                return Ok((ca, response.cluster_id));
            }
            Err(err) => {
                tracing::warn!(error = %err, "waiting for the control plane to record the worker CA");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn pki() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        muster_tls::init_pki(&muster_tls::PkiInit {
            dir: dir.path().to_owned(),
            cluster_name: "test".into(),
            nodes: Vec::new(),
            operator: false,
            force: false,
            validity: Duration::from_secs(3600),
            ca_validity: Duration::from_secs(3600),
        })
        .unwrap();
        dir
    }

    fn files(dir: &Path) -> (PathBuf, PathBuf) {
        (dir.join("worker-ca.pem"), dir.join("worker-ca-key.pem"))
    }

    #[test]
    fn loads_the_files_tls_init_writes() {
        let dir = pki();
        let (cert, key) = files(dir.path());
        let ca = load(&cert, &key).unwrap();
        let recorded =
            v1::InitWorkerCa { cert_pem: ca.cert_pem().into(), sha256: ca.cert_sha256(), ..Default::default() };
        assert_eq!(check(&ca, &cert, &recorded).unwrap(), Standing::Current);
        let moving = v1::InitWorkerCa { sha256: "other".into(), next_sha256: ca.cert_sha256(), ..Default::default() };
        assert_eq!(check(&ca, &cert, &moving).unwrap(), Standing::Next);
        let moved = v1::InitWorkerCa {
            sha256: "other".into(),
            retired: vec![v1::RetiredWorkerCa { sha256: ca.cert_sha256(), ..Default::default() }],
            ..Default::default()
        };
        assert_eq!(check(&ca, &cert, &moved).unwrap(), Standing::Retired);
    }

    #[test]
    fn refusals_name_the_file_and_the_fix() {
        let dir = pki();
        let (cert, key) = files(dir.path());

        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = load(&cert, &key).unwrap_err().to_string();
        assert!(err.contains(&key.display().to_string()) && err.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

        let missing = dir.path().join("nope.pem");
        let err = load(&missing, &key).unwrap_err().to_string();
        assert!(err.contains("nope.pem") && err.contains("musterctl tls init --dir"), "{err}");

        // A key that is not the certificate's.
        std::fs::copy(dir.path().join("ca-key.pem"), &key).unwrap();
        let err = load(&cert, &key).unwrap_err().to_string();
        assert!(err.contains("does not match"), "{err}");

        let other = CertificateAuthority::generate("other", Duration::from_secs(60)).unwrap();
        let ours = CertificateAuthority::generate("ours", Duration::from_secs(60)).unwrap();
        let cluster = v1::InitWorkerCa { sha256: other.cert_sha256(), ..Default::default() };
        let err = check(&ours, &cert, &cluster).unwrap_err().to_string();
        assert!(err.contains(&ours.cert_sha256()) && err.contains(&other.cert_sha256()), "{err}");
    }

    #[test]
    fn a_root_owned_group_read_only_mount_is_the_one_exception() {
        assert!(read_only_group_mount(0o440, 0, Some(65532)));
        assert!(read_only_group_mount(0o640, 0, Some(65532)));
        assert!(!read_only_group_mount(0o444, 0, Some(65532)), "world-readable");
        assert!(!read_only_group_mount(0o460, 0, Some(65532)), "group-writable");
        assert!(!read_only_group_mount(0o640, 1000, Some(1000)), "our own file: chmod it");
        assert!(!read_only_group_mount(0o640, 0, Some(0)), "root reads it anyway");
    }

    #[test]
    fn renewals_trust_retired_cas_until_their_workers_expire() {
        let ca = v1::InitWorkerCa {
            cert_pem: "NEW\n".into(),
            retired: vec![v1::RetiredWorkerCa {
                cert_pem: "OLD\n".into(),
                trusted_until_unix: 100,
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(ca.trust_bundle(99), "NEW\nOLD\n");
        assert_eq!(ca.trust_bundle(100), "NEW\n");
    }
}
