//! `WorkerAdminService`: operators list, inspect, drain, undrain, revoke, relabel, cordon and uncordon
//! workers, and rotate the worker CA.

use std::sync::Arc;

use muster_middleware::{ApiError, Refused};
use muster_proto::v1;
use muster_proto::v1::worker_admin_service_server::WorkerAdminService;
use tonic::{Request, Response, Status};

use crate::errors::storage_error;
use crate::leadership::{Confirmation, Leadership as _};
use crate::node::NodeHandle;
use crate::store::{ListingToken, page_size};

/// The answer to a page of a listing no longer held.
const LISTING_EXPIRED: &str = "the listing this page_token continues has ended (a listing is held for 60 s after \
                               its last page, on the leader that began it): list again from the first page";
use muster_proto::clock::unix_now;

#[derive(Clone)]
pub struct WorkerAdminApi {
    node: Arc<NodeHandle>,
}

impl WorkerAdminApi {
    /// Revokes worker `id` and answers once every live gateway refuses it (or the wait ran out).
    async fn revoke(&self, id: u64) -> Result<v1::WorkerResponse, Status> {
        tracing::warn!(worker_id = id, "revoking worker identity");
        let response = self.change(id, v1::update_worker::Change::State(v1::WorkerState::Revoked as i32)).await?;
        // Answer once every gateway refuses the worker, so its next report gets no ack.
        let behind = self.node.leases.revoke(&*self.node, id).await;
        if !behind.is_empty() {
            tracing::warn!(
                worker_id = id,
                gateways = ?behind,
                "these gateways did not confirm the revocation in time; they refuse the worker once their next \
                 liveness batch reaches the leader"
            );
        }
        Ok(response.into_inner())
    }

    pub fn new(node: Arc<NodeHandle>) -> Self {
        Self { node }
    }

    async fn change(
        &self,
        worker_id: u64,
        change: v1::update_worker::Change,
    ) -> Result<Response<v1::WorkerResponse>, Status> {
        let update = v1::UpdateWorker { worker_id, change: Some(change), now_unix: unix_now() };
        let result = Refused::check(self.node.propose(v1::command::Op::UpdateWorker(update)).await?)?;
        // The lease as the leader holds it, as `get_worker` shows it: a worker that is drained
        // or relabelled keeps beating.
        let lease = self.node.leases.views(&*self.node, [worker_id]).remove(&worker_id);
        Ok(Response::new(v1::WorkerResponse { worker: result.worker, lease }))
    }

    /// Refuses a relabel whose labels, or the set it would leave, break the label limits.
    fn check_labels(&self, worker_id: u64, change: &v1::LabelChange) -> Result<(), ApiError> {
        let invalid = |err: muster_proto::limits::LimitError| ApiError::InvalidArgument(err.to_string());
        muster_proto::limits::validate_labels("change.set", &change.set).map_err(invalid)?;
        // Removing labels is always allowed, even from a set stored before the limits.
        if change.set.is_empty() {
            return Ok(());
        }
        if let Some(mut labels) = self.node.reader.worker(worker_id).map_err(storage_error)?.map(|w| w.labels) {
            labels.retain(|key, _| !change.remove.contains(key));
            labels.extend(change.set.clone());
            muster_proto::limits::validate_labels("labels", &labels).map_err(invalid)?;
        }
        Ok(())
    }

    async fn linearize(&self) -> Result<(), ApiError> {
        self.node.confirm(Confirmation::Quorum).await
    }
}

/// Whether `worker` matches a list filter.
fn matches(worker: &v1::WorkerRecord, filter: &v1::ListWorkersRequest) -> bool {
    (filter.state == 0 || worker.state == filter.state)
        && filter.labels.iter().all(|(key, value)| worker.labels.get(key) == Some(value))
}

#[tonic::async_trait]
impl WorkerAdminService for WorkerAdminApi {
    type WatchWorkersStream = crate::watch::WorkerWatchStream;

