//! `SnapshotService`: receiving a pushed snapshot (verify every chunk, then install),
//! serving a pulled one, and log compaction on request.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use muster_middleware::ApiError;
use muster_proto::v1;
use muster_proto::v1::snapshot_service_server::SnapshotService;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tonic::{Request, Response, Status, Streaming};

use crate::convert::{opt_log_id_to_pb, snapshot_meta_from_pb, vote_from_pb, vote_to_pb};
use crate::network::chunk_snapshot;
use crate::node::NodeHandle;
use crate::store::SnapshotFile;
use crate::types::Snapshot;

#[derive(Clone)]
pub struct SnapshotApi {
    node: Arc<NodeHandle>,
}

impl SnapshotApi {
    pub fn new(node: Arc<NodeHandle>) -> Self {
        Self { node }
    }
}

fn corrupt(message: String) -> Status {
    tracing::warn!(%message, "rejected incoming snapshot");
    ApiError::DataLoss(message).into()
}

fn invalid(message: impl Into<String>) -> Status {
    ApiError::InvalidArgument(message.into()).into()
}

/// Assembles pushed chunks into a file, checking order, per-chunk CRC32 and the final SHA-256.
async fn receive_chunks(
    mut stream: Streaming<v1::SnapshotChunk>,
    dir: &std::path::Path,
) -> Result<(v1::Vote, v1::SnapshotMeta, SnapshotFile), Status> {
    let first = stream.message().await?.ok_or_else(|| invalid("empty snapshot stream"))?;
    let meta = first.meta.clone().ok_or_else(|| invalid("first snapshot chunk lacks `meta`"))?;
    let vote = first.vote.ok_or_else(|| invalid("first snapshot chunk lacks `vote`"))?;
    if meta.snapshot_id.is_empty() || meta.snapshot_id.contains(['/', '\\']) || meta.snapshot_id.starts_with('.') {
        return Err(invalid(format!("invalid snapshot id {:?}", meta.snapshot_id)));
    }
    crate::data_dir::create_private_dir(dir).map_err(|e| ApiError::Internal(e.to_string()))?;
    let file = SnapshotFile::in_dir(dir, &meta.snapshot_id);
    let mut out = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(crate::data_dir::FILE_MODE)
        .open(&file.path)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut hasher = Sha256::new();
    let mut expected_offset = 0u64;
    let mut chunk = Some(first);
    while let Some(current) = chunk {
        if current.offset != expected_offset {
            return Err(corrupt(format!("snapshot chunk at offset {} but expected {expected_offset}", current.offset)));
        }
        if crc32fast::hash(&current.data) != current.crc32 {
            return Err(corrupt(format!("snapshot chunk at offset {} failed its CRC32 check", current.offset)));
        }
        out.write_all(&current.data).await.map_err(|e| ApiError::Internal(e.to_string()))?;
        hasher.update(&current.data);
        expected_offset += current.data.len() as u64;
        if current.done {
            if hasher.clone().finalize().as_slice() != current.sha256.as_slice() {
                return Err(corrupt("snapshot failed its SHA-256 check".to_string()));
            }
            out.sync_all().await.map_err(|e| ApiError::Internal(e.to_string()))?;
            return Ok((vote, meta, file));
        }
        chunk = stream.message().await?;
    }
    Err(corrupt(format!("snapshot stream ended after {expected_offset} bytes without a final chunk")))
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<v1::SnapshotChunk, Status>> + Send>>;

#[tonic::async_trait]
impl SnapshotService for SnapshotApi {
    async fn install_snapshot(
        &self,
        request: Request<Streaming<v1::SnapshotChunk>>,
    ) -> Result<Response<v1::SnapshotResponse>, Status> {
        let dir = self.node.state_machine.incoming_dir();
        let (vote, meta, file) = receive_chunks(request.into_inner(), &dir).await?;
        let vote = vote_from_pb(Some(vote), "SnapshotChunk")?;
        let meta = snapshot_meta_from_pb(meta)?;
        let path = file.path.clone();
        let response = self.node.raft.install_full_snapshot(vote, Snapshot { meta, snapshot: file }).await;
        // Installed snapshots are moved out of `incoming`; anything left is a rejected one.
        let _ = tokio::fs::remove_file(&path).await;
        let response = response.map_err(|err| ApiError::Unavailable(format!("raft node stopped: {err}")))?;
        Ok(Response::new(v1::SnapshotResponse { vote: Some(vote_to_pb(&response.vote)) }))
    }

    type StreamSnapshotStream = ChunkStream;

    async fn stream_snapshot(
        &self,
        request: Request<Streaming<v1::SnapshotAck>>,
    ) -> Result<Response<Self::StreamSnapshotStream>, Status> {
        let snapshot =
            self.node.raft.get_snapshot().await.map_err(|err| ApiError::Unavailable(err.to_string()))?.ok_or_else(
                || ApiError::NotFound("this node has no snapshot yet; call PurgeLog with snapshot_first".into()),
            )?;
        let vote = self.node.metrics().vote;
        let chunk_bytes = self.node.config.raft.snapshot_chunk_bytes;
        let mut acks = request.into_inner();
        let mut chunks = Box::pin(chunk_snapshot(&snapshot, Some(&vote), chunk_bytes));
        // Flow control: one chunk per acknowledgement; the first ack starts the transfer.
        let stream = async_stream_like(move |tx| async move {
            let mut expected = 0u64;
            while let Some(ack) = acks.next().await {
                let ack = match ack {
                    Ok(ack) => ack,
                    Err(status) => return tx.send(Err(status)).await.unwrap_or(()),
                };
                if ack.next_offset != expected {
                    let status = ApiError::OutOfRange(format!(
                        "acknowledged offset {} but the next chunk starts at {expected}; restart the transfer",
                        ack.next_offset
                    ));
                    return tx.send(Err(status.into())).await.unwrap_or(());
                }
                match chunks.next().await {
                    Some(Ok(chunk)) => {
                        expected = chunk.offset + chunk.data.len() as u64;
                        let done = chunk.done;
                        if tx.send(Ok(chunk)).await.is_err() || done {
                            return;
                        }
                    }
                    Some(Err(err)) => {
                        return tx.send(Err(ApiError::Internal(err.to_string()).into())).await.unwrap_or(());
                    }
                    None => return,
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn purge_log(&self, request: Request<v1::PurgeLogRequest>) -> Result<Response<v1::PurgeLogResponse>, Status> {
        let request = request.into_inner();
        let raft = &self.node.raft;
        let fatal = |err: openraft::errors::Fatal<_>| ApiError::Unavailable(format!("raft node stopped: {err}"));
        let upto = if request.snapshot_first {
            let applied = self.node.metrics().last_applied.map_or(0, |l| l.index);
            raft.trigger().snapshot().await.map_err(fatal)?;
            let wait = raft.wait(Some(Duration::from_secs(60)));
            let metrics = wait
                .metrics(|m| m.snapshot.as_ref().is_some_and(|s| s.index >= applied), "snapshot built")
                .await
                .map_err(|err| ApiError::DeadlineExceeded(format!("waiting for the snapshot: {err}")))?;
            metrics.snapshot.map_or(0, |s| s.index)
        } else {
            request.upto
        };
        let snapshot_index = self.node.metrics().snapshot.map_or(0, |s| s.index);
        if upto > snapshot_index {
            return Err(ApiError::FailedPrecondition(format!(
                "cannot purge up to {upto}: the latest snapshot covers only up to {snapshot_index}; \
                 set snapshot_first to build one"
            ))
            .into());
        }
        if upto == 0 {
            let metrics = self.node.metrics();
            return Ok(Response::new(v1::PurgeLogResponse {
                snapshot: opt_log_id_to_pb(&metrics.snapshot),
                purged: opt_log_id_to_pb(&metrics.purged),
            }));
        }
        raft.trigger().purge_log(upto).await.map_err(fatal)?;
        let metrics = raft
            .wait(Some(Duration::from_secs(30)))
            .metrics(|m| m.purged.as_ref().is_some_and(|p| p.index >= upto), "log purged")
            .await
            .map_err(|err| ApiError::DeadlineExceeded(format!("waiting for the purge: {err}")))?;
        Ok(Response::new(v1::PurgeLogResponse {
            snapshot: opt_log_id_to_pb(&metrics.snapshot),
            purged: opt_log_id_to_pb(&metrics.purged),
        }))
    }
}

/// A response stream fed by a spawned task through a bounded channel.
fn async_stream_like<F, Fut>(producer: F) -> ChunkStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<v1::SnapshotChunk, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::spawn(producer(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
