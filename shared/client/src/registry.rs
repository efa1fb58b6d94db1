//! The registrar's calls to the control plane, through the leader.

use muster_proto::v1;
use muster_proto::v1::worker_registry_service_client::WorkerRegistryServiceClient;

use crate::{ClientError, ControlPlaneClient};

impl ControlPlaneClient {
    pub async fn register_worker(
        &self,
        request: v1::RegisterWorkerRequest,
    ) -> Result<v1::RegisterWorkerResponse, ClientError> {
        self.on_leader(|channel| {
            let request = request.clone();
            async move {
                WorkerRegistryServiceClient::new(channel)
                    .register_worker(request)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
    }

    pub async fn ensure_worker_ca(
        &self,
        proposed: v1::InitWorkerCa,
    ) -> Result<v1::EnsureWorkerCaResponse, ClientError> {
        let request = v1::EnsureWorkerCaRequest { proposed: Some(proposed) };
        self.on_leader(|channel| {
            let request = request.clone();
            async move {
                WorkerRegistryServiceClient::new(channel)
                    .ensure_worker_ca(request)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
    }

    pub async fn record_worker_cert(
        &self,
        request: v1::RecordWorkerCertRequest,
    ) -> Result<v1::RecordWorkerCertResponse, ClientError> {
        self.on_leader(|channel| {
            let request = request.clone();
            async move {
                WorkerRegistryServiceClient::new(channel)
                    .record_worker_cert(request)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
    }
}
