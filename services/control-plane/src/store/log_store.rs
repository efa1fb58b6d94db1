//! openraft's log storage: entries in the segmented [`Wal`], vote and the committed and
//! purged pointers in a small redb database.
//!
//! An append writes the batch and returns (the entries are readable); a dedicated thread then
//! fdatasyncs and tells openraft the batch is durable. Appends that arrive during an fsync share
//! the next one (group commit), and the leader replicates while its own fsync runs. The vote and purge point are committed durably; the committed pointer is
//! saved at most once a second (a stale one only means replaying a little more on start).

use std::fmt::Debug;
use std::fs::File;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock, mpsc as std_mpsc};
use std::time::{Duration, Instant};

use muster_proto::v1;
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use prost::Message;
use redb::{Database, Durability, ReadableDatabase};

use super::db::{META_COMMITTED, META_PURGED, META_VOTE, RAFT_META, blocking, decode, io_err};
use super::log_tail::SharedLogTail;
use super::wal::Wal;
use crate::convert::{entry_from_pb, entry_to_pb, log_id_from_pb, log_id_to_pb, vote_from_pb, vote_to_pb};
use crate::types::{Entry, LogId, TypeConfig, Vote};
use crate::write_profile::{self, Hop};

/// How often the committed pointer is written.
const SAVE_COMMITTED_EVERY: Duration = Duration::from_secs(1);

/// The Raft log of one node. Cheap to clone; clones share the files.
#[derive(Clone)]
pub struct LogStore {
    wal: Arc<RwLock<Wal>>,
    /// The newest entries in memory; changed only while holding `wal`'s write lock.
    tail: SharedLogTail,
    meta: Arc<Database>,
    committed_saved_at: Arc<Mutex<Option<Instant>>>,
    syncer: std_mpsc::Sender<SyncRequest>,
    /// Most encoded bytes of entries replication reads for one AppendEntries (at least one
    /// entry): half a peer message, so what is sent fits one however large the values are,
    /// with the request's own fields beside them.
    replication_bytes: usize,
}

/// "Tell openraft once this file's writes are on disk" (and when the append began, for the
/// write-path profile).
type SyncRequest = (Arc<File>, IOFlushed<TypeConfig>, Option<Instant>);

/// The group-commit thread: takes every pending request, syncs each file involved once, then
/// reports all of them flushed, in order. An append returns as soon as its entries are written
/// (readable), so the leader replicates while its own fsync runs.
fn run_syncer(requests: std_mpsc::Receiver<SyncRequest>) {
    while let Ok(first) = requests.recv() {
        let mut batch = vec![first];
        batch.extend(requests.try_iter());
        let mut result = Ok(());
        let mut synced: Vec<*const File> = Vec::new();
        let fsync_started = write_profile::start();
        for (file, _, _) in &batch {
            let ptr = Arc::as_ptr(file);
            if !synced.contains(&ptr) {
                synced.push(ptr);
                if let Err(err) = file.sync_data() {
                    result = Err(err);
                    break;
                }
            }
        }
        write_profile::record(Hop::Fsync, fsync_started, batch.len());
        for (_, callback, appended) in batch {
            write_profile::record(Hop::LogFlush, appended, 1);
            match &result {
                Ok(()) => callback.io_completed(Ok(())),
                Err(err) => callback.io_completed(Err(io::Error::new(err.kind(), err.to_string()))),
            }
        }
    }
}

impl LogStore {
    /// Opens the log in `wal_dir` with its pointers in `meta`; replication sends peers messages
    /// of at most `max_message_bytes`.
    pub fn open(wal_dir: &Path, meta: Arc<Database>, max_message_bytes: usize) -> io::Result<Self> {
        let (syncer, requests) = std_mpsc::channel();
        std::thread::Builder::new().name("raft-log-sync".into()).spawn(move || run_syncer(requests))?;
        let wal = Arc::new(RwLock::new(Wal::open(wal_dir)?));
        let store = Self {
            wal,
            tail: SharedLogTail::default(),
            meta,
            committed_saved_at: Arc::default(),
            syncer,
            replication_bytes: (max_message_bytes / 2).max(1),
        };
        // Segments may still hold entries at or below the purge point; forget them.
        if let Some(purged) = store.read_log_id_meta(META_PURGED)? {
            store.wal.write().unwrap_or_else(|p| p.into_inner()).purge(purged.index)?;
        }
        Ok(store)
    }

    /// The entries `start..end`, as many as fit `max_bytes` (at least one). Under the segments'
    /// read lock: an append changes both under the write lock, so the tail and the segments
    /// agree for the length of this read.
    fn read_entries(&self, start: u64, end: u64, max_bytes: usize) -> io::Result<Vec<Entry>> {
        let started = write_profile::start();
        let entries = self.with_wal(|wal| match self.tail.with(|tail| tail.read(start, end, max_bytes)) {
            Some(entries) => Ok(entries),
            None => to_entries(wal.read_within(start..end, max_bytes)?),
        })?;
        write_profile::record(Hop::LogRead, started, entries.len());
        Ok(entries)
    }

