//! A static-mode node's durable KV (`static-kv.redb`): the latest write of every key, each
//! tagged with who wrote it ([`v1::WriteTag`]: epoch, leader id, sequence), and a change feed
//! numbered by a local revision so a peer can pull what it missed.
//!
//! There is no log to agree on, so replicas converge by keeping, per key, the write with the
//! greatest tag: merging is commutative, associative and idempotent, and every replica that
//! has seen the same writes holds the same values whatever order they arrived in. A delete is
//! a tombstone for the same reason (an older put arriving later must not resurrect the key);
//! tombstones are kept, which is fine for the small configuration KV static mode is for.
//!
//! Every write is committed with redb's immediate durability (fsynced) before it is answered
//! or acknowledged to a peer.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use muster_proto::v1;
use prost::Message;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use crate::store::{decode, io_err, open_database};

/// key -> encoded [`v1::StaticEntry`] (its `revision` is the local one).
const ENTRIES: TableDefinition<&str, &[u8]> = TableDefinition::new("static_entries");
/// local revision -> key: the change feed peers pull from.
const CHANGES: TableDefinition<u64, &str> = TableDefinition::new("static_changes");
const META: TableDefinition<&str, u64> = TableDefinition::new("static_meta");

const META_INCARNATION: &str = "incarnation";
const META_REVISION: &str = "revision";
const META_EPOCH: &str = "epoch";
const META_EPOCH_LEADER: &str = "epoch_leader";
const META_SEQUENCE: &str = "sequence";

/// The order of writes: epoch, then leader id, then sequence.
fn tag_order(tag: Option<&v1::WriteTag>) -> (u64, u64, u64) {
    tag.map_or((0, 0, 0), |t| (t.epoch, t.leader_id, t.sequence))
}

#[derive(Clone)]
pub struct StaticStore {
    db: Arc<Database>,
    incarnation: u64,
    /// The newest local revision (mirrors META_REVISION after every commit).
    revision: Arc<AtomicU64>,
}

impl StaticStore {
    pub fn open(path: &Path) -> io::Result<Self> {
        let db = open_database(path).map_err(|err| io::Error::other(err.to_string()))?;
        let txn = db.begin_write().map_err(io_err)?;
        let (incarnation, revision) = {
            txn.open_table(ENTRIES).map_err(io_err)?;
            txn.open_table(CHANGES).map_err(io_err)?;
            let mut meta = txn.open_table(META).map_err(io_err)?;
            let stored = meta.get(META_INCARNATION).map_err(io_err)?.map(|v| v.value());
            let incarnation = match stored {
                Some(existing) => existing,
                None => {
                    let fresh = rand::random::<u64>().max(1);
                    meta.insert(META_INCARNATION, fresh).map_err(io_err)?;
                    fresh
                }
            };
            let revision = meta.get(META_REVISION).map_err(io_err)?.map_or(0, |v| v.value());
            (incarnation, revision)
        };
        txn.commit().map_err(io_err)?;
        Ok(Self { db, incarnation, revision: Arc::new(AtomicU64::new(revision)) })
    }

