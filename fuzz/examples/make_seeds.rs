//! Writes the seed corpora under `fuzz/seeds/<target>/`: a handful of small valid inputs per
//! target, in the shapes the targets read (see `src/lib.rs`). Run from `fuzz/` with
//! `cargo run --example make_seeds --target-dir ../target` after changing an input format
//! (stable is enough, and the workspace's target directory already holds most of the build);
//! the output is committed, and deterministic except for fresh keys and token secrets.

use std::collections::HashMap;
use std::path::Path;

use muster_fuzz::{CONFIG_AS_ENV, CSR_DER, CSR_PEM, Output};
use muster_proto::v1;
use prost::Message;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn token_seeds() {
    let spec = muster_token::TokenSpec { ttl_seconds: 3600, uses: 3, ..Default::default() };
    let issued = muster_token::generate(&spec, "c0ffee", &[7; 32], 1_800_000_000);
    write("token_decode", "valid", issued.token.as_bytes());
    write("token_decode", "valid-in-a-file", format!("  {}\n", issued.token).as_bytes());
    let old = v1::BootstrapToken { version: 9, token_id: "x".into(), secret: vec![1; 32], ..Default::default() };
    write("token_decode", "other-version", muster_token::encode(&old).as_bytes());
}

fn config_seeds() {
    let control_plane = r#"data_dir = "/var/lib/muster"
[cluster]
mode = "raft"
node_id = 1
peers = [{ id = 1, raft_addr = "10.0.0.1:3668", api_addr = "10.0.0.1:3669" },
         { id = 2, raft_addr = "10.0.0.2:3668", api_addr = "10.0.0.2:3669" }]
[tls]
insecure = true
[raft]
heartbeat_interval = "50ms"
election_timeout_min = "500ms"
election_timeout_max = "1s"
"#;
    let registrar = r#"worker_grpc_addr = "0.0.0.0:3670"
control_plane = ["10.0.0.1:3669", "10.0.0.2:3669"]
worker_cert_validity = "24h"
register_per_second = 5.0
register_burst = 20
[tls]
insecure = true
"#;
    let gateway = r#"listen_addr = "0.0.0.0:3671"
control_plane = ["10.0.0.1:3669"]
[tls]
insecure = true
"#;
    let worker = r#"data_dir = "/var/lib/muster"
gateways = ["gateway.example:3671"]
[cluster]
mode = "worker-tier"
role = "worker"
servers = ["registrar.example:3670"]
token_file = "/etc/muster/token"
labels = { rack = "r7" }
"#;
    let env = "MUSTER_DATA_DIR=/d\nMUSTER_CLUSTER__MODE=raft\nMUSTER_CLUSTER__NODE_ID=3\n\
               MUSTER_CLUSTER__PEERS=[{id=3,raft_addr=\"a:1\"}]\nMUSTER_RAFT__HEARTBEAT_INTERVAL=50ms\n";
    for (n, (name, text)) in
        [("control-plane", control_plane), ("registrar", registrar), ("gateway", gateway), ("worker", worker)]
            .into_iter()
            .enumerate()
    {
        write("config_parse", name, &Output::default().u8(n as u8).bytes(text.as_bytes()).0);
    }
    write("config_parse", "control-plane-env", &Output::default().u8(CONFIG_AS_ENV).bytes(env.as_bytes()).0);
}

fn csr_seeds() {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr =
        rcgen::CertificateParams::new(vec!["worker.example".to_string()]).unwrap().serialize_request(&key).unwrap();
    write("csr_sign", "pem", &Output::default().u8(CSR_PEM).u64(42).bytes(csr.pem().unwrap().as_bytes()).0);
    write("csr_sign", "der", &Output::default().u8(CSR_DER).u64(7).bytes(csr.der()).0);
}

fn entry(index: u64, payload: v1::entry::Payload) -> v1::Entry {
    v1::Entry {
        log_id: Some(v1::LogId { leader_id: Some(v1::LeaderId { term: 2, node_id: 1 }), index }),
        payload: Some(payload),
    }
}

fn put(key: &str, value: &[u8]) -> v1::Command {
    let op = v1::command::Op::Put(v1::KvPut { key: key.into(), value: value.to_vec() });
    v1::Command { client_id: 9, sequence: 1, op: Some(op), ..Default::default() }
}

