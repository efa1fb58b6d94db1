//! Test support: makes a data directory look like one another release left behind: an older
//! one after a registrar stored the worker CA, key included, through Raft; or any command
//! appended to the log (e.g. one of a newer command format).
//!
//! The e2e migration test needs such a cluster but has no old binary to run. Rather than commit
//! opaque fixture files, this writes what the old release wrote, through this crate's own
//! storage code: the `InitWorkerCa { cert_pem, key_pem }` entry appended to the log (same term,
//! next index on every node, so a restarted cluster commits and applies it) and the row the old
//! apply stored in `fsm.redb`, rewritten a few times as every apply did, which leaves freed
//! pages holding the key. Not part of the node's API.

use std::io;
use std::path::Path;

use muster_proto::v1;
use prost::Message;

use super::db::{FSM_META, META_WORKER_CA, io_err};
use super::wal::Wal;

/// Appends `command` to a stopped node's log as the entry after its last one, in the same
/// term, so that a restarted node commits and applies it (what an older or newer release's
/// leader could have written there).
#[doc(hidden)]
pub fn append_command(data_dir: &Path, command: v1::Command) -> io::Result<u64> {
    let mut wal = Wal::open(&data_dir.join("raft-log"))?;
    let last_index = wal.last_index().ok_or_else(|| io::Error::other("the log is empty: start the node once"))?;
    let last = wal.read(last_index..=last_index)?.pop().and_then(|entry| entry.log_id);
    let leader_id = last.and_then(|id| id.leader_id);
    let entry = v1::Entry {
        log_id: Some(v1::LogId { leader_id, index: last_index + 1 }),
        payload: Some(v1::entry::Payload::Normal(command)),
    };
    if let Some(file) = wal.append_unsynced(&[entry])? {
        file.sync_data()?;
    }
    Ok(last_index + 1)
}

/// Writes the legacy worker CA (certificate and key) into a stopped node's `data_dir`.
#[doc(hidden)]
pub fn write_legacy_worker_ca(data_dir: &Path, cert_pem: &str, key_pem: &str) -> io::Result<()> {
    let legacy = v1::InitWorkerCa { cert_pem: cert_pem.into(), key_pem: key_pem.into(), ..Default::default() };
    let op = v1::command::Op::InitWorkerCa(legacy.clone());
    append_command(data_dir, v1::Command { op: Some(op), ..Default::default() })?;

    let db = redb::Database::create(data_dir.join("fsm.redb")).map_err(io_err)?;
    for _ in 0..3 {
        let txn = db.begin_write().map_err(io_err)?;
        txn.open_table(FSM_META)
            .map_err(io_err)?
            .insert(META_WORKER_CA, legacy.encode_to_vec().as_slice())
            .map_err(io_err)?;
        txn.commit().map_err(io_err)?;
    }
    Ok(())
}
