//! `musterctl tls rotate-ca`: replaces the cluster CA of a PKI directory while everything runs,
//! in three steps with time between them, so that no party ever meets a certificate from a CA
//! it does not trust yet:
//!
//! 1. **begin**: a new CA (`ca-next.pem`, `ca-next-key.pem`); `ca.pem` becomes the bundle
//!    old + new. Components reload it and trust both; workers get it at their next renewal
//!    (the registrar hands out its CA bundle). Every certificate is still the old CA's.
//! 2. **reissue** (once every component and worker trusts the new CA): every component
//!    certificate is re-issued from the new CA with its key, name, role and hosts; `ca.pem`
//!    becomes new + old (the first CA is the one bootstrap tokens pin) and `ca-key.pem` the new
//!    key; the old certificate stays as `ca-previous.pem` and the old key is deleted.
//! 3. **finish** (once every component runs its new certificate): `ca.pem` holds the new CA
//!    only; anything still carrying a certificate of the old CA is refused from then on.
//!
//! Each step checks the directory is in the state the previous step left and refuses
//! otherwise, naming the step to run; a step cut short (a crash) can be run again.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls::pki_types::CertificateDer;

use crate::parse::{certs_from_pem, x509};
use crate::renew::{certificate_names, reissue_from};
use crate::{CertificateAuthority, PkiRenew, Renewed, TlsError, TlsFiles, write_atomic};

const KEY_MODE: u32 = 0o600;
const CERT_MODE: u32 = 0o644;
/// The new CA while a rotation is between begin and reissue.
const NEXT_CERT: &str = "ca-next.pem";
const NEXT_KEY: &str = "ca-next-key.pem";
/// The old CA's certificate between reissue and finish (its key is gone).
const PREVIOUS_CERT: &str = "ca-previous.pem";

/// Whether `name` (a file name without `.pem`) is one of the cluster CA's files, not a
/// component certificate.
pub(crate) fn is_ca_file(name: &str) -> bool {
    matches!(name, "ca" | "ca-next" | "ca-previous" | "worker-ca" | "worker-ca-next")
}

/// Where a directory's rotation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RotationState {
    /// One CA, no rotation in progress.
    Idle,
    /// After begin: trusted everywhere it reached, not signing yet.
    Begun,
    /// After reissue: certificates are the new CA's, the old one is still trusted.
    Reissued,
}

impl RotationState {
    pub fn of(dir: &Path) -> Self {
        if dir.join(NEXT_CERT).exists() || dir.join(NEXT_KEY).exists() {
            Self::Begun
        } else if dir.join(PREVIOUS_CERT).exists() {
            Self::Reissued
        } else {
            Self::Idle
        }
    }

    fn next_step(self) -> &'static str {
        match self {
            Self::Idle => "begin",
            Self::Begun => "reissue",
            Self::Reissued => "finish",
        }
    }
}

/// What a step did.
#[derive(Clone, Debug)]
pub struct Rotated {
    /// Hex SHA-256 of the CA's public key that new bootstrap tokens pin after this step.
    pub pinned_ca_public_key_sha256: String,
    /// The common names in `ca.pem` after the step, in order.
    pub trusted: Vec<String>,
    /// The certificates re-issued (reissue only).
    pub reissued: Vec<Renewed>,
}

fn refuse(dir: &Path, state: RotationState, step: &str) -> TlsError {
    let reason = match state {
        RotationState::Idle => "no CA rotation is in progress".to_string(),
        RotationState::Begun => format!("a CA rotation has begun ({NEXT_CERT} exists)"),
        RotationState::Reissued => format!("a CA rotation has re-issued its certificates ({PREVIOUS_CERT} exists)"),
    };
    TlsError::Rotation {
        dir: dir.to_owned(),
        reason: format!("cannot {step}: {reason}; the next step is `rotate-ca {}`", state.next_step()),
    }
}

/// The certificates of `ca.pem`, each as its PEM block and its DER.
fn ca_bundle(dir: &Path) -> Result<Vec<(String, CertificateDer<'static>)>, TlsError> {
    let path = dir.join("ca.pem");
    let origin = path.display().to_string();
    let pem = crate::files::read_string("CA bundle", &path)?;
    let mut certs = Vec::new();
    for block in pem.split_inclusive(END).filter(|block| block.contains(BEGIN)) {
        let block = format!("{}{}\n", &block[block.find(BEGIN).unwrap_or(0)..block.len() - END.len()], END);
        let der = certs_from_pem(block.as_bytes(), "CA bundle", &origin)?.remove(0);
        certs.push((block, der));
    }
    if certs.is_empty() {
        certs_from_pem(pem.as_bytes(), "CA bundle", &origin)?;
    }
    Ok(certs)
}