/// WAL records for `entries`: `[len u32 LE][crc32 u32 LE][payload]` each.
fn segment(entries: &[v1::Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in entries {
        let payload = entry.encode_to_vec();
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        out.extend_from_slice(&payload);
    }
    out
}

fn wal_seeds() {
    let blank = |index| entry(index, v1::entry::Payload::Blank(v1::Blank {}));
    let normal = |index| entry(index, v1::entry::Payload::Normal(put("k", b"v")));
    let membership = v1::Membership {
        configs: vec![v1::NodeIdSet { node_ids: vec![1, 2, 3] }],
        nodes: (1..=3)
            .map(|id| {
                (id, v1::NodeAddr { raft_addr: format!("10.0.0.{id}:3668"), api_addr: format!("10.0.0.{id}:3669") })
            })
            .collect(),
    };
    let one = segment(&[blank(1), entry(2, v1::entry::Payload::Membership(membership)), normal(3)]);
    write("wal_recovery", "one-segment", &Output::default().u32(0).u64(1).frame(&one).0);
    let torn = &one[..one.len() - 5];
    write("wal_recovery", "torn-tail", &Output::default().u32(0).u64(1).frame(torn).0);
    let two = segment(&[normal(4), normal(5)]);
    write("wal_recovery", "two-segments", &Output::default().u32(0).u64(1).frame(&one).u64(4).frame(&two).0);
    write("wal_recovery", "purged", &Output::default().u32(3).u64(1).frame(&one).u64(4).frame(&two).0);
    write("wal_recovery", "purged-all", &Output::default().u32(9).u64(1).frame(&one).u64(10).frame(&[]).0);
}

fn record(record: v1::snapshot_record::Record) -> v1::SnapshotRecord {
    v1::SnapshotRecord { record: Some(record) }
}

fn token_record() -> v1::TokenRecord {
    v1::TokenRecord {
        token_id: "0123456789abcdef".into(),
        secret_sha256: vec![5; 32],
        created_at_unix: 100,
        expires_at_unix: 100_000,
        remaining_uses: 2,
        total_uses: 3,
        labels: HashMap::from([("rack".to_string(), "r1".to_string())]),
        ..Default::default()
    }
}

fn worker_record() -> v1::WorkerRecord {
    v1::WorkerRecord {
        worker_id: 1,
        name: "worker-1".into(),
        state: v1::WorkerState::Ready as i32,
        token_id: "0123456789abcdef".into(),
        registered_at_unix: 100,
        cert_serial: "00aa".into(),
        cert_expires_at_unix: 200,
        ..Default::default()
    }
}

fn snapshot_seeds() {
    use v1::snapshot_record::Record;
    let mut body = b"MUSTER-SNAPSHOT 1\n".to_vec();
    let kv =
        v1::KeyValue {
            key: "k".into(),
            value: b"v".to_vec(),
            create_revision: 3,
            mod_revision: 5,
            written_by: None,
            ..Default::default()
        };
    let session = v1::ClientSession {
        client_id: 9,
        sequence: 4,
        result: Some(v1::CommandResult { index: 5, succeeded: true, ..Default::default() }),
        last_index: 5,
    };
    let ca = v1::InitWorkerCa { cert_pem: "cert".into(), sha256: "ab".into(), ..Default::default() };
    for item in [
        record(Record::ClusterId("c0ffee".into())),
        record(Record::WorkerCa(ca)),
        record(Record::NextWorkerId(2)),
        record(Record::Kv(kv)),
        record(Record::Session(session)),
        record(Record::Token(token_record())),
        record(Record::Worker(worker_record())),
    ] {
        body.extend_from_slice(&item.encode_length_delimited_to_vec());
    }
    let meta = v1::SnapshotMeta {
        last_log_id: Some(v1::LogId { leader_id: Some(v1::LeaderId { term: 2, node_id: 1 }), index: 5 }),
        last_membership: None,
        snapshot_id: "2-1-5-1700000000000".into(),
    };
    let (head, tail) = body.split_at(body.len() / 2);
    let first = v1::SnapshotChunk {
        vote: Some(v1::Vote { leader_id: Some(v1::LeaderId { term: 2, node_id: 1 }), committed: true }),
        meta: Some(meta),
        offset: 0,
        data: head.to_vec(),
        crc32: crc32fast::hash(head),
        ..Default::default()
    };
    let last = v1::SnapshotChunk {
        offset: head.len() as u64,
        data: tail.to_vec(),
        crc32: crc32fast::hash(tail),
        done: true,
        total_size: body.len() as u64,
        ..Default::default()
    };
    let two = Output::default().frame(&first.encode_to_vec()).frame(&last.encode_to_vec());
    write("snapshot_stream", "two-chunks", &two.0);
    let whole = v1::SnapshotChunk { data: body.clone(), done: true, ..first };
    write("snapshot_stream", "one-chunk", &Output::default().frame(&whole.encode_to_vec()).0);
}

fn commands() -> Vec<v1::Command> {
    use v1::command::Op;
    let command = |client_id: u64, op| v1::Command { client_id, sequence: 1, op: Some(op), ..Default::default() };
    let token = token_record();
    vec![
        command(0, Op::InitCluster(v1::InitCluster { cluster_id: "c0ffee".into() })),
        put("k", b"v"),
        command(
            10,
            Op::Cas(v1::KvCompareAndSwap {
                key: "k".into(),
                expected: b"v".to_vec(),
                new_value: b"w".to_vec(),
                ..Default::default()
            }),
        ),
        command(11, Op::Delete(v1::KvDelete { key: "k".into(), ..Default::default() })),
        command(0, Op::CreateToken(v1::CreateToken { record: Some(token.clone()) })),
        command(
            12,
            Op::RegisterWorker(v1::RegisterWorker {
                token_id: token.token_id.clone(),
                secret_sha256: token.secret_sha256.clone(),
                token_cluster_id: "c0ffee".into(),
                now_unix: 200,
                profile: Some(v1::WorkerProfile { hostname: "w1".into(), ..Default::default() }),
                replaces_worker_id: 0,
            }),
        ),
        command(0, Op::InitWorkerCa(v1::InitWorkerCa { cert_pem: "cert".into(), ..Default::default() })),
        command(
            0,
            Op::RecordWorkerCert(v1::RecordWorkerCert {
                worker_id: 1,
                serial: "00aa".into(),
                expires_at_unix: 300,
                presented_serial: String::new(),
            }),
        ),
        command(
            0,
            Op::WorkerTransitions(v1::WorkerTransitions {
                term: 2,
                now_unix: 250,
                transitions: vec![v1::WorkerTransition {
                    worker_id: 1,
                    to: v1::WorkerState::Unreachable as i32,
                    from: vec![v1::WorkerState::Ready as i32],
                    ..Default::default()
                }],
            }),
        ),
        command(
            0,
            Op::UpdateWorker(v1::UpdateWorker {
                worker_id: 1,
                change: Some(v1::update_worker::Change::State(v1::WorkerState::Draining as i32)),
                now_unix: 260,
            }),
        ),
        command(0, Op::RevokeToken(v1::RevokeToken { token_id: token.token_id.clone(), ..Default::default() })),
    ]
}

fn fsm_seeds() {
    let all = commands().iter().fold(Output::default().u8(2), |out, c| out.frame(&c.encode_to_vec()));
    write("fsm_apply", "every-op", &all.0);
    for (n, command) in commands().iter().enumerate() {
        write("fsm_apply", &format!("op-{n:02}"), &Output::default().u8(2).frame(&command.encode_to_vec()).0);
    }
}

fn proto_seeds() {
    let log_id = |index| v1::LogId { leader_id: Some(v1::LeaderId { term: 2, node_id: 1 }), index };
    let vote = v1::Vote { leader_id: Some(v1::LeaderId { term: 2, node_id: 1 }), committed: true };
    let normal = entry(3, v1::entry::Payload::Normal(put("k", b"v")));
    let messages: Vec<(u8, Vec<u8>)> = vec![
        (0, put("k", b"v").encode_to_vec()),
        (1, normal.encode_to_vec()),
        (
            2,
            v1::AppendEntriesRequest {
                vote: Some(vote),
                prev_log_id: Some(log_id(2)),
                entries: vec![normal.clone()],
                leader_commit: Some(log_id(2)),
            }
            .encode_to_vec(),
        ),
        (4, v1::VoteRequest { vote: Some(vote), last_log_id: Some(log_id(3)) }.encode_to_vec()),
        (9, v1::RegisterRequest { token: "t".into(), csr_pem: "csr".into(), profile: None, ..Default::default() }.encode_to_vec()),
    ];
    for (kind, bytes) in messages {
        write("proto_decode", &format!("kind-{kind:02}"), &Output::default().u8(kind).bytes(&bytes).0);
    }
}

fn main() {
    token_seeds();
    config_seeds();
    csr_seeds();
    wal_seeds();
    snapshot_seeds();
    fsm_seeds();
    proto_seeds();
}
