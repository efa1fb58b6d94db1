//! `WorkerRegistrationService`: the shared state of the registrar and the thin tonic impl that
//! counts outcomes (see [`metrics`](crate::metrics)) around [`register`](crate::register) and
//! [`renew`](crate::renew). Both are rate-limited per client IP with the same buckets.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use muster_client::{ClientError, ControlPlaneClient};
use muster_middleware::ApiError;
use muster_proto::v1;
use muster_proto::v1::worker_registration_service_server::WorkerRegistrationService;
use tonic::{Request, Response, Status};

use crate::metrics::Stats;
use crate::rate_limit::RateLimiter;
use crate::signing::Signer;

pub struct Registrar {
    pub client: Arc<ControlPlaneClient>,
    pub signer: Signer,
    /// The cluster CA, handed to workers as their trust bundle for control-plane components.
    pub ca_bundle_pem: String,
    pub limiter: RateLimiter,
    pub stats: Stats,
}

impl muster_admin::AdminSource for Registrar {
    fn is_ready(&self) -> bool {
        // Constructed only once the worker CA is agreed: serving means ready.
        true
    }

    fn render_metrics(&self) -> String {
        self.stats.render()
    }
}

/// The control plane's answer as the worker's answer: its status already names the problem.
pub(crate) fn upstream(err: ClientError) -> Status {
    match err {
        ClientError::Status(status) => status,
        other => ApiError::Unavailable(format!("control plane unreachable: {other}")).into(),
    }
}

impl Registrar {
    /// Takes one token from the caller's bucket, or refuses with RESOURCE_EXHAUSTED.
    pub(crate) fn check_rate<T>(&self, request: &Request<T>, call: &str) -> Result<(), Status> {
        if let Some(ip) = request.remote_addr().map(|addr| addr.ip())
            && !self.limiter.allow(ip, Instant::now())
        {
            self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
            return Err(
                ApiError::ResourceExhausted(format!("too many {call} calls from {ip}; back off and retry")).into()
            );
        }
        Ok(())
    }
}

fn count<T>(result: &Result<T, Status>, ok: &AtomicU64, refused: &AtomicU64) {
    let counter = if result.is_ok() { ok } else { refused };
    counter.fetch_add(1, Ordering::Relaxed);
}

#[tonic::async_trait]
impl WorkerRegistrationService for Registrar {
    async fn register(&self, request: Request<v1::RegisterRequest>) -> Result<Response<v1::RegisterResponse>, Status> {
        let started = Instant::now();
        let result = self.register_inner(request).await.map(Response::new);
        self.stats.register_done(&result, started.elapsed());
        result
    }

    async fn renew(&self, request: Request<v1::RenewRequest>) -> Result<Response<v1::RenewResponse>, Status> {
        let result = self.renew_inner(request).await.map(Response::new);
        count(&result, &self.stats.renewed, &self.stats.renewals_refused);
        result
    }
}