    /// Identifies this store: a wiped data directory gets a new one.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    pub fn revision(&self) -> u64 {
        self.revision.load(Ordering::Acquire)
    }

    /// The newest term this node has seen or led: (epoch, the node that led it).
    pub fn newest_term(&self) -> io::Result<(u64, u64)> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let meta = txn.open_table(META).map_err(io_err)?;
        let epoch = meta.get(META_EPOCH).map_err(io_err)?.map_or(0, |v| v.value());
        let leader = meta.get(META_EPOCH_LEADER).map_err(io_err)?.map_or(0, |v| v.value());
        Ok((epoch, leader))
    }

    /// Remembers that `leader` led `epoch` (a peer said so, or a write is tagged so), so a
    /// later term of this node starts above it.
    pub fn observe_term(&self, epoch: u64, leader: u64) -> io::Result<()> {
        if (epoch, leader) <= self.newest_term()? {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(io_err)?;
        raise_term(&txn, (epoch, leader))?;
        txn.commit().map_err(io_err)
    }

    /// Starts a new term led by `leader`: one epoch above every epoch seen, durably, so no two
    /// terms ever compare equal and the new one's writes win over every older one's.
    pub fn begin_epoch(&self, leader: u64) -> io::Result<u64> {
        let txn = self.db.begin_write().map_err(io_err)?;
        let epoch = {
            let meta = txn.open_table(META).map_err(io_err)?;
            meta.get(META_EPOCH).map_err(io_err)?.map_or(0, |v| v.value()) + 1
        };
        raise_term(&txn, (epoch, leader))?;
        txn.commit().map_err(io_err)?;
        Ok(epoch)
    }

    /// Applies one client write as the leader of `epoch`: evaluated against this replica's
    /// values (a compare-and-swap compares with what this node holds), tagged with the next
    /// sequence and committed. Returns the result and, when something changed, the entry to push.
    pub fn write(
        &self,
        op: &v1::command::Op,
        epoch: u64,
        leader_id: u64,
    ) -> io::Result<(v1::CommandResult, Option<v1::StaticEntry>)> {
        use v1::command::Op;
        let txn = self.db.begin_write().map_err(io_err)?;
        let (result, entry) = {
            let key = match op {
                Op::Put(put) => put.key.as_str(),
                Op::Delete(del) => del.key.as_str(),
                Op::Cas(cas) => cas.key.as_str(),
                _ => return Err(io::Error::other("static mode stores KV writes only")),
            };
            let current = live(read_entry(&txn, key)?);
            let previous = current.as_ref().map(to_key_value);
            let (allowed, deleted, value) = match op {
                Op::Put(put) => (true, false, put.value.clone()),
                Op::Delete(_) => (current.is_some(), true, Vec::new()),
                Op::Cas(cas) => {
                    let matches = match &current {
                        None => cas.expect_absent,
                        Some(entry) => !cas.expect_absent && entry.value == cas.expected,
                    };
                    (matches, false, cas.new_value.clone())
                }
                _ => unreachable!("checked above"),
            };
            if !allowed {
                (v1::CommandResult { index: self.revision(), succeeded: false, previous, ..Default::default() }, None)
            } else {
                let sequence = {
                    let mut meta = txn.open_table(META).map_err(io_err)?;
                    let sequence = meta.get(META_SEQUENCE).map_err(io_err)?.map_or(0, |v| v.value()) + 1;
                    meta.insert(META_SEQUENCE, sequence).map_err(io_err)?;
                    sequence
                };
                let tag = v1::WriteTag { epoch, leader_id, sequence };
                let entry = v1::StaticEntry { key: key.to_string(), value, deleted, tag: Some(tag), revision: 0 };
                let stored = self.store(&txn, entry)?;
                let result =
                    v1::CommandResult { index: stored.revision, succeeded: true, previous, ..Default::default() };
                (result, Some(stored))
            }
        };
        txn.commit().map_err(io_err)?;
        if let Some(entry) = &entry {
            self.revision.fetch_max(entry.revision, Ordering::AcqRel);
        }
        Ok((result, entry))
    }

    /// Stores every entry whose tag is greater than what this replica holds for its key; the
    /// newest local revision afterwards. Also raises the newest term to the entries'.
    pub fn merge(&self, entries: Vec<v1::StaticEntry>) -> io::Result<u64> {
        if entries.is_empty() {
            return Ok(self.revision());
        }
        let txn = self.db.begin_write().map_err(io_err)?;
        let mut newest_term = (0, 0);
        let mut newest_revision = None;
        for entry in entries {
            let incoming = tag_order(entry.tag.as_ref());
            newest_term = newest_term.max((incoming.0, incoming.1));
            let held = read_entry(&txn, &entry.key)?;
            if held.as_ref().is_some_and(|held| tag_order(held.tag.as_ref()) >= incoming) {
                continue;
            }
            newest_revision = Some(self.store(&txn, entry)?.revision);
        }
        raise_term(&txn, newest_term)?;
        txn.commit().map_err(io_err)?;
        if let Some(revision) = newest_revision {
            self.revision.fetch_max(revision, Ordering::AcqRel);
        }
        Ok(self.revision())
    }

    /// Writes `entry` at the next local revision, dropping the key's previous place in the
    /// change feed.
    fn store(&self, txn: &WriteTransaction, mut entry: v1::StaticEntry) -> io::Result<v1::StaticEntry> {
        let mut meta = txn.open_table(META).map_err(io_err)?;
        let revision = meta.get(META_REVISION).map_err(io_err)?.map_or(0, |v| v.value()) + 1;
        meta.insert(META_REVISION, revision).map_err(io_err)?;
        let mut entries = txn.open_table(ENTRIES).map_err(io_err)?;
        let mut changes = txn.open_table(CHANGES).map_err(io_err)?;
        if let Some(old) = entries.get(entry.key.as_str()).map_err(io_err)? {
            let old: v1::StaticEntry = decode(old.value(), "static entry")?;
            changes.remove(old.revision).map_err(io_err)?;
        }
        entry.revision = revision;
        entries.insert(entry.key.as_str(), entry.encode_to_vec().as_slice()).map_err(io_err)?;
        changes.insert(revision, entry.key.as_str()).map_err(io_err)?;
        Ok(entry)
    }

    /// Entries changed after local revision `after`, oldest first, at most `limit` and about
    /// `max_bytes` (always at least one), and whether more follow.
    pub fn changes_after(
        &self,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> io::Result<(Vec<v1::StaticEntry>, bool)> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let changes = txn.open_table(CHANGES).map_err(io_err)?;
        let entries = txn.open_table(ENTRIES).map_err(io_err)?;
        let mut out = Vec::new();
        let mut bytes = 0;
        for item in changes.range(after.saturating_add(1)..).map_err(io_err)? {
            let (_, key) = item.map_err(io_err)?;
            let Some(encoded) = entries.get(key.value()).map_err(io_err)? else { continue };
            let size = encoded.value().len();
            if !out.is_empty() && (out.len() == limit || bytes + size > max_bytes) {
                return Ok((out, true));
            }
            bytes += size;
            out.push(decode(encoded.value(), "static entry")?);
        }
        Ok((out, false))
    }

    pub fn get(&self, key: &str) -> io::Result<Option<v1::KeyValue>> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let entries = txn.open_table(ENTRIES).map_err(io_err)?;
        let entry = entries.get(key).map_err(io_err)?.map(|v| decode(v.value(), "static entry")).transpose()?;
        Ok(live(entry).as_ref().map(to_key_value))
    }

    /// Live keys starting with `prefix`, in key order; at most `limit` (0: all), and whether
    /// more matched.
    pub fn list(&self, prefix: &str, limit: usize) -> io::Result<(Vec<v1::KeyValue>, bool)> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let entries = txn.open_table(ENTRIES).map_err(io_err)?;
        let mut items = Vec::new();
        for item in entries.range(prefix..).map_err(io_err)? {
            let (key, value) = item.map_err(io_err)?;
            if !key.value().starts_with(prefix) {
                break;
            }
            let Some(entry) = live(Some(decode(value.value(), "static entry")?)) else { continue };
            if limit != 0 && items.len() == limit {
                return Ok((items, true));
            }
            items.push(to_key_value(&entry));
        }
        Ok((items, false))
    }
}

