//! A node's data directory is private: 0700 directories, 0600 files. The Raft log, snapshots
//! and the FSM hold bootstrap-token hashes, worker records and the cluster's history, which
//! no other local user should read or change.
//!
//! Everything the node creates is created so ([`create_private_dir`], [`private_file`]); on
//! start [`secure`] tightens what an older release (or a umask) left open, and refuses to start
//! only when it cannot, naming the path and the fix.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const DIR_MODE: u32 = 0o700;
pub const FILE_MODE: u32 = 0o600;

/// Why the data directory cannot be made private.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("data directory {}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "{} is accessible to other users (mode {mode:o}) and could not be tightened ({reason}); run `chmod {want:o} {}` \
         as its owner",
        .path.display(),
        .path.display()
    )]
    TooOpen { path: PathBuf, mode: u32, want: u32, reason: String },
}

/// What each kind of node keeps in its data directory: a Raft node's log and FSM, or a static
/// node's tagged KV. The two never share a directory.
const RAFT_FILES: &[&str] = &["raft-log", "raft-meta.redb", "fsm.redb"];
const STATIC_FILES: &[&str] = &["static-kv.redb"];

/// Refuses to start a node of `mode` ("static", or any Raft mode) on a data directory that
/// holds the other kind's state: switching modes would silently start from nothing.
pub fn refuse_other_mode(dir: &Path, mode: &str) -> anyhow::Result<()> {
    let (others, kind) =
        if mode == "static" { (RAFT_FILES, "a Raft node's") } else { (STATIC_FILES, "a static node's") };
    if let Some(found) = others.iter().map(|name| dir.join(name)).find(|path| path.exists()) {
        anyhow::bail!(
            "data_dir {} holds {kind} state ({}), but this node runs mode = \"{mode}\"; a node's data does not carry \
             over between static and Raft modes: use another data_dir, or move the old one away",
            dir.display(),
            found.display()
        );
    }
    Ok(())
}

/// Creates `dir` (and missing parents) with mode 0700, and makes `dir` itself 0700.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)?;
    let mode = fs::metadata(dir)?.permissions().mode() & 0o777;
    if mode != DIR_MODE {
        fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))?;
    }
    Ok(())
}

/// Options that create a file with mode 0600 (an existing file keeps its mode; [`secure`]
/// tightens those on start).
pub fn private_file() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.mode(FILE_MODE);
    options
}

/// Sets `path` to mode 0600 (a file another library created, e.g. redb's).
pub fn make_private(path: &Path) -> io::Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(FILE_MODE))
}

/// Creates `dir` if missing, then tightens it and everything under it: directories to 0700,
/// files to 0600. Refuses only when something stays open to others.
pub fn secure(dir: &Path) -> Result<(), DataDirError> {
    create_private_dir(dir).map_err(|source| DataDirError::Io { path: dir.to_owned(), source })?;
    tighten(dir, DIR_MODE)
}

fn tighten(path: &Path, want: u32) -> Result<(), DataDirError> {
    let io_err = |source| DataDirError::Io { path: path.to_owned(), source };
    let meta = fs::symlink_metadata(path).map_err(io_err)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0
        && let Err(err) = fs::set_permissions(path, fs::Permissions::from_mode(want))
    {
        return Err(DataDirError::TooOpen { path: path.to_owned(), mode, want, reason: err.to_string() });
    }
    if meta.is_dir() {
        for entry in fs::read_dir(path).map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            let kind = entry.file_type().map_err(io_err)?;
            let want = if kind.is_dir() { DIR_MODE } else { FILE_MODE };
            tighten(&entry.path(), want)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_dir_serves_one_kind_of_node() {
        let dir = tempfile::tempdir().unwrap();
        refuse_other_mode(dir.path(), "static").unwrap();
        refuse_other_mode(dir.path(), "raft").unwrap();
        fs::create_dir(dir.path().join("raft-log")).unwrap();
        let err = refuse_other_mode(dir.path(), "static").unwrap_err().to_string();
        assert!(err.contains("a Raft node's state") && err.contains("raft-log"), "{err}");
        refuse_other_mode(dir.path(), "worker-tier").unwrap();
        fs::write(dir.path().join("static-kv.redb"), b"").unwrap();
        let err = refuse_other_mode(dir.path(), "raft").unwrap_err().to_string();
        assert!(err.contains("a static node's state") && err.contains("mode = \"raft\""), "{err}");
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn creates_private_and_tightens_what_an_older_release_left_open() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        secure(&data).unwrap();
        assert_eq!(mode(&data), 0o700);

        fs::set_permissions(&data, fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir(data.join("raft-log")).unwrap();
        fs::set_permissions(data.join("raft-log"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(data.join("raft-log/00000000000000000001.wal"), b"x").unwrap();
        fs::set_permissions(data.join("raft-log/00000000000000000001.wal"), fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(data.join("fsm.redb"), b"x").unwrap();
        fs::set_permissions(data.join("fsm.redb"), fs::Permissions::from_mode(0o640)).unwrap();

        secure(&data).unwrap();
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join("raft-log")), 0o700);
        assert_eq!(mode(&data.join("raft-log/00000000000000000001.wal")), 0o600);
        assert_eq!(mode(&data.join("fsm.redb")), 0o600);

        let mut file = private_file().write(true).create(true).open(data.join("new")).unwrap();
        io::Write::write_all(&mut file, b"y").unwrap();
        assert_eq!(mode(&data.join("new")), 0o600);
    }

    #[test]
    fn what_cannot_be_tightened_is_named_with_the_fix() {
        let err = DataDirError::TooOpen {
            path: "/var/lib/muster".into(),
            mode: 0o755,
            want: DIR_MODE,
            reason: "Operation not permitted".into(),
        };
        let text = err.to_string();
        assert!(text.contains("/var/lib/muster") && text.contains("chmod 700 /var/lib/muster"), "{text}");
    }
}
