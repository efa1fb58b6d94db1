//! The feed of applied changes that every watch on this node reads: the newest history records
//! in memory (decoded once, shared by every watcher) and the applied revision, which watchers
//! wait on. Older records come from the history table on disk.
//!
//! Order matters for "no gap": the state machine commits an entry's record, then pushes it
//! here, then raises the applied revision. A watcher that saw revision `A` therefore finds
//! every record up to `A` either in memory or on disk.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};

use muster_proto::v1;
use prost::Message;
use tokio::sync::watch;

use crate::store::{FsmReader, HistoryRead};

/// Most bytes of decoded records kept in memory (a watcher further behind reads the disk).
const TAIL_MAX_BYTES: usize = 32 * 1024 * 1024;
/// Most records kept in memory.
const TAIL_MAX_RECORDS: usize = 4_096;

/// Records read for a watcher: those in the range asked for, or where the history starts.
pub enum Batch {
    Records { records: Vec<Arc<v1::HistoryRecord>>, complete: bool },
    Compacted { from: u64 },
}

struct Tail {
    /// Every record with a revision above this is in `records`.
    from: u64,
    records: VecDeque<Arc<v1::HistoryRecord>>,
    bytes: usize,
}

pub struct HistoryFeed {
    tail: Mutex<Tail>,
    applied: watch::Sender<u64>,
    reader: FsmReader,
}

impl HistoryFeed {
    /// A feed that starts at what `reader` has applied.
    pub fn new(reader: FsmReader) -> io::Result<Self> {
        let applied = reader.state_at_now()?.revision();
        let (applied_tx, _) = watch::channel(applied);
        Ok(Self {
            tail: Mutex::new(Tail { from: applied, records: VecDeque::new(), bytes: 0 }),
            applied: applied_tx,
            reader,
        })
    }

    /// Adds the records of entries just committed and raises the applied revision to `applied`.
    pub fn publish(&self, records: Vec<v1::HistoryRecord>, applied: u64) {
        if !records.is_empty() {
            let mut tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
            for record in records {
                tail.bytes += record.encoded_len();
                tail.records.push_back(Arc::new(record));
            }
            while tail.records.len() > TAIL_MAX_RECORDS || tail.bytes > TAIL_MAX_BYTES {
                let Some(first) = tail.records.pop_front() else { break };
                tail.bytes -= first.encoded_len();
                tail.from = first.revision;
            }
        }
        self.applied.send_if_modified(|current| {
            let raised = applied > *current;
            if raised {
                *current = applied;
            }
            raised
        });
    }

    /// A snapshot was installed at `revision`: history restarts there.
    pub fn restart_at(&self, revision: u64) {
        let mut tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        *tail = Tail { from: revision, records: VecDeque::new(), bytes: 0 };
        drop(tail);
        self.applied.send_replace(revision);
    }

    /// The revision applied on this node; changes as entries apply.
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    pub fn reader(&self) -> &FsmReader {
        &self.reader
    }

    /// The records with revisions in `(after, through]`, at most `limit`: from memory when the
    /// range is there, else from disk.
    pub fn between(&self, after: u64, through: u64, limit: usize) -> io::Result<Batch> {
        {
            let tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
            if after >= tail.from {
                let start = tail.records.partition_point(|record| record.revision <= after);
                let mut records = Vec::new();
                for record in tail.records.range(start..) {
                    if record.revision > through {
                        return Ok(Batch::Records { records, complete: true });
                    }
                    if records.len() == limit {
                        return Ok(Batch::Records { records, complete: false });
                    }
                    records.push(record.clone());
                }
                return Ok(Batch::Records { records, complete: true });
            }
        }
        Ok(match self.reader.history_between(after, through, limit)? {
            HistoryRead::Records { records, complete } => {
                Batch::Records { records: records.into_iter().map(Arc::new).collect(), complete }
            }
            HistoryRead::Compacted { from } => Batch::Compacted { from },
        })
    }
}
