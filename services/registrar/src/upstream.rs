//! What the registrar needs from the control plane, as a trait: [`Registrar`](crate::Registrar)
//! runs against [`ControlPlaneClient`] and is tested against a fake. Errors come back as
//! [`ApiError`]s, a control-plane refusal still typed ([`ApiError::relayed`]).

use std::future::Future;

use muster_client::{ClientError, ControlPlaneClient};
use muster_middleware::ApiError;
use muster_proto::v1;

pub trait ControlPlane: Send + Sync + 'static {
    /// Consumes one use of the token and allocates the worker's id (one Raft command).
    fn register_worker(
        &self,
        request: v1::RegisterWorkerRequest,
    ) -> impl Future<Output = Result<v1::RegisterWorkerResponse, ApiError>> + Send;

    /// Notes a certificate as the worker's current one; refused for a revoked worker and for
    /// a presented certificate that is not the worker's.
    fn record_worker_cert(
        &self,
        request: v1::RecordWorkerCertRequest,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;

    /// The live gateways and the TTL policy the control plane runs.
    fn list_gateways(&self) -> impl Future<Output = Result<v1::ListGatewaysResponse, ApiError>> + Send;
}

impl ControlPlane for ControlPlaneClient {
    async fn register_worker(
        &self,
        request: v1::RegisterWorkerRequest,
    ) -> Result<v1::RegisterWorkerResponse, ApiError> {
        ControlPlaneClient::register_worker(self, request).await.map_err(relay)
    }

    async fn record_worker_cert(&self, request: v1::RecordWorkerCertRequest) -> Result<(), ApiError> {
        ControlPlaneClient::record_worker_cert(self, request).await.map(drop).map_err(relay)
    }

    async fn list_gateways(&self) -> Result<v1::ListGatewaysResponse, ApiError> {
        ControlPlaneClient::list_gateways(self).await.map_err(relay)
    }
}

/// The control plane's answer as the worker's: its status already names the problem; not
/// reaching it at all is UNAVAILABLE, worth retrying.
fn relay(err: ClientError) -> ApiError {
    match err {
        ClientError::Status(status) => ApiError::relayed(&status),
        other => ApiError::Unavailable(format!("control plane unreachable: {other}")),
    }
}
