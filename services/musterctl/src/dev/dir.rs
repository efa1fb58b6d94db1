//! The dev directory. Everything `musterctl dev` writes (certificates, the control plane's
//! Raft data, the bootstrap token, the agents' identities) lives under one root, so a run
//! leaves nothing behind when the root is a temporary directory, and `--data-dir` keeps a
//! whole cluster that the next run picks up where it left off.

use std::path::{Path, PathBuf};

use anyhow::Context;

pub struct DevDir {
    root: PathBuf,
    /// Set when the root is ours to delete on exit.
    temp: Option<tempfile::TempDir>,
}

impl DevDir {
    /// `data_dir` (created if missing, checked writable), else a fresh temporary directory.
    pub fn open(data_dir: Option<&Path>) -> anyhow::Result<Self> {
        let Some(dir) = data_dir else {
            let temp = tempfile::Builder::new()
                .prefix("muster-dev-")
                .tempdir()
                .context("creating a temporary directory (set TMPDIR, or pass --data-dir DIR)")?;
            let root = temp.path().canonicalize().unwrap_or_else(|_| temp.path().to_path_buf());
            return Ok(Self { root, temp: Some(temp) });
        };
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create the data dir {}", dir.display()))?;
        let root = dir.canonicalize().with_context(|| format!("cannot resolve the data dir {}", dir.display()))?;
        let probe = root.join(".musterctl-dev-write-test");
        std::fs::write(&probe, b"")
            .and_then(|()| std::fs::remove_file(&probe))
            .with_context(|| format!("the data dir {} is not writable", root.display()))?;
        Ok(Self { root, temp: None })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether [`close`](Self::close) deletes the directory.
    pub fn is_temporary(&self) -> bool {
        self.temp.is_some()
    }

    /// The cluster CA and every certificate (`musterctl tls init` layout).
    pub fn tls(&self) -> PathBuf {
        self.root.join("tls")
    }

    /// The control plane's `data_dir`.
    pub fn control_plane(&self) -> PathBuf {
        self.root.join("control-plane")
    }

    /// The bootstrap token the agents register with.
    pub fn token_file(&self) -> PathBuf {
        self.root.join("bootstrap.token")
    }

    /// Agent `n`'s data dir (its identity is in `identity/` below it).
    pub fn agent(&self, n: usize) -> PathBuf {
        self.root.join("agents").join(format!("agent-{n}"))
    }

    /// Deletes a temporary root; a kept one is left as it is.
    pub fn close(self) -> anyhow::Result<()> {
        match self.temp {
            Some(temp) => temp.close().with_context(|| format!("removing {}", self.root.display())),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_temporary_root_is_removed_and_a_kept_one_is_not() {
        let dir = DevDir::open(None).unwrap();
        let root = dir.root().to_path_buf();
        assert!(dir.is_temporary() && root.is_dir());
        std::fs::create_dir_all(dir.agent(1)).unwrap();
        dir.close().unwrap();
        assert!(!root.exists());

        let parent = tempfile::tempdir().unwrap();
        let kept = parent.path().join("dev");
        let dir = DevDir::open(Some(&kept)).unwrap();
        assert!(!dir.is_temporary());
        assert_eq!(dir.token_file(), kept.canonicalize().unwrap().join("bootstrap.token"));
        dir.close().unwrap();
        assert!(kept.is_dir());
    }

    #[test]
    fn a_data_dir_that_cannot_be_created_is_named() {
        let parent = tempfile::tempdir().unwrap();
        let file = parent.path().join("a-file");
        std::fs::write(&file, "").unwrap();
        let err = DevDir::open(Some(&file.join("dev"))).err().unwrap();
        assert!(format!("{err:#}").contains("cannot create the data dir"), "{err:#}");
    }
}
