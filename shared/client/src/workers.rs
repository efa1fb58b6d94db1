//! Worker administration through the leader.

use muster_proto::v1;
use muster_proto::v1::worker_admin_service_client::WorkerAdminServiceClient;

use crate::{ClientError, ControlPlaneClient};

impl ControlPlaneClient {
    /// Every worker matching `filter`, fetched page by page.
    pub async fn list_workers(&self, filter: v1::ListWorkersRequest) -> Result<Vec<v1::WorkerRecord>, ClientError> {
        Ok(self.list_workers_with_leases(filter).await?.workers)
    }

    /// Every worker matching `filter` and, by id, their leases as the leader holds them: all
    /// pages, from `filter.page_token` on, merged into one answer (with no next page token),
    /// as the state was at the revision of the first page. A listing the leader stopped holding
    /// (it changed, or the listing sat idle) is begun again, a few times at most.
    pub async fn list_workers_with_leases(
        &self,
        filter: v1::ListWorkersRequest,
    ) -> Result<v1::ListWorkersResponse, ClientError> {
        let mut attempts = 0;
        loop {
            match self.list_all_pages(filter.clone()).await {
                Err(ClientError::Status(status))
                    if status.code() == tonic::Code::OutOfRange && filter.page_token.is_empty() && attempts < 3 =>
                {
                    attempts += 1;
                    tracing::debug!(error = %status.message(), "listing ended by the server; listing again");
                }
                listed => return listed,
            }
        }
    }

    async fn list_all_pages(&self, filter: v1::ListWorkersRequest) -> Result<v1::ListWorkersResponse, ClientError> {
        let mut all = v1::ListWorkersResponse::default();
        let mut request = filter;
        loop {
            let page = self.list_workers_page(request.clone()).await?;
            if all.revision == 0 {
                all.revision = page.revision;
            }
            all.workers.extend(page.workers);
            all.leases.extend(page.leases);
            if page.next_page_token.is_empty() || page.next_page_token == request.page_token {
                return Ok(all);
            }
            request.page_token = page.next_page_token;
        }
    }

    /// One page of workers (`page_size`, `page_token`), as the server answered it.
    pub async fn list_workers_page(
        &self,
        filter: v1::ListWorkersRequest,
    ) -> Result<v1::ListWorkersResponse, ClientError> {
        self.on_leader(|channel| {
            let filter = filter.clone();
            async move {
                WorkerAdminServiceClient::new(channel).list_workers(filter).await.map(tonic::Response::into_inner)
            }
        })
        .await
    }

    /// One admin call on one worker: `get`, `drain` (without a deadline), `undrain`, `revoke`,
    /// `cordon` or `uncordon`.
    pub async fn worker_action(&self, action: WorkerAction, worker_id: u64) -> Result<v1::WorkerRecord, ClientError> {
        Ok(self.worker_call(action, worker_id).await?.worker.unwrap_or_default())
    }

    /// [`worker_action`](Self::worker_action) with the whole answer (the lease, for `get`).
    pub async fn worker_call(&self, action: WorkerAction, worker_id: u64) -> Result<v1::WorkerResponse, ClientError> {
        let request = v1::WorkerRequest { worker_id };
        self.on_leader(|channel| async move {
            let mut client = WorkerAdminServiceClient::new(channel);
            let response = match action {
                WorkerAction::Get => client.get_worker(request).await,
                WorkerAction::Drain => {
                    client.drain_worker(v1::DrainWorkerRequest { worker_id, deadline_seconds: 0 }).await
                }
                WorkerAction::Undrain => client.undrain_worker(request).await,
                WorkerAction::Revoke => client.revoke_worker(request).await,
                WorkerAction::Cordon => client.cordon_worker(request).await,
                WorkerAction::Uncordon => client.uncordon_worker(request).await,
            };
            response.map(tonic::Response::into_inner)
        })
        .await
    }

    /// Removes a gone worker's record now (`force`: a live one too, revoking it first); the
    /// answer holds the record as it was.
    pub async fn purge_worker(&self, worker_id: u64, force: bool) -> Result<v1::WorkerResponse, ClientError> {
        let request = v1::PurgeWorkerRequest { worker_id, force };
        self.on_leader(|channel| async move {
            WorkerAdminServiceClient::new(channel).purge_worker(request).await.map(tonic::Response::into_inner)
        })
        .await
    }

    /// Drains the worker, which then has `deadline_seconds` (0: no limit) to report drained.
    pub async fn drain_worker(&self, worker_id: u64, deadline_seconds: u64) -> Result<v1::WorkerResponse, ClientError> {
        let request = v1::DrainWorkerRequest { worker_id, deadline_seconds };
        self.on_leader(|channel| async move {
            WorkerAdminServiceClient::new(channel).drain_worker(request).await.map(tonic::Response::into_inner)
        })
        .await
    }

    pub async fn label_worker(&self, worker_id: u64, change: v1::LabelChange) -> Result<v1::WorkerRecord, ClientError> {
        Ok(self.label_worker_call(worker_id, change).await?.worker.unwrap_or_default())
    }

    /// [`label_worker`](Self::label_worker) with the whole answer (the lease).
    pub async fn label_worker_call(
        &self,
        worker_id: u64,
        change: v1::LabelChange,
    ) -> Result<v1::WorkerResponse, ClientError> {
        let request = v1::LabelWorkerRequest { worker_id, change: Some(change) };
        self.on_leader(|channel| {
            let request = request.clone();
            async move {
                WorkerAdminServiceClient::new(channel).label_worker(request).await.map(tonic::Response::into_inner)
            }
        })
        .await
    }
}

/// Admin calls that take just a worker id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerAction {
    Get,
    /// Draining and ineligible, without a deadline.
    Drain,
    /// Ready and eligible again.
    Undrain,
    Revoke,
    /// Ineligible for new work, whatever its liveness.
    Cordon,
    /// Eligible again.
    Uncordon,
}

impl ControlPlaneClient {
    /// One step of a worker CA rotation (trust the next CA, promote it, drop the retired).
    pub async fn rotate_worker_ca(
        &self,
        request: v1::RotateWorkerCaRequest,
    ) -> Result<v1::RotateWorkerCaResponse, ClientError> {
        self.on_leader(|channel| {
            let request = request.clone();
            async move {
                WorkerAdminServiceClient::new(channel).rotate_worker_ca(request).await.map(tonic::Response::into_inner)
            }
        })
        .await
    }
}
