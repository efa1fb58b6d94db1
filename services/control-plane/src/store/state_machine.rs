//! openraft's state machine on redb: applies committed entries to the FSM tables, builds
//! and installs snapshots.
//!
//! Apply runs in openraft's state-machine task, not in the request that proposed the entry,
//! so an entry whose command carries a `traceparent` (a traced proposal) is applied inside a
//! `raft.apply` span parented on it: on the leader and on every follower, each tagged with
//! its node id. Untraced entries get no span at all.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use muster_proto::v1;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{OptionalSend, RaftSnapshotBuilder};
use prost::Message;
use redb::{Database, Durability, ReadableDatabase};
use tracing::Span;

use super::db::{FSM_META, META_APPLIED, META_MEMBERSHIP, META_SNAPSHOT, blocking, decode, io_err};
use super::fsm::{ApplyTables, FsmReader, apply_readable};
use super::history::{self, Changes, Retention};
use super::snapshot::{SnapshotFile, load_records, read_snapshot_records, remove_other_snapshots, write_snapshot};
use crate::convert::{
    log_id_to_pb, opt_log_id_from_pb, snapshot_meta_from_pb, snapshot_meta_to_pb, stored_membership_from_pb,
    stored_membership_to_pb,
};
use crate::types::{EntryPayload, LogId, NodeId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig};
use crate::watch::HistoryFeed;
use crate::write_profile::{self, Hop};

/// The FSM of one node. Cheap to clone; clones share the database.
#[derive(Clone)]
pub struct StateMachineStore {
    db: Arc<Database>,
    snapshot_dir: PathBuf,
    /// When the FSM database was last committed durably.
    last_durable: Arc<Mutex<Instant>>,
    /// This node's id, for `raft.apply` spans (0 until the node handle sets it).
    node_id: Arc<AtomicU64>,
    /// Where applied changes go for watches.
    feed: Arc<HistoryFeed>,
    retention: Retention,
    /// When (unix ms) the history was last trimmed by age.
    age_trimmed_at: Arc<AtomicI64>,
}

/// Apply batches up to this size run on the calling task instead of the blocking pool.
const INLINE_APPLY_MAX: usize = 32;

/// How stale the durable FSM may get; a crash replays at most this much of the log.
const DURABLE_EVERY: Duration = Duration::from_secs(1);

/// How often the history's oldest record is checked against its age limit.
const AGE_TRIM_EVERY_MS: i64 = 1_000;

impl StateMachineStore {
    pub fn new(db: Arc<Database>, snapshot_dir: PathBuf, retention: Retention) -> io::Result<Self> {
        crate::data_dir::create_private_dir(&snapshot_dir)?;
        let feed = Arc::new(HistoryFeed::new(FsmReader::new(db.clone()))?);
        Ok(Self {
            db,
            snapshot_dir,
            last_durable: Arc::new(Mutex::new(Instant::now())),
            node_id: Arc::new(AtomicU64::new(0)),
            feed,
            retention,
            age_trimmed_at: Arc::default(),
        })
    }

    /// The feed of applied changes that watches read.
    pub fn feed(&self) -> &Arc<HistoryFeed> {
        &self.feed
    }

    /// Names the node this state machine belongs to (shared by every clone).
    pub fn set_node_id(&self, id: NodeId) {
        self.node_id.store(id, Ordering::Relaxed);
    }

    pub fn reader(&self) -> FsmReader {
        FsmReader::new(self.db.clone())
    }

    /// Where incoming snapshots are assembled before they are installed.
    pub fn incoming_dir(&self) -> PathBuf {
        self.snapshot_dir.join("incoming")
    }

    fn current_snapshot(&self) -> io::Result<Option<Snapshot>> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let table = txn.open_table(FSM_META).map_err(io_err)?;
        let Some(value) = table.get(META_SNAPSHOT).map_err(io_err)? else { return Ok(None) };
        let pb: v1::SnapshotMeta = decode(value.value(), "snapshot meta")?;
        let file = SnapshotFile::in_dir(&self.snapshot_dir, &pb.snapshot_id);
        if !file.path.exists() {
            return Ok(None);
        }
        let meta = snapshot_meta_from_pb(pb).map_err(io::Error::other)?;
        Ok(Some(Snapshot { meta, snapshot: file }))
    }
}

