//! The worker's mTLS identity on disk: `cert.pem` (leaf + worker CA), `key.pem` (0600),
//! `ca.pem` (the cluster CA bundle) and `identity.json` (worker id, cluster id), in
//! `identity_dir` (0700). `identity.json` is written last: its presence means the rest is
//! complete, so a crash mid-save leaves no half identity that looks whole.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityMeta {
    pub worker_id: u64,
    pub cluster_id: String,
    pub cert_expires_at_unix: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub meta: IdentityMeta,
    pub cert_chain_pem: String,
    pub key_pem: String,
    pub ca_bundle_pem: String,
}

fn file(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

impl Identity {
    /// Writes every file atomically (temp file + fsync + rename), `identity.json` last.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        set_mode(dir, 0o700)?;
        muster_tls::write_atomic(&file(dir, "key.pem"), self.key_pem.as_bytes(), 0o600)?;
        muster_tls::write_atomic(&file(dir, "cert.pem"), self.cert_chain_pem.as_bytes(), 0o644)?;
        muster_tls::write_atomic(&file(dir, "ca.pem"), self.ca_bundle_pem.as_bytes(), 0o644)?;
        let meta = serde_json::to_vec_pretty(&self.meta)?;
        muster_tls::write_atomic(&file(dir, "identity.json"), &meta, 0o644)?;
        Ok(())
    }

    /// The saved identity, if there is a complete one.
    pub fn load(dir: &Path) -> anyhow::Result<Option<Self>> {
        let meta_path = file(dir, "identity.json");
        if !meta_path.exists() {
            return Ok(None);
        }
        let read = |name: &str| {
            let path = file(dir, name);
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
            meta: IdentityMeta { worker_id: 7, cluster_id: "c1".into(), cert_expires_at_unix: 2_000 },
            cert_chain_pem: "CERT".into(),
            key_pem: "KEY".into(),
            ca_bundle_pem: "CA".into(),
        }
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
    }

    #[test]
    fn an_identity_without_its_meta_file_is_not_an_identity() {
        let root = tempfile::tempdir().unwrap();
        identity().save(root.path()).unwrap();
        std::fs::remove_file(root.path().join("identity.json")).unwrap();
        assert_eq!(Identity::load(root.path()).unwrap(), None);
    }

    #[test]
    fn expiry_is_a_loud_error_with_the_way_out() {
        let root = tempfile::tempdir().unwrap();
        let err = identity().check_not_expired(root.path(), 2_000).unwrap_err().to_string();
        assert!(err.contains("expired") && err.contains("fresh bootstrap token"), "{err}");
        identity().check_not_expired(root.path(), 1_999).unwrap();
    }
}
