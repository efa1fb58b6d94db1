//! Snapshot files: a consistent dump of the FSM tables taken from a redb read transaction
//! (so building never blocks applies), written to a temp file, fsynced and renamed.
//!
//! Format: the header line `MUSTER-SNAPSHOT 1\n`, then length-delimited
//! `v1::SnapshotRecord`s. Integrity in transit is checked per chunk and end to end by the
//! network layer (CRC32 + SHA-256); here the decoder rejects truncated or foreign files.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use muster_proto::v1;
use prost::Message;
use redb::{Database, ReadableDatabase, ReadableTable, WriteTransaction};

use super::db::{
    FSM_META, KV, META_APPLIED, META_CLUSTER_ID, META_MEMBERSHIP, META_NEXT_WORKER_ID, META_WORKER_CA, SESSIONS,
    TOKENS, WORKERS, decode, io_err,
};
use super::sessions::{MAX_SESSIONS, SessionTables};
use crate::convert::{opt_log_id_from_pb, stored_membership_from_pb};
use crate::types::SnapshotMeta;

/// The snapshot format this release writes and reads (the number in [`HEADER`]).
pub const SNAPSHOT_FORMAT: u32 = 1;
const HEADER: &[u8] = b"MUSTER-SNAPSHOT 1\n";

/// An immutable snapshot file on disk.
#[derive(Clone, Debug)]
pub struct SnapshotFile {
    pub id: String,
    pub path: PathBuf,
}

impl SnapshotFile {
    pub fn in_dir(dir: &Path, id: &str) -> Self {
        Self { id: id.to_string(), path: dir.join(format!("{id}.snap")) }
    }
}

/// Dumps the applied FSM state into a new snapshot file in `dir`.
pub(crate) fn write_snapshot(db: &Database, dir: &Path) -> io::Result<(SnapshotMeta, SnapshotFile)> {
    let txn = db.begin_read().map_err(io_err)?;
    let meta_table = txn.open_table(FSM_META).map_err(io_err)?;
    let applied = meta_table.get(META_APPLIED).map_err(io_err)?.map(|v| decode::<v1::LogId>(v.value(), "applied"));
    let applied = opt_log_id_from_pb(applied.transpose()?, "applied").map_err(io::Error::other)?;
    let membership = meta_table.get(META_MEMBERSHIP).map_err(io_err)?.map(|v| decode(v.value(), "membership"));
    let membership = stored_membership_from_pb(membership.transpose()?, "membership").map_err(io::Error::other)?;
    let meta = SnapshotMeta { last_log_id: applied, last_membership: membership };

    let millis = muster_proto::clock::since_epoch().as_millis();
    let id = match &meta.last_log_id {
        Some(log_id) => format!("{}-{}-{}-{millis}", log_id.leader_id.term, log_id.leader_id.node_id, log_id.index),
        None => format!("0-0-0-{millis}"),
    };
    crate::data_dir::create_private_dir(dir)?;
    let file = SnapshotFile::in_dir(dir, &id);
    let tmp = dir.join(format!("{id}.snap.tmp"));
    {
        let file = crate::data_dir::private_file().write(true).create(true).truncate(true).open(&tmp)?;
        let mut out = BufWriter::new(file);
        out.write_all(HEADER)?;
        let mut write_record = |record: v1::snapshot_record::Record| -> io::Result<()> {
            let record = v1::SnapshotRecord { record: Some(record) };
            out.write_all(&record.encode_length_delimited_to_vec())
        };
        if let Some(cluster_id) = meta_table.get(META_CLUSTER_ID).map_err(io_err)? {
            write_record(v1::snapshot_record::Record::ClusterId(String::from_utf8_lossy(cluster_id.value()).into()))?;
        }
        if let Some(ca) = meta_table.get(META_WORKER_CA).map_err(io_err)? {
            let ca = super::worker_ca::stored(&decode(ca.value(), "worker CA")?);
            write_record(v1::snapshot_record::Record::WorkerCa(ca))?;
        }
        if let Some(next) = meta_table.get(META_NEXT_WORKER_ID).map_err(io_err)? {
            let next = next.value().try_into().map(u64::from_le_bytes).unwrap_or(1);
            write_record(v1::snapshot_record::Record::NextWorkerId(next))?;
        }
        for item in txn.open_table(KV).map_err(io_err)?.iter().map_err(io_err)? {
            let (_, value) = item.map_err(io_err)?;
            write_record(v1::snapshot_record::Record::Kv(decode(value.value(), "value")?))?;
        }
        for item in txn.open_table(SESSIONS).map_err(io_err)?.iter().map_err(io_err)? {
            let (_, value) = item.map_err(io_err)?;
            write_record(v1::snapshot_record::Record::Session(decode(value.value(), "session")?))?;
        }
        for item in txn.open_table(TOKENS).map_err(io_err)?.iter().map_err(io_err)? {
            let (_, value) = item.map_err(io_err)?;
            write_record(v1::snapshot_record::Record::Token(decode(value.value(), "token")?))?;
        }
        for item in txn.open_table(WORKERS).map_err(io_err)?.iter().map_err(io_err)? {
            let (_, value) = item.map_err(io_err)?;
            write_record(v1::snapshot_record::Record::Worker(decode(value.value(), "worker")?))?;
        }
        let out = out.into_inner().map_err(|err| err.into_error())?;
        out.sync_all()?;
    }
    fs::rename(&tmp, &file.path)?;
    File::open(dir)?.sync_all()?;
    Ok((meta, file))
}

