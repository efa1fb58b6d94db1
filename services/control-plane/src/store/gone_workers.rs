//! Finding the workers garbage collection may remove, without decoding whole records: a scan
//! of the workers table that reads each record's id, state and time of its last state change.

use std::io;

use redb::{ReadableDatabase, ReadableTable};

use super::db::{WORKERS, decode, io_err};
use super::fsm::FsmReader;
use super::workers::is_gone;

/// `v1::WorkerRecord` with only the fields collection looks at; prost skips the rest.
#[derive(Clone, PartialEq, prost::Message)]
struct Standing {
    #[prost(uint64, tag = "1")]
    worker_id: u64,
    #[prost(int32, tag = "4")]
    state: i32,
    #[prost(int64, tag = "8")]
    state_changed_at_unix: i64,
}

impl FsmReader {
    /// Up to `limit` workers that are gone (left, revoked, unreachable) and have been since
    /// `changed_before_unix` or earlier, the longest gone first.
    pub fn gone_workers(&self, changed_before_unix: i64, limit: usize) -> io::Result<Vec<u64>> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let mut gone = Vec::new();
        for item in txn.open_table(WORKERS).map_err(io_err)?.iter().map_err(io_err)? {
            let (_, value) = item.map_err(io_err)?;
            let worker: Standing = decode(value.value(), "worker")?;
            if is_gone(worker.state) && worker.state_changed_at_unix <= changed_before_unix {
                gone.push((worker.state_changed_at_unix, worker.worker_id));
            }
        }
        gone.sort_unstable();
        Ok(gone.into_iter().take(limit).map(|(_, id)| id).collect())
    }
}

#[cfg(test)]
mod tests {
    use muster_proto::v1;
    use prost::Message;

    use super::*;
    use crate::store::open_database;

    #[test]
    fn only_gone_workers_past_the_threshold_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_database(&dir.path().join("db")).unwrap();
        use v1::WorkerState::*;
        let workers =
            [(1, Ready, 10), (2, Left, 50), (3, Revoked, 20), (4, Unreachable, 30), (5, Draining, 5), (6, Left, 200)];
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(WORKERS).unwrap();
            for (worker_id, state, changed) in workers {
                let record = v1::WorkerRecord {
                    worker_id,
                    state: state as i32,
                    state_changed_at_unix: changed,
                    name: "w".into(),
                    ..Default::default()
                };
                table.insert(worker_id, record.encode_to_vec().as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
        let reader = FsmReader::new(db);
        assert_eq!(reader.gone_workers(100, 10).unwrap(), [3, 4, 2], "live and recent ones stay");
        assert_eq!(reader.gone_workers(100, 2).unwrap(), [3, 4], "the longest gone first");
    }
}
