//! Leader-driven snapshot transfer: the snapshot file streamed as checksummed chunks over
//! `SnapshotService.InstallSnapshot`. The same chunking serves the learner-driven
//! `StreamSnapshot`, so both paths produce identical chunks.

use muster_middleware::TracedChannel;
use muster_proto::v1;
use muster_proto::v1::snapshot_service_client::SnapshotServiceClient;
use openraft::errors::{NetworkError, StreamingError, Unreachable};
use openraft::raft::SnapshotResponse;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::convert::{snapshot_meta_to_pb, vote_from_pb, vote_to_pb};
use crate::types::{NodeId, Snapshot, TypeConfig, Vote};

/// Reads a snapshot file and yields its chunks: meta (and vote) on the first, CRC32 on
/// each, SHA-256 of the whole on the last.
pub fn chunk_snapshot(
    snapshot: &Snapshot,
    vote: Option<&Vote>,
    chunk_bytes: usize,
) -> impl futures::Stream<Item = std::io::Result<v1::SnapshotChunk>> + Send + 'static {
    let path = snapshot.snapshot.path.clone();
    let meta = snapshot_meta_to_pb(&snapshot.meta, &snapshot.snapshot.id);
    let vote = vote.map(vote_to_pb);
    let chunk_bytes = chunk_bytes.max(1024);
    async_stream_chunks(path, meta, vote, chunk_bytes)
}

fn async_stream_chunks(
    path: std::path::PathBuf,
    meta: v1::SnapshotMeta,
    vote: Option<v1::Vote>,
    chunk_bytes: usize,
) -> impl futures::Stream<Item = std::io::Result<v1::SnapshotChunk>> + Send + 'static {
    struct State {
        file: Option<tokio::fs::File>,
        path: std::path::PathBuf,
        offset: u64,
        total: u64,
        hasher: Sha256,
        first: Option<(v1::SnapshotMeta, Option<v1::Vote>)>,
        finished: bool,
    }
    let state = State {
        file: None,
        path,
        offset: 0,
        total: 0,
        hasher: Sha256::new(),
        first: Some((meta, vote)),
        finished: false,
    };
    futures::stream::try_unfold(state, move |mut state| async move {
        if state.finished {
            return Ok(None);
        }
        if state.file.is_none() {
            let file = tokio::fs::File::open(&state.path).await?;
            state.total = file.metadata().await?.len();
            state.file = Some(file);
        }
        let mut data = vec![0u8; chunk_bytes];
        let mut filled = 0;
        if let Some(file) = state.file.as_mut() {
            while filled < chunk_bytes {
                let n = file.read(&mut data[filled..]).await?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
        }
        data.truncate(filled);
        state.hasher.update(&data);
        let offset = state.offset;
        state.offset += filled as u64;
        let done = state.offset >= state.total;
        let (meta, vote) = match state.first.take() {
            Some((meta, vote)) => (Some(meta), vote),
            None => (None, None),
        };
        let sha256 = if done { state.hasher.clone().finalize().to_vec() } else { Vec::new() };
        state.finished = done;
        let chunk = v1::SnapshotChunk {
            vote,
            meta,
            offset,
            crc32: crc32fast::hash(&data),
            data,
            done,
            sha256,
            total_size: state.total,
        };
        Ok(Some((chunk, state)))
    })
}

/// Pushes one snapshot to one peer.
pub struct SnapshotSender {
    pub channel: TracedChannel,
    pub chunk_bytes: usize,
    pub target: NodeId,
}

impl SnapshotSender {
    pub async fn send(
        self,
        vote: Vote,
        snapshot: Snapshot,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        use futures::StreamExt;
        tracing::info!(target_node = self.target, snapshot = %snapshot.snapshot.id, "sending snapshot");
        let chunks = chunk_snapshot(&snapshot, Some(&vote), self.chunk_bytes).filter_map(|chunk| async move {
            match chunk {
                Ok(chunk) => Some(chunk),
                Err(err) => {
                    // Ending the stream early makes the receiver reject the incomplete snapshot.
                    tracing::error!(error = %err, "reading snapshot file failed; aborting transfer");
                    None
                }
            }
        });
        let mut client = SnapshotServiceClient::new(self.channel).max_encoding_message_size(usize::MAX);
        let response = client.install_snapshot(chunks).await.map_err(|status| match status.code() {
            tonic::Code::Unavailable => StreamingError::Unreachable(Unreachable::new(&status)),
            _ => StreamingError::Network(NetworkError::new(&status)),
        })?;
        let vote = vote_from_pb(response.into_inner().vote, "SnapshotResponse")
            .map_err(|err| StreamingError::Network(NetworkError::new(&err)))?;
        Ok(SnapshotResponse::new(vote))
    }
}