    /// The index of the last entry in the log segments (0 for none: a log purged up to its
    /// snapshot holds nothing past the committed index, so there is nothing to wait for).
    pub fn last_index(&self) -> u64 {
        self.wal.read().unwrap_or_else(|p| p.into_inner()).last_index().unwrap_or(0)
    }

    /// Whether a vote was ever saved: this node has taken part in an election or followed a
    /// leader, so it may have promised that leader a lease before it stopped.
    pub fn has_saved_vote(&self) -> io::Result<bool> {
        Ok(self.read_meta::<v1::Vote>(META_VOTE)?.is_some())
    }

    fn read_meta<M: Message + Default>(&self, key: &'static str) -> io::Result<Option<M>> {
        let txn = self.meta.begin_read().map_err(io_err)?;
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
    async fn write_meta(&self, key: &'static str, bytes: Vec<u8>) -> io::Result<()> {
        let db = self.meta.clone();
        blocking(move || {
            let mut txn = db.begin_write().map_err(io_err)?;
            txn.set_durability(Durability::Immediate).map_err(io::Error::other)?;
            txn.open_table(RAFT_META).map_err(io_err)?.insert(key, bytes.as_slice()).map_err(io_err)?;
            txn.commit().map_err(io_err)
        })
        .await
    }

    fn with_wal<T>(&self, f: impl FnOnce(&Wal) -> io::Result<T>) -> io::Result<T> {
        f(&self.wal.read().unwrap_or_else(|p| p.into_inner()))
    }
}

fn invalid(err: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err.to_string())
}

fn to_entries(pbs: Vec<v1::Entry>) -> io::Result<Vec<Entry>> {
    pbs.into_iter().map(|pb| entry_from_pb(pb).map_err(invalid)).collect()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(&index) => index,
            Bound::Excluded(&index) => index.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&index) => index.saturating_add(1),
            Bound::Excluded(&index) => index,
            Bound::Unbounded => u64::MAX,
        };
        self.read_entries(start, end, usize::MAX)
    }

    /// What replication sends: as many entries of `start..end` as fit half a peer message.
    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry>, io::Error> {
        self.read_entries(start, end, self.replication_bytes)
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
        let last = self.with_wal(|wal| match wal.last_index() {
            Some(index) => wal.read(index..=index),
            None => Ok(Vec::new()),
        })?;
        let last = to_entries(last)?.pop().map(|entry| entry.log_id);
        let last_log_id = last.or(last_purged_log_id);
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.write_meta(META_VOTE, vote_to_pb(vote).encode_to_vec()).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        let Some(committed) = committed else { return Ok(()) };
        {
            let mut saved_at = self.committed_saved_at.lock().unwrap_or_else(|p| p.into_inner());
            if saved_at.is_some_and(|at| at.elapsed() < SAVE_COMMITTED_EVERY) {
                return Ok(());
            }
            *saved_at = Some(Instant::now());
        }
        self.write_meta(META_COMMITTED, log_id_to_pb(&committed).encode_to_vec()).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        self.read_log_id_meta(META_COMMITTED)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let started = write_profile::start();
        let entries: Vec<Entry> = entries.into_iter().collect();
        let mut encoded: Vec<v1::Entry> = entries.iter().map(entry_to_pb).collect();
        // An entry from a leader on an older release may carry the worker CA key: never on disk,
        // nor in the tail (which must hold what the disk holds).
        let mut stripped = false;
        for entry in &mut encoded {
            stripped |= super::worker_ca::strip_entry(entry);
        }
        // Inline, not on the blocking pool: without the fsync this is a write into the page
        // cache, cheaper than the thread hop.
        let mut wal = self.wal.write().unwrap_or_else(|p| p.into_inner());
        let written = wal.append_unsynced(&encoded);
        if written.is_ok() {
            self.tail.with(|tail| {
                if stripped {
                    tail.clear();
                } else {
                    tail.appended(entries.into_iter().zip(encoded.iter().map(|pb| pb.encoded_len())));
                }
            });
        }
        drop(wal);
        write_profile::record(Hop::LogAppend, started, encoded.len());
        match written {
            Ok(Some(file)) => {
                if let Err(std_mpsc::SendError((_, callback, _))) = self.syncer.send((file, callback, started)) {
                    callback.io_completed(Err(io::Error::other("the log sync thread has stopped")));
                }
                Ok(())
            }
            Ok(None) => {
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
        let (wal, tail) = (self.wal.clone(), self.tail.clone());
        blocking(move || {
            let mut wal = wal.write().unwrap_or_else(|p| p.into_inner());
            let last_kept = last_log_id.map(|id| id.index);
            // The tail first: should the segments fail part-way, reads go to them.
            tail.with(|tail| tail.truncated_after(last_kept));
            wal.truncate_after(last_kept)
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        // Record the purge point durably first: entries below it are then never read again,
        // whatever happens to the segment files afterwards.
        self.write_meta(META_PURGED, log_id_to_pb(&log_id).encode_to_vec()).await?;
        let (wal, tail) = (self.wal.clone(), self.tail.clone());
        blocking(move || {
            let mut wal = wal.write().unwrap_or_else(|p| p.into_inner());
            tail.with(|tail| tail.purged(log_id.index));
            wal.purge(log_id.index)
        })
        .await
    }
}
