//! The gRPC services a static node serves besides the KV (`ClientApi` over the seam):
//! membership and leader discovery from its peer view, and a clear refusal for the worker-tier
//! services it does not have.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use muster_middleware::ApiError;
use muster_proto::v1;
use muster_proto::v1::cluster_management_service_server::ClusterManagementService;
use tonic::server::NamedService;
use tonic::{Request, Response, Status};

use super::node::StaticNode;
use crate::leadership::Leadership as _;

/// Why a static node refuses a membership change.
const MEMBERSHIP_IS_CONFIG: &str = "static mode: membership is the `cluster.peers` list of every node's config; \
     change it there on every node and restart them";

#[derive(Clone)]
pub struct StaticClusterApi {
    node: Arc<StaticNode>,
    /// What the metadata says of certificates (none under `--insecure`).
    tls: Option<Arc<muster_tls::LiveTls>>,
}

impl StaticClusterApi {
    pub fn new(node: Arc<StaticNode>, tls: Option<Arc<muster_tls::LiveTls>>) -> Self {
        Self { node, tls }
    }
}

#[tonic::async_trait]
impl ClusterManagementService for StaticClusterApi {
    async fn update_cluster_conf(
        &self,
        _request: Request<v1::ClusterConfChangeRequest>,
    ) -> Result<Response<v1::ClusterConfUpdateResponse>, Status> {
        Err(ApiError::FailedPrecondition(MEMBERSHIP_IS_CONFIG.into()).into())
    }

    async fn get_cluster_metadata(
        &self,
        _request: Request<v1::MetadataRequest>,
    ) -> Result<Response<v1::ClusterMembership>, Status> {
        let mut membership = self.node.membership();
        membership.certificates = crate::server::certificate_expiries(self.tls.as_deref());
        Ok(Response::new(membership))
    }

    async fn join_cluster(&self, _request: Request<v1::JoinRequest>) -> Result<Response<v1::JoinResponse>, Status> {
        Err(ApiError::FailedPrecondition(MEMBERSHIP_IS_CONFIG.into()).into())
    }

    async fn discover_leader(
        &self,
        _request: Request<v1::LeaderDiscoveryRequest>,
    ) -> Result<Response<v1::LeaderDiscoveryResponse>, Status> {
        let standing = self.node.standing();
        let leader = standing.leader.and_then(|id| self.node.settings.peers.iter().find(|peer| peer.id == id));
        Ok(Response::new(v1::LeaderDiscoveryResponse {
            known: leader.is_some(),
            leader_id: leader.map_or(0, |peer| peer.id),
            leader_api_addr: leader.map(|peer| peer.api_addr.clone()).unwrap_or_default(),
            leader_raft_addr: leader.map(|peer| peer.addr.clone()).unwrap_or_default(),
            term: standing.term,
        }))
    }
}

/// Serves the name of the worker-tier service `S` on a static node and answers every call
/// `FAILED_PRECONDITION` saying which mode it needs: a registrar or gateway pointed at a
/// static control plane learns why at its first call, and `grpcurl` shows the service with
/// the reason instead of a bare UNIMPLEMENTED.
pub struct NeedsWorkerTier<S>(PhantomData<fn() -> S>);

impl<S> NeedsWorkerTier<S> {
    pub fn new() -> Self {
        Self(PhantomData)
    }
}

impl<S> Default for NeedsWorkerTier<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Clone for NeedsWorkerTier<S> {
    fn clone(&self) -> Self {
        Self::new()
    }
}

impl<S: NamedService> NamedService for NeedsWorkerTier<S> {
    const NAME: &'static str = S::NAME;
}

impl<S: NamedService, B> tower::Service<http::Request<B>> for NeedsWorkerTier<S> {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: http::Request<B>) -> Self::Future {
        let refusal = ApiError::FailedPrecondition(format!(
            "{} needs mode = \"worker-tier\" (role = \"server\"); this control plane runs mode = \"static\", \
             which serves the KV, membership and health only",
            S::NAME
        ));
        std::future::ready(Ok(Status::from(refusal).into_http()))
    }
}
