//! The heartbeat gateways' calls to the control plane (through the leader, which holds the
//! leases), and the gateway list that registrars hand to new workers.

use muster_proto::v1;
use muster_proto::v1::liveness_service_client::LivenessServiceClient;

use crate::{ClientError, ControlPlaneClient};

impl ControlPlaneClient {
    /// One batch of beats; also the calling gateway's own lease.
    pub async fn report_liveness(
        &self,
        request: v1::ReportLivenessRequest,
    ) -> Result<v1::ReportLivenessResponse, ClientError> {
        self.on_leader(|channel| {
            let request = request.clone();
            async move {
                LivenessServiceClient::new(channel).report_liveness(request).await.map(tonic::Response::into_inner)
            }
        })
        .await
    }

    /// The live gateways, the TTL policy and the worker count.
    pub async fn list_gateways(&self) -> Result<v1::ListGatewaysResponse, ClientError> {
        self.on_leader(|channel| async move {
            LivenessServiceClient::new(channel)
                .list_gateways(v1::ListGatewaysRequest {})
                .await
                .map(tonic::Response::into_inner)
        })
        .await
    }

    /// The worker CA certificate (gateways verify worker client certificates with it).
    pub async fn worker_ca_cert(&self) -> Result<v1::GetWorkerCaCertResponse, ClientError> {
        self.on_leader(|channel| async move {
            LivenessServiceClient::new(channel)
                .get_worker_ca_cert(v1::GetWorkerCaCertRequest {})
                .await
                .map(tonic::Response::into_inner)
        })
        .await
    }

    /// Asks which worker CAs to trust now and makes `trust` follow (a worker CA rotation adds
    /// a next CA, drops a retired one); true when what it trusts changed. Gateways and
    /// registrars call it on a timer. A bundle that does not load is logged as an error and leaves
    /// `trust` as it was.
    pub async fn refresh_worker_trust(
        &self,
        trust: &muster_tls::SwappableClientVerifier,
    ) -> Result<bool, Box<dyn std::error::Error + Send + Sync>> {
        let pem = self.worker_ca_cert().await?.cert_pem;
        if pem.trim().is_empty() {
            return Err("the cluster has no worker CA yet".into());
        }
        trust.replace(&pem).map_err(|err| {
            tracing::error!(error = %err, "refused the worker CAs the control plane lists; trusting the ones known");
            err.into()
        })
    }
}
