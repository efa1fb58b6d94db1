//! `HeartbeatService.ReportStatus`: the tonic side of a worker's stream. Identify the worker
//! from its certificate, register the stream (newest wins), then per report: record it, hold
//! the first ack until the worker is admitted, ack. The stream is one future polled by the
//! connection (no task, no channel per worker); dropping it unregisters the worker.
//!
//! The stream's `grpc.server` span is DEBUG (quiet); a sampled share of reports get an INFO
//! `heartbeat.report` span covering record → admission → ack (see [`TraceSampler`]).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures::Stream;
use muster_middleware::{ApiError, Refused};
use muster_proto::v1;
use muster_proto::v1::heartbeat_service_server::HeartbeatService;
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument as _;

use crate::admission::{Control, EndReason, Opened, Refusal};
use crate::identity::{self, WorkerIdentity};
use crate::metrics::Metrics;
use crate::session::{Session, TraceSampler};
use crate::state::GatewayState;

/// The gRPC service name (health and reflection list it).
pub const SERVICE_NAME: &str = "muster.v1.HeartbeatService";
/// In insecure mode only: the metadata naming the worker (there is no certificate).
pub const INSECURE_WORKER_HEADER: &str = "x-muster-worker-id";

/// How workers are identified on this port.
#[derive(Clone, Debug)]
pub enum Authentication {
    /// From the client certificate's `spiffe://<cluster_id>/worker/<id>`.
    Certificate { cluster_id: String },
    /// `tls.insecure = true`: from [`INSECURE_WORKER_HEADER`] (development only).
    InsecureHeader,
}

pub struct Heartbeats {
    pub state: Arc<GatewayState>,
    pub auth: Authentication,
    /// Which reports are traced (`heartbeat_trace_ratio`).
    pub sampler: TraceSampler,
}

type AckStream = Pin<Box<dyn Stream<Item = Result<v1::StatusAck, Status>> + Send + 'static>>;

/// How the gateway ends a stream, as an [`ApiError`] (which picks the code): a revoked or
/// unknown worker is a typed refusal the agent acts on; a certificate that is no longer the
/// worker's is a credential that does not authenticate.
fn end_status(worker: u64, reason: &EndReason) -> Status {
    let err = match reason {
        EndReason::Refused(Refusal::Revoked) => {
            Refused::new(v1::Refusal::WorkerRevoked, format!("worker {worker} is revoked")).into()
        }
        EndReason::Refused(Refusal::Unknown(reason)) if reason.is_empty() => {
            Refused::new(v1::Refusal::UnknownWorker, format!("worker {worker} is not known to the cluster")).into()
        }
        EndReason::Refused(Refusal::Unknown(reason)) => {
            Refused::new(v1::Refusal::UnknownWorker, format!("worker {worker} is not known to the cluster: {reason}"))
                .into()
        }
        EndReason::Refused(Refusal::Certificate(reason)) => {
            ApiError::Unauthenticated(format!("worker {worker}: {reason}"))
        }
        EndReason::Replaced => {
            ApiError::Aborted(format!("worker {worker} opened a newer ReportStatus stream on this gateway"))
        }
        EndReason::ShuttingDown => {
            ApiError::Unavailable("the heartbeat gateway is shutting down; report to another one".into())
        }
    };
    err.into()
}

/// A report over the decoding limit: `INVALID_ARGUMENT` naming the limit, with tonic's detail.
fn oversize_status(decoding: &Status) -> Status {
    ApiError::InvalidArgument(format!(
        "report refused: a StatusReport may be at most {} bytes (max_status_report_bytes; a profile at most {} bytes, \
         max_profile_bytes): {}",
        muster_proto::limits::MAX_STATUS_REPORT_BYTES,
        muster_proto::limits::MAX_PROFILE_BYTES,
        decoding.message()
    ))
    .into()
}

impl Heartbeats {
    fn identify<T>(&self, request: &Request<T>) -> Result<WorkerIdentity, ApiError> {
        match &self.auth {
            Authentication::Certificate { cluster_id } => {
                let certs = request.peer_certs().ok_or_else(|| {
                    ApiError::Unauthenticated(
                        "a worker certificate signed by the cluster's worker CA is required".into(),
                    )
                })?;
                let leaf =
                    certs.first().ok_or_else(|| ApiError::Unauthenticated("no client certificate presented".into()))?;
                identity::worker_from_cert(leaf, cluster_id).map_err(|err| ApiError::PermissionDenied(err.to_string()))
            }
            Authentication::InsecureHeader => {
                let header = request.metadata().get(INSECURE_WORKER_HEADER).and_then(|value| value.to_str().ok());
                identity::worker_from_header(header).ok_or_else(|| {
                    ApiError::Unauthenticated(format!(
                        "this gateway runs insecure (no TLS): name the worker with {INSECURE_WORKER_HEADER} metadata"
                    ))
                })
            }
        }
    }
}

