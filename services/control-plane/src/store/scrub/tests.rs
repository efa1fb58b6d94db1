use std::time::Duration;

use muster_proto::v1;
use muster_tls::CertificateAuthority;
use prost::Message;

use super::*;
use crate::store::{FsmReader, open_database};

/// Every file under `dir` that holds `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else if std::fs::read(&path).unwrap().windows(needle.len()).any(|w| w == needle) {
            found.push(path.display().to_string());
        }
    }
    found
}

fn blank(index: u64) -> v1::Entry {
    v1::Entry {
        log_id: Some(v1::LogId { leader_id: Some(v1::LeaderId { term: 2, node_id: 1 }), index }),
        payload: Some(v1::entry::Payload::Blank(v1::Blank {})),
    }
}

#[test]
fn a_legacy_data_dir_keeps_no_copy_of_the_key_and_applies_the_same() {
    let legacy = CertificateAuthority::generate("legacy", Duration::from_secs(3600)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    {
        let mut wal = super::super::wal::Wal::open(&data.join("raft-log")).unwrap();
        wal.append(&[blank(1), blank(2)]).unwrap();
        open_database(&data.join("fsm.redb")).unwrap();
    }
    super::super::legacy_fixture::write_legacy_worker_ca(data, legacy.cert_pem(), legacy.key_pem()).unwrap();
    // A snapshot file the old release built, key included.
    let snapshots = data.join("snapshots");
    std::fs::create_dir_all(&snapshots).unwrap();
    let record = v1::SnapshotRecord {
        record: Some(v1::snapshot_record::Record::WorkerCa(v1::InitWorkerCa {
            cert_pem: legacy.cert_pem().into(),
            key_pem: legacy.key_pem().into(),
            ..Default::default()
        })),
    };
    let mut bytes = b"MUSTER-SNAPSHOT 1\n".to_vec();
    bytes.extend(record.encode_length_delimited_to_vec());
    std::fs::write(snapshots.join("1-1-1.snap"), bytes).unwrap();
    assert_eq!(files_holding(data, b"PRIVATE KEY").len(), 3, "log, FSM and snapshot hold the key");

    let report = scrub_worker_ca_key(data).unwrap();
    assert_eq!(report, ScrubReport { log_entries: 1, snapshots: 1, fsm_rebuilt: true });
    assert_eq!(files_holding(data, b"PRIVATE KEY"), Vec::<String>::new());
    let body = legacy.key_pem().lines().nth(1).unwrap().as_bytes();
    assert_eq!(files_holding(data, body), Vec::<String>::new(), "not even the key's base64");

    // The rewritten entry still says what it said: this CA, whose key was exposed.
    let wal = super::super::wal::Wal::open(&data.join("raft-log")).unwrap();
    let entry = wal.read(3..=3).unwrap().pop().unwrap();
    let Some(v1::entry::Payload::Normal(v1::Command { op: Some(v1::command::Op::InitWorkerCa(init)), .. })) =
        entry.payload
    else {
        panic!("not the legacy entry: {entry:?}")
    };
    assert_eq!((init.cert_pem.as_str(), init.key_pem.is_empty(), init.key_exposed), (legacy.cert_pem(), true, true));
    {
        let reader = FsmReader::new(open_database(&data.join("fsm.redb")).unwrap());
        let ca = reader.worker_ca().unwrap().unwrap();
        assert!(ca.key_exposed && ca.key_pem.is_empty());
    }
    let records = crate::store::read_snapshot_records(&snapshots.join("1-1-1.snap")).unwrap();
    assert!(matches!(&records[0].record, Some(v1::snapshot_record::Record::WorkerCa(ca)) if ca.key_exposed));

    assert_eq!(scrub_worker_ca_key(data).unwrap(), ScrubReport::default(), "nothing left on the next start");
}
