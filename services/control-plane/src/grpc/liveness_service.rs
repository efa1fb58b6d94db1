//! `LivenessService`: heartbeat gateways report batches of beats to the leader (which keeps
//! the leases, see [`crate::leases`]), registrars and gateways list the live gateways, and
//! gateways fetch the worker CA certificate they verify workers with.

use std::sync::Arc;

use muster_middleware::{ApiError, Peer};
use muster_proto::v1;
use muster_proto::v1::liveness_service_server::LivenessService;
use tonic::{Request, Response, Status};

use crate::errors::storage_error;
use crate::node::NodeHandle;

#[derive(Clone)]
pub struct LivenessApi {
    node: Arc<NodeHandle>,
}

impl LivenessApi {
    pub fn new(node: Arc<NodeHandle>) -> Self {
        Self { node }
    }
}

#[tonic::async_trait]
impl LivenessService for LivenessApi {
    async fn report_liveness(
        &self,
        request: Request<v1::ReportLivenessRequest>,
    ) -> Result<Response<v1::ReportLivenessResponse>, Status> {
        // A gateway certificate announces only the gateway it names (see `gateway_id_allowed`).
        if let Some(peer) = request.extensions().get::<Peer>()
            && !muster_tls::gateway_id_allowed(peer.name(), &request.get_ref().gateway_id)
        {
            return Err(ApiError::PermissionDenied(format!(
                "this gateway certificate ({}) may report only as gateway {:?} or {:?}, not as {:?}",
                peer.0.spiffe_id(),
                peer.name(),
                format!("{}/<instance>", peer.name()),
                request.get_ref().gateway_id
            ))
            .into());
        }
        Ok(Response::new(self.node.leases.report(&*self.node, request.into_inner())?))
    }

    async fn list_gateways(
        &self,
        _request: Request<v1::ListGatewaysRequest>,
    ) -> Result<Response<v1::ListGatewaysResponse>, Status> {
        Ok(Response::new(self.node.leases.list_gateways(&*self.node)?))
    }

    async fn get_worker_ca_cert(
        &self,
        _request: Request<v1::GetWorkerCaCertRequest>,
    ) -> Result<Response<v1::GetWorkerCaCertResponse>, Status> {
        let reader = &self.node.reader;
        let ca = reader.worker_ca().map_err(storage_error)?.unwrap_or_default();
        let cert_pem = ca.trust_bundle(muster_proto::clock::unix_now());
        let cluster_id = reader.cluster_id().map_err(storage_error)?.unwrap_or_default();
        if cluster_id.is_empty() {
            return Err(ApiError::Unavailable("the cluster is not initialized yet".into()).into());
        }
        Ok(Response::new(v1::GetWorkerCaCertResponse { cert_pem, cluster_id }))
    }
}
