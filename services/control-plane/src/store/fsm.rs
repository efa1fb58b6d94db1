//! The FSM's domain logic: what each [`v1::Command`] does to the key space and sessions,
//! and the read side the API serves from.
//!
//! Writes happen inside a write transaction owned by the state machine, so a whole batch of
//! entries applies atomically with its `applied` pointer.

use std::io;
use std::sync::Arc;

use muster_proto::v1;
use muster_proto::v1::command::Op;
use prost::Message;
use redb::{Database, ReadableDatabase, ReadableTable, Table, WriteTransaction};

use super::db::{FSM_META, HISTORY, KV, META_CLUSTER_ID, META_WORKER_CA, TOKENS, WORKERS, decode, io_err};
use super::history::Changes;
use super::sessions::{MAX_SESSIONS, SessionTables};

/// Whether this release can apply `command`: its format is one it reads, and it names a kind
/// of command this release knows (prost decodes a kind added later as no op at all, which
/// must not be mistaken for the barrier entries written before formats were recorded).
pub(crate) fn readable(command: &v1::Command) -> Result<(), String> {
    let format = command.format_version;
    if format > muster_proto::COMMAND_FORMAT_VERSION {
        return Err(format!(
            "command format {format} is newer than this release applies (up to {}): upgrade this node to a \
             release that reads it; it stops applying here rather than skip the entry",
            muster_proto::COMMAND_FORMAT_VERSION
        ));
    }
    if command.op.is_none() && format >= 1 {
        return Err(format!(
            "a command of format {format} of a kind this release does not know: upgrade this node to the \
             leader's release; it stops applying here rather than skip the entry"
        ));
    }
    Ok(())
}

/// The error that stops the apply at an entry this release cannot read (see [`readable`]).
pub(crate) fn unreadable(index: u64, problem: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("entry {index}: {problem}"))
}

/// The write side of one applied batch: its transaction, and the tables nearly every entry
/// writes, opened once for the batch (opening a table costs about as much as a small write);
/// the sessions only once a command with a session comes (most commands other than KV writes
/// have none). Nothing else opens these tables inside an apply.
pub(crate) struct ApplyTables<'txn> {
    pub(crate) txn: &'txn WriteTransaction,
    kv: Table<'txn, &'static str, &'static [u8]>,
    pub(crate) history: Table<'txn, u64, &'static [u8]>,
    sessions: Option<SessionTables<'txn>>,
}

impl<'txn> ApplyTables<'txn> {
    pub(crate) fn open(txn: &'txn WriteTransaction) -> io::Result<Self> {
        Ok(Self {
            txn,
            kv: txn.open_table(KV).map_err(io_err)?,
            history: txn.open_table(HISTORY).map_err(io_err)?,
            sessions: None,
        })
    }

    fn sessions(&mut self) -> io::Result<&mut SessionTables<'txn>> {
        match &mut self.sessions {
            Some(sessions) => Ok(sessions),
            none => Ok(none.insert(SessionTables::open(self.txn)?)),
        }
    }
}

/// Applies one command at `index` and returns what the client sees; what it changed goes into
/// `changes` (for the watch history). Deterministic: every replica computes the same result
/// from the same log. A command this release cannot read is refused before anything is read
/// or written.
pub(crate) fn apply_command(
    txn: &WriteTransaction,
    index: u64,
    term: u64,
    command: &v1::Command,
    changes: &mut Changes,
) -> io::Result<v1::CommandResult> {
    readable(command).map_err(|problem| unreadable(index, problem))?;
    apply_readable(&mut ApplyTables::open(txn)?, index, term, command, changes)
}

