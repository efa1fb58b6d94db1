//! `WorkerRegistrationService.Register`: rate-limit by IP, check the CSR, let the control
//! plane consume the token and allocate the id (one Raft command), then certify the worker's
//! own key as `spiffe://<cluster>/worker/<id>` with the cluster's worker CA.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use muster_client::{ClientError, ControlPlaneClient};
use muster_middleware::ApiError;
use muster_proto::v1;
use muster_proto::v1::worker_registration_service_server::WorkerRegistrationService;
use muster_tls::CertificateAuthority;
use tonic::{Request, Response, Status};

use crate::rate_limit::RateLimiter;

pub struct Registrar {
    pub client: Arc<ControlPlaneClient>,
    pub worker_ca: CertificateAuthority,
    pub cluster_id: String,
    /// The cluster CA, handed to workers as their trust bundle for control-plane components.
    pub ca_bundle_pem: String,
    pub cert_validity: Duration,
    pub initial_ttl: Duration,
    pub grace: Duration,
    pub limiter: RateLimiter,
    pub stats: Stats,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    pub registered: AtomicU64,
    pub refused: AtomicU64,
    pub rate_limited: AtomicU64,
}

impl muster_admin::AdminSource for Registrar {
    fn is_ready(&self) -> bool {
        // Constructed only once the worker CA is agreed: serving means ready.
        true
    }

    fn render_metrics(&self) -> String {
        let mut out = String::new();
        let rows = [
            ("muster_registrar_registrations_total", "Workers registered.", &self.stats.registered),
            (
                "muster_registrar_refusals_total",
                "Register calls refused (token, CSR or upstream).",
                &self.stats.refused,
            ),
            (
                "muster_registrar_rate_limited_total",
                "Register calls refused by the per-IP limit.",
                &self.stats.rate_limited,
            ),
        ];
        for (name, help, counter) in rows {
            muster_admin::gauge(&mut out, name, help, "", counter.load(Ordering::Relaxed));
        }
        out
    }
}

/// The control plane's answer as the worker's answer: its status already names the problem.
fn upstream(err: ClientError) -> Status {
    match err {
        ClientError::Status(status) => status,
        other => ApiError::Unavailable(format!("control plane unreachable: {other}")).into(),
    }
}

fn millis(duration: Duration) -> u32 {
    u32::try_from(duration.as_millis()).unwrap_or(u32::MAX)
}

#[tonic::async_trait]
impl WorkerRegistrationService for Registrar {
    async fn register(&self, request: Request<v1::RegisterRequest>) -> Result<Response<v1::RegisterResponse>, Status> {
        let result = self.register_inner(request).await;
        let counter = if result.is_ok() { &self.stats.registered } else { &self.stats.refused };
        counter.fetch_add(1, Ordering::Relaxed);
        result
    }
}

impl Registrar {
    async fn register_inner(
        &self,
        request: Request<v1::RegisterRequest>,
    ) -> Result<Response<v1::RegisterResponse>, Status> {
        if let Some(ip) = request.remote_addr().map(|addr| addr.ip())
            && !self.limiter.allow(ip, Instant::now())
        {
            self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
            return Err(
                ApiError::ResourceExhausted(format!("too many Register calls from {ip}; back off and retry")).into()
            );
        }
        let request = request.into_inner();
        // Refuse a bad CSR before the token is spent.
        muster_tls::verify_csr(&request.csr_pem).map_err(|err| ApiError::InvalidArgument(format!("csr_pem: {err}")))?;
        let registered = self
            .client
            .register_worker(v1::RegisterWorkerRequest { token: request.token, profile: request.profile })
            .await
            .map_err(upstream)?;
        let worker =
            registered.worker.ok_or_else(|| ApiError::Internal("the control plane returned no worker".into()))?;
        let id = worker.worker_id;
        let uri = format!("spiffe://{}/worker/{id}", self.cluster_id);
        let signed = self
            .worker_ca
            .sign_csr(&request.csr_pem, &format!("worker-{id}"), &uri, self.cert_validity)
            .map_err(|err| ApiError::Internal(format!("signing the certificate of worker {id}: {err}")))?;
        let record = v1::RecordWorkerCertRequest {
            worker_id: id,
            serial: signed.serial_hex.clone(),
            expires_at_unix: signed.not_after_unix,
        };
        if let Err(err) = self.client.record_worker_cert(record).await {
            // The worker has its identity either way; the record only feeds `workers get`.
            tracing::warn!(worker_id = id, error = %err, "could not record the certificate serial");
        }
        tracing::info!(worker_id = id, name = %worker.name, serial = %signed.serial_hex, "issued worker identity");
        Ok(Response::new(v1::RegisterResponse {
            worker_id: id,
            cluster_id: self.cluster_id.clone(),
            certificate_chain_pem: format!("{}{}", signed.cert_pem, self.worker_ca.cert_pem()),
            ca_bundle_pem: self.ca_bundle_pem.clone(),
            initial_ttl_ms: millis(self.initial_ttl),
            grace_ms: millis(self.grace),
            gateways: Vec::new(),
            cert_expires_at_unix: signed.not_after_unix,
        }))
    }
}
