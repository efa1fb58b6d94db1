//! `LivenessService`: heartbeat gateways report batches of beats to the leader (which keeps
//! the leases, see [`crate::leases`]), registrars and gateways list the live gateways, and
//! gateways fetch the worker CA certificate they verify workers with.

use std::sync::Arc;

use muster_middleware::ApiError;
use muster_proto::v1;
use muster_proto::v1::liveness_service_server::LivenessService;
use tonic::{Request, Response, Status};

use super::errors::storage_error;
use super::roles::require_role;
use crate::node::NodeHandle;

const SERVICE: &str = "LivenessService";

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
        require_role(&request, &["gateway"], SERVICE)?;
        Ok(Response::new(self.node.leases.report(&self.node, request.into_inner())?))
    }

    async fn list_gateways(
        &self,
        request: Request<v1::ListGatewaysRequest>,
    ) -> Result<Response<v1::ListGatewaysResponse>, Status> {
        require_role(&request, &["registrar", "gateway", "operator"], SERVICE)?;
        Ok(Response::new(self.node.leases.list_gateways(&self.node)?))
    }

    async fn get_worker_ca_cert(
        &self,
        request: Request<v1::GetWorkerCaCertRequest>,
    ) -> Result<Response<v1::GetWorkerCaCertResponse>, Status> {
        require_role(&request, &["gateway", "registrar", "operator"], SERVICE)?;
        let reader = &self.node.reader;
        let cert_pem = reader.worker_ca().map_err(storage_error)?.map(|ca| ca.cert_pem).unwrap_or_default();
        let cluster_id = reader.cluster_id().map_err(storage_error)?.unwrap_or_default();
        if cluster_id.is_empty() {
            return Err(ApiError::Unavailable("the cluster is not initialized yet".into()).into());
        }
        Ok(Response::new(v1::GetWorkerCaCertResponse { cert_pem, cluster_id }))
    }
}
