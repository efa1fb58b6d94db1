//! The worker fields the leader's lease table mirrors (state, certificate serials, eligibility,
//! drain), read for every worker when a term starts and every second while entries apply. A
//! worker's labels and profile are most of its record's bytes and the mirror uses neither, so
//! this read skips them: prost decodes only the tags below and steps over the rest without
//! allocating.

use std::io;

use muster_proto::v1;
use redb::{ReadableDatabase, ReadableTable};

use super::db::{WORKERS, decode, io_err};
use super::fsm::FsmReader;

/// `v1::WorkerRecord` with only the mirrored fields (same tags).
#[derive(Clone, PartialEq, prost::Message)]
struct Mirrored {
    #[prost(uint64, tag = "1")]
    worker_id: u64,
    #[prost(int32, tag = "4")]
    state: i32,
    #[prost(string, tag = "9")]
    cert_serial: String,
    #[prost(int32, tag = "11")]
    resume_state: i32,
    #[prost(string, tag = "12")]
    previous_cert_serial: String,
    #[prost(bool, tag = "14")]
    ineligible: bool,
    #[prost(message, optional, tag = "15")]
    drain: Option<v1::WorkerDrain>,
}

impl FsmReader {
    /// Every worker with only the fields the lease table mirrors set (the rest default).
    pub fn mirrored_workers(&self) -> io::Result<Vec<v1::WorkerRecord>> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let table = txn.open_table(WORKERS).map_err(io_err)?;
        let mut workers =
            Vec::with_capacity(usize::try_from(redb::ReadableTableMetadata::len(&table).map_err(io_err)?).unwrap_or(0));
        for item in table.iter().map_err(io_err)? {
            let (_, value) = item.map_err(io_err)?;
            let mirrored: Mirrored = decode(value.value(), "worker")?;
            workers.push(v1::WorkerRecord {
                worker_id: mirrored.worker_id,
                state: mirrored.state,
                cert_serial: mirrored.cert_serial,
                resume_state: mirrored.resume_state,
                previous_cert_serial: mirrored.previous_cert_serial,
                ineligible: mirrored.ineligible,
                drain: mirrored.drain,
                ..Default::default()
            });
        }
        Ok(workers)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use prost::Message;

    use super::*;
    use crate::store::open_database;

    fn record(worker_id: u64) -> v1::WorkerRecord {
        v1::WorkerRecord {
            worker_id,
            name: format!("worker-{worker_id}"),
            labels: (0..16).map(|i| (format!("label-{i}"), format!("value-{worker_id}-{i}"))).collect(),
            state: v1::WorkerState::Unreachable as i32,
            profile: Some(v1::WorkerProfile {
                hostname: format!("host-{worker_id}"),
                capacity: [("cpu_millis".to_string(), 4000)].into(),
                ..Default::default()
            }),
            cert_serial: format!("{worker_id:032x}"),
            previous_cert_serial: "0a".into(),
            resume_state: v1::WorkerState::Draining as i32,
            ineligible: true,
            drain: Some(v1::WorkerDrain { started_at_unix: 5, deadline_unix: 9, ..Default::default() }),
            ..Default::default()
        }
    }

    fn store(count: u64) -> (tempfile::TempDir, FsmReader) {
        let dir = tempfile::tempdir().unwrap();
        let db = open_database(&dir.path().join("db")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(WORKERS).unwrap();
            for id in 1..=count {
                table.insert(id, record(id).encode_to_vec().as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
        (dir, FsmReader::new(db))
    }

    #[test]
    fn the_mirror_reads_every_field_it_uses_and_nothing_else() {
        let (_dir, reader) = store(3);
        let mirrored = reader.mirrored_workers().unwrap();
        let full = record(2);
        let expected = v1::WorkerRecord {
            worker_id: 2,
            state: full.state,
            cert_serial: full.cert_serial.clone(),
            resume_state: full.resume_state,
            previous_cert_serial: full.previous_cert_serial.clone(),
            ineligible: true,
            drain: full.drain,
            ..Default::default()
        };
        assert_eq!(mirrored.len(), 3);
        assert_eq!(mirrored[1], expected);
        let fleet = crate::leases::table::FleetRead::from_records(mirrored);
        let from_full = crate::leases::table::FleetRead::from_records((1..=3).map(record));
        assert_eq!(fleet.states, from_full.states, "the mirror sees what whole records would show");
    }

    /// 10,000 workers with 16 labels each: prints the mirrored read beside the whole-record
    /// one (38 ms against 268 ms in a debug build). Timings are printed, never asserted.
    #[test]
    fn a_large_fleet_is_mirrored_without_decoding_labels() {
        let (_dir, reader) = store(10_000);
        let started = Instant::now();
        assert_eq!(reader.mirrored_workers().unwrap().len(), 10_000);
        let mirrored = started.elapsed();
        let started = Instant::now();
        assert_eq!(reader.workers().unwrap().len(), 10_000);
        println!("10,000 workers: mirrored read {mirrored:?}, whole records {:?}", started.elapsed());
    }
}
