//! The registrar's two flows, free of transport: [`Registrar::register`] and
//! [`Registrar::renew`] take what the caller sent and who it is, and return the answer or an
//! [`ApiError`]. Rate limits, metrics and how an error reads on the wire are the gRPC
//! service's ([`service`](crate::service)).
//!
//! Register: check the CSR and profile (before the token is spent), let the control plane
//! consume the token and allocate the id (one Raft command), certify the worker's own key, and
//! hand it the live gateways and the TTL policy the control plane runs (the policy is the
//! control plane's, so every registrar hands out the same).
//!
//! Renew: a worker trades its current certificate (presented over mTLS, verified by the TLS
//! layer against the worker CA) and a CSR for its next key for a fresh certificate with the
//! same id. The control plane refuses to record a certificate for a revoked worker or one
//! that is not the worker's current one, and the certificate is only returned once it is
//! recorded: that refusal is what stops a revoked worker from renewing.

use std::net::SocketAddr;
use std::sync::Arc;

use muster_client::ControlPlaneClient;
use muster_middleware::{ApiError, Refused};
use muster_proto::v1;
use muster_tls::SignedCert;

use crate::gateway_list::GatewayList;
use crate::signing::{Certified, Signer};
use crate::upstream::ControlPlane;

/// What a new worker gets when the control plane cannot say (the seed's defaults).
const DEFAULT_TTL_MS: u32 = 10_000;
const DEFAULT_GRACE_MS: u32 = 10_000;

pub struct Registrar<C = ControlPlaneClient> {
    pub control_plane: Arc<C>,
    pub signer: Signer,
    /// The cluster CA, handed to workers as their trust bundle for control-plane components.
    pub ca_bundle: CaBundle,
    /// The gateways and policy handed to workers, shared by concurrent registrations.
    pub gateway_list: GatewayList,
}

/// The cluster CA bundle workers are given: fixed, or whatever the registrar's TLS files hold
/// now, so a CA rotation reaches workers as they register and renew.
#[derive(Clone, Debug)]
pub enum CaBundle {
    Fixed(String),
    Live(Arc<muster_tls::LiveTls>),
}

impl CaBundle {
    pub fn pem(&self) -> String {
        match self {
            CaBundle::Fixed(pem) => pem.clone(),
            CaBundle::Live(live) => live.current().ca_pem.clone(),
        }
    }
}

/// Who is calling, as the transport saw it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Caller<'a> {
    pub addr: Option<SocketAddr>,
    /// The DER certificate the caller presented over mTLS (verified against the worker CA).
    pub certificate: Option<&'a [u8]>,
}

/// The live gateways, the first TTL and the grace for a new worker.
struct Liveness {
    gateways: Vec<v1::GatewayEndpoint>,
    ttl_ms: u32,
    grace_ms: u32,
}

impl Liveness {
    fn from_listing(listing: v1::ListGatewaysResponse) -> Self {
        let policy = listing.policy.unwrap_or_default();
        let or_default = |value: u32, default: u32| if value == 0 { default } else { value };
        Self {
            gateways: listing.gateways,
            ttl_ms: or_default(policy.min_ttl_ms, DEFAULT_TTL_MS),
            grace_ms: or_default(policy.grace_ms, DEFAULT_GRACE_MS),
        }
    }

    fn defaults() -> Self {
        Self { gateways: Vec::new(), ttl_ms: DEFAULT_TTL_MS, grace_ms: DEFAULT_GRACE_MS }
    }
}

