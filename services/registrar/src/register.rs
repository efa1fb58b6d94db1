//! `Register`: rate-limit by IP, check the CSR, let the control plane consume the token and
//! allocate the id (one Raft command), certify the worker's own key, and hand it the live
//! gateways and the TTL policy the control plane runs (the policy is the control plane's, not
//! the registrar's, so every registrar hands out the same).

use muster_middleware::ApiError;
use muster_proto::v1;
use tonic::{Request, Status};

use crate::service::{Registrar, upstream};
use crate::signing::{Signer, record};

/// What a new worker gets when the control plane cannot say (the seed's defaults).
const DEFAULT_TTL_MS: u32 = 10_000;
const DEFAULT_GRACE_MS: u32 = 10_000;

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

/// What a caller hears for a token the cluster never issued and for one whose secret is
/// wrong: the same words, so Register cannot be used to learn which token ids exist.
pub const INVALID_TOKEN: &str =
    "registration refused: the bootstrap token is not valid for this cluster; ask the operator for a new one";

/// Answers "unknown" and "forged" alike; the real reason stays in the log and in
/// `muster_registrar_token_failures_total`.
fn conceal_token_existence(status: Status) -> Status {
    match muster_token::refusal_reason(status.message()) {
        Some(reason @ ("unknown" | "forged")) => {
            tracing::warn!(reason, detail = status.message(), "bootstrap token refused");
            ApiError::Unauthenticated(INVALID_TOKEN.into()).into()
        }
        _ => status,
    }
}

impl Registrar {
    pub(crate) async fn register_inner(
        &self,
        request: Request<v1::RegisterRequest>,
    ) -> Result<v1::RegisterResponse, Status> {
        self.check_rate(&request, "Register")?;
        let request = request.into_inner();
        // Refuse a bad CSR or an oversize profile before the token is spent.
        Signer::check_csr(&request.csr_pem)?;
        muster_proto::limits::validate_profile(&request.profile.clone().unwrap_or_default())
            .map_err(|err| ApiError::InvalidArgument(err.to_string()))?;
        let registered = self
            .client
            .register_worker(v1::RegisterWorkerRequest { token: request.token, profile: request.profile })
            .await
            .map_err(upstream)
            .inspect_err(|status| self.stats.token_refused(status))
            .map_err(conceal_token_existence)?;
        let worker =
            registered.worker.ok_or_else(|| ApiError::Internal("the control plane returned no worker".into()))?;
        let id = worker.worker_id;
        let signed = self.signer.certify(id, &request.csr_pem)?;
        let (recorded, listed) = tokio::join!(record(&self.client, id, &signed, ""), self.client.list_gateways());
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
            "issued worker identity"
        );
        Ok(v1::RegisterResponse {
            worker_id: id,
            cluster_id: self.signer.cluster_id.clone(),
            certificate_chain_pem: self.signer.chain(&signed),
            ca_bundle_pem: self.ca_bundle_pem.clone(),
            initial_ttl_ms: liveness.ttl_ms,
            grace_ms: liveness.grace_ms,
            gateways: liveness.gateways,
            cert_expires_at_unix: signed.not_after_unix,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_control_planes_policy_is_handed_out_and_gaps_get_the_defaults() {
        let gateway = v1::GatewayEndpoint { gateway_id: "gw-1".into(), addr: "10.0.0.1:3671".into() };
        let policy = v1::TtlPolicy { min_ttl_ms: 3_000, grace_ms: 4_000, ..Default::default() };
        let listing =
            v1::ListGatewaysResponse { gateways: vec![gateway.clone()], policy: Some(policy), ..Default::default() };
        let liveness = Liveness::from_listing(listing);
        assert_eq!((liveness.gateways, liveness.ttl_ms, liveness.grace_ms), (vec![gateway], 3_000, 4_000));
        let empty = Liveness::from_listing(v1::ListGatewaysResponse::default());
        assert_eq!((empty.ttl_ms, empty.grace_ms), (DEFAULT_TTL_MS, DEFAULT_GRACE_MS));
        assert!(Liveness::defaults().gateways.is_empty());
    }

    #[test]
    fn unknown_and_forged_tokens_answer_alike_and_other_refusals_pass_through() {
        let unknown = Status::unauthenticated("registration refused (unknown): no such token t1");
        let forged = Status::unauthenticated("registration refused (forged): the secret of token t2 is wrong");
        let (unknown, forged) = (conceal_token_existence(unknown), conceal_token_existence(forged));
        assert_eq!((unknown.code(), unknown.message()), (forged.code(), forged.message()));
        assert_eq!((unknown.code(), unknown.message()), (tonic::Code::Unauthenticated, INVALID_TOKEN));
        assert!(!unknown.message().contains("t1"));
        let used_up = Status::permission_denied("registration refused (used_up): token t has been used up");
        assert_eq!(conceal_token_existence(used_up.clone()).message(), used_up.message());
    }
}
