//! `RaftReplicationService` and `RaftElectionService`: peer RPCs handed to openraft.

use std::sync::Arc;

use muster_middleware::ApiError;
use muster_proto::v1;
use muster_proto::v1::raft_election_service_server::RaftElectionService;
use muster_proto::v1::raft_replication_service_server::RaftReplicationService;
use tonic::{Request, Response, Status};

use crate::convert::{append_request_from_pb, append_response_to_pb, vote_request_from_pb, vote_response_to_pb};
use crate::node::NodeHandle;

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

#[tonic::async_trait]
impl RaftReplicationService for RaftPeerApi {
    async fn append_entries(
        &self,
        request: Request<v1::AppendEntriesRequest>,
    ) -> Result<Response<v1::AppendEntriesResponse>, Status> {
        let rpc = append_request_from_pb(request.into_inner())?;
        let response = self.node.raft.append_entries(rpc).await.map_err(fatal)?;
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
