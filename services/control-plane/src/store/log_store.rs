//! openraft's log storage on redb: entries, vote, committed and purged pointers.
//!
//! Every mutation is one write transaction committed with `Durability::Immediate` (fsync)
//! before openraft hears it is done. openraft hands over whole batches of entries per
//! `append`, so one fsync covers many client writes (group commit).

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use muster_proto::v1;
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use prost::Message;
use redb::{Database, Durability, ReadableDatabase, ReadableTable};

use super::db::{LOG, META_COMMITTED, META_PURGED, META_VOTE, RAFT_META, blocking, decode, io_err};
use crate::convert::{entry_from_pb, entry_to_pb, log_id_from_pb, log_id_to_pb, vote_from_pb, vote_to_pb};
use crate::types::{Entry, LogId, TypeConfig, Vote};

/// The Raft log of one node. Cheap to clone; clones share the database.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    pub fn new(db: Arc<Database>) -> Self {
        Self { db }
    }

    fn read_meta<M: Message + Default>(&self, key: &'static str) -> io::Result<Option<M>> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let table = txn.open_table(RAFT_META).map_err(io_err)?;
        let value = table.get(key).map_err(io_err)?;
        value.map(|v| decode::<M>(v.value(), key)).transpose()
    }

    fn read_log_id_meta(&self, key: &'static str) -> io::Result<Option<LogId>> {
        match self.read_meta::<v1::LogId>(key)? {
            Some(pb) => Ok(Some(log_id_from_pb(pb, "stored log id").map_err(invalid)?)),
            None => Ok(None),
        }
    }

    /// Writes one meta key durably.
    async fn write_meta(&self, key: &'static str, bytes: Vec<u8>, durability: Durability) -> io::Result<()> {
        let db = self.db.clone();
        blocking(move || {
            let mut txn = db.begin_write().map_err(io_err)?;
            txn.set_durability(durability).map_err(io::Error::other)?;
            txn.open_table(RAFT_META).map_err(io_err)?.insert(key, bytes.as_slice()).map_err(io_err)?;
            txn.commit().map_err(io_err)
        })
        .await
    }
}

fn invalid(err: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err.to_string())
}

fn read_entries(db: &Database, range: (Bound<u64>, Bound<u64>)) -> io::Result<Vec<Entry>> {
    let txn = db.begin_read().map_err(io_err)?;
    let table = txn.open_table(LOG).map_err(io_err)?;
    let mut entries = Vec::new();
    for item in table.range::<u64>(range).map_err(io_err)? {
        let (_, value) = item.map_err(io_err)?;
        let pb: v1::Entry = decode(value.value(), "log entry")?;
        entries.push(entry_from_pb(pb).map_err(invalid)?);
    }
    Ok(entries)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let bounds = (range.start_bound().cloned(), range.end_bound().cloned());
        let db = self.db.clone();
        blocking(move || read_entries(&db, bounds)).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        match self.read_meta::<v1::Vote>(META_VOTE)? {
            Some(pb) => Ok(Some(vote_from_pb(Some(pb), "stored vote").map_err(invalid)?)),
            None => Ok(None),
        }
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged_log_id = self.read_log_id_meta(META_PURGED)?;
        let last = {
            let txn = self.db.begin_read().map_err(io_err)?;
            let table = txn.open_table(LOG).map_err(io_err)?;
            match table.last().map_err(io_err)? {
                Some((_, value)) => {
                    let pb: v1::Entry = decode(value.value(), "log entry")?;
                    Some(entry_from_pb(pb).map_err(invalid)?.log_id)
                }
                None => None,
            }
        };
        let last_log_id = last.or(last_purged_log_id);
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.write_meta(META_VOTE, vote_to_pb(vote).encode_to_vec(), Durability::Immediate).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Not fsynced: a stale committed pointer only means replaying a little more on start;
        // the next log append makes it durable anyway.
        let Some(committed) = committed else { return Ok(()) };
        self.write_meta(META_COMMITTED, log_id_to_pb(&committed).encode_to_vec(), Durability::None).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        self.read_log_id_meta(META_COMMITTED)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let encoded: Vec<(u64, Vec<u8>)> =
            entries.into_iter().map(|entry| (entry.log_id.index, entry_to_pb(&entry).encode_to_vec())).collect();
        let db = self.db.clone();
        let result = blocking(move || {
            let txn = db.begin_write().map_err(io_err)?;
            {
                let mut table = txn.open_table(LOG).map_err(io_err)?;
                for (index, bytes) in &encoded {
                    table.insert(*index, bytes.as_slice()).map_err(io_err)?;
                }
            }
            txn.commit().map_err(io_err)
        })
        .await;
        match result {
            Ok(()) => {
                callback.io_completed(Ok(()));
                Ok(())
            }
            Err(err) => {
                callback.io_completed(Err(io::Error::new(err.kind(), err.to_string())));
                Err(err)
            }
        }
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map(|id| id.index + 1).unwrap_or(0);
        let db = self.db.clone();
        blocking(move || {
            let txn = db.begin_write().map_err(io_err)?;
            txn.open_table(LOG).map_err(io_err)?.retain_in(from.., |_, _| false).map_err(io_err)?;
            txn.commit().map_err(io_err)
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let upto = log_id.index;
        let purged = log_id_to_pb(&log_id).encode_to_vec();
        let db = self.db.clone();
        blocking(move || {
            let txn = db.begin_write().map_err(io_err)?;
            {
                // Record the purge point first, in the same transaction: no hole is ever visible.
                txn.open_table(RAFT_META).map_err(io_err)?.insert(META_PURGED, purged.as_slice()).map_err(io_err)?;
                txn.open_table(LOG).map_err(io_err)?.retain_in(..=upto, |_, _| false).map_err(io_err)?;
            }
            txn.commit().map_err(io_err)
        })
        .await
    }
}
