//! Removes a worker CA private key that an older release stored from every file of a data
//! directory, before the node opens them.
//!
//! Older releases agreed on the worker CA through Raft, key included, so the key sits in the
//! log segments (the `InitWorkerCa` entry), in snapshot files and in `fsm.redb`, in copies a
//! purge alone would not reach: a purge keeps the segment that also holds newer entries, and
//! redb is copy-on-write, so every rewrite of the page holding the CA left a freed page with
//! the key in it. So, once, at start-up:
//!
//! - each log segment holding such an entry is rewritten with the key dropped and the CA
//!   marked `key_exposed` (what applying the original now does anyway, so replaying the
//!   rewritten entry gives the same state on every node; Raft identifies entries by term and
//!   index, never by their bytes);
//! - each snapshot file holding it is rewritten the same way;
//! - `fsm.redb` is copied, live rows only, into a fresh file that replaces it, so no freed
//!   page survives.
//!
//! A node that was offline during the upgrade does the same when it comes back. New code never
//! writes the key (appends strip it, applies and snapshot installs drop it), so this finds
//! nothing on every later start. The cluster then retires the exposed CA through Raft
//! (`RetireLegacyWorkerCa`, see [`super::worker_ca`]).

use std::io;
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::db::{FSM_META, KV, LOG, META_WORKER_CA, RAFT_META, SESSION_AGE, SESSIONS, TOKENS, WORKERS, decode, io_err};

/// In every PEM private key; a file without it is not decoded.
const KEY_MARKER: &[u8] = b"PRIVATE KEY";

/// What the scrub rewrote.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ScrubReport {
    pub log_entries: usize,
    pub snapshots: usize,
    pub fsm_rebuilt: bool,
}

/// Scrubs `raft-log/`, `snapshots/` (and `snapshots/incoming/`) and `fsm.redb` under
/// `data_dir`. Must run before any of them is opened.
pub fn scrub_worker_ca_key(data_dir: &Path) -> io::Result<ScrubReport> {
    let mut report = ScrubReport {
        log_entries: super::wal::rewrite_entries(
            &data_dir.join("raft-log"),
            KEY_MARKER,
            super::worker_ca::strip_entry,
        )?,
        ..Default::default()
    };
    for dir in [data_dir.join("snapshots"), data_dir.join("snapshots").join("incoming")] {
        let Ok(listing) = std::fs::read_dir(&dir) else { continue };
        for item in listing {
            let path = item?.path();
            let marked = || std::fs::read(&path).is_ok_and(|b| b.windows(KEY_MARKER.len()).any(|w| w == KEY_MARKER));
            if path.extension().is_some_and(|ext| ext == "snap")
                && marked()
                && matches!(super::snapshot::scrub_worker_ca_key(&path), Ok(true))
            {
                report.snapshots += 1;
            }
        }
    }
    report.fsm_rebuilt = rebuild_if_keyed(&data_dir.join("fsm.redb"))?;
    if report != ScrubReport::default() {
        tracing::warn!(
            log_entries = report.log_entries,
            snapshots = report.snapshots,
            fsm_rebuilt = report.fsm_rebuilt,
            "removed the worker CA private key an older release had stored; the cluster retires that CA once a \
             registrar brings its own"
        );
    }
    Ok(report)
}

/// Rebuilds the FSM database when its worker CA row still carries a key.
fn rebuild_if_keyed(path: &Path) -> io::Result<bool> {
    if !path.exists() {
        return Ok(false);
    }
    let keyed = {
        let db = Database::create(path).map_err(io_err)?;
        let txn = db.begin_read().map_err(io_err)?;
        match txn.open_table(FSM_META) {
            Ok(meta) => match meta.get(META_WORKER_CA).map_err(io_err)? {
                Some(value) => {
                    !decode::<muster_proto::v1::InitWorkerCa>(value.value(), "worker CA")?.key_pem.is_empty()
                }
                None => false,
            },
            Err(redb::TableError::TableDoesNotExist(_)) => false,
            Err(err) => return Err(io_err(err)),
        }
    };
    if keyed {
        rebuild(path)?;
    }
    Ok(keyed)
}

/// Copies every live row of the database at `path` into a fresh file (the worker CA without
/// its key) and puts it in place atomically.
fn rebuild(path: &Path) -> io::Result<()> {
    let fresh = path.with_extension("redb.rebuild");
    let _ = std::fs::remove_file(&fresh);
    {
        let old = Database::create(path).map_err(io_err)?;
        let new = super::open_database(&fresh).map_err(io::Error::other)?;
        let src = old.begin_read().map_err(io_err)?;
        let mut dst = new.begin_write().map_err(io_err)?;
        dst.set_durability(redb::Durability::Immediate).map_err(io::Error::other)?;
        copy(&src, &dst, LOG)?;
        copy(&src, &dst, RAFT_META)?;
        copy(&src, &dst, KV)?;
        copy(&src, &dst, SESSIONS)?;
        copy(&src, &dst, SESSION_AGE)?;
        copy(&src, &dst, TOKENS)?;
        copy(&src, &dst, WORKERS)?;
        // The worker CA row is written once, already without its key: a row rewritten within
        // the transaction could leave the first version in a page of the new file.
        let from = src.open_table(FSM_META).map_err(io_err)?;
        let mut to = dst.open_table(FSM_META).map_err(io_err)?;
        for row in from.iter().map_err(io_err)? {
            let (key, value) = row.map_err(io_err)?;
            if key.value() == META_WORKER_CA {
                let ca = super::worker_ca::stored(&decode(value.value(), "worker CA")?);
                to.insert(key.value(), prost::Message::encode_to_vec(&ca).as_slice()).map_err(io_err)?;
            } else {
                to.insert(key.value(), value.value()).map_err(io_err)?;
            }
        }
        drop(to);
        dst.commit().map_err(io_err)?;
    }
    std::fs::rename(&fresh, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn copy<K: redb::Key + 'static, V: redb::Value + 'static>(
    src: &redb::ReadTransaction,
    dst: &redb::WriteTransaction,
    table: TableDefinition<K, V>,
) -> io::Result<()> {
    let from = match src.open_table(table) {
        Ok(from) => from,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(err) => return Err(io_err(err)),
    };
    let mut to = dst.open_table(table).map_err(io_err)?;
    for row in from.iter().map_err(io_err)? {
        let (key, value) = row.map_err(io_err)?;
        to.insert(key.value(), value.value()).map_err(io_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
