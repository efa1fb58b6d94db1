//! The worker's mTLS identity on disk: `cert.pem` (leaf + worker CA), `key.pem` (0600),
//! `ca.pem` (the cluster CA bundle) and `identity.json` (worker id, cluster id, expiry), in
//! `identity_dir` (0700).
//!
//! The four files change together (a renewal replaces key and certificate at once), so a save
//! is staged and then committed: every file is first written atomically under a `.next` name,
//! `identity.next.json` last; then each is renamed over its real name, `identity.json` last.
//! A crash before `identity.next.json` exists leaves the old identity whole (the partial
//! stage is discarded on load); a crash after it is rolled forward on load. Either way a key
//! never sits next to a certificate that is not its own.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityMeta {
    pub worker_id: u64,
    pub cluster_id: String,
    pub cert_expires_at_unix: i64,
    /// When this agent received the certificate (its notBefore is backdated for clock skew, so
    /// it says little about the lifetime). 0 in identities saved before renewal existed.
    #[serde(default)]
    pub cert_issued_at_unix: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub meta: IdentityMeta,
    pub cert_chain_pem: String,
    pub key_pem: String,
    pub ca_bundle_pem: String,
}

/// (final name, mode), in commit order: `identity.json` last.
const FILES: [(&str, u32); 4] = [("key.pem", 0o600), ("cert.pem", 0o644), ("ca.pem", 0o644), ("identity.json", 0o644)];

fn staged(dir: &Path, name: &str) -> PathBuf {
    let (stem, ext) = name.rsplit_once('.').unwrap_or((name, ""));
    dir.join(format!("{stem}.next.{ext}"))
}

impl Identity {
    /// Stages every file, then commits them (see the module comment).
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        set_mode(dir, 0o700)?;
        let meta = serde_json::to_vec_pretty(&self.meta)?;
        let contents: [&[u8]; 4] =
            [self.key_pem.as_bytes(), self.cert_chain_pem.as_bytes(), self.ca_bundle_pem.as_bytes(), &meta];
        for ((name, mode), bytes) in FILES.iter().zip(contents) {
            muster_tls::write_atomic(&staged(dir, name), bytes, *mode)?;
        }
        commit(dir)
    }

    /// The saved identity, if there is a complete one (finishing or discarding an interrupted
    /// save first).
    pub fn load(dir: &Path) -> anyhow::Result<Option<Self>> {
        recover(dir)?;
        let meta_path = dir.join("identity.json");
        if !meta_path.exists() {
            return Ok(None);
        }
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
        };
        let meta: IdentityMeta = serde_json::from_str(&read("identity.json")?)
            .with_context(|| format!("parsing {}", meta_path.display()))?;
        Ok(Some(Self {
            meta,
            cert_chain_pem: read("cert.pem")?,
            key_pem: read("key.pem")?,
            ca_bundle_pem: read("ca.pem")?,
        }))
    }

    /// Refuses an expired identity with the way out, instead of failing quietly later.
    pub fn check_not_expired(&self, dir: &Path, now_unix: i64) -> anyhow::Result<()> {
        if now_unix >= self.meta.cert_expires_at_unix {
            anyhow::bail!(
                "the identity of worker {} in {} expired at unix time {}; it can no longer be renewed. \
                 Delete {} and put a fresh bootstrap token in the token file to register again.",
                self.meta.worker_id,
                dir.display(),
                self.meta.cert_expires_at_unix,
                dir.display()
            );
        }
        Ok(())
    }
}

/// Renames the staged files over the real ones, `identity.json` last. Idempotent: a file
/// already moved is skipped, so an interrupted commit can simply run again.
fn commit(dir: &Path) -> anyhow::Result<()> {
    for (name, _) in FILES {
        let from = staged(dir, name);
        match std::fs::rename(&from, dir.join(name)) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err).with_context(|| format!("renaming {}", from.display())),
        }
    }
    std::fs::File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("syncing {}", dir.display()))
}

/// A complete stage (`identity.next.json` present) is committed; an incomplete one removed.
fn recover(dir: &Path) -> anyhow::Result<()> {
    if staged(dir, "identity.json").exists() {
        tracing::info!(dir = %dir.display(), "finishing an interrupted identity save");
        return commit(dir);
    }
    for (name, _) in FILES {
        let path = staged(dir, name);
        if path.exists() {
            std::fs::remove_file(&path).with_context(|| format!("removing the partial {}", path.display()))?;
        }
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn identity() -> Identity {
        Identity {
            meta: IdentityMeta {
                worker_id: 7,
                cluster_id: "c1".into(),
                cert_expires_at_unix: 2_000,
                cert_issued_at_unix: 1_000,
            },
            cert_chain_pem: "CERT".into(),
            key_pem: "KEY".into(),
            ca_bundle_pem: "CA".into(),
        }
    }

    fn renewed() -> Identity {
        let mut next = identity();
        next.meta.cert_expires_at_unix = 3_000;
        next.cert_chain_pem = "CERT2".into();
        next.key_pem = "KEY2".into();
        next
    }

    #[test]
    fn saves_and_loads_with_private_modes() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("identity");
        assert_eq!(Identity::load(&dir).unwrap(), None);
        identity().save(&dir).unwrap();
        assert_eq!(Identity::load(&dir).unwrap(), Some(identity()));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join("key.pem")), 0o600);
        assert_eq!(mode(&dir), 0o700);
        renewed().save(&dir).unwrap();
        assert_eq!(Identity::load(&dir).unwrap(), Some(renewed()));
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 4, "no staged leftovers: {names:?}");
    }

    #[test]
    fn an_identity_without_its_meta_file_is_not_an_identity() {
        let root = tempfile::tempdir().unwrap();
        identity().save(root.path()).unwrap();
        std::fs::remove_file(root.path().join("identity.json")).unwrap();
        assert_eq!(Identity::load(root.path()).unwrap(), None);
    }

    #[test]
    fn an_interrupted_renewal_is_rolled_forward_or_back_never_mixed() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path();
        identity().save(dir).unwrap();
        // Crash while staging: the key is staged, nothing else. The old identity stays.
        muster_tls::write_atomic(&staged(dir, "key.pem"), b"KEY2", 0o600).unwrap();
        assert_eq!(Identity::load(dir).unwrap(), Some(identity()));
        assert!(!staged(dir, "key.pem").exists(), "the partial stage is removed");
        // Crash mid-commit: the stage was complete and the key already moved. Roll forward.
        let next = renewed();
        let meta = serde_json::to_vec(&next.meta).unwrap();
        for (name, bytes) in [("cert.pem", b"CERT2".as_slice()), ("ca.pem", b"CA"), ("identity.json", &meta)] {
            muster_tls::write_atomic(&staged(dir, name), bytes, 0o644).unwrap();
        }
        std::fs::write(dir.join("key.pem"), "KEY2").unwrap();
        assert_eq!(Identity::load(dir).unwrap(), Some(next));
    }

    #[test]
    fn identities_saved_before_renewal_existed_still_load() {
        let old = r#"{"worker_id": 3, "cluster_id": "c", "cert_expires_at_unix": 5}"#;
        let meta: IdentityMeta = serde_json::from_str(old).unwrap();
        assert_eq!(meta.cert_issued_at_unix, 0);
    }

    #[test]
    fn expiry_is_a_loud_error_with_the_way_out() {
        let root = tempfile::tempdir().unwrap();
        let err = identity().check_not_expired(root.path(), 2_000).unwrap_err().to_string();
        assert!(err.contains("expired") && err.contains("fresh bootstrap token"), "{err}");
        identity().check_not_expired(root.path(), 1_999).unwrap();
    }
}