/// Raises the stored newest term to `term` if it is newer.
fn raise_term(txn: &WriteTransaction, term: (u64, u64)) -> io::Result<()> {
    let mut meta = txn.open_table(META).map_err(io_err)?;
    let epoch = meta.get(META_EPOCH).map_err(io_err)?.map_or(0, |v| v.value());
    let leader = meta.get(META_EPOCH_LEADER).map_err(io_err)?.map_or(0, |v| v.value());
    if term > (epoch, leader) {
        meta.insert(META_EPOCH, term.0).map_err(io_err)?;
        meta.insert(META_EPOCH_LEADER, term.1).map_err(io_err)?;
    }
    Ok(())
}

fn read_entry(txn: &WriteTransaction, key: &str) -> io::Result<Option<v1::StaticEntry>> {
    let entries = txn.open_table(ENTRIES).map_err(io_err)?;
    entries.get(key).map_err(io_err)?.map(|v| decode(v.value(), "static entry")).transpose()
}

/// The entry unless it is a tombstone.
fn live(entry: Option<v1::StaticEntry>) -> Option<v1::StaticEntry> {
    entry.filter(|entry| !entry.deleted)
}

fn to_key_value(entry: &v1::StaticEntry) -> v1::KeyValue {
    v1::KeyValue {
        key: entry.key.clone(),
        value: entry.value.clone(),
        create_revision: 0,
        mod_revision: entry.revision,
        written_by: entry.tag,
        version: 0,
    }
}

#[cfg(test)]
mod tests;
