//! `RaftReplicationService` and `RaftElectionService`: peer RPCs handed to openraft.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::{Stream, StreamExt as _};

use muster_middleware::ApiError;
use muster_proto::v1;
use muster_proto::v1::raft_election_service_server::RaftElectionService;
use muster_proto::v1::raft_replication_service_server::RaftReplicationService;
use tonic::{Request, Response, Status, Streaming};

use crate::convert::{
    append_request_from_pb, append_response_to_pb, stream_append_result_to_pb, vote_request_from_pb,
    vote_response_to_pb,
};
use crate::node::NodeHandle;
use crate::write_profile::{self, Hop};

#[derive(Clone)]
pub struct RaftPeerApi {
    node: Arc<NodeHandle>,
}

impl RaftPeerApi {
    pub fn new(node: Arc<NodeHandle>) -> Self {
        Self { node }
    }
}

fn fatal(err: impl std::fmt::Display) -> Status {
    ApiError::Unavailable(format!("raft node stopped: {err}")).into()
}

/// A follower's answers on one `StreamAppend` stream.
pub type StreamAppendAnswers = Pin<Box<dyn Stream<Item = Result<v1::StreamAppendResponse, Status>> + Send>>;

/// When each request on a stream arrived and how many entries it held, oldest first (answers
/// come back in request order), for the write-path profile.
type Arrivals = Arc<Mutex<VecDeque<(Option<Instant>, usize)>>>;

#[tonic::async_trait]
impl RaftReplicationService for RaftPeerApi {
    type StreamAppendStream = StreamAppendAnswers;

    /// Hands the leader's requests to openraft as they arrive (it appends each without waiting
    /// for the previous one to be durable) and sends each answer once its entries are durable.
    /// A malformed request ends the stream: the answers to the requests before it, then
    /// INVALID_ARGUMENT naming the problem.
    async fn stream_append(
        &self,
        request: Request<Streaming<v1::AppendEntriesRequest>>,
    ) -> Result<Response<Self::StreamAppendStream>, Status> {
        let incoming = request.into_inner();
        let (malformed_tx, mut malformed_rx) = tokio::sync::oneshot::channel::<Status>();
        // Kept only while the profile is on: an answer's arrival time is what it times.
        let arrivals: Option<Arrivals> = write_profile::enabled().then(Arrivals::default);
        let arrived = arrivals.clone();
        let requests = futures::stream::unfold((incoming, Some(malformed_tx)), move |(mut incoming, malformed)| {
            let arrived = arrived.clone();
            async move {
                let decoded = match incoming.next().await? {
                    Ok(pb) => append_request_from_pb(pb).map_err(Status::from),
                    Err(status) => Err(status),
                };
                match decoded {
                    Ok(rpc) => {
                        if let Some(arrived) = &arrived {
                            arrived
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push_back((write_profile::start(), rpc.entries.len()));
                        }
                        Some((rpc, (incoming, malformed)))
                    }
                    Err(status) => {
                        if let Some(malformed) = malformed {
                            let _ = malformed.send(status);
                        }
                        None
                    }
                }
            }
        });
        let answers = self.node.raft.stream_append(requests).map(move |answer| {
            if let Some(arrivals) = &arrivals {
                let (started, entries) =
                    arrivals.lock().unwrap_or_else(|p| p.into_inner()).pop_front().unwrap_or((None, 0));
                write_profile::record(Hop::FollowerAppend, started, entries);
            }
            match answer {
                Ok(answer) => Ok(stream_append_result_to_pb(&answer)),
                Err(stopped) => Err(fatal(stopped)),
            }
        });
        // Once the answers end: the reason the input stopped early, if it was a bad request.
        let malformed =
            futures::stream::once(async move { malformed_rx.try_recv().ok().map(Err) }).filter_map(std::future::ready);
        Ok(Response::new(Box::pin(answers.chain(malformed))))
    }

    async fn append_entries(
        &self,
        request: Request<v1::AppendEntriesRequest>,
    ) -> Result<Response<v1::AppendEntriesResponse>, Status> {
        let started = write_profile::start();
        let rpc = append_request_from_pb(request.into_inner())?;
        let entries = rpc.entries.len();
        let response = self.node.raft.append_entries(rpc).await.map_err(fatal)?;
        write_profile::record(Hop::FollowerAppend, started, entries);
        Ok(Response::new(append_response_to_pb(&response)))
    }
}

#[tonic::async_trait]
impl RaftElectionService for RaftPeerApi {
    async fn request_vote(&self, request: Request<v1::VoteRequest>) -> Result<Response<v1::VoteResponse>, Status> {
        let rpc = vote_request_from_pb(request.into_inner())?;
        self.node.refuse_votes_while_held()?;
        let response = self.node.raft.vote(rpc).await.map_err(fatal)?;
        Ok(Response::new(vote_response_to_pb(&response)))
    }

    async fn pre_vote(&self, request: Request<v1::VoteRequest>) -> Result<Response<v1::VoteResponse>, Status> {
        let rpc = vote_request_from_pb(request.into_inner())?;
        self.node.refuse_votes_while_held()?;
        let response = self.node.raft.pre_vote(rpc).await.map_err(fatal)?;
        Ok(Response::new(vote_response_to_pb(&response)))
    }
}
