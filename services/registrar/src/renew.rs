//! `Renew`: a worker trades its current certificate (presented over mTLS, verified by the TLS
//! layer against the worker CA) and a CSR for its next key for a fresh certificate with the
//! same id. The control plane refuses to record a certificate for a revoked worker, and that
//! refusal is what stops a revoked worker from renewing: the certificate is only returned
//! once it is recorded.

use muster_client::ClientError;
use muster_middleware::ApiError;
use muster_proto::v1;
use tonic::{Request, Status};

use crate::service::{Registrar, upstream};
use crate::signing::{Signer, record};

impl Registrar {
    pub(crate) async fn renew_inner(&self, request: Request<v1::RenewRequest>) -> Result<v1::RenewResponse, Status> {
        self.check_rate(&request, "Renew")?;
        let certs = request.peer_certs().filter(|certs| !certs.is_empty()).ok_or_else(|| {
            ApiError::Unauthenticated(
                "Renew needs the worker's current certificate: call it over mTLS with the identity from Register"
                    .into(),
            )
        })?;
        let presented = muster_tls::worker_cert(&certs[0], &self.signer.cluster_id)
            .map_err(|err| ApiError::PermissionDenied(err.to_string()))?;
        let id = presented.worker_id;
        let request = request.into_inner();
        Signer::check_csr(&request.csr_pem)?;
        let signed = self.signer.certify(id, &request.csr_pem)?;
        let recording = record(&self.client, id, &signed, &presented.serial_hex);
        let (recorded, listed) = tokio::join!(recording, self.client.list_gateways());
        recorded.map_err(|err| refusal(id, err))?;
        tracing::info!(worker_id = id, serial = %signed.serial_hex, "renewed worker certificate");
        // The gateway list rides along, so a worker that never learned one gets it here.
        let listed = listed.unwrap_or_default();
        Ok(v1::RenewResponse {
            certificate_chain_pem: self.signer.chain(&signed),
            ca_bundle_pem: self.ca_bundle_pem.clone(),
            cert_expires_at_unix: signed.not_after_unix,
            gateways: listed.gateways,
            gateways_epoch: listed.gateways_epoch,
        })
    }
}

/// Why the control plane would not record the renewed certificate, as the worker should see
/// it: a revoked worker, or a certificate that is not the worker's current one, is
/// PERMISSION_DENIED for good; anything else passes through (an unreachable control plane is
/// UNAVAILABLE, worth retrying).
fn refusal(id: u64, err: ClientError) -> Status {
    match &err {
        ClientError::Status(status) if status.message().contains("revoked") => {
            tracing::warn!(worker_id = id, "refused to renew the certificate of a revoked worker");
            ApiError::PermissionDenied(format!("worker {id} is revoked")).into()
        }
        ClientError::Status(status) if status.code() == tonic::Code::PermissionDenied => {
            tracing::warn!(worker_id = id, reason = status.message(), "refused to renew a certificate");
            ApiError::PermissionDenied(format!("Renew refused: {}", status.message())).into()
        }
        _ => upstream(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revoked_worker_is_permission_denied_and_other_refusals_pass_through() {
        let revoked = refusal(3, ClientError::Status(Status::not_found("worker 3 is revoked")));
        assert_eq!((revoked.code(), revoked.message()), (tonic::Code::PermissionDenied, "worker 3 is revoked"));
        let unknown = refusal(4, ClientError::Status(Status::not_found("no worker 4")));
        assert_eq!(unknown.code(), tonic::Code::NotFound);
        let down = refusal(5, ClientError::NoEndpoints);
        assert_eq!(down.code(), tonic::Code::Unavailable);
    }
}
