//! `MaintenanceService`: backups. `SaveSnapshot` first catches up with the leader's commit
//! index (the leader confirms its leadership with a quorum; a follower reads the leader's
//! commit index and applies up to it), so the snapshot holds every write acknowledged before
//! the call, then dumps the applied state machine into a snapshot (the same format a node
//! installs) and streams it after a header that says what it holds.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt as _};
use muster_middleware::ApiError;
use muster_proto::backup::{count_snapshot, snapshot_format};
use muster_proto::v1;
use muster_proto::v1::maintenance_service_server::MaintenanceService;
use tonic::{Request, Response, Status};

use crate::leadership::Leadership as _;
use crate::node::NodeHandle;

/// Snapshot bytes per stream message (well under every message limit).
const CHUNK_BYTES: usize = 1 << 20;

#[derive(Clone)]
pub struct MaintenanceApi {
    node: Arc<NodeHandle>,
    /// One backup at a time per node: each holds a whole snapshot in memory until its caller
    /// has read it, and they share the node's temporary snapshot directory.
    backups: Arc<tokio::sync::Semaphore>,
}

impl MaintenanceApi {
    pub fn new(node: Arc<NodeHandle>) -> Self {
        Self { node, backups: Arc::new(tokio::sync::Semaphore::new(1)) }
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<v1::SaveSnapshotChunk, Status>> + Send>>;

#[tonic::async_trait]
impl MaintenanceService for MaintenanceApi {
    type SaveSnapshotStream = ChunkStream;

    async fn save_snapshot(&self, _request: Request<v1::SaveSnapshotRequest>) -> Result<Response<ChunkStream>, Status> {
        // From the leader, as etcd and Consul take theirs (a follower answers with a hint).
        if !self.node.raft.is_leader() {
            return Err(self.node.not_leader().into());
        }
        let permit = self.backups.clone().try_acquire_owned().map_err(|_| {
            ApiError::ResourceExhausted(
                "a backup is already being taken on this node; try again once it has been read".into(),
            )
        })?;
        self.node.caught_up().await?;
        let dir = self.node.config.data_dir.join("backup.tmp");
        let (meta, snapshot) = self
            .node
            .state_machine
            .backup_snapshot(dir)
            .await
            .map_err(|err| ApiError::Internal(format!("writing the snapshot: {err}")))?;
        let counts = count_snapshot(&snapshot)
            .map_err(|err| ApiError::Internal(format!("the snapshot just written does not read back: {err}")))?;
        let header = v1::BackupHeader {
            format_version: muster_proto::backup::BACKUP_FORMAT_VERSION,
            snapshot_format: snapshot_format(&snapshot).unwrap_or_default(),
            cluster_id: self.node.reader.cluster_id().ok().flatten().unwrap_or_default(),
            revision: meta.last_log_id.map_or(0, |log_id| log_id.index),
            term: meta.last_log_id.map_or(0, |log_id| log_id.leader_id.term),
            node_id: self.node.id,
            created_at_unix: muster_proto::clock::unix_now(),
            snapshot_bytes: snapshot.len() as u64,
            snapshot_sha256: {
                use sha2::Digest;
                sha2::Sha256::digest(&snapshot).to_vec()
            },
            kv_keys: counts.kv_keys,
            workers: counts.workers,
            tokens: counts.tokens,
        };
        tracing::info!(revision = header.revision, bytes = snapshot.len(), "streaming a backup snapshot");
        let first = v1::SaveSnapshotChunk { header: Some(header), data: Vec::new() };
        let chunks: Vec<Result<v1::SaveSnapshotChunk, Status>> = std::iter::once(Ok(first))
            .chain(
                snapshot
                    .chunks(CHUNK_BYTES)
                    .map(|data| Ok(v1::SaveSnapshotChunk { header: None, data: data.to_vec() })),
            )
            .collect();
        // The permit goes with the stream: released once the caller has read it (or left).
        let stream = futures::stream::iter(chunks).map(move |chunk| {
            let _held = &permit;
            chunk
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
