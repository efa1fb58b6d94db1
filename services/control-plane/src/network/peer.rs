//! One peer connection and the factory openraft asks for them.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt as _};

use muster_middleware::{ChannelOptions, TracedChannel, lazy_channel};
use muster_proto::v1::raft_election_service_client::RaftElectionServiceClient;
use muster_proto::v1::raft_replication_service_client::RaftReplicationServiceClient;
use muster_tls::ClientTls;
use openraft::base::{BoxFuture, BoxStream};
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkV2, stream_append_sequential};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, RaftNetworkFactory};

use super::snapshot_push::SnapshotSender;
use crate::convert::{
    append_request_to_pb, append_response_from_pb, stream_append_result_from_pb, vote_request_to_pb,
    vote_response_from_pb,
};
use crate::store::SnapshotFile;
use crate::types::{NodeAddr, NodeId, Snapshot, TypeConfig, Vote};
use crate::write_batch::PeerFormats;
use crate::write_profile::{self, Hop};

/// Peer calls traced at DEBUG: replication and elections run many times a second (and
/// the start-up health checks poll), so at `info` they are neither logged nor exported.
/// Snapshots and joins stay at INFO.
/// Connect bound and keepalive of the channels to peers: a peer behind a network cut is
/// noticed within two keepalives and reconnected to when it is back.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const KEEPALIVE: Duration = Duration::from_secs(2);

/// How long a peer that answered StreamAppend with UNIMPLEMENTED is replicated to one
/// AppendEntries at a time before the stream is tried again (it may have been upgraded).
const STREAMS_RETRIED_AFTER: Duration = Duration::from_secs(60);

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
    /// Peers that answered StreamAppend with UNIMPLEMENTED (an older release), and when:
    /// replicated to one AppendEntries at a time for [`STREAMS_RETRIED_AFTER`].
    without_streams: Arc<Mutex<HashMap<NodeId, Instant>>>,
}

impl PeerChannels {
    pub fn new(tls: Option<ClientTls>, max_message_bytes: usize, snapshot_chunk_bytes: usize) -> Self {
        Self {
            tls,
            max_message_bytes,
            snapshot_chunk_bytes,
            channels: Arc::default(),
            formats: PeerFormats::default(),
            without_streams: Arc::default(),
        }
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
        let started = write_profile::start();
        let request = with_deadline(append_request_to_pb(&rpc), option.hard_ttl());
        let response = client.append_entries(request).await.map_err(status_to_rpc_error)?.into_inner();
        self.channels.formats.heard(self.target, response.command_format);
        let response = append_response_from_pb(response).map_err(|err| RPCError::Network(NetworkError::new(&err)));
        write_profile::record(Hop::Replicate, started, rpc.entries.len());
        response
    }

    /// Pipelined replication over one `StreamAppend` call: each request goes out as soon as
    /// openraft has it, and answers come back in order. While a request is unanswered for longer
    /// than `option.hard_ttl()` (what one AppendEntries may take), the stream fails as a network
    /// error would. A peer without the RPC gets one AppendEntries at a time for a while.
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>, RPCError<TypeConfig>>,
    >
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        let refused_at =
            self.channels.without_streams.lock().unwrap_or_else(|p| p.into_inner()).get(&self.target).copied();
        if refused_at.is_some_and(|at| at.elapsed() < STREAMS_RETRIED_AFTER) {
            return stream_append_sequential(self, input, option);
        }
        Box::pin(async move {
            let mut client = RaftReplicationServiceClient::new(self.channel()?)
                .max_decoding_message_size(self.channels.max_message_bytes)
                .max_encoding_message_size(self.channels.max_message_bytes);
            let in_flight = InFlight::default();
            let sent = in_flight.clone();
            let outbound = input.map(move |rpc| {
                sent.push(rpc.entries.len());
                append_request_to_pb(&rpc)
            });
            let answers = match client.stream_append(outbound).await {
                Ok(response) => response.into_inner(),
                Err(status) if status.code() == tonic::Code::Unimplemented => {
                    tracing::info!(
                        peer = self.target,
                        "peer has no pipelined replication (an older release); sending it one AppendEntries at a time"
                    );
                    let mut without = self.channels.without_streams.lock().unwrap_or_else(|p| p.into_inner());
                    without.insert(self.target, Instant::now());
                    return Err(RPCError::Network(NetworkError::new(&status)));
                }
                Err(status) => return Err(status_to_rpc_error(status)),
            };
            let answers = Answers {
                answers: Some(answers),
                in_flight,
                deadline: option.hard_ttl(),
                target: self.target,
                formats: self.channels.formats.clone(),
            };
            let answers: BoxStream<'s, _> = Box::pin(futures::stream::unfold(answers, Answers::next));
            Ok(answers)
        })
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

/// The requests sent on a `StreamAppend` call and not yet answered, oldest first: when each
/// was sent and how many entries it carried.
#[derive(Clone, Default)]
struct InFlight(Arc<Mutex<VecDeque<(Instant, usize)>>>);

impl InFlight {
    fn push(&self, entries: usize) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push_back((Instant::now(), entries));
    }

