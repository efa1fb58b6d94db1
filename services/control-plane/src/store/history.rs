//! The watch history: what each applied entry changed in the KV and the worker records, kept
//! per revision (the entry's log index) in `fsm.redb` beside the state machine.
//!
//! Why a table of its own, written in the apply transaction: a watch must resume after any
//! failure with no gap and no duplicate, so the history has to be exactly as durable as the
//! state it describes. Written in the same transaction, a record exists if and only if its
//! entry is applied, and replaying the log after a crash rewrites the same records.
//!
//! The history is not replicated state: snapshots do not carry it, and each node trims its own
//! by count and age ([`Retention`]). `history_from` says where it starts: every change with a
//! revision above it is here. A node that installs a snapshot starts its history at the
//! snapshot; a database from before the history existed starts it at its applied index.

use std::io;
use std::time::Duration;

use muster_proto::v1;
use prost::Message;
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, WriteTransaction};

use super::FsmReader;
use super::db::{FSM_META, HISTORY, META_HISTORY_FROM, decode, io_err};

/// How much history a node keeps: at most `max_revisions` records (revisions that changed
/// something) and none older than `max_age`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    pub max_revisions: u64,
    pub max_age: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self { max_revisions: 100_000, max_age: Duration::from_secs(3600) }
    }
}

/// The changes one entry makes, collected while it applies.
#[derive(Debug, Default)]
pub struct Changes {
    pub(crate) kv: Vec<v1::KvEvent>,
    pub(crate) workers: Vec<v1::WorkerEvent>,
}

impl Changes {
    pub(crate) fn put(&mut self, revision: u64, kv: v1::KeyValue, previous: Option<&v1::KeyValue>) {
        self.kv.push(v1::KvEvent {
            r#type: v1::KvEventType::Put as i32,
            revision,
            kv: Some(kv),
            prev_kv: previous.cloned(),
        });
    }

    pub(crate) fn delete(&mut self, revision: u64, previous: &v1::KeyValue) {
        let kv = v1::KeyValue { key: previous.key.clone(), mod_revision: revision, ..Default::default() };
        self.kv.push(v1::KvEvent {
            r#type: v1::KvEventType::Delete as i32,
            revision,
            kv: Some(kv),
            prev_kv: Some(previous.clone()),
        });
    }

    /// Records a worker written at `revision`: `before` is its record before the entry (none
    /// for a registration).
    pub(crate) fn worker(&mut self, revision: u64, before: Option<&v1::WorkerRecord>, after: &v1::WorkerRecord) {
        let r#type = worker_event_type(before, after);
        let previous_labels = match (r#type, before) {
            (v1::WorkerEventType::LabelsChanged, Some(before)) => before.labels.clone(),
            _ => Default::default(),
        };
        self.workers.push(v1::WorkerEvent {
            r#type: r#type as i32,
            revision,
            worker: Some(after.clone()),
            previous_state: before.map_or(0, |before| before.state),
            previous_labels,
        });
    }

    /// Records a worker removed at `revision`: the event carries the record as it was.
    pub(crate) fn worker_removed(&mut self, revision: u64, removed: &v1::WorkerRecord) {
        self.workers.push(v1::WorkerEvent {
            r#type: v1::WorkerEventType::Removed as i32,
            revision,
            worker: Some(removed.clone()),
            previous_state: removed.state,
            previous_labels: Default::default(),
        });
    }

    fn is_empty(&self) -> bool {
        self.kv.is_empty() && self.workers.is_empty()
    }
}

/// What a change to a worker is called: the state it reached, or what else changed.
pub(crate) fn worker_event_type(before: Option<&v1::WorkerRecord>, after: &v1::WorkerRecord) -> v1::WorkerEventType {
    use v1::{WorkerEventType as Event, WorkerState as State};
    let Some(before) = before else { return Event::Registered };
    if before.state != after.state {
        return match State::try_from(after.state).unwrap_or_default() {
            _ if before.state == State::Unreachable as i32 => Event::Returned,
            State::Ready => Event::Ready,
            State::Unreachable => Event::Unreachable,
            State::Draining => Event::Draining,
            State::Left => Event::Left,
            State::Revoked => Event::Revoked,
            State::Unspecified => Event::Updated,
        };
    }
    let outcome = |record: &v1::WorkerRecord| record.drain.as_ref().map_or(0, |drain| drain.outcome);
    if outcome(before) != outcome(after) {
        match v1::DrainOutcome::try_from(outcome(after)).unwrap_or_default() {
            v1::DrainOutcome::Drained => return Event::Drained,
            v1::DrainOutcome::DeadlinePassed => return Event::DrainDeadlinePassed,
            v1::DrainOutcome::Unspecified => {}
        }
    }
    if before.ineligible != after.ineligible {
        if after.ineligible { Event::Cordoned } else { Event::Uncordoned }
    } else if before.labels != after.labels {
        Event::LabelsChanged
    } else if before.cert_serial.is_empty() && !after.cert_serial.is_empty() {
        Event::CertificateIssued
    } else if before.cert_serial != after.cert_serial {
        Event::CertificateRenewed
    } else if before.profile != after.profile {
        Event::ProfileChanged
    } else {
        Event::Updated
    }
}

