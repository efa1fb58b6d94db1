//! Client sessions: what makes a retried write apply once. Each session is the client's last
//! sequence number with that write's result (a retry is answered with it), and an age index
//! ordered by the log index of the session's last write picks the idlest session to forget
//! when there are too many.
//!
//! Nearly every KV write carries a session, so this is on the hot path of the apply: the two
//! tables are opened once per applied batch (by the first command with a session), and a
//! stored session is decoded whole only when its result is needed, for a retry; otherwise
//! only its sequence and position in the age index are read.

use std::io;

use muster_proto::v1;
use prost::Message;
use redb::{ReadableTable, ReadableTableMetadata, Table, WriteTransaction};

use super::db::{SESSION_AGE, SESSIONS, decode, io_err};

/// Most client sessions remembered; past this the session idle longest is forgotten (its
/// retries would then apply again). Part of the replicated logic: changing it is a format
/// change, since every replica must evict the same sessions.
pub(crate) const MAX_SESSIONS: u64 = 100_000;

/// The sessions table and its age index, open in one write transaction.
pub(crate) struct SessionTables<'txn> {
    sessions: Table<'txn, u64, &'static [u8]>,
    age: Table<'txn, (u64, u64), ()>,
}

/// The fields of a stored [`v1::ClientSession`] every write reads, decoded without its result.
#[derive(Clone, PartialEq, prost::Message)]
struct SessionPosition {
    #[prost(uint64, tag = "2")]
    sequence: u64,
    #[prost(uint64, tag = "4")]
    last_index: u64,
}

fn position(encoded: &[u8]) -> io::Result<SessionPosition> {
    decode(encoded, "client session")
}

impl<'txn> SessionTables<'txn> {
    pub(crate) fn open(txn: &'txn WriteTransaction) -> io::Result<Self> {
        Ok(Self {
            sessions: txn.open_table(SESSIONS).map_err(io_err)?,
            age: txn.open_table(SESSION_AGE).map_err(io_err)?,
        })
    }

    /// The answer to `command` if it is a retry of its client's last write (the original
    /// result) or of an earlier one (the index of the last); `None` for a new write.
    pub(crate) fn retry_answer(&self, command: &v1::Command) -> io::Result<Option<v1::CommandResult>> {
        let Some(stored) = self.sessions.get(command.client_id).map_err(io_err)? else { return Ok(None) };
        let seen = position(stored.value())?;
        if command.sequence > seen.sequence {
            return Ok(None);
        }
        let mut result = if command.sequence == seen.sequence {
            decode::<v1::ClientSession>(stored.value(), "client session")?.result.unwrap_or_default()
        } else {
            v1::CommandResult { index: seen.last_index, ..Default::default() }
        };
        result.deduplicated = true;
        Ok(Some(result))
    }

    /// Stores `session` and keeps the age index in step, evicting the idlest sessions while
    /// there are more than `max_sessions`. Deterministic: depends only on the log.
    pub(crate) fn record(&mut self, session: &v1::ClientSession, max_sessions: u64) -> io::Result<()> {
        let previous = self
            .sessions
            .insert(session.client_id, session.encode_to_vec().as_slice())
            .map_err(io_err)?
            .map(|v| position(v.value()))
            .transpose()?;
        if let Some(previous) = previous {
            self.age.remove((previous.last_index, session.client_id)).map_err(io_err)?;
        }
        self.age.insert((session.last_index, session.client_id), ()).map_err(io_err)?;
        while self.sessions.len().map_err(io_err)? > max_sessions {
            let Some((oldest, _)) = self.age.pop_first().map_err(io_err)? else { break };
            let (_, client_id) = oldest.value();
            self.sessions.remove(client_id).map_err(io_err)?;
        }
        Ok(())
    }

    /// Forgets every session (a snapshot install replaces them).
    pub(crate) fn clear(&mut self) -> io::Result<()> {
        self.sessions.retain(|_, _| false).map_err(io_err)?;
        self.age.retain(|_, _| false).map_err(io_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::open_database;

    fn session(client_id: u64, sequence: u64, last_index: u64) -> v1::ClientSession {
        let result = v1::CommandResult { index: last_index, succeeded: true, ..Default::default() };
        v1::ClientSession { client_id, sequence, result: Some(result), last_index }
    }

    /// Runs `check` on the session tables of a write transaction on a fresh database.
    fn with_tables(check: impl FnOnce(&mut SessionTables<'_>)) {
        let dir = tempfile::tempdir().unwrap();
        let db = open_database(&dir.path().join("db")).unwrap();
        let txn = db.begin_write().unwrap();
        check(&mut SessionTables::open(&txn).unwrap());
    }

    #[test]
    fn idlest_session_is_evicted_first() {
        with_tables(|tables| {
            for (index, client_id) in [(1, 10), (2, 20), (3, 10), (4, 30)] {
                tables.record(&session(client_id, index, index), 2).unwrap();
            }
            // Client 20 (last write at 2) is the idlest once client 10 wrote again at 3.
            assert!(tables.sessions.get(20).unwrap().is_none());
            assert!(tables.sessions.get(10).unwrap().is_some() && tables.sessions.get(30).unwrap().is_some());
            assert_eq!(tables.age.len().unwrap(), 2, "client 10's move left no stale age record");
        });
    }

    #[test]
    fn a_retry_is_answered_from_the_session_and_a_new_write_is_not() {
        with_tables(|tables| {
            tables.record(&session(7, 5, 40), 10).unwrap();
            let write = |sequence| v1::Command { client_id: 7, sequence, ..Default::default() };
            let same = tables.retry_answer(&write(5)).unwrap().unwrap();
            assert!(same.deduplicated && same.succeeded && same.index == 40, "the original result: {same:?}");
            let older = tables.retry_answer(&write(3)).unwrap().unwrap();
            assert!(older.deduplicated && !older.succeeded && older.index == 40, "the last write's index: {older:?}");
            assert_eq!(tables.retry_answer(&write(6)).unwrap(), None);
            assert_eq!(
                tables.retry_answer(&v1::Command { client_id: 8, sequence: 1, ..Default::default() }).unwrap(),
                None
            );
        });
    }
}