/// [`apply_command`] for a command [`readable`] has passed: the state machine checks each
/// entry once, where it decides how far a batch goes.
pub(crate) fn apply_readable(
    tables: &mut ApplyTables<'_>,
    index: u64,
    term: u64,
    command: &v1::Command,
    changes: &mut Changes,
) -> io::Result<v1::CommandResult> {
    // A batch has no session of its own: each of its commands has its own.
    if let Some(Op::Batch(batch)) = &command.op {
        return apply_batch(tables, index, term, batch, changes);
    }
    let txn = tables.txn;
    // Only a command with a client id has a session (most have none: skip the tables).
    let has_session = command.client_id != 0;
    if has_session && let Some(answer) = tables.sessions()?.retry_answer(command)? {
        // A retry: answer as the first time, apply nothing.
        return Ok(answer);
    }

    let result = match &command.op {
        Some(Op::Put(put)) => put_value(&mut tables.kv, index, &put.key, &put.value, changes, |_| true)?,
        Some(Op::Cas(cas)) => put_value(&mut tables.kv, index, &cas.key, &cas.new_value, changes, |current| match cas
            .expected_mod_revision
        {
            Some(0) => current.is_none(),
            Some(revision) => current.is_some_and(|kv| kv.mod_revision == revision),
            None => match current {
                None => cas.expect_absent,
                Some(kv) => !cas.expect_absent && kv.value == cas.expected,
            },
        })?,
        Some(Op::Delete(del)) => {
            let previous =
                tables.kv.remove(del.key.as_str()).map_err(io_err)?.map(|v| decode::<v1::KeyValue>(v.value(), "value"));
            let previous = previous.transpose()?;
            if let Some(previous) = &previous {
                changes.delete(index, previous);
            }
            v1::CommandResult { index, succeeded: previous.is_some(), previous, ..Default::default() }
        }
        Some(Op::InitCluster(init)) => {
            let mut meta = txn.open_table(FSM_META).map_err(io_err)?;
            let already = meta.get(META_CLUSTER_ID).map_err(io_err)?.is_some();
            if !already {
                meta.insert(META_CLUSTER_ID, init.cluster_id.as_bytes()).map_err(io_err)?;
            }
            v1::CommandResult { index, succeeded: !already, ..Default::default() }
        }
        Some(Op::CreateToken(create)) => super::tokens::create(txn, index, create)?,
        Some(Op::RevokeToken(revoke)) => super::tokens::revoke(txn, index, revoke)?,
        Some(Op::RegisterWorker(register)) => super::workers::register(txn, index, register, changes)?,
        Some(Op::InitWorkerCa(init)) => super::worker_ca::init(txn, index, init)?,
        Some(Op::RetireLegacyWorkerCa(retire)) => super::worker_ca::retire(txn, index, retire)?,
        Some(Op::RotateWorkerCa(rotate)) => super::worker_ca::rotate(txn, index, rotate)?,
        Some(Op::RecordWorkerCert(record)) => super::workers::record_cert(txn, index, record, changes)?,
        Some(Op::UpdateWorker(update)) => super::workers::update(txn, index, update, changes)?,
        Some(Op::WorkerTransitions(batch)) => super::workers::transitions(txn, index, term, batch, changes)?,
        Some(Op::RemoveWorkers(remove)) => super::workers::remove(txn, index, remove, changes)?,
        // Taken before the session is looked at (each command in it has its own).
        Some(Op::Batch(_)) => unreachable!("a batch is applied before its session is looked at"),
        // A barrier; before formats were recorded a barrier had no op at all (see `readable`).
        Some(Op::Noop(_)) | None => v1::CommandResult { index, ..Default::default() },
    };

    if has_session {
        let session = v1::ClientSession {
            client_id: command.client_id,
            sequence: command.sequence,
            result: Some(result.clone()),
            last_index: index,
        };
        tables.sessions()?.record(&session, MAX_SESSIONS)?;
    }
    Ok(result)
}

/// Applies each command of `batch` in order at `index`, as its own entry would be: its own
/// session check and its own result. A nested batch is refused (and nothing else with it):
/// the leader never writes one, and refusing it keeps the apply one level deep.
fn apply_batch(
    tables: &mut ApplyTables<'_>,
    index: u64,
    term: u64,
    batch: &v1::CommandBatch,
    changes: &mut Changes,
) -> io::Result<v1::CommandResult> {
    let mut results = Vec::with_capacity(batch.commands.len());
    for command in &batch.commands {
        let result = match &command.op {
            Some(Op::Batch(_)) => v1::CommandResult {
                index,
                error: "a batch may not hold a batch".into(),
                refusal: v1::Refusal::IncompleteCommand as i32,
                ..Default::default()
            },
            _ => apply_readable(tables, index, term, command, changes)?,
        };
        results.push(result);
    }
    Ok(v1::CommandResult { index, succeeded: true, results, ..Default::default() })
}

