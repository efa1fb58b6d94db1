//! `WorkerRegistrationService`: the gRPC face of the [`Registrar`]. It owns what belongs to
//! the transport: the per-IP rate limit shared by Register and Renew, the counters of
//! [`metrics`](crate::metrics), and how an error reads on the wire — including answering an
//! unknown and a forged token alike, so Register cannot be used to learn which token ids exist.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use muster_client::ControlPlaneClient;
use muster_middleware::{ApiError, Refused};
use muster_proto::v1;
use muster_proto::v1::worker_registration_service_server::WorkerRegistrationService;
use tonic::{Request, Response, Status};

use crate::metrics::Stats;
use crate::rate_limit::RateLimiter;
use crate::registrar::{Caller, Registrar};
use crate::upstream::ControlPlane;

pub struct RegistrationService<C = ControlPlaneClient> {
    pub registrar: Registrar<C>,
    pub limiter: RateLimiter,
    pub stats: Stats,
}

impl<C: ControlPlane> muster_admin::AdminSource for RegistrationService<C> {
    fn is_ready(&self) -> bool {
        // Constructed only once the worker CA is agreed: serving means ready.
        true
    }

    fn render_metrics(&self) -> String {
        self.stats.render()
    }
}

/// What a caller hears for a token the cluster never issued and for one whose secret is
/// wrong: the same words, so Register cannot be used to learn which token ids exist.
pub const INVALID_TOKEN: &str =
    "registration refused: the bootstrap token is not valid for this cluster; ask the operator for a new one";

/// Answers "unknown" and "forged" alike; the real reason stays in the log and in
/// `muster_registrar_token_failures_total`.
fn conceal_token_existence(err: ApiError) -> Status {
    match err {
        ApiError::Refused(Refused {
            reason: reason @ (v1::Refusal::TokenUnknown | v1::Refusal::TokenForged),
            message,
        }) => {
            tracing::warn!(reason = reason.label(), detail = %message, "bootstrap token refused");
            ApiError::Unauthenticated(INVALID_TOKEN.into()).into()
        }
        other => other.into(),
    }
}

impl<C> RegistrationService<C> {
    /// Takes one token from the caller's bucket, or refuses with RESOURCE_EXHAUSTED.
    fn check_rate(&self, addr: Option<SocketAddr>, call: &str) -> Result<(), ApiError> {
        if let Some(ip) = addr.map(|addr| addr.ip())
            && !self.limiter.allow(ip, Instant::now())
        {
            self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::ResourceExhausted(format!("too many {call} calls from {ip}; back off and retry")));
        }
        Ok(())
    }
}

fn count<T>(result: &Result<T, ApiError>, ok: &AtomicU64, refused: &AtomicU64) {
    let counter = if result.is_ok() { ok } else { refused };
    counter.fetch_add(1, Ordering::Relaxed);
}

#[tonic::async_trait]
impl<C: ControlPlane> WorkerRegistrationService for RegistrationService<C> {
    async fn register(&self, request: Request<v1::RegisterRequest>) -> Result<Response<v1::RegisterResponse>, Status> {
        let started = Instant::now();
        let caller = Caller { addr: request.remote_addr(), certificate: None };
        let result = match self.check_rate(caller.addr, "Register") {
            Ok(()) => self.registrar.register(caller, request.into_inner()).await,
            Err(err) => Err(err),
        };
        self.stats.register_done(&result, started.elapsed());
        result.map(Response::new).map_err(conceal_token_existence)
    }

    async fn renew(&self, request: Request<v1::RenewRequest>) -> Result<Response<v1::RenewResponse>, Status> {
        let addr = request.remote_addr();
        let certs = request.peer_certs();
        let caller =
            Caller { addr, certificate: certs.as_deref().and_then(|certs| certs.first()).map(|cert| cert.as_ref()) };
        let result = match self.check_rate(addr, "Renew") {
            Ok(()) => self.registrar.renew(caller, request.into_inner()).await,
            Err(err) => Err(err),
        };
        count(&result, &self.stats.renewed, &self.stats.renewals_refused);
        result.map(Response::new).map_err(Status::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_forged_tokens_answer_alike_and_other_refusals_pass_through() {
        let unknown = Refused::new(v1::Refusal::TokenUnknown, "registration refused (unknown): no such token t1");
        let forged =
            Refused::new(v1::Refusal::TokenForged, "registration refused (forged): token t2's secret is wrong");
        let (unknown, forged) = (conceal_token_existence(unknown.into()), conceal_token_existence(forged.into()));
        assert_eq!((unknown.code(), unknown.message()), (forged.code(), forged.message()));
        assert_eq!((unknown.code(), unknown.message()), (tonic::Code::Unauthenticated, INVALID_TOKEN));
        assert_eq!(muster_middleware::refusal(&unknown), None, "the reason would tell them apart");
        let used_up =
            conceal_token_existence(Refused::new(v1::Refusal::TokenUsedUp, "token t has been used up").into());
        assert_eq!((used_up.code(), used_up.message()), (tonic::Code::PermissionDenied, "token t has been used up"));
        assert_eq!(muster_middleware::refusal(&used_up), Some(v1::Refusal::TokenUsedUp));
    }
}