/// Stores the entry's changes, if it made any; the record as stored.
pub(crate) fn record(
    txn: &WriteTransaction,
    revision: u64,
    changes: Changes,
    now_unix_ms: i64,
) -> io::Result<Option<v1::HistoryRecord>> {
    if changes.is_empty() {
        return Ok(None);
    }
    let record =
        v1::HistoryRecord { revision, applied_at_unix_ms: now_unix_ms, kv: changes.kv, workers: changes.workers };
    let mut history = txn.open_table(HISTORY).map_err(io_err)?;
    history.insert(revision, record.encode_to_vec().as_slice()).map_err(io_err)?;
    Ok(Some(record))
}

/// Drops the records past `retention` (too many, or older than its age), never the newest:
/// once per applied batch, not per entry.
pub(crate) fn trim(txn: &WriteTransaction, now_unix_ms: i64, retention: Retention) -> io::Result<()> {
    let mut history = txn.open_table(HISTORY).map_err(io_err)?;
    let oldest_kept = now_unix_ms.saturating_sub(i64::try_from(retention.max_age.as_millis()).unwrap_or(i64::MAX));
    let mut trimmed_through = None;
    while history.len().map_err(io_err)? > 1 {
        let over_count = history.len().map_err(io_err)? > retention.max_revisions;
        let Some((first, value)) = history.first().map_err(io_err)? else { break };
        let first_revision = first.value();
        // Decoding only the time: a record older than the limit, or one too many.
        let too_old = applied_at(value.value()) < oldest_kept;
        drop((first, value));
        if !(over_count || too_old) {
            break;
        }
        history.remove(first_revision).map_err(io_err)?;
        trimmed_through = Some(first_revision);
    }
    if let Some(through) = trimmed_through {
        set_history_from(txn, through)?;
    }
    Ok(())
}

fn applied_at(encoded: &[u8]) -> i64 {
    v1::HistoryRecord::decode(encoded).map_or(i64::MIN, |record| record.applied_at_unix_ms)
}

/// Every change after `revision` is in the history from now on (nothing at or before it is).
pub(crate) fn set_history_from(txn: &WriteTransaction, revision: u64) -> io::Result<()> {
    let mut meta = txn.open_table(FSM_META).map_err(io_err)?;
    meta.insert(META_HISTORY_FROM, revision.to_le_bytes().as_slice()).map_err(io_err)?;
    Ok(())
}

/// Drops the whole history: it restarts after `revision` (a snapshot was installed there).
pub(crate) fn restart_at(txn: &WriteTransaction, revision: u64) -> io::Result<()> {
    txn.open_table(HISTORY).map_err(io_err)?.retain(|_, _| false).map_err(io_err)?;
    set_history_from(txn, revision)
}

/// Where the history starts, from the meta table's value.
pub(crate) fn history_from(value: Option<&[u8]>) -> u64 {
    value.and_then(|bytes| bytes.try_into().ok()).map_or(0, u64::from_le_bytes)
}

/// Records read back from the history.
#[derive(Debug, PartialEq)]
pub enum HistoryRead {
    /// The records with revisions in the range asked for (at most the limit), and whether they
    /// are all of them.
    Records { records: Vec<v1::HistoryRecord>, complete: bool },
    /// The range starts before the history: it holds only the changes after `from`.
    Compacted { from: u64 },
}