    async fn watch_workers(
        &self,
        request: Request<v1::WatchWorkersRequest>,
    ) -> Result<Response<Self::WatchWorkersStream>, Status> {
        let connection = request.remote_addr();
        let request = request.into_inner();
        if request.linearizable {
            self.node.caught_up().await?;
        }
        Ok(Response::new(self.node.watches.watch_workers(request, connection)?))
    }

    async fn list_workers(
        &self,
        request: Request<v1::ListWorkersRequest>,
    ) -> Result<Response<v1::ListWorkersResponse>, Status> {
        let filter = request.into_inner();
        let size = page_size(filter.page_size);
        let token =
            ListingToken::decode(&filter.page_token).map_err(|bad| ApiError::InvalidArgument(bad.to_string()))?;
        let (listing, state, after) = match token {
            None => {
                self.linearize().await?;
                let state = Arc::new(self.node.reader.state_at_now().map_err(storage_error)?);
                (self.node.listings.begin(state.clone()), state, None)
            }
            Some(token) => match self.node.listings.resume(token.listing) {
                Some(state) => (token.listing, state, Some(token.after)),
                // Listings are begun by the leader: a follower has this one forwarded there.
                None if !self.node.standing().leading => return Err(self.node.not_leader().into()),
                None => return Err(ApiError::OutOfRange(LISTING_EXPIRED.into()).into()),
            },
        };
        let (workers, more) = state.workers_page(after, size, |w| matches(w, &filter)).map_err(storage_error)?;
        let next_page_token = match workers.last() {
            Some(last) if more => ListingToken { listing, after: last.worker_id }.encode(),
            _ => {
                self.node.listings.end(listing);
                String::new()
            }
        };
        let leases = self.node.leases.views(&*self.node, workers.iter().map(|w| w.worker_id));
        Ok(Response::new(v1::ListWorkersResponse { workers, leases, next_page_token, revision: state.revision() }))
    }

    async fn get_worker(&self, request: Request<v1::WorkerRequest>) -> Result<Response<v1::WorkerResponse>, Status> {
        self.linearize().await?;
        let id = request.into_inner().worker_id;
        let worker = self.node.reader.worker(id).map_err(storage_error)?;
        let worker = worker.ok_or_else(|| ApiError::NotFound(format!("no worker {id}")))?;
        let lease = self.node.leases.views(&*self.node, [id]).remove(&id);
        Ok(Response::new(v1::WorkerResponse { worker: Some(worker), lease }))
    }

    async fn drain_worker(
        &self,
        request: Request<v1::DrainWorkerRequest>,
    ) -> Result<Response<v1::WorkerResponse>, Status> {
        let request = request.into_inner();
        let max = muster_proto::limits::MAX_DRAIN_DEADLINE_SECONDS;
        if request.deadline_seconds > max {
            return Err(ApiError::InvalidArgument(format!(
                "deadline_seconds is {}; a drain deadline is at most {max} s (a year), or 0 for none",
                request.deadline_seconds
            ))
            .into());
        }
        // The deadline is fixed here, on the proposer's clock, like every time in a command.
        let deadline_unix = match request.deadline_seconds {
            0 => 0,
            seconds => unix_now().saturating_add(seconds as i64),
        };
        tracing::info!(worker_id = request.worker_id, deadline_unix, "draining worker");
        let start = v1::StartDrain { deadline_unix };
        self.change(request.worker_id, v1::update_worker::Change::Drain(start)).await
    }

    async fn undrain_worker(
        &self,
        request: Request<v1::WorkerRequest>,
    ) -> Result<Response<v1::WorkerResponse>, Status> {
        self.change(request.into_inner().worker_id, v1::update_worker::Change::Undrain(true)).await
    }

