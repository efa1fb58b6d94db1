//! The redb database file, its tables, and the small codecs for what they hold.

use std::io;
use std::path::Path;
use std::sync::Arc;

use prost::Message;
use redb::{Database, ReadableTable, TableDefinition};

/// Raft log: index → encoded `v1::Entry`.
pub(crate) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// Raft meta: "vote", "committed", "purged" → encoded protobuf.
pub(crate) const RAFT_META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
/// FSM meta: "applied", "membership", "cluster_id", "snapshot" → encoded protobuf / utf-8.
pub(crate) const FSM_META: TableDefinition<&str, &[u8]> = TableDefinition::new("fsm_meta");
/// FSM key space: key → encoded `v1::KeyValue`.
pub(crate) const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("fsm_kv");
/// FSM client sessions for idempotent writes: client id → encoded `v1::ClientSession`.
pub(crate) const SESSIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("fsm_sessions");
/// FSM bootstrap tokens: token id → encoded `v1::TokenRecord`.
pub(crate) const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("fsm_tokens");
/// FSM workers: worker id → encoded `v1::WorkerRecord`.
pub(crate) const WORKERS: TableDefinition<u64, &[u8]> = TableDefinition::new("fsm_workers");
/// Watch history (each node's own, not replicated): revision → encoded `v1::HistoryRecord`.
pub(crate) const HISTORY: TableDefinition<u64, &[u8]> = TableDefinition::new("fsm_history");
/// FSM session age index: (last write index, client id) → (), to evict the idlest session.
pub(crate) const SESSION_AGE: TableDefinition<(u64, u64), ()> = TableDefinition::new("fsm_session_age");

pub(crate) const META_VOTE: &str = "vote";
pub(crate) const META_COMMITTED: &str = "committed";
pub(crate) const META_PURGED: &str = "purged";
pub(crate) const META_APPLIED: &str = "applied";
pub(crate) const META_MEMBERSHIP: &str = "membership";
pub(crate) const META_CLUSTER_ID: &str = "cluster_id";
pub(crate) const META_SNAPSHOT: &str = "snapshot";
pub(crate) const META_NEXT_WORKER_ID: &str = "next_worker_id";
pub(crate) const META_WORKER_CA: &str = "worker_ca";
/// The watch history holds every change after this revision (u64, little-endian).
pub(crate) const META_HISTORY_FROM: &str = "history_from";

/// Storage failures, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("opening database {path}: {source}")]
    Open { path: String, source: redb::DatabaseError },
    #[error("{0}")]
    Redb(#[from] redb::Error),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Opens (creating if needed) the node's database and makes sure every table exists, so
/// read transactions never fail on a missing table.
pub fn open_database(path: &Path) -> Result<Arc<Database>, StorageError> {
    if let Some(dir) = path.parent() {
        crate::data_dir::create_private_dir(dir)?;
    }
    let db =
        Database::create(path).map_err(|source| StorageError::Open { path: path.display().to_string(), source })?;
    crate::data_dir::make_private(path)?;
    create_tables(&db)?;
    Ok(Arc::new(db))
}

/// Creates every table the node uses, in one commit.
pub(crate) fn create_tables(db: &Database) -> Result<(), StorageError> {
    let txn = db.begin_write().map_err(redb::Error::from)?;
    {
        txn.open_table(LOG).map_err(redb::Error::from)?;
        txn.open_table(RAFT_META).map_err(redb::Error::from)?;
        txn.open_table(FSM_META).map_err(redb::Error::from)?;
        txn.open_table(KV).map_err(redb::Error::from)?;
        txn.open_table(SESSIONS).map_err(redb::Error::from)?;
        txn.open_table(SESSION_AGE).map_err(redb::Error::from)?;
        txn.open_table(TOKENS).map_err(redb::Error::from)?;
        txn.open_table(WORKERS).map_err(redb::Error::from)?;
        txn.open_table(HISTORY).map_err(redb::Error::from)?;
        let mut meta = txn.open_table(FSM_META).map_err(redb::Error::from)?;
        if meta.get(META_HISTORY_FROM).map_err(redb::Error::from)?.is_none() {
            // A new database, or one from before the history: it starts at what is applied.
            let applied = meta.get(META_APPLIED).map_err(redb::Error::from)?;
            let applied = applied.map(|v| decode::<muster_proto::v1::LogId>(v.value(), "applied")).transpose()?;
            let from = applied.map_or(0, |log_id| log_id.index);
            meta.insert(META_HISTORY_FROM, from.to_le_bytes().as_slice()).map_err(redb::Error::from)?;
        }
    }
    txn.commit().map_err(redb::Error::from)?;
    Ok(())
}

/// Any redb error as the `io::Error` openraft's storage traits speak.
pub(crate) fn io_err(err: impl Into<redb::Error>) -> io::Error {
    io::Error::other(err.into())
}

pub(crate) fn decode<M: Message + Default>(bytes: &[u8], what: &str) -> io::Result<M> {
    M::decode(bytes).map_err(|err| io::Error::new(io::ErrorKind::InvalidData, format!("corrupt {what}: {err}")))
}

/// Runs blocking storage work off the async runtime's worker threads.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(work).await.map_err(|err| io::Error::other(format!("storage task failed: {err}")))?
}