impl FsmReader {
    /// The history records with revisions in `(after, through]`, at most `limit`.
    pub fn history_between(&self, after: u64, through: u64, limit: usize) -> io::Result<HistoryRead> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let meta = txn.open_table(FSM_META).map_err(io_err)?;
        let from = history_from(meta.get(META_HISTORY_FROM).map_err(io_err)?.as_ref().map(|v| v.value()));
        if after < from {
            return Ok(HistoryRead::Compacted { from });
        }
        let history = txn.open_table(HISTORY).map_err(io_err)?;
        let mut records = Vec::new();
        let first = after.saturating_add(1);
        if first <= through {
            for item in history.range(first..=through).map_err(io_err)? {
                if records.len() == limit {
                    return Ok(HistoryRead::Records { records, complete: false });
                }
                let (_, value) = item.map_err(io_err)?;
                records.push(decode(value.value(), "history record")?);
            }
        }
        Ok(HistoryRead::Records { records, complete: true })
    }

    /// Where the history starts (every change after it is kept) and how many revisions it holds.
    pub fn history_extent(&self) -> io::Result<(u64, u64)> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let meta = txn.open_table(FSM_META).map_err(io_err)?;
        let from = history_from(meta.get(META_HISTORY_FROM).map_err(io_err)?.as_ref().map(|v| v.value()));
        Ok((from, txn.open_table(HISTORY).map_err(io_err)?.len().map_err(io_err)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::open_database;

    fn worker(state: v1::WorkerState) -> v1::WorkerRecord {
        v1::WorkerRecord { worker_id: 1, state: state as i32, ..Default::default() }
    }

    #[test]
    fn a_change_is_named_by_the_state_it_reaches_or_what_else_changed() {
        use v1::{WorkerEventType as Event, WorkerState as State};
        let ready = worker(State::Ready);
        assert_eq!(worker_event_type(None, &ready), Event::Registered);
        assert_eq!(worker_event_type(Some(&ready), &worker(State::Unreachable)), Event::Unreachable);
        assert_eq!(worker_event_type(Some(&worker(State::Unreachable)), &ready), Event::Returned);
        assert_eq!(worker_event_type(Some(&worker(State::Unreachable)), &worker(State::Draining)), Event::Returned);
        assert_eq!(worker_event_type(Some(&ready), &worker(State::Draining)), Event::Draining);
        assert_eq!(worker_event_type(Some(&ready), &worker(State::Left)), Event::Left);
        assert_eq!(worker_event_type(Some(&ready), &worker(State::Revoked)), Event::Revoked);
        let mut labelled = ready.clone();
        labelled.labels.insert("zone".into(), "a".into());
        assert_eq!(worker_event_type(Some(&ready), &labelled), Event::LabelsChanged);
        let cordoned = v1::WorkerRecord { ineligible: true, ..ready.clone() };
        assert_eq!(worker_event_type(Some(&ready), &cordoned), Event::Cordoned);
        assert_eq!(worker_event_type(Some(&cordoned), &ready), Event::Uncordoned);
        let mut issued = ready.clone();
        issued.cert_serial = "01".into();
        assert_eq!(worker_event_type(Some(&ready), &issued), Event::CertificateIssued);
        let mut renewed = ready.clone();
        renewed.cert_serial = "02".into();
        assert_eq!(worker_event_type(Some(&issued), &renewed), Event::CertificateRenewed);
        let mut profiled = ready.clone();
        profiled.profile = Some(v1::WorkerProfile { version: "2".into(), ..Default::default() });
        assert_eq!(worker_event_type(Some(&ready), &profiled), Event::ProfileChanged);
        assert_eq!(worker_event_type(Some(&ready), &ready), Event::Updated);
    }

    #[test]
    fn the_history_is_trimmed_by_count_and_age_and_says_where_it_starts() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_database(&dir.path().join("db")).unwrap();
        let retention = Retention { max_revisions: 3, max_age: Duration::from_secs(60) };
        let kv = |key: &str| v1::KeyValue { key: key.into(), ..Default::default() };
        let txn = db.begin_write().unwrap();
        for revision in 1..=5 {
            let mut changes = Changes::default();
            changes.put(revision, kv("k"), None);
            record(&txn, revision, changes, 1_000).unwrap();
        }
        trim(&txn, 1_000, retention).unwrap();
        // Nothing changed at 6: no record.
        assert!(record(&txn, 6, Changes::default(), 1_000).unwrap().is_none());
        let history = txn.open_table(HISTORY).unwrap();
        assert_eq!(history.iter().unwrap().map(|item| item.unwrap().0.value()).collect::<Vec<_>>(), [3, 4, 5]);
        drop(history);
        let from = |txn: &WriteTransaction| {
            let meta = txn.open_table(FSM_META).unwrap();
            history_from(meta.get(META_HISTORY_FROM).unwrap().as_ref().map(|v| v.value()))
        };
        assert_eq!(from(&txn), 2);
        // A minute later, everything but the newest record is too old.
        let mut changes = Changes::default();
        changes.put(7, kv("k"), None);
        record(&txn, 7, changes, 61_001).unwrap();
        trim(&txn, 61_001, retention).unwrap();
        let history = txn.open_table(HISTORY).unwrap();
        assert_eq!(history.iter().unwrap().map(|item| item.unwrap().0.value()).collect::<Vec<_>>(), [7]);
        drop(history);
        assert_eq!(from(&txn), 5);
        restart_at(&txn, 40).unwrap();
        assert_eq!(from(&txn), 40);
        assert_eq!(txn.open_table(HISTORY).unwrap().len().unwrap(), 0);
    }
}
