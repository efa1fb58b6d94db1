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

/// The history table, open for writing in an apply's transaction.
pub(crate) type HistoryTable<'txn> = redb::Table<'txn, u64, &'static [u8]>;

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
    history: &mut HistoryTable<'_>,
    revision: u64,
    changes: Changes,
    now_unix_ms: i64,
) -> io::Result<Option<v1::HistoryRecord>> {
    if changes.is_empty() {
        return Ok(None);
    }
    let record =
        v1::HistoryRecord { revision, applied_at_unix_ms: now_unix_ms, kv: changes.kv, workers: changes.workers };
    history.insert(revision, record.encode_to_vec().as_slice()).map_err(io_err)?;
    Ok(Some(record))
}

/// How far below `max_revisions` a trim over the count cuts: the next batches then find
/// nothing to remove, and the removals are made together (one pass over the oldest pages)
/// rather than one per applied entry. A 64th of the count, at most 256 records.
fn trim_margin(retention: Retention) -> u64 {
    (retention.max_revisions / 64).min(256)
}

/// Drops the records past `retention`, never the newest. Called once per applied batch:
/// over `max_revisions`, the oldest records go down to the count less [`trim_margin`]; when
/// `check_age`, records older than `max_age` go too (the state machine asks for that about
/// once a second: reading the oldest record's time on every batch cost more than the trim).
pub(crate) fn trim(
    txn: &WriteTransaction,
    history: &mut HistoryTable<'_>,
    now_unix_ms: i64,
    retention: Retention,
    check_age: bool,
) -> io::Result<()> {
    let len = history.len().map_err(io_err)?;
    let mut trimmed_through = None;
    if len > retention.max_revisions {
        let excess = (len - retention.max_revisions + trim_margin(retention)).min(len - 1);
        // The newest revision to drop: the `excess`-th oldest (`len > max_revisions >= 1`, so
        // there is one, and the newest record stays).
        let skip = usize::try_from(excess.saturating_sub(1)).unwrap_or(usize::MAX);
        let cut = history.range::<u64>(..).map_err(io_err)?.nth(skip);
        let cut = cut.transpose().map_err(io_err)?.map(|(revision, _)| revision.value());
        if let Some(cut) = cut {
            history.retain_in(..=cut, |_, _| false).map_err(io_err)?;
            trimmed_through = Some(cut);
        }
    }
    if check_age {
        let oldest_kept = now_unix_ms.saturating_sub(i64::try_from(retention.max_age.as_millis()).unwrap_or(i64::MAX));
        while history.len().map_err(io_err)? > 1 {
            let Some((first, value)) = history.first().map_err(io_err)? else { break };
            let first_revision = first.value();
            let too_old = applied_at(value.value()) < oldest_kept;
            drop((first, value));
            if !too_old {
                break;
            }
            history.remove(first_revision).map_err(io_err)?;
            trimmed_through = Some(first_revision);
        }
    }
    if let Some(through) = trimmed_through {
        set_history_from(txn, through)?;
    }
    Ok(())
}

/// The one field of a [`v1::HistoryRecord`] the trim reads, decoded without the changes.
#[derive(Clone, PartialEq, prost::Message)]
struct AppliedAt {
    #[prost(int64, tag = "2")]
    applied_at_unix_ms: i64,
}

fn applied_at(encoded: &[u8]) -> i64 {
    AppliedAt::decode(encoded).map_or(i64::MIN, |record| record.applied_at_unix_ms)
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

    fn from(txn: &WriteTransaction) -> u64 {
        let meta = txn.open_table(FSM_META).unwrap();
        history_from(meta.get(META_HISTORY_FROM).unwrap().as_ref().map(|v| v.value()))
    }

    fn revisions(history: &HistoryTable<'_>) -> Vec<u64> {
        history.iter().unwrap().map(|item| item.unwrap().0.value()).collect()
    }

    fn put(history: &mut HistoryTable<'_>, revision: u64, at: i64) {
        let mut changes = Changes::default();
        changes.put(revision, v1::KeyValue { key: "k".into(), ..Default::default() }, None);
        record(history, revision, changes, at).unwrap();
    }

    #[test]
    fn the_history_is_trimmed_by_count_and_age_and_says_where_it_starts() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_database(&dir.path().join("db")).unwrap();
        let retention = Retention { max_revisions: 3, max_age: Duration::from_secs(60) };
        let txn = db.begin_write().unwrap();
        let mut history = txn.open_table(HISTORY).unwrap();
        (1..=5).for_each(|revision| put(&mut history, revision, 1_000));
        trim(&txn, &mut history, 1_000, retention, true).unwrap();
        // Nothing changed at 6: no record.
        assert!(record(&mut history, 6, Changes::default(), 1_000).unwrap().is_none());
        assert_eq!(revisions(&history), [3, 4, 5]);
        assert_eq!(from(&txn), 2);
        // A minute later, everything but the newest record is too old.
        put(&mut history, 7, 61_001);
        trim(&txn, &mut history, 61_001, retention, true).unwrap();
        assert_eq!(revisions(&history), [7]);
        assert_eq!(from(&txn), 5);
        drop(history);
        restart_at(&txn, 40).unwrap();
        assert_eq!(from(&txn), 40);
        assert_eq!(txn.open_table(HISTORY).unwrap().len().unwrap(), 0);
    }

    #[test]
    fn over_its_count_the_history_is_cut_below_it_and_its_age_is_read_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_database(&dir.path().join("db")).unwrap();
        // A margin of 640 / 64 = 10 records.
        let retention = Retention { max_revisions: 640, max_age: Duration::from_secs(60) };
        let txn = db.begin_write().unwrap();
        let mut history = txn.open_table(HISTORY).unwrap();
        let extent = |history: &HistoryTable<'_>| {
            let first = history.first().unwrap().map(|(revision, _)| revision.value());
            (first, history.len().unwrap())
        };
        (1..=641).for_each(|revision| put(&mut history, revision, 1_000));
        trim(&txn, &mut history, 1_000, retention, false).unwrap();
        assert_eq!(extent(&history), (Some(12), 630), "one over the count: cut to the count less the margin");
        assert_eq!(from(&txn), 11);
        (642..=651).for_each(|revision| put(&mut history, revision, 1_000));
        trim(&txn, &mut history, 1_000, retention, false).unwrap();
        assert_eq!(extent(&history), (Some(12), 640), "at the count: nothing to do");
        // A minute later every record but the newest is too old, but only an age check says so.
        trim(&txn, &mut history, 61_001, retention, false).unwrap();
        assert_eq!(extent(&history), (Some(12), 640));
        trim(&txn, &mut history, 61_001, retention, true).unwrap();
        assert_eq!(extent(&history), (Some(651), 1));
        assert_eq!(from(&txn), 650);
    }
}