/// Reads every record of a snapshot file, rejecting files that are not Muster snapshots or
/// are cut short.
pub fn read_snapshot_records(path: &Path) -> io::Result<Vec<v1::SnapshotRecord>> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let Some(mut rest) = bytes.strip_prefix(HEADER) else {
        let problem = match muster_proto::backup::snapshot_format(&bytes) {
            Some(format) => format!(
                "{} is a snapshot of format {format}, which this release does not read (it reads {SNAPSHOT_FORMAT}): \
                 upgrade this node to a release that does",
                path.display()
            ),
            None => format!("{} is not a Muster snapshot", path.display()),
        };
        return Err(io::Error::new(io::ErrorKind::InvalidData, problem));
    };
    let mut records = Vec::new();
    while !rest.is_empty() {
        let record = v1::SnapshotRecord::decode_length_delimited(&mut rest).map_err(|err| {
            io::Error::new(io::ErrorKind::InvalidData, format!("snapshot {} is corrupt: {err}", path.display()))
        })?;
        records.push(record);
    }
    Ok(records)
}

/// Drops a worker CA key (written by an older release) from the snapshot file at `path`,
/// rewriting it atomically; true when there was one.
pub(crate) fn scrub_worker_ca_key(path: &Path) -> io::Result<bool> {
    let mut records = read_snapshot_records(path)?;
    let mut found = false;
    for record in &mut records {
        if let Some(v1::snapshot_record::Record::WorkerCa(ca)) = &mut record.record
            && !ca.key_pem.is_empty()
        {
            *ca = super::worker_ca::stored(ca);
            found = true;
        }
    }
    if !found {
        return Ok(false);
    }
    let tmp = path.with_extension("snap.tmp");
    {
        let file = crate::data_dir::private_file().write(true).create(true).truncate(true).open(&tmp)?;
        let mut out = BufWriter::new(file);
        out.write_all(HEADER)?;
        for record in &records {
            out.write_all(&record.encode_length_delimited_to_vec())?;
        }
        out.into_inner().map_err(|err| err.into_error())?.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(true)
}

/// Replaces the FSM tables' contents with the snapshot's records.
pub(crate) fn load_records(txn: &WriteTransaction, records: Vec<v1::SnapshotRecord>) -> io::Result<()> {
    let mut kv = txn.open_table(KV).map_err(io_err)?;
    let mut sessions = SessionTables::open(txn)?;
    let mut meta = txn.open_table(FSM_META).map_err(io_err)?;
    kv.retain(|_, _| false).map_err(io_err)?;
    sessions.clear()?;
    let mut tokens = txn.open_table(TOKENS).map_err(io_err)?;
    tokens.retain(|_, _| false).map_err(io_err)?;
    let mut workers = txn.open_table(WORKERS).map_err(io_err)?;
    workers.retain(|_, _| false).map_err(io_err)?;
    meta.remove(META_WORKER_CA).map_err(io_err)?;
    meta.remove(META_NEXT_WORKER_ID).map_err(io_err)?;
    meta.remove(META_CLUSTER_ID).map_err(io_err)?;
    for record in records {
        match record.record {
            Some(v1::snapshot_record::Record::Kv(item)) => {
                kv.insert(item.key.as_str(), item.encode_to_vec().as_slice()).map_err(io_err)?;
            }
            Some(v1::snapshot_record::Record::Session(session)) => sessions.record(&session, MAX_SESSIONS)?,
            Some(v1::snapshot_record::Record::Token(token)) => {
                tokens.insert(token.token_id.as_str(), token.encode_to_vec().as_slice()).map_err(io_err)?;
            }
            Some(v1::snapshot_record::Record::Worker(worker)) => {
                workers.insert(worker.worker_id, worker.encode_to_vec().as_slice()).map_err(io_err)?;
            }
            Some(v1::snapshot_record::Record::WorkerCa(ca)) => {
                // A snapshot from an older release may hold the key: never stored.
                let ca = super::worker_ca::stored(&ca);
                meta.insert(META_WORKER_CA, ca.encode_to_vec().as_slice()).map_err(io_err)?;
            }
            Some(v1::snapshot_record::Record::NextWorkerId(next)) => {
                meta.insert(META_NEXT_WORKER_ID, next.to_le_bytes().as_slice()).map_err(io_err)?;
            }
            Some(v1::snapshot_record::Record::ClusterId(id)) => {
                meta.insert(META_CLUSTER_ID, id.as_bytes()).map_err(io_err)?;
            }
            None => {}
        }
    }
    Ok(())
}

/// Deletes every snapshot file in `dir` except `keep`.
pub(crate) fn remove_other_snapshots(dir: &Path, keep: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path != keep && path.extension().is_some_and(|ext| ext == "snap" || ext == "tmp") {
            fs::remove_file(&path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{FsmReader, open_database};

    #[test]
    fn snapshot_round_trips_into_another_database() {
        let dir = tempfile::tempdir().unwrap();
        let source = open_database(&dir.path().join("a")).unwrap();
        let txn = source.begin_write().unwrap();
        for (index, key) in ["x", "y", "z"].iter().enumerate() {
            let command = v1::Command {
                client_id: 5,
                sequence: index as u64 + 1,
                op: Some(v1::command::Op::Put(v1::KvPut { key: key.to_string(), value: key.as_bytes().to_vec() })),
                ..Default::default()
            };
            crate::store::fsm::apply_command(&txn, index as u64 + 1, 1, &command, &mut Default::default()).unwrap();
        }
        txn.open_table(FSM_META).unwrap().insert(META_CLUSTER_ID, b"c-1".as_slice()).unwrap();
        let issued = muster_token::generate(&muster_token::TokenSpec::default(), "c-1", &[], 100);
        let token = muster_token::decode(&issued.token).unwrap();
        let ops = [
            v1::command::Op::CreateToken(v1::CreateToken { record: Some(issued.record) }),
            v1::command::Op::RegisterWorker(v1::RegisterWorker {
                token_id: token.token_id.clone(),
                secret_sha256: muster_token::secret_hash(&token),
                token_cluster_id: "c-1".into(),
                now_unix: 100,
                profile: None,
                replaces_worker_id: 0,
            }),
            v1::command::Op::InitWorkerCa(v1::InitWorkerCa {
                cert_pem: "cert".into(),
                key_pem: "legacy key".into(),
                ..Default::default()
            }),
        ];
        for (n, op) in ops.into_iter().enumerate() {
            let result = crate::store::fsm::apply_command(
                &txn,
                10 + n as u64,
                1,
                &v1::Command { op: Some(op), ..Default::default() },
                &mut Default::default(),
            );
            assert!(result.unwrap().succeeded);
        }
        txn.commit().unwrap();

        let (_, file) = write_snapshot(&source, &dir.path().join("snaps")).unwrap();
        let records = read_snapshot_records(&file.path).unwrap();
        assert_eq!(records.len(), 3 + 1 + 1 + 1 + 1 + 1 + 1, "keys, session, cluster id, token, worker, CA, next id");

        let target = open_database(&dir.path().join("b")).unwrap();
        let txn = target.begin_write().unwrap();
        load_records(&txn, records).unwrap();
        txn.commit().unwrap();
        let reader = FsmReader::new(target.clone());
        assert_eq!(reader.list("", 0).unwrap().0.len(), 3);
        assert_eq!(reader.cluster_id().unwrap().as_deref(), Some("c-1"));
        assert_eq!(reader.token(&token.token_id).unwrap().unwrap().remaining_uses, 0);
        assert_eq!(reader.worker(1).unwrap().unwrap().token_id, token.token_id);
        let ca = reader.worker_ca().unwrap().unwrap();
        assert_eq!((ca.cert_pem.as_str(), ca.key_pem.as_str(), ca.key_exposed), ("cert", "", true));
        let bytes = std::fs::read(&file.path).unwrap();
        assert!(!bytes.windows(10).any(|w| w == b"legacy key"), "a snapshot never holds a worker CA key");

        // Ids continue after a restore: the next registration is worker 2.
        let spec = muster_token::TokenSpec::default();
        let issued = muster_token::generate(&spec, "c-1", &[], 100);
        let token = muster_token::decode(&issued.token).unwrap();
        let txn = target.begin_write().unwrap();
        let create = v1::command::Op::CreateToken(v1::CreateToken { record: Some(issued.record) });
        crate::store::fsm::apply_command(
            &txn,
            20,
            1,
            &v1::Command { op: Some(create), ..Default::default() },
            &mut Default::default(),
        )
        .unwrap();
        let register = v1::command::Op::RegisterWorker(v1::RegisterWorker {
            token_id: token.token_id.clone(),
            secret_sha256: muster_token::secret_hash(&token),
            token_cluster_id: "c-1".into(),
            now_unix: 100,
            profile: None,
            replaces_worker_id: 0,
        });
        let result = crate::store::fsm::apply_command(
            &txn,
            21,
            1,
            &v1::Command { op: Some(register), ..Default::default() },
            &mut Default::default(),
        );
        assert_eq!(result.unwrap().worker.unwrap().worker_id, 2);
    }

    #[test]
    fn a_truncated_snapshot_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.snap");
        std::fs::write(&path, b"not a snapshot").unwrap();
        let err = read_snapshot_records(&path).unwrap_err();
        assert!(err.to_string().contains("is not a Muster snapshot"), "{err}");
        let mut bytes = HEADER.to_vec();
        bytes.extend_from_slice(&[0x20, 0x01]);
        std::fs::write(&path, bytes).unwrap();
        assert!(read_snapshot_records(&path).unwrap_err().to_string().contains("corrupt"));
    }
}