#[tonic::async_trait]
impl HeartbeatService for Heartbeats {
    type ReportStatusStream = AckStream;

    async fn report_status(
        &self,
        request: Request<Streaming<v1::StatusReport>>,
    ) -> Result<Response<Self::ReportStatusStream>, Status> {
        let identity = self.identify(&request)?;
        let worker = identity.worker_id;
        if self.state.readiness.is_closing() {
            return Err(end_status(worker, &EndReason::ShuttingDown));
        }
        let opened =
            self.state.admission.open(worker, identity.cert_serial.clone(), Instant::now()).map_err(|refusal| {
                Metrics::count(&self.state.metrics.refused);
                end_status(worker, &EndReason::Refused(refusal))
            })?;
        let stream = acks(self.state.clone(), self.sampler, identity, opened, request.into_inner());
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Unregisters the stream when the connection drops it (ended, reset or finished).
struct Registered {
    state: Arc<GatewayState>,
    worker: u64,
    stream_id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        // The worker's last stream here: its cordon and drain are for its next gateway to hold.
        if self.state.admission.close(self.worker, self.stream_id) {
            self.state.forget_scheduling(self.worker);
        }
    }
}

enum Event {
    Control(Option<Control>),
    Report(Result<Option<v1::StatusReport>, Status>),
}

/// Waits until the held worker is admitted, or for the reason its stream ends.
async fn admission(control: &mut watch::Receiver<Control>) -> Result<(), EndReason> {
    loop {
        match &*control.borrow_and_update() {
            Control::Admitted => return Ok(()),
            Control::End(reason) => return Err(reason.clone()),
            Control::Held => {}
        }
        if control.changed().await.is_err() {
            return Err(EndReason::Replaced);
        }
    }
}

fn acks(
    state: Arc<GatewayState>,
    sampler: TraceSampler,
    identity: WorkerIdentity,
    opened: Opened,
    mut inbound: Streaming<v1::StatusReport>,
) -> impl Stream<Item = Result<v1::StatusAck, Status>> + Send + 'static {
    let worker = identity.worker_id;
    let Opened { stream_id, mut control } = opened;
    let admitted = matches!(*control.borrow_and_update(), Control::Admitted);
    let mut session = Session::new(identity, admitted);
    async_stream::stream! {
        let _registered = Registered { state: state.clone(), worker, stream_id };
        loop {
            let event = tokio::select! {
                biased;
                changed = control.changed() => {
                    Event::Control(changed.ok().map(|()| control.borrow_and_update().clone()))
                }
                report = inbound.message() => Event::Report(report),
            };
            let report = match event {
                Event::Control(Some(Control::End(reason))) => {
                    yield Err(end_status(worker, &reason));
                    break;
                }
                Event::Control(None) => {
                    yield Err(end_status(worker, &EndReason::Replaced));
                    break;
                }
                Event::Control(Some(_)) => continue,
                Event::Report(Ok(Some(report))) => report,
                Event::Report(Err(status)) if status.code() == tonic::Code::OutOfRange => {
                    session.oversize(&state, Instant::now());
                    yield Err(oversize_status(&status));
                    break;
                }
                // The worker closed its side, or the connection broke.
                Event::Report(Ok(None)) | Event::Report(Err(_)) => break,
            };
            let span = sampler.span(worker, report.sequence);
            let reply = match span.in_scope(|| session.report(&state, report, Instant::now(), rand::random::<f64>())) {
                Ok(reply) => reply,
                Err(err) => {
                    span.record("otel.status_code", "error");
                    span.record("error", tracing::field::display(&err));
                    drop(span);
                    yield Err(ApiError::InvalidArgument(err.to_string()).into());
                    break;
                }
            };
            span.record("heartbeat.ttl_ms", reply.ttl_ms);
            span.record("heartbeat.throttled", reply.throttled);
            if !session.admitted {
                match admission(&mut control).instrument(span.clone()).await {
                    Ok(()) => session.admitted = true,
                    Err(reason) => {
                        drop(span);
                        yield Err(end_status(worker, &reason));
                        break;
                    }
                }
            }
            let ack = span.in_scope(|| state.ack(&reply));
            // Closed before the ack goes out, not when the next report arrives.
            drop(span);
            yield Ok(ack);
        }
    }
}