/// Writes `value` under `key` if `allowed(current)` holds; the result says whether it did.
fn put_value(
    kv: &mut Table<'_, &'static str, &'static [u8]>,
    index: u64,
    key: &str,
    value: &[u8],
    changes: &mut Changes,
    allowed: impl FnOnce(Option<&v1::KeyValue>) -> bool,
) -> io::Result<v1::CommandResult> {
    let current = kv.get(key).map_err(io_err)?.map(|v| decode::<v1::KeyValue>(v.value(), "value")).transpose()?;
    if !allowed(current.as_ref()) {
        return Ok(v1::CommandResult { index, succeeded: false, previous: current, ..Default::default() });
    }
    let create_revision = current.as_ref().map_or(index, |kv| kv.create_revision);
    let new = v1::KeyValue {
        key: key.to_string(),
        value: value.to_vec(),
        create_revision,
        mod_revision: index,
        written_by: None,
        version: current.as_ref().map_or(1, |kv| kv.version + 1),
    };
    kv.insert(key, new.encode_to_vec().as_slice()).map_err(io_err)?;
    changes.put(index, new, current.as_ref());
    Ok(v1::CommandResult { index, succeeded: true, previous: current, ..Default::default() })
}

/// Read access to the applied state, for the API. Reads see a consistent redb snapshot and
/// never block the Raft apply loop.
#[derive(Clone)]
pub struct FsmReader {
    pub(super) db: Arc<Database>,
}

impl FsmReader {
    pub fn new(db: Arc<Database>) -> Self {
        Self { db }
    }