    async fn purge_worker(
        &self,
        request: Request<v1::PurgeWorkerRequest>,
    ) -> Result<Response<v1::WorkerResponse>, Status> {
        let v1::PurgeWorkerRequest { worker_id: id, force } = request.into_inner();
        self.linearize().await?;
        let worker = self.node.reader.worker(id).map_err(storage_error)?;
        let mut worker = worker.ok_or_else(|| ApiError::NotFound(format!("no worker {id}")))?;
        if !crate::store::is_gone(worker.state) {
            let state = v1::WorkerState::try_from(worker.state).unwrap_or_default().as_str_name();
            if !force {
                return Err(ApiError::FailedPrecondition(format!(
                    "worker {id} is {state}: it is live. Drain it and let it leave, or purge with force, which \
                     revokes its identity first"
                ))
                .into());
            }
            worker = self.revoke(id).await?.worker.unwrap_or_default();
        }
        tracing::warn!(worker_id = id, "purging worker record");
        let remove = v1::RemoveWorkers { worker_ids: vec![id], changed_before_unix: i64::MAX };
        let result = Refused::check(self.node.propose(v1::command::Op::RemoveWorkers(remove)).await?)?;
        if result.transitions_applied == 0 {
            return Err(ApiError::FailedPrecondition(format!(
                "worker {id} changed while it was being purged (it came back, or was purged already); look again"
            ))
            .into());
        }
        Ok(Response::new(v1::WorkerResponse { worker: Some(worker), lease: None }))
    }

    async fn revoke_worker(&self, request: Request<v1::WorkerRequest>) -> Result<Response<v1::WorkerResponse>, Status> {
        Ok(Response::new(self.revoke(request.into_inner().worker_id).await?))
    }

    async fn cordon_worker(&self, request: Request<v1::WorkerRequest>) -> Result<Response<v1::WorkerResponse>, Status> {
        self.change(request.into_inner().worker_id, v1::update_worker::Change::Eligible(false)).await
    }

    async fn uncordon_worker(
        &self,
        request: Request<v1::WorkerRequest>,
    ) -> Result<Response<v1::WorkerResponse>, Status> {
        self.change(request.into_inner().worker_id, v1::update_worker::Change::Eligible(true)).await
    }

    async fn rotate_worker_ca(
        &self,
        request: Request<v1::RotateWorkerCaRequest>,
    ) -> Result<Response<v1::RotateWorkerCaResponse>, Status> {
        use v1::rotate_worker_ca::Step;
        let request = request.into_inner();
        let step = request.step.unwrap_or_default();
        match &step.step {
            None => {
                return Err(ApiError::InvalidArgument("step: trust_next, promote_sha256 or drop_retired".into()).into());
            }
            Some(Step::TrustNext(pem)) => {
                crate::store::worker_ca::check_cert_pem("step.trust_next", pem).map_err(ApiError::InvalidArgument)?;
            }
            Some(Step::DropRetired(_)) if !request.force => {
                // Workers still holding a certificate of a retired CA would be refused: only
                // once the last of them has expired, unless forced.
                let now = unix_now();
                let ca = self.node.reader.worker_ca().map_err(storage_error)?.unwrap_or_default();
                if let Some(until) = ca.retired.iter().map(|r| r.trusted_until_unix).filter(|t| *t > now).max() {
                    return Err(ApiError::FailedPrecondition(format!(
                        "workers may hold certificates of a retired worker CA until unix time {until} ({} s from \
                         now); they renew onto the current CA before then. Drop it after that, or now with force \
                         (those workers are refused from then on)",
                        until - now
                    ))
                    .into());
                }
            }
            Some(_) => {}
        }
        tracing::warn!(step = step.step_name(), "worker CA rotation step");
        let result = Refused::check(self.node.propose(v1::command::Op::RotateWorkerCa(step)).await?)?;
        Ok(Response::new(v1::RotateWorkerCaResponse { worker_ca: result.worker_ca, changed: result.succeeded }))
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
        self.check_labels(request.worker_id, &change)?;
        self.change(request.worker_id, v1::update_worker::Change::Labels(change)).await
    }
}
