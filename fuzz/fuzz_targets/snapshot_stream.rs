//! A pushed snapshot, from the chunks on the wire to the installed state: each frame is a
//! `v1::SnapshotChunk`; the first one's meta and vote go through the same conversions as
//! `InstallSnapshot`'s, and the chunks' data, concatenated, is the file the receiver writes.
//! The file is then read and loaded into a fresh FSM database as an install does. Corrupt
//! input must be refused with an error; what loads must snapshot again to the same records
//! (a restored node hands on the state it was given).
//!
//! The chunk checks themselves (order, CRC32, SHA-256) live in the gRPC service
//! (`grpc/snapshot_service.rs`, `receive_chunks`) and are not reached from here.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use muster_control_plane::convert::{snapshot_meta_from_pb, vote_from_pb};
use muster_control_plane::store::fuzzing::{load_records, memory_database, write_snapshot};
use muster_control_plane::store::{FsmReader, read_snapshot_records};
use muster_fuzz::{Input, scratch_dir};
use muster_proto::v1;
use prost::Message;
use redb::Database;

/// One in-memory FSM database per step, reused across inputs: loading a snapshot replaces
/// every FSM table, as an install does, so no state carries over from one input to the next.
fn database(step: usize) -> Arc<Database> {
    static DBS: OnceLock<[Arc<Database>; 2]> = OnceLock::new();
    DBS.get_or_init(|| [memory_database().unwrap(), memory_database().unwrap()])[step].clone()
}

/// Loads `records` into a database and snapshots it back to records.
fn restore_and_snapshot(
    records: Vec<v1::SnapshotRecord>,
    step: usize,
    dir: &std::path::Path,
) -> Vec<v1::SnapshotRecord> {
    let db = database(step);
    let txn = db.begin_write().unwrap();
    load_records(&txn, records).expect("decoded records load");
    txn.commit().unwrap();
    let reader = FsmReader::new(db.clone());
    reader.list("", 0).expect("keys list");
    reader.tokens().expect("tokens list");
    reader.workers().expect("workers list");
    reader.worker_ca().expect("the worker CA reads");
    let file = write_snapshot(&db, dir).expect("a restored state snapshots");
    read_snapshot_records(&file.path).expect("a written snapshot reads back")
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mut body = Vec::new();
    let mut first = true;
    while let Some(frame) = input.frame() {
        let Ok(chunk) = v1::SnapshotChunk::decode(frame) else { return };
        if first {
            first = false;
            if let Some(meta) = chunk.meta {
                let _ = snapshot_meta_from_pb(meta);
            }
            let _ = vote_from_pb(chunk.vote, "SnapshotChunk");
        }
        body.extend_from_slice(&chunk.data);
    }
    let dir = scratch_dir();
    let path = dir.path().join("incoming.snap");
    std::fs::write(&path, &body).unwrap();
    let Ok(records) = read_snapshot_records(&path) else { return };

    let once = restore_and_snapshot(records, 0, &dir.path().join("a"));
    let twice = restore_and_snapshot(once.clone(), 1, &dir.path().join("b"));
    assert_eq!(once, twice, "a snapshot of a restored snapshot holds the same records");
});
