//! `WorkerAdminService`: operators list, inspect, drain, revoke and relabel workers.

use std::sync::Arc;

use muster_middleware::ApiError;
use muster_proto::v1;
use muster_proto::v1::worker_admin_service_server::WorkerAdminService;
use openraft::ReadPolicy;
use tonic::{Request, Response, Status};

use super::errors::{read_error, storage_error};
use super::token_service::unix_now;
use crate::node::NodeHandle;

#[derive(Clone)]
pub struct WorkerAdminApi {
    node: Arc<NodeHandle>,
}

impl WorkerAdminApi {
    pub fn new(node: Arc<NodeHandle>) -> Self {
        Self { node }
    }

    async fn change(
        &self,
        worker_id: u64,
        change: v1::update_worker::Change,
    ) -> Result<Response<v1::WorkerResponse>, Status> {
        let update = v1::UpdateWorker { worker_id, change: Some(change), now_unix: unix_now() };
        let result = self.node.propose(v1::command::Op::UpdateWorker(update)).await?;
        match result.error_code.as_str() {
            "" => Ok(Response::new(v1::WorkerResponse { worker: result.worker, lease: None })),
            "unknown_worker" => Err(ApiError::NotFound(result.error).into()),
            _ => Err(ApiError::FailedPrecondition(result.error).into()),
        }
    }

    async fn linearize(&self) -> Result<(), ApiError> {
        self.node.raft.ensure_linearizable(ReadPolicy::ReadIndex).await.map_err(read_error)?;
        Ok(())
    }
}

/// Whether `worker` matches a list filter.
fn matches(worker: &v1::WorkerRecord, filter: &v1::ListWorkersRequest) -> bool {
    (filter.state == 0 || worker.state == filter.state)
        && filter.labels.iter().all(|(key, value)| worker.labels.get(key) == Some(value))
}

#[tonic::async_trait]
impl WorkerAdminService for WorkerAdminApi {
    async fn list_workers(
        &self,
        request: Request<v1::ListWorkersRequest>,
    ) -> Result<Response<v1::ListWorkersResponse>, Status> {
        self.linearize().await?;
        let filter = request.into_inner();
        let workers: Vec<v1::WorkerRecord> =
            self.node.reader.workers().map_err(storage_error)?.into_iter().filter(|w| matches(w, &filter)).collect();
        let leases = self.node.leases.views(&self.node, workers.iter().map(|w| w.worker_id));
        Ok(Response::new(v1::ListWorkersResponse { workers, leases }))
    }

    async fn get_worker(&self, request: Request<v1::WorkerRequest>) -> Result<Response<v1::WorkerResponse>, Status> {
        self.linearize().await?;
        let id = request.into_inner().worker_id;
        let worker = self.node.reader.worker(id).map_err(storage_error)?;
        let worker = worker.ok_or_else(|| ApiError::NotFound(format!("no worker {id}")))?;
        let lease = self.node.leases.views(&self.node, [id]).remove(&id);
        Ok(Response::new(v1::WorkerResponse { worker: Some(worker), lease }))
    }

    async fn drain_worker(&self, request: Request<v1::WorkerRequest>) -> Result<Response<v1::WorkerResponse>, Status> {
        let id = request.into_inner().worker_id;
        self.change(id, v1::update_worker::Change::State(v1::WorkerState::Draining as i32)).await
    }

    async fn revoke_worker(&self, request: Request<v1::WorkerRequest>) -> Result<Response<v1::WorkerResponse>, Status> {
        let id = request.into_inner().worker_id;
        tracing::warn!(worker_id = id, "revoking worker identity");
        self.change(id, v1::update_worker::Change::State(v1::WorkerState::Revoked as i32)).await
    }

    async fn label_worker(
        &self,
        request: Request<v1::LabelWorkerRequest>,
    ) -> Result<Response<v1::WorkerResponse>, Status> {
        let request = request.into_inner();
        let change = request.change.unwrap_or_default();
        if change.set.is_empty() && change.remove.is_empty() {
            return Err(ApiError::InvalidArgument("no labels to set or remove".into()).into());
        }
        if let Some(key) = change.set.keys().find(|k| k.is_empty() || k.contains(['=', ','])) {
            return Err(
                ApiError::InvalidArgument(format!("label key {key:?} is invalid: non-empty, no '=' or ','")).into()
            );
        }
        self.change(request.worker_id, v1::update_worker::Change::Labels(change)).await
    }
}
