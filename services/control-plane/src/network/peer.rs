//! One peer connection and the factory openraft asks for them.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use muster_middleware::{ChannelOptions, TracedChannel, lazy_channel};
use muster_proto::v1::raft_election_service_client::RaftElectionServiceClient;
use muster_proto::v1::raft_replication_service_client::RaftReplicationServiceClient;
use muster_tls::ClientTls;
use openraft::RaftNetworkFactory;
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkV2};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse};

use super::snapshot_push::SnapshotSender;
use crate::convert::{append_request_to_pb, append_response_from_pb, vote_request_to_pb, vote_response_from_pb};
use crate::store::SnapshotFile;
use crate::types::{NodeAddr, NodeId, Snapshot, TypeConfig, Vote};
use crate::write_batch::PeerFormats;

/// Peer calls traced at DEBUG: replication and elections run many times a second (and
/// the start-up health checks poll), so at `info` they are neither logged nor exported.
/// Snapshots and joins stay at INFO.
/// Connect bound and keepalive of the channels to peers: a peer behind a network cut is
/// noticed within two keepalives and reconnected to when it is back.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const KEEPALIVE: Duration = Duration::from_secs(2);

const QUIET_PATHS: &[&str] =
    &["/muster.v1.RaftReplicationService/", "/muster.v1.RaftElectionService/", "/grpc.health.v1.Health/"];

/// Channels to peers by Raft address, shared by every openraft replication task so a peer
/// has one HTTP/2 connection, not one per task. Each carries the client trace layer.
#[derive(Clone)]
pub struct PeerChannels {
    tls: Option<ClientTls>,
    max_message_bytes: usize,
    snapshot_chunk_bytes: usize,
    channels: Arc<Mutex<HashMap<String, TracedChannel>>>,
    /// The command format each peer says it applies (from its AppendEntries answers).
    pub formats: PeerFormats,
}

impl PeerChannels {
    pub fn new(tls: Option<ClientTls>, max_message_bytes: usize, snapshot_chunk_bytes: usize) -> Self {
        Self { tls, max_message_bytes, snapshot_chunk_bytes, channels: Arc::default(), formats: PeerFormats::default() }
    }

    /// The channel to `addr`, created (lazily connecting) on first use.
    pub fn channel(&self, addr: &str) -> Result<TracedChannel, tonic::transport::Error> {
        let mut channels = self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        // With TLS, the handshake (and the peer's role check) is ClientTls's.
        let options =
            ChannelOptions { connect_timeout: CONNECT_TIMEOUT, keepalive: KEEPALIVE, quiet_paths: QUIET_PATHS };
        let channel = lazy_channel(addr, self.tls.as_ref(), options)?;
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerChannels {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &NodeAddr) -> Self::Network {
        PeerClient { target, addr: node.raft_addr.clone(), channels: self.clone() }
    }
}

/// The RPC client openraft uses to talk to one peer.
pub struct PeerClient {
    target: NodeId,
    addr: String,
    channels: PeerChannels,
}

impl PeerClient {
    fn channel<E: std::error::Error>(&self) -> Result<TracedChannel, RPCError<TypeConfig, E>> {
        self.channels.channel(&self.addr).map_err(|err| RPCError::Unreachable(Unreachable::new(&err)))
    }
}

/// Transport failures mean "unreachable" (openraft backs off); anything else is a network error.
fn status_to_rpc_error<E: std::error::Error>(status: tonic::Status) -> RPCError<TypeConfig, E> {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown => RPCError::Unreachable(Unreachable::new(&status)),
        _ => RPCError::Network(NetworkError::new(&status)),
    }
}

fn with_deadline<T>(message: T, ttl: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(ttl);
    request
}

impl PeerClient {
    /// RequestVote or (with `pre_vote`) PreVote: same messages, different RPC.
    async fn send_vote(
        &self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
        pre_vote: bool,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let mut client = RaftElectionServiceClient::new(self.channel()?);
        let request = with_deadline(vote_request_to_pb(&rpc), option.hard_ttl());
        let response = if pre_vote { client.pre_vote(request).await } else { client.request_vote(request).await };
        let response = response.map_err(status_to_rpc_error)?;
        vote_response_from_pb(response.into_inner()).map_err(|err| RPCError::Network(NetworkError::new(&err)))
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotFile;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let mut client = RaftReplicationServiceClient::new(self.channel()?)
            .max_decoding_message_size(self.channels.max_message_bytes)
            .max_encoding_message_size(self.channels.max_message_bytes);
        let request = with_deadline(append_request_to_pb(&rpc), option.hard_ttl());
        let response = client.append_entries(request).await.map_err(status_to_rpc_error)?.into_inner();
        self.channels.formats.heard(self.target, response.command_format);
        append_response_from_pb(response).map_err(|err| RPCError::Network(NetworkError::new(&err)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.send_vote(rpc, option, false).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.send_vote(rpc, option, true).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let channel =
            self.channels.channel(&self.addr).map_err(|err| StreamingError::Unreachable(Unreachable::new(&err)))?;
        let sender = SnapshotSender { channel, chunk_bytes: self.channels.snapshot_chunk_bytes, target: self.target };
        tokio::select! {
            result = sender.send(vote, snapshot) => result,
            closed = cancel => Err(StreamingError::Closed(closed)),
        }
    }
}