impl<C: ControlPlane> Registrar<C> {
    pub async fn register(
        &self,
        caller: Caller<'_>,
        request: v1::RegisterRequest,
    ) -> Result<v1::RegisterResponse, ApiError> {
        // Refuse a bad CSR or an oversize profile before the token is spent.
        Signer::check_csr(&request.csr_pem)?;
        muster_proto::limits::validate_profile(&request.profile.clone().unwrap_or_default())
            .map_err(|err| ApiError::InvalidArgument(err.to_string()))?;
        let replaces_worker_id = self.replaced_worker(&request)?;
        let registered = self
            .control_plane
            .register_worker(v1::RegisterWorkerRequest {
                token: request.token,
                profile: request.profile,
                replaces_worker_id,
            })
            .await?;
        let worker =
            registered.worker.ok_or_else(|| ApiError::Internal("the control plane returned no worker".into()))?;
        let id = worker.worker_id;
        let Certified { signed, chain_pem } = self.signer.certify(id, &request.csr_pem)?;
        let (recorded, listed) =
            tokio::join!(self.record(id, &signed, ""), self.gateway_list.get(&*self.control_plane));
        if let Err(err) = recorded {
            // The worker has its identity either way; the record only feeds `workers get`.
            tracing::warn!(worker_id = id, error = %err, "could not record the certificate serial");
        }
        let liveness = match listed {
            Ok(listing) => Liveness::from_listing(listing),
            Err(err) => {
                tracing::warn!(
                    worker_id = id,
                    error = %err,
                    "could not get the gateway list and TTL policy from the control plane; the worker gets no \
                     gateways and the default 10s TTL and grace (it needs a static `gateways` list to beat)"
                );
                Liveness::defaults()
            }
        };
        tracing::info!(
            worker_id = id,
            name = %worker.name,
            serial = %signed.serial_hex,
            gateways = liveness.gateways.len(),
            from = ?caller.addr,
            "issued worker identity"
        );
        Ok(v1::RegisterResponse {
            worker_id: id,
            cluster_id: self.signer.cluster_id.clone(),
            certificate_chain_pem: chain_pem,
            ca_bundle_pem: self.ca_bundle.pem(),
            initial_ttl_ms: liveness.ttl_ms,
            grace_ms: liveness.grace_ms,
            gateways: liveness.gateways,
            cert_expires_at_unix: signed.not_after_unix,
            replaces_worker_id: worker.replaces,
        })
    }

    /// The worker a registration replaces (0: none), once its proof holds: the old certificate
    /// is of this cluster's worker CA and the request is for its key.
    fn replaced_worker(&self, request: &v1::RegisterRequest) -> Result<u64, ApiError> {
        let pem = &request.replaces_cert_pem;
        if pem.is_empty() {
            return Ok(0);
        }
        let max = muster_proto::limits::MAX_CA_CERT_PEM_BYTES;
        if pem.len() > max {
            return Err(ApiError::InvalidArgument(format!(
                "replaces_cert_pem is {} bytes; a worker certificate is at most {max}",
                pem.len()
            )));
        }
        let worker_ca = self.signer.worker_ca();
        muster_tls::replaced_worker_id(pem, &request.csr_pem, worker_ca.cert_pem(), &self.signer.cluster_id).map_err(
            |why| {
                ApiError::FailedPrecondition(format!(
                    "this registration cannot replace the old identity: {why}. Delete the node's identity dir to \
                     register it as a new worker"
                ))
            },
        )
    }

    pub async fn renew(&self, caller: Caller<'_>, request: v1::RenewRequest) -> Result<v1::RenewResponse, ApiError> {
        let certificate = caller.certificate.ok_or_else(|| {
            ApiError::Unauthenticated(
                "Renew needs the worker's current certificate: call it over mTLS with the identity from Register"
                    .into(),
            )
        })?;
        let presented = muster_tls::worker_cert(certificate, &self.signer.cluster_id)
            .map_err(|err| ApiError::PermissionDenied(err.to_string()))?;
        let id = presented.worker_id;
        Signer::check_csr(&request.csr_pem)?;
        let Certified { signed, chain_pem } = self.signer.certify(id, &request.csr_pem)?;
        let recording = self.record(id, &signed, &presented.serial_hex);
        let (recorded, listed) = tokio::join!(recording, self.gateway_list.get(&*self.control_plane));
        recorded.inspect_err(|err| {
            if let ApiError::Refused(Refused { reason, message }) = err {
                tracing::warn!(worker_id = id, reason = reason.label(), detail = %message, "refused to renew a certificate");
            }
        })?;
        tracing::info!(worker_id = id, serial = %signed.serial_hex, "renewed worker certificate");
        // The gateway list rides along, so a worker that never learned one gets it here.
        let listed = listed.unwrap_or_default();
        Ok(v1::RenewResponse {
            certificate_chain_pem: chain_pem,
            ca_bundle_pem: self.ca_bundle.pem(),
            cert_expires_at_unix: signed.not_after_unix,
            gateways: listed.gateways,
            gateways_epoch: listed.gateways_epoch,
        })
    }

    /// Notes `signed` as worker `id`'s current certificate, issued in exchange for the
    /// certificate with serial `presented` (empty at registration).
    async fn record(&self, id: u64, signed: &SignedCert, presented: &str) -> Result<(), ApiError> {
        let record = v1::RecordWorkerCertRequest {
            worker_id: id,
            serial: signed.serial_hex.clone(),
            expires_at_unix: signed.not_after_unix,
            presented_serial: presented.to_string(),
        };
        self.control_plane.record_worker_cert(record).await
    }
}

#[cfg(test)]
mod tests;
