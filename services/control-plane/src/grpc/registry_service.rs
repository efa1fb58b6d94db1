//! `WorkerRegistryService`: the registrar's view of the control plane. Token checks and id
//! allocation happen in one Raft command; the control plane never sees a worker's key.

use std::sync::Arc;

use muster_middleware::{ApiError, Refused};
use muster_proto::v1;
use muster_proto::v1::worker_registry_service_server::WorkerRegistryService;
use muster_token::TokenError;
use tonic::{Request, Response, Status};

use crate::errors::storage_error;
use crate::leadership::Leadership as _;
use crate::node::NodeHandle;
use crate::store::worker_ca;
use crate::write_batch::WriteBatcher;
use muster_proto::clock::unix_now;

#[derive(Clone)]
pub struct RegistryApi {
    node: Arc<NodeHandle>,
    /// Registrations and certificate records share log entries while they queue.
    batcher: WriteBatcher,
}

impl RegistryApi {
    /// Starts the write batcher: call inside the runtime.
    pub fn new(node: Arc<NodeHandle>) -> Self {
        Self { batcher: WriteBatcher::start(node.clone()), node }
    }

    fn cluster_id(&self) -> Result<String, ApiError> {
        self.node
            .reader
            .cluster_id()
            .map_err(storage_error)?
            .ok_or_else(|| ApiError::Unavailable("the cluster id is not recorded yet; retry in a moment".into()))
    }
}

/// A token refusal as the caller sees it: the reason is typed ([`Refused`] picks the code and
/// sends it along); the words say which refusal it was, for a human.
fn token_refusal(reason: v1::Refusal, message: &str) -> ApiError {
    Refused::new(reason, format!("registration refused ({}): {message}", reason.label())).into()
}

fn check_profile(profile: &v1::WorkerProfile) -> Result<(), ApiError> {
    muster_proto::limits::validate_profile(profile).map_err(|err| ApiError::InvalidArgument(err.to_string()))
}

#[tonic::async_trait]
impl WorkerRegistryService for RegistryApi {
    async fn register_worker(
        &self,
        request: Request<v1::RegisterWorkerRequest>,
    ) -> Result<Response<v1::RegisterWorkerResponse>, Status> {
        let request = request.into_inner();
        let token = muster_token::decode(&request.token)
            .map_err(|err: TokenError| token_refusal(err.reason(), &err.to_string()))?;
        let profile = request.profile.unwrap_or_default();
        check_profile(&profile)?;
        let register = v1::RegisterWorker {
            token_id: token.token_id.clone(),
            secret_sha256: muster_token::secret_hash(&token),
            token_cluster_id: token.cluster_id.clone(),
            now_unix: unix_now(),
            profile: Some(profile),
            replaces_worker_id: request.replaces_worker_id,
        };
        let result = self.batcher.propose(v1::command::Op::RegisterWorker(register)).await?;
        if let Some(reason) = result.refused() {
            tracing::warn!(token_id = %token.token_id, reason = reason.label(), "registration refused");
            return Err(token_refusal(reason, &result.error).into());
        }
        let worker = result.worker.ok_or_else(|| ApiError::Internal("registration stored no worker".into()))?;
        tracing::info!(
            worker_id = worker.worker_id,
            name = %worker.name,
            token_id = %token.token_id,
            replaces = worker.replaces,
            "worker registered"
        );
        Ok(Response::new(v1::RegisterWorkerResponse { cluster_id: self.cluster_id()?, worker: Some(worker) }))
    }

    async fn ensure_worker_ca(
        &self,
        request: Request<v1::EnsureWorkerCaRequest>,
    ) -> Result<Response<v1::EnsureWorkerCaResponse>, Status> {
        let cluster_id = self.cluster_id()?;
        let proposed = request.into_inner().proposed.unwrap_or_default();
        if !proposed.key_pem.is_empty() {
            return Err(
                ApiError::InvalidArgument("the worker CA key must not be sent to the control plane".into()).into()
            );
        }
        worker_ca::check_cert_pem("proposed.cert_pem", &proposed.cert_pem).map_err(ApiError::InvalidArgument)?;
        let existing = self.node.reader.worker_ca().map_err(storage_error)?;
        let Some(op) = worker_ca::plan(existing.as_ref(), &proposed.cert_pem) else {
            return Ok(Response::new(v1::EnsureWorkerCaResponse { worker_ca: existing, cluster_id }));
        };
        let result = self.node.propose(op).await?;
        let worker_ca =
            result.worker_ca.ok_or_else(|| ApiError::Internal(format!("no worker CA: {}", result.error)))?;
        Ok(Response::new(v1::EnsureWorkerCaResponse { worker_ca: Some(worker_ca), cluster_id }))
    }

    async fn record_worker_cert(
        &self,
        request: Request<v1::RecordWorkerCertRequest>,
    ) -> Result<Response<v1::RecordWorkerCertResponse>, Status> {
        let request = request.into_inner();
        let limit = muster_proto::limits::MAX_CERT_SERIAL_HEX;
        if request.serial.is_empty() || request.serial.len() > limit || request.presented_serial.len() > limit {
            return Err(ApiError::InvalidArgument(format!(
                "serial must be 1 to {limit} hex digits and presented_serial at most {limit} (max_cert_serial_hex)"
            ))
            .into());
        }
        let record = v1::RecordWorkerCert {
            worker_id: request.worker_id,
            serial: request.serial,
            expires_at_unix: request.expires_at_unix,
            presented_serial: request.presented_serial,
        };
        let result = Refused::check(self.batcher.propose(v1::command::Op::RecordWorkerCert(record)).await?)?;
        Ok(Response::new(v1::RecordWorkerCertResponse { worker: result.worker }))
    }
}
