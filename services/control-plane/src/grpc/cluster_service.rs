//! `ClusterManagementService`: membership (join as learner, promote/demote/remove through
//! joint consensus), metadata and leader discovery.

use std::collections::BTreeSet;
use std::sync::Arc;

use muster_middleware::ApiError;
use muster_proto::v1;
use muster_proto::v1::cluster_management_service_server::ClusterManagementService;
use openraft::ChangeMembers;
use tonic::{Request, Response, Status};

use crate::errors::write_error;
use crate::leadership::Leadership as _;
use crate::node::NodeHandle;
use crate::types::NodeAddr;

#[derive(Clone)]
pub struct ClusterApi {
    node: Arc<NodeHandle>,
    /// What the metadata says of certificates (none under `--insecure`).
    tls: Option<Arc<muster_tls::LiveTls>>,
}

impl ClusterApi {
    pub fn new(node: Arc<NodeHandle>) -> Self {
        Self { node, tls: None }
    }

    pub fn with_tls(mut self, tls: Option<Arc<muster_tls::LiveTls>>) -> Self {
        self.tls = tls;
        self
    }

    fn require_leader(&self) -> Result<(), ApiError> {
        if self.node.raft.is_leader() { Ok(()) } else { Err(self.node.not_leader()) }
    }
}

/// Validates the ids of a membership change against the current membership.
fn check_ids(ids: &[u64], known: &BTreeSet<u64>, verb: &str) -> Result<BTreeSet<u64>, ApiError> {
    if ids.is_empty() {
        return Err(ApiError::InvalidArgument(format!("{verb}: no node ids given")));
    }
    let unknown: Vec<String> = ids.iter().filter(|id| !known.contains(id)).map(u64::to_string).collect();
    if !unknown.is_empty() {
        return Err(ApiError::NotFound(format!("{verb}: node {} is not a member of this cluster", unknown.join(", "))));
    }
    Ok(ids.iter().copied().collect())
}

#[tonic::async_trait]
impl ClusterManagementService for ClusterApi {
    async fn update_cluster_conf(
        &self,
        request: Request<v1::ClusterConfChangeRequest>,
    ) -> Result<Response<v1::ClusterConfUpdateResponse>, Status> {
        use v1::cluster_conf_change_request::Change;
        self.require_leader()?;
        let metrics = self.node.metrics();
        let membership = metrics.membership_config.membership();
        let members: BTreeSet<u64> = membership.nodes().map(|(id, _)| *id).collect();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let (change, retain) = match request.into_inner().change {
            Some(Change::Promote(ids)) => {
                (ChangeMembers::AddVoterIds(check_ids(&ids.node_ids, &members, "promote")?), true)
            }
            Some(Change::Demote(ids)) => {
                let ids = check_ids(&ids.node_ids, &voters, "demote")?;
                (ChangeMembers::RemoveVoters(ids), true)
            }
            Some(Change::Remove(ids)) => {
                let ids = check_ids(&ids.node_ids, &members, "remove")?;
                let (remove_voters, remove_learners): (BTreeSet<u64>, BTreeSet<u64>) =
                    ids.iter().partition(|id| voters.contains(id));
                let mut steps = Vec::new();
                if !remove_voters.is_empty() {
                    steps.push(ChangeMembers::RemoveVoters(remove_voters));
                }
                if !remove_learners.is_empty() {
                    steps.push(ChangeMembers::RemoveNodes(remove_learners));
                }
                (ChangeMembers::Batch(steps), false)
            }
            None => return Err(ApiError::InvalidArgument("no change given (promote, demote or remove)".into()).into()),
        };
        let response = self.node.raft.change_membership(change, retain).await.map_err(write_error)?;
        Ok(Response::new(v1::ClusterConfUpdateResponse {
            index: response.log_id.index,
            membership: Some(self.node.cluster_metadata()),
        }))
    }

    async fn get_cluster_metadata(
        &self,
        _request: Request<v1::MetadataRequest>,
    ) -> Result<Response<v1::ClusterMembership>, Status> {
        let mut membership = self.node.membership();
        membership.certificates = crate::server::certificate_expiries(self.tls.as_deref());
        Ok(Response::new(membership))
    }

    async fn join_cluster(&self, request: Request<v1::JoinRequest>) -> Result<Response<v1::JoinResponse>, Status> {
        let request = request.into_inner();
        if request.node_id == 0 {
            return Err(ApiError::InvalidArgument("join: node_id must be a positive integer".into()).into());
        }
        if request.raft_addr.is_empty() || request.api_addr.is_empty() {
            return Err(ApiError::InvalidArgument("join: raft_addr and api_addr are required".into()).into());
        }
        self.require_leader()?;
        let addr = NodeAddr { raft_addr: request.raft_addr, api_addr: request.api_addr };
        let metrics = self.node.metrics();
        if let Some(existing) = metrics.membership_config.membership().get_node(&request.node_id) {
            if *existing != addr {
                return Err(ApiError::AlreadyExists(format!(
                    "join: node {} is already a member at {existing}; remove it first to change its addresses",
                    request.node_id
                ))
                .into());
            }
        } else {
            tracing::info!(node = request.node_id, %addr, "adding learner");
            self.node.raft.add_learner(request.node_id, addr, request.wait_caught_up).await.map_err(write_error)?;
        }
        Ok(Response::new(v1::JoinResponse { leader_id: self.node.id, membership: Some(self.node.cluster_metadata()) }))
    }

    async fn discover_leader(
        &self,
        _request: Request<v1::LeaderDiscoveryRequest>,
    ) -> Result<Response<v1::LeaderDiscoveryResponse>, Status> {
        let metrics = self.node.metrics();
        let leader = metrics.current_leader;
        let node = leader.and_then(|id| metrics.membership_config.membership().get_node(&id).cloned());
        Ok(Response::new(v1::LeaderDiscoveryResponse {
            known: node.is_some(),
            leader_id: leader.unwrap_or(0),
            leader_api_addr: node.as_ref().map(|n| n.api_addr.clone()).unwrap_or_default(),
            leader_raft_addr: node.map(|n| n.raft_addr).unwrap_or_default(),
            term: metrics.current_term,
        }))
    }
}