/// The `raft.apply` span of an entry whose proposer was traced, parented on the command's
/// `traceparent`; none (one length check) for every other entry.
fn apply_span(node_id: NodeId, log_id: &LogId, command: &v1::Command) -> Span {
    if command.traceparent.is_empty() {
        return Span::none();
    }
    let span = tracing::info_span!(
        parent: None,
        "raft.apply",
        raft.node_id = node_id,
        raft.log_index = log_id.index,
        raft.term = log_id.leader_id.term,
        raft.command = %command,
    );
    muster_middleware::trace::set_remote_parent(&span, &command.traceparent);
    span
}

/// Records `meta` as the current snapshot; commits durably, which also makes every earlier
/// non-durable apply durable.
fn record_snapshot(db: &Database, meta: &SnapshotMeta, file: &SnapshotFile) -> io::Result<()> {
    let mut txn = db.begin_write().map_err(io_err)?;
    txn.set_durability(Durability::Immediate).map_err(io::Error::other)?;
    let encoded = snapshot_meta_to_pb(meta, &file.id).encode_to_vec();
    txn.open_table(FSM_META).map_err(io_err)?.insert(META_SNAPSHOT, encoded.as_slice()).map_err(io_err)?;
    txn.commit().map_err(io_err)
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let table = txn.open_table(FSM_META).map_err(io_err)?;
        let applied = table.get(META_APPLIED).map_err(io_err)?.map(|v| decode::<v1::LogId>(v.value(), "applied"));
        let applied = opt_log_id_from_pb(applied.transpose()?, "applied").map_err(io::Error::other)?;
        let membership = table.get(META_MEMBERSHIP).map_err(io_err)?.map(|v| decode(v.value(), "membership"));
        let membership = stored_membership_from_pb(membership.transpose()?, "membership").map_err(io::Error::other)?;
        Ok((applied, membership))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let started = write_profile::start();
        let mut batch = Vec::new();
        while let Some(item) = entries.next().await {
            batch.push(item?);
        }
        if batch.is_empty() {
            return Ok(());
        }
        let batch_len = batch.len();
        let db = self.db.clone();
        let node_id = self.node_id.load(Ordering::Relaxed);
        let durability = {
            let mut last = self.last_durable.lock().unwrap_or_else(|p| p.into_inner());
            if last.elapsed() >= DURABLE_EVERY {
                *last = Instant::now();
                Durability::Immediate
            } else {
                // The log is durable; a crash before the next fsync only replays these entries.
                Durability::None
            }
        };
        let retention = self.retention;
        let age_trimmed_at = self.age_trimmed_at.clone();
        let apply_batch = move || {
            let mut txn = db.begin_write().map_err(io_err)?;
            txn.set_durability(durability).map_err(io::Error::other)?;
            let mut tables = ApplyTables::open(&txn)?;
            let mut results = Vec::with_capacity(batch.len());
            let mut records = Vec::new();
            let mut last_applied = None;
            let now_unix_ms = i64::try_from(muster_proto::clock::since_epoch().as_millis()).unwrap_or(i64::MAX);
            // An entry this release cannot read ends the batch: what came before it is applied
            // and committed, it and what follows are not, and the error stops the node.
            let mut unreadable = None;
            for (entry, _) in &batch {
                let index = entry.log_id.index;
                let result = match &entry.payload {
                    EntryPayload::Normal(command) => {
                        if let Err(problem) = super::fsm::readable(command) {
                            unreadable = Some(super::fsm::unreadable(index, problem));
                            break;
                        }
                        let _span = apply_span(node_id, &entry.log_id, command).entered();
                        let mut changes = Changes::default();
                        let term = entry.log_id.leader_id.term;
                        let result = apply_readable(&mut tables, index, term, command, &mut changes)?;
                        records.extend(history::record(&mut tables.history, index, changes, now_unix_ms)?);
                        result
                    }
                    EntryPayload::Membership(membership) => {
                        let stored = StoredMembership::new(Some(entry.log_id), membership.clone());
                        let encoded = stored_membership_to_pb(&stored).encode_to_vec();
                        let mut meta = txn.open_table(FSM_META).map_err(io_err)?;
                        meta.insert(META_MEMBERSHIP, encoded.as_slice()).map_err(io_err)?;
                        v1::CommandResult { index, succeeded: true, ..Default::default() }
                    }
                    EntryPayload::Blank => v1::CommandResult { index, succeeded: true, ..Default::default() },
                };
                results.push(result);
                last_applied = Some(entry.log_id);
            }
            if !records.is_empty() {
                let last_age_trim = age_trimmed_at.load(Ordering::Relaxed);
                let check_age = now_unix_ms.saturating_sub(last_age_trim) >= AGE_TRIM_EVERY_MS;
                history::trim(&txn, &mut tables.history, now_unix_ms, retention, check_age)?;
                if check_age {
                    age_trimmed_at.store(now_unix_ms, Ordering::Relaxed);
                }
            }
            drop(tables);
            if let Some(applied) = last_applied {
                let encoded = log_id_to_pb(&applied).encode_to_vec();
                txn.open_table(FSM_META).map_err(io_err)?.insert(META_APPLIED, encoded.as_slice()).map_err(io_err)?;
            }
            txn.commit().map_err(io_err)?;
            Ok((batch, results, records, last_applied.map_or(0, |log_id| log_id.index), unreadable))
        };
        // Small non-durable batches cost less than the hop to the blocking pool.
        let outcome = if matches!(durability, Durability::None) && batch_len <= INLINE_APPLY_MAX {
            apply_batch()
        } else {
            blocking(apply_batch).await
        };
        let stopped = |err: io::Error| {
            tracing::error!(
                error = %err,
                "the state machine stopped applying: this node serves no reads or writes until it is fixed"
            );
            err
        };
        // On a storage error nothing of the batch was committed; openraft stops this node's
        // Raft on any error.
        let (batch, results, records, applied, unreadable) = outcome.map_err(stopped)?;
        self.feed.publish(records, applied);
        write_profile::record(Hop::Apply, started, batch_len);
        // Answers for the entries applied (all of them, unless one could not be read).
        for ((_, responder), result) in batch.into_iter().zip(results) {
            if let Some(responder) = responder {
                responder.send(result);
            }
        }
        match unreadable {
            Some(err) => Err(stopped(err)),
            None => Ok(()),
        }
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: SnapshotFile) -> Result<(), io::Error> {
        let db = self.db.clone();
        let dir = self.snapshot_dir.clone();
        let meta = meta.clone();
        let installed_at = blocking(move || {
            let records = read_snapshot_records(&snapshot.path)?;
            let file = SnapshotFile::in_dir(&dir, &snapshot.id);
            if snapshot.path != file.path {
                std::fs::rename(&snapshot.path, &file.path)?;
            }
            // A snapshot from a leader on an older release may hold the worker CA key.
            super::snapshot::scrub_worker_ca_key(&file.path)?;
            let mut txn = db.begin_write().map_err(io_err)?;
            txn.set_durability(Durability::Immediate).map_err(io::Error::other)?;
            load_records(&txn, records)?;
            // The changes up to the snapshot are not known here: watches resume only after it.
            history::restart_at(&txn, meta.last_log_id.map_or(0, |log_id| log_id.index))?;
            {
                let mut table = txn.open_table(FSM_META).map_err(io_err)?;
                if let Some(applied) = &meta.last_log_id {
                    table.insert(META_APPLIED, log_id_to_pb(applied).encode_to_vec().as_slice()).map_err(io_err)?;
                }
                let membership = stored_membership_to_pb(&meta.last_membership).encode_to_vec();
                table.insert(META_MEMBERSHIP, membership.as_slice()).map_err(io_err)?;
                let encoded = snapshot_meta_to_pb(&meta, &file.id).encode_to_vec();
                table.insert(META_SNAPSHOT, encoded.as_slice()).map_err(io_err)?;
            }
            txn.commit().map_err(io_err)?;
            remove_other_snapshots(&dir, &file.path)?;
            Ok(meta.last_log_id.map_or(0, |log_id| log_id.index))
        })
        .await?;
        self.feed.restart_at(installed_at);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        self.current_snapshot()
    }
}

impl StateMachineStore {
    /// A backup: the applied state dumped into a new snapshot file in `dir` (as a snapshot is
    /// built, from one read transaction, so applies go on), read back whole and removed. The
    /// snapshot's metadata says which entry it holds up to.
    pub async fn backup_snapshot(&self, dir: PathBuf) -> io::Result<(SnapshotMeta, Vec<u8>)> {
        let db = self.db.clone();
        blocking(move || {
            let (meta, file) = write_snapshot(&db, &dir)?;
            let bytes = std::fs::read(&file.path);
            let _ = std::fs::remove_file(&file.path);
            Ok((meta, bytes?))
        })
        .await
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let db = self.db.clone();
        let dir = self.snapshot_dir.clone();
        blocking(move || {
            let (meta, file) = write_snapshot(&db, &dir)?;
            record_snapshot(&db, &meta, &file)?;
            remove_other_snapshots(&dir, &file.path)?;
            tracing::info!(snapshot = %file.id, "built snapshot");
            Ok(Snapshot { meta, snapshot: file })
        })
        .await
    }
}
