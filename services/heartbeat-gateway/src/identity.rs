//! Who is reporting: the worker id comes from the client certificate only, so a worker can
//! speak for itself and no one else. The registrar names workers
//! `spiffe://<cluster-id>/worker/<id>` (signed by the worker CA, which is all the TLS stack
//! trusts on this port); anything else — another role, another cluster — is refused here
//! with a message that names the problem.

use std::sync::Arc;

pub use muster_tls::WorkerCertError as IdentityError;

/// The worker on the other end of a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerIdentity {
    pub worker_id: u64,
    /// Hex of the certificate serial (as the registrar recorded it), when known.
    pub cert_serial: Option<Arc<str>>,
}

/// The worker a verified client certificate (DER leaf) names, for a gateway of `cluster_id`.
pub fn worker_from_cert(der: &[u8], cluster_id: &str) -> Result<WorkerIdentity, IdentityError> {
    let cert = muster_tls::worker_cert(der, cluster_id)?;
    Ok(WorkerIdentity { worker_id: cert.worker_id, cert_serial: Some(cert.serial_hex.into()) })
}

/// Development only (`tls.insecure = true`): the worker id from `x-muster-worker-id`.
pub fn worker_from_header(value: Option<&str>) -> Option<WorkerIdentity> {
    let worker_id = value?.trim().parse::<u64>().ok().filter(|id| *id > 0)?;
    Some(WorkerIdentity { worker_id, cert_serial: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_insecure_header_must_be_a_worker_id() {
        assert_eq!(worker_from_header(Some(" 7 ")).map(|id| id.worker_id), Some(7));
        assert_eq!(worker_from_header(Some("0")), None);
        assert_eq!(worker_from_header(Some("seven")), None);
        assert_eq!(worker_from_header(None), None);
    }
}