    fn oldest(&self) -> Option<Instant> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).front().map(|(sent, _)| *sent)
    }

    fn answered(&self) {
        if let Some((sent, entries)) = self.0.lock().unwrap_or_else(|p| p.into_inner()).pop_front() {
            write_profile::record(Hop::Replicate, write_profile::enabled().then_some(sent), entries);
        }
    }
}

/// The leader's end of the answers on one `StreamAppend` call.
struct Answers {
    /// `None` once the stream ended with an error.
    answers: Option<tonic::Streaming<muster_proto::v1::StreamAppendResponse>>,
    in_flight: InFlight,
    deadline: Duration,
    target: NodeId,
    formats: PeerFormats,
}

impl Answers {
    /// The next answer, in request order; an error ends the stream.
    async fn next(mut self) -> Option<(Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>, Self)> {
        let answers = self.answers.as_mut()?;
        let message = loop {
            // Wait for as long as the oldest unanswered request may still be answered; with
            // none in flight, look again after one deadline (a request may have gone out).
            let oldest = self.in_flight.oldest();
            let until = oldest.unwrap_or_else(Instant::now) + self.deadline;
            match tokio::time::timeout_at(until.into(), answers.message()).await {
                Ok(message) => break message,
                Err(_) if oldest.is_some() => {
                    let late = std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no answer to a pipelined AppendEntries within {:?}", self.deadline),
                    );
                    self.answers = None;
                    return Some((Err(RPCError::Network(NetworkError::new(&late))), self));
                }
                Err(_) => continue,
            }
        };
        let answer = match message {
            Ok(Some(answer)) => answer,
            Ok(None) => return None,
            Err(status) => {
                self.answers = None;
                return Some((Err(status_to_rpc_error(status)), self));
            }
        };
        self.in_flight.answered();
        self.formats.heard(self.target, answer.command_format);
        match stream_append_result_from_pb(answer) {
            Ok(result) => Some((Ok(result), self)),
            Err(err) => {
                self.answers = None;
                Some((Err(RPCError::Network(NetworkError::new(&err))), self))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer on a release without `StreamAppend` answers UNIMPLEMENTED: the first stream
    /// fails as a network error would (openraft retries), and from then on that peer gets one
    /// AppendEntries at a time.
    #[tokio::test]
    async fn a_peer_without_streams_falls_back_to_one_append_at_a_time() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_reporter, health) = tonic_health::server::health_reporter();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(health)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let channels = PeerChannels::new(None, 1 << 20, 1 << 20);
        let mut peer = PeerClient { target: 7, addr: addr.to_string(), channels: channels.clone() };
        let request = || AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            entries: Vec::new(),
            leader_commit: None,
        };
        let option = RPCOption::new(Duration::from_secs(5));

        let first = peer.stream_append(futures::stream::iter([request()]), option.clone()).await;
        assert!(matches!(first, Err(RPCError::Network(_))), "UNIMPLEMENTED is a network error");
        drop(first);
        assert!(channels.without_streams.lock().unwrap().contains_key(&7), "the peer is remembered");

        // Now one request at a time over AppendEntries (which this server lacks as well).
        let mut answers = peer
            .stream_append(futures::stream::iter([request()]), option)
            .await
            .unwrap_or_else(|_| panic!("the one-at-a-time stream starts without a call"));
        let answer = answers.next().await.expect("an answer to the one request");
        assert!(answer.is_err(), "AppendEntries is unimplemented here too");
        drop(answers);
        server.abort();
    }
}
