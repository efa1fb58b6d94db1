//! Learner-driven snapshot transfer: `SnapshotService.StreamSnapshot` hands out the node's
//! current snapshot one acknowledged chunk at a time, each chunk CRC32-checked and the whole
//! SHA-256-checked; an acknowledgement for the wrong offset is refused.

use std::time::Duration;

use muster_e2e::kv::put_many;
use muster_e2e::v1::snapshot_service_client::SnapshotServiceClient;
use muster_e2e::{Cluster, Options, v1};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread")]
async fn a_learner_pulls_the_snapshot_chunk_by_chunk() {
    let options = Options { snapshot_chunk_bytes: Some(1024), ..Options::default() };
    let cluster = Cluster::start(1, options).await;
    put_many(&cluster.client(), "pull", 0..200).await.expect("writes");
    let mut snapshots = SnapshotServiceClient::new(cluster.raft_channel(1));
    snapshots.purge_log(v1::PurgeLogRequest { snapshot_first: true, upto: 0 }).await.expect("build a snapshot");

    let (acks, rx) = mpsc::channel(4);
    acks.send(v1::SnapshotAck { next_offset: 0, chunk_size: 0 }).await.unwrap();
    let mut chunks = snapshots.stream_snapshot(ReceiverStream::new(rx)).await.expect("StreamSnapshot").into_inner();
    let mut data = Vec::new();
    let mut meta = None;
    let mut count = 0;
    let sha256 = loop {
        let chunk = tokio::time::timeout(WAIT, chunks.message()).await.expect("chunk in time").expect("chunk");
        let chunk = chunk.expect("the stream ended before the final chunk");
        assert_eq!(chunk.offset, data.len() as u64, "chunks arrive in order");
        assert_eq!(crc32fast::hash(&chunk.data), chunk.crc32, "chunk at {} fails its CRC", chunk.offset);
        assert!(chunk.data.len() <= 1024, "chunk larger than snapshot_chunk_bytes");
        if count == 0 {
            meta = chunk.meta.clone();
            assert!(chunk.vote.is_some(), "the first chunk carries the leader's vote");
        }
        count += 1;
        data.extend_from_slice(&chunk.data);
        if chunk.done {
            break chunk.sha256;
        }
        acks.send(v1::SnapshotAck { next_offset: data.len() as u64, chunk_size: 0 }).await.unwrap();
    };
    assert!(count > 1, "a 200-key snapshot in 1 KiB chunks takes several chunks");
    assert_eq!(Sha256::digest(&data).as_slice(), sha256.as_slice(), "whole-snapshot SHA-256");
    assert!(data.starts_with(b"MUSTER-SNAPSHOT 1\n"), "not a Muster snapshot file");
    let meta = meta.expect("the first chunk carries the snapshot meta");
    assert!(meta.last_log_id.is_some_and(|id| id.index >= 200), "snapshot covers the writes: {meta:?}");

    // A wrong acknowledgement is refused, not answered with the wrong bytes.
    let (acks, rx) = mpsc::channel(4);
    acks.send(v1::SnapshotAck { next_offset: 0, chunk_size: 0 }).await.unwrap();
    acks.send(v1::SnapshotAck { next_offset: 12345, chunk_size: 0 }).await.unwrap();
    let mut chunks = snapshots.stream_snapshot(ReceiverStream::new(rx)).await.expect("StreamSnapshot").into_inner();
    chunks.message().await.expect("first chunk");
    let err = tokio::time::timeout(WAIT, chunks.message()).await.expect("answer in time").unwrap_err();
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err}");
}