const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const END: &str = "-----END CERTIFICATE-----";

fn to_pem(certs: &[(String, CertificateDer<'_>)]) -> String {
    certs.iter().map(|(pem, _)| pem.as_str()).collect()
}

fn common_names(certs: &[(String, CertificateDer<'_>)]) -> Vec<String> {
    certs
        .iter()
        .map(|(_, der)| {
            x509_parser::parse_x509_certificate(der)
                .ok()
                .and_then(|(_, cert)| cert.subject().iter_common_name().next()?.as_str().ok().map(str::to_string))
                .unwrap_or_default()
        })
        .collect()
}

fn rotated(ca: &CertificateAuthority, dir: &Path, reissued: Vec<Renewed>) -> Result<Rotated, TlsError> {
    Ok(Rotated {
        pinned_ca_public_key_sha256: ca.public_key_sha256(),
        trusted: common_names(&ca_bundle(dir)?),
        reissued,
    })
}

/// The new CA's common name: the old one's, dated, so the two are told apart everywhere (logs,
/// `muster_tls_cert_expires_at_seconds{name}`, openssl).
pub(crate) fn successor_name(old: &str) -> String {
    let base = old.split(" (rotated ").next().unwrap_or(old);
    let today = time::OffsetDateTime::now_utc().date();
    format!("{base} (rotated {today})")
}

/// Step 1: creates the next CA (valid for `validity`) and trusts it beside the current one.
pub fn begin(dir: &Path, validity: Duration) -> Result<Rotated, TlsError> {
    let state = RotationState::of(dir);
    if state != RotationState::Idle {
        return Err(refuse(dir, state, "begin"));
    }
    let current = CertificateAuthority::load(&dir.join("ca.pem"), &dir.join("ca-key.pem"))?;
    let bundle = ca_bundle(dir)?;
    if bundle.len() != 1 {
        return Err(TlsError::Rotation {
            dir: dir.to_owned(),
            reason: format!(
                "cannot begin: ca.pem holds {} certificates and no rotation is recorded; leave only the CA of \
                 ca-key.pem in it",
                bundle.len()
            ),
        });
    }
    let old_name = common_names(&bundle).pop().unwrap_or_default();
    let next = CertificateAuthority::generate(&successor_name(&old_name), validity)?;
    write_atomic(&dir.join(NEXT_KEY), next.key_pem().as_bytes(), KEY_MODE)?;
    write_atomic(&dir.join(NEXT_CERT), next.cert_pem().as_bytes(), CERT_MODE)?;
    let both = format!("{}{}", current.cert_pem(), next.cert_pem());
    write_atomic(&dir.join("ca.pem"), both.as_bytes(), CERT_MODE)?;
    rotated(&current, dir, Vec::new())
}

/// Step 2: re-issues every component certificate from the next CA (each valid for
/// `validity`) and makes it the directory's CA.
pub fn reissue(dir: &Path, validity: Duration) -> Result<Rotated, TlsError> {
    let state = RotationState::of(dir);
    if state != RotationState::Begun {
        return Err(refuse(dir, state, "reissue"));
    }
    let next = CertificateAuthority::load(&dir.join(NEXT_CERT), &dir.join(NEXT_KEY))?;
    let next_der = certs_from_pem(next.cert_pem().as_bytes(), "CA certificate", NEXT_CERT)?.remove(0);
    let others: Vec<_> = ca_bundle(dir)?.into_iter().filter(|(_, der)| *der != next_der).collect();
    if others.is_empty() {
        return Err(TlsError::Rotation {
            dir: dir.to_owned(),
            reason: "cannot reissue: ca.pem holds only the next CA; the old one is missing from it".into(),
        });
    }
    // Trust first (new + old: the new CA is the one tokens pin from now on), then the key, so
    // that a run cut short anywhere can be run again.
    let mut bundle = vec![(next.cert_pem().to_string(), next_der)];
    bundle.extend(others.iter().cloned());
    write_atomic(&dir.join("ca.pem"), to_pem(&bundle).as_bytes(), CERT_MODE)?;
    write_atomic(&dir.join(PREVIOUS_CERT), to_pem(&others).as_bytes(), CERT_MODE)?;
    write_atomic(&dir.join("ca-key.pem"), next.key_pem().as_bytes(), KEY_MODE)?;
    let reissued = reissue_from(&next, &PkiRenew { dir: dir.to_owned(), only: Vec::new(), validity })?;
    for file in [NEXT_CERT, NEXT_KEY] {
        remove(&dir.join(file))?;
    }
    rotated(&next, dir, reissued)
}

/// Step 3: drops the old CA from `ca.pem`, once no certificate in the directory is its.
pub fn finish(dir: &Path) -> Result<Rotated, TlsError> {
    let state = RotationState::of(dir);
    if state != RotationState::Reissued {
        return Err(refuse(dir, state, "finish"));
    }
    let ca = CertificateAuthority::load(&dir.join("ca.pem"), &dir.join("ca-key.pem"))?;
    let ca_der = certs_from_pem(ca.cert_pem().as_bytes(), "CA certificate", "ca.pem")?.remove(0);
    let ca_cert = x509(&ca_der, "CA certificate", "ca.pem")?;
    let mut stale = Vec::new();
    for name in certificate_names(dir)? {
        let files = TlsFiles::in_dir(dir, &name);
        let pem = crate::files::read_string("certificate", &files.cert)?;
        let ders = certs_from_pem(pem.as_bytes(), "certificate", &files.cert.display().to_string())?;
        let leaf = x509(&ders[0], "certificate", &files.cert.display().to_string())?;
        if leaf.verify_signature(Some(ca_cert.public_key())).is_err() {
            stale.push(name);
        }
    }
    if !stale.is_empty() {
        return Err(TlsError::Rotation {
            dir: dir.to_owned(),
            reason: format!(
                "cannot finish: {} not signed by the new CA; re-issue them (`musterctl tls renew --only {}`) first",
                stale.join(", "),
                stale.join(",")
            ),
        });
    }
    // The CA alone (its loaded PEM is the whole bundle).
    let first = ca_bundle(dir)?.remove(0);
    write_atomic(&dir.join("ca.pem"), first.0.as_bytes(), CERT_MODE)?;
    remove(&dir.join(PREVIOUS_CERT))?;
    rotated(&ca, dir, Vec::new())
}

fn remove(path: &PathBuf) -> Result<(), TlsError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(TlsError::Write { path: path.clone(), source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CertSpec, PkiInit, Role};

    const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

    fn init(dir: &Path) {
        crate::init_pki(&PkiInit {
            dir: dir.to_path_buf(),
            cluster_name: "test".into(),
            nodes: vec![
                CertSpec::node("node-1", Role::ControlPlane, YEAR),
                CertSpec::node("gw-1", Role::Gateway, YEAR),
            ],
            operator: true,
            force: false,
            validity: YEAR,
            ca_validity: YEAR,
        })
        .unwrap();
    }

    fn loads(dir: &Path, name: &str) -> Result<(), TlsError> {
        TlsFiles::in_dir(dir, name).client_tls().map(|_| ())
    }

    #[test]
    fn the_three_steps_move_every_certificate_to_a_new_ca_that_is_trusted_first() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path());
        let old = CertificateAuthority::load(&dir.path().join("ca.pem"), &dir.path().join("ca-key.pem")).unwrap();
        let node_key = std::fs::read(dir.path().join("node-1-key.pem")).unwrap();
        let worker_ca = std::fs::read(dir.path().join("worker-ca.pem")).unwrap();

        let begun = begin(dir.path(), YEAR).unwrap();
        assert_eq!(RotationState::of(dir.path()), RotationState::Begun);
        assert_eq!(begun.trusted.len(), 2, "{:?}", begun.trusted);
        assert!(begun.trusted[1].starts_with("test Muster CA (rotated "), "{:?}", begun.trusted);
        assert_eq!(begun.pinned_ca_public_key_sha256, old.public_key_sha256(), "tokens pin the old CA still");
        loads(dir.path(), "node-1").unwrap();
        // `renew` keeps working, from the old CA, and skips the rotation's files.
        let renewed = crate::renew_pki(&PkiRenew { dir: dir.path().into(), only: Vec::new(), validity: YEAR }).unwrap();
        assert_eq!(renewed.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["gw-1", "node-1", "operator"]);

        let reissued = reissue(dir.path(), YEAR).unwrap();
        assert_eq!(RotationState::of(dir.path()), RotationState::Reissued);
        assert_eq!(reissued.reissued.len(), 3);
        assert_ne!(reissued.pinned_ca_public_key_sha256, old.public_key_sha256(), "tokens pin the new CA");
        assert_eq!(reissued.trusted.len(), 2);
        assert!(reissued.trusted[0].contains("rotated"), "the new CA first: {:?}", reissued.trusted);
        assert_eq!(std::fs::read(dir.path().join("node-1-key.pem")).unwrap(), node_key, "keys stay");
        assert!(!dir.path().join(NEXT_KEY).exists() && !dir.path().join(NEXT_CERT).exists());
        loads(dir.path(), "node-1").unwrap();

        let finished = finish(dir.path()).unwrap();
        assert_eq!(RotationState::of(dir.path()), RotationState::Idle);
        assert_eq!(finished.trusted, vec![reissued.trusted[0].clone()]);
        for name in ["node-1", "gw-1", "operator"] {
            loads(dir.path(), name).unwrap();
        }
        assert_eq!(std::fs::read(dir.path().join("worker-ca.pem")).unwrap(), worker_ca, "the worker CA is another's");
        // An old certificate is not signed by anything trusted any more.
        let stale = old.issue(&CertSpec::node("stale", Role::Gateway, YEAR)).unwrap();
        std::fs::write(dir.path().join("stale.pem"), &stale.cert_pem).unwrap();
        std::fs::write(dir.path().join("stale-key.pem"), &stale.key_pem).unwrap();
        let err = loads(dir.path(), "stale").unwrap_err().to_string();
        assert!(err.contains("not signed by the CA"), "{err}");
        // And a second rotation can begin.
        begin(dir.path(), YEAR).unwrap();
    }

    #[test]
    fn steps_out_of_order_are_refused_with_the_next_step() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path());
        let before = std::fs::read(dir.path().join("ca.pem")).unwrap();
        for (result, step) in [(reissue(dir.path(), YEAR), "reissue"), (finish(dir.path()), "finish")] {
            let err = result.unwrap_err().to_string();
            assert!(err.contains(&format!("cannot {step}")) && err.contains("`rotate-ca begin`"), "{err}");
        }
        assert_eq!(std::fs::read(dir.path().join("ca.pem")).unwrap(), before, "nothing written");
        begin(dir.path(), YEAR).unwrap();
        let err = begin(dir.path(), YEAR).unwrap_err().to_string();
        assert!(err.contains("`rotate-ca reissue`"), "{err}");
        let err = finish(dir.path()).unwrap_err().to_string();
        assert!(err.contains("`rotate-ca reissue`"), "{err}");
        reissue(dir.path(), YEAR).unwrap();
        let err = reissue(dir.path(), YEAR).unwrap_err().to_string();
        assert!(err.contains("`rotate-ca finish`"), "{err}");
    }

    #[test]
    fn finish_refuses_while_a_certificate_is_still_the_old_cas() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path());
        let old = CertificateAuthority::load(&dir.path().join("ca.pem"), &dir.path().join("ca-key.pem")).unwrap();
        begin(dir.path(), YEAR).unwrap();
        reissue(dir.path(), YEAR).unwrap();
        // A certificate copied in from an old backup of the directory.
        let stale = old.issue(&CertSpec::node("late", Role::Registrar, YEAR)).unwrap();
        std::fs::write(dir.path().join("late.pem"), &stale.cert_pem).unwrap();
        std::fs::write(dir.path().join("late-key.pem"), &stale.key_pem).unwrap();
        let err = finish(dir.path()).unwrap_err().to_string();
        assert!(err.contains("late") && err.contains("renew --only late"), "{err}");
        assert_eq!(RotationState::of(dir.path()), RotationState::Reissued, "nothing changed");
        crate::renew_pki(&PkiRenew { dir: dir.path().into(), only: vec!["late".into()], validity: YEAR }).unwrap();
        finish(dir.path()).unwrap();
    }
}