    pub fn get(&self, key: &str) -> io::Result<Option<v1::KeyValue>> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let table = txn.open_table(KV).map_err(io_err)?;
        table.get(key).map_err(io_err)?.map(|v| decode(v.value(), "value")).transpose()
    }

    /// Keys starting with `prefix`, in key order; at most `limit` (0: all), and whether more matched.
    pub fn list(&self, prefix: &str, limit: usize) -> io::Result<(Vec<v1::KeyValue>, bool)> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let table = txn.open_table(KV).map_err(io_err)?;
        let mut items = Vec::new();
        for item in table.range(prefix..).map_err(io_err)? {
            let (key, value) = item.map_err(io_err)?;
            if !key.value().starts_with(prefix) {
                break;
            }
            if limit != 0 && items.len() == limit {
                return Ok((items, true));
            }
            items.push(decode(value.value(), "value")?);
        }
        Ok((items, false))
    }

    /// Every bootstrap token record, by id.
    pub fn tokens(&self) -> io::Result<Vec<v1::TokenRecord>> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let table = txn.open_table(TOKENS).map_err(io_err)?;
        let mut tokens = Vec::new();
        for item in table.iter().map_err(io_err)? {
            let (_, value) = item.map_err(io_err)?;
            tokens.push(decode(value.value(), "token")?);
        }
        Ok(tokens)
    }

    pub fn token(&self, token_id: &str) -> io::Result<Option<v1::TokenRecord>> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let table = txn.open_table(TOKENS).map_err(io_err)?;
        table.get(token_id).map_err(io_err)?.map(|v| decode(v.value(), "token")).transpose()
    }

    /// Every worker, by id.
    pub fn workers(&self) -> io::Result<Vec<v1::WorkerRecord>> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let table = txn.open_table(WORKERS).map_err(io_err)?;
        let mut workers = Vec::new();
        for item in table.iter().map_err(io_err)? {
            let (_, value) = item.map_err(io_err)?;
            workers.push(decode(value.value(), "worker")?);
        }
        Ok(workers)
    }

    pub fn worker(&self, worker_id: u64) -> io::Result<Option<v1::WorkerRecord>> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let table = txn.open_table(WORKERS).map_err(io_err)?;
        table.get(worker_id).map_err(io_err)?.map(|v| decode(v.value(), "worker")).transpose()
    }

    /// The cluster's worker CA, once one is recorded.
    pub fn worker_ca(&self) -> io::Result<Option<v1::InitWorkerCa>> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let table = txn.open_table(FSM_META).map_err(io_err)?;
        let ca = table.get(META_WORKER_CA).map_err(io_err)?.map(|v| decode(v.value(), "worker CA")).transpose()?;
        Ok(ca.map(|ca| super::worker_ca::stored(&ca)))
    }

    pub fn cluster_id(&self) -> io::Result<Option<String>> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let table = txn.open_table(FSM_META).map_err(io_err)?;
        let id = table.get(META_CLUSTER_ID).map_err(io_err)?;
        Ok(id.map(|v| String::from_utf8_lossy(v.value()).into_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::open_database;

    fn command(client_id: u64, sequence: u64, op: Op) -> v1::Command {
        v1::Command { client_id, sequence, op: Some(op), ..Default::default() }
    }

    fn put(key: &str, value: &str) -> Op {
        Op::Put(v1::KvPut { key: key.into(), value: value.as_bytes().to_vec() })
    }

    fn apply(db: &Database, index: u64, cmd: &v1::Command) -> v1::CommandResult {
        let txn = db.begin_write().unwrap();
        let result = apply_command(&txn, index, 1, cmd, &mut Changes::default()).unwrap();
        txn.commit().unwrap();
        result
    }

    #[test]
    fn a_command_this_release_cannot_read_is_refused_not_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_database(&dir.path().join("db")).unwrap();
        let reader = FsmReader::new(db.clone());
        let refuse = |cmd: &v1::Command| {
            let txn = db.begin_write().unwrap();
            let err = apply_command(&txn, 7, 1, cmd, &mut Changes::default()).unwrap_err();
            // Dropped, as the state machine drops the batch's transaction.
            drop(txn);
            err.to_string()
        };
        // A newer format, even of a kind this release knows.
        let newer =
            v1::Command { format_version: muster_proto::COMMAND_FORMAT_VERSION + 1, ..command(0, 0, put("k", "v")) };
        let err = refuse(&newer);
        let format = format!("command format {}", muster_proto::COMMAND_FORMAT_VERSION + 1);
        assert!(err.contains("entry 7") && err.contains(&format) && err.contains("upgrade"), "{err}");
        // A kind added later decodes as no op at all; with a format recorded, that is not a barrier.
        let unknown = v1::Command { format_version: 1, op: None, ..Default::default() };
        let err = refuse(&unknown);
        assert!(err.contains("does not know"), "{err}");
        assert!(reader.get("k").unwrap().is_none(), "nothing of a refused command is applied");
        // Barriers: the explicit no-op, and the op-less entries of releases before formats.
        assert!(apply(&db, 8, &v1::Command { format_version: 1, ..command(0, 0, Op::Noop(v1::Noop {})) }).index == 8);
        assert_eq!(apply(&db, 9, &v1::Command::default()).index, 9);
        // Format 1 and the unrecorded format 0 both apply.
        assert!(apply(&db, 10, &v1::Command { format_version: 1, ..command(0, 0, put("k", "v")) }).succeeded);
        assert!(reader.get("k").unwrap().is_some());
    }

    #[test]
    fn put_get_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_database(&dir.path().join("db")).unwrap();
        let reader = FsmReader::new(db.clone());
        assert!(apply(&db, 1, &command(0, 0, put("app/a", "1"))).succeeded);
        apply(&db, 2, &command(0, 0, put("app/b", "2")));
        apply(&db, 3, &command(0, 0, put("other", "3")));
        let updated = apply(&db, 4, &command(0, 0, put("app/a", "10")));
        assert_eq!(updated.previous.unwrap().value, b"1");
        let a = reader.get("app/a").unwrap().unwrap();
        assert_eq!((a.value.as_slice(), a.create_revision, a.mod_revision), (&b"10"[..], 1, 4));
        let (items, truncated) = reader.list("app/", 0).unwrap();
        assert_eq!(items.iter().map(|kv| kv.key.as_str()).collect::<Vec<_>>(), ["app/a", "app/b"]);
        assert!(!truncated);
        assert!(reader.list("app/", 1).unwrap().1);
        let deleted = apply(&db, 5, &command(0, 0, Op::Delete(v1::KvDelete { key: "app/a".into() })));
        assert!(deleted.succeeded);
        assert!(reader.get("app/a").unwrap().is_none());
        assert!(!apply(&db, 6, &command(0, 0, Op::Delete(v1::KvDelete { key: "app/a".into() }))).succeeded);
    }

    #[test]
    fn compare_and_swap_checks_current_value() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_database(&dir.path().join("db")).unwrap();
        let cas = |expected: &str, absent: bool, new: &str| {
            Op::Cas(v1::KvCompareAndSwap {
                key: "k".into(),
                expected: expected.as_bytes().to_vec(),
                expect_absent: absent,
                new_value: new.as_bytes().to_vec(),
                expected_mod_revision: None,
            })
        };
        assert!(apply(&db, 1, &command(0, 0, cas("", true, "a"))).succeeded);
        assert!(!apply(&db, 2, &command(0, 0, cas("", true, "b"))).succeeded);
        assert!(!apply(&db, 3, &command(0, 0, cas("x", false, "b"))).succeeded);
        assert!(apply(&db, 4, &command(0, 0, cas("a", false, "b"))).succeeded);
        assert_eq!(FsmReader::new(db).get("k").unwrap().unwrap().value, b"b");
    }

    #[test]
    fn a_batch_applies_each_command_as_its_own_entry_would() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_database(&dir.path().join("db")).unwrap();
        let reader = FsmReader::new(db.clone());
        apply(&db, 1, &command(7, 1, put("k", "v1")));
        let batch = |commands: Vec<v1::Command>| command(0, 0, Op::Batch(v1::CommandBatch { commands }));
        let result = apply(
            &db,
            2,
            &batch(vec![
                command(7, 1, put("k", "retried")),
                command(8, 1, put("a", "1")),
                command(0, 0, Op::Delete(v1::KvDelete { key: "missing".into() })),
                batch(vec![command(0, 0, put("nested", "x"))]),
                command(9, 1, put("k", "v2")),
            ]),
        );
        assert!(result.succeeded);
        let results = &result.results;
        assert_eq!(results.len(), 5, "one result per command, in order");
        assert!(results[0].deduplicated && results[0].index == 1, "a retry inside a batch applies once");
        assert!(results[1].succeeded && !results[1].deduplicated && results[1].index == 2);
        assert!(!results[2].succeeded, "a delete of nothing fails alone");
        assert!(results[3].error.contains("may not hold a batch"), "{:?}", results[3]);
        assert!(reader.get("nested").unwrap().is_none());
        assert_eq!(results[4].previous.as_ref().unwrap().value, b"v1", "later commands see earlier ones");
        assert_eq!(reader.get("k").unwrap().unwrap().value, b"v2");
        assert_eq!(reader.get("a").unwrap().unwrap().mod_revision, 2, "every command takes the entry's index");
        // Each command's session is kept: a retry of one outside the batch applies nothing.
        assert!(apply(&db, 3, &command(8, 1, put("a", "again"))).deduplicated);
    }

    #[test]
    fn retried_write_applies_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_database(&dir.path().join("db")).unwrap();
        let first = apply(&db, 1, &command(7, 1, put("k", "v1")));
        assert!(!first.deduplicated);
        apply(&db, 2, &command(8, 1, put("k", "other")));
        let retry = apply(&db, 3, &command(7, 1, put("k", "v1")));
        assert!(retry.deduplicated);
        assert_eq!(retry.index, 1);
        assert_eq!(FsmReader::new(db.clone()).get("k").unwrap().unwrap().value, b"other");
        assert!(!apply(&db, 4, &command(7, 2, put("k", "v2"))).deduplicated);
    }
}
