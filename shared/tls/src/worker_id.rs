//! Which worker a client certificate names. The registrar names workers
//! `spiffe://<cluster-id>/worker/<id>` (the cluster id is their trust domain, unlike the
//! components' `spiffe://muster/<role>/<name>`); gateways and the registrar's Renew take the
//! worker id from this and nothing else, so a worker can speak for itself and no one else.
//! Anything else (another role, another cluster) is refused with a message naming the problem.

use crate::Role;
use x509_parser::extensions::GeneralName;

/// The worker a verified client certificate names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerCert {
    pub worker_id: u64,
    /// Hex of the certificate serial, as the registrar recorded it.
    pub serial_hex: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WorkerCertError {
    #[error("the client certificate does not parse")]
    Unparsable,
    #[error("the client certificate has no spiffe:// URI SAN naming a worker")]
    NoSpiffeId,
    #[error("the client certificate is for role {role} ({uri}); only worker certificates may report status")]
    NotAWorker { role: String, uri: String },
    #[error("the client certificate is for cluster {found}; this gateway serves cluster {expected}")]
    WrongCluster { found: String, expected: String },
    #[error("the client certificate names worker {0:?}, which is not a worker id")]
    BadWorkerId(String),
}

/// A worker certificate of `cluster_id` as a caller identity (role `worker`, the id as its
/// name), for the authorization layer of the ports workers call.
pub fn worker_identity(der: &[u8], cluster_id: &str) -> Option<crate::PeerIdentity> {
    let cert = worker_cert(der, cluster_id).ok()?;
    Some(crate::PeerIdentity { role: Role::Worker, name: cert.worker_id.to_string() })
}

/// The worker a verified client certificate (DER leaf) names, for a gateway of `cluster_id`.
pub fn worker_cert(der: &[u8], cluster_id: &str) -> Result<WorkerCert, WorkerCertError> {
    // Component certificates (`spiffe://muster/<role>/<name>`) are not workers; say which role.
    if let Some(peer) = crate::peer_identity(der)
        && peer.role != Role::Worker
    {
        return Err(WorkerCertError::NotAWorker { role: peer.role.to_string(), uri: peer.spiffe_id() });
    }
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|_| WorkerCertError::Unparsable)?;
    let san = cert.subject_alternative_name().map_err(|_| WorkerCertError::Unparsable)?;
    let uri = san
        .into_iter()
        .flat_map(|san| san.value.general_names.iter())
        .find_map(|name| match name {
            GeneralName::URI(uri) if uri.starts_with("spiffe://") => Some(*uri),
            _ => None,
        })
        .ok_or(WorkerCertError::NoSpiffeId)?;
    let worker_id = parse_worker_uri(uri, cluster_id)?;
    Ok(WorkerCert { worker_id, serial_hex: serial_hex(cert.raw_serial()) })
}

/// `spiffe://<cluster-id>/worker/<id>` → id.
fn parse_worker_uri(uri: &str, cluster_id: &str) -> Result<u64, WorkerCertError> {
    let rest = uri.strip_prefix("spiffe://").ok_or(WorkerCertError::NoSpiffeId)?;
    let mut parts = rest.splitn(3, '/');
    let (domain, role, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if role != Role::Worker.as_str() {
        return Err(WorkerCertError::NotAWorker { role: role.to_string(), uri: uri.to_string() });
    }
    if domain != cluster_id {
        return Err(WorkerCertError::WrongCluster { found: domain.to_string(), expected: cluster_id.to_string() });
    }
    match name.parse::<u64>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(WorkerCertError::BadWorkerId(name.to_string())),
    }
}

/// The serial as the registrar wrote it (`hex` of its 16 random bytes): DER may add a sign
/// byte or drop leading zero bytes, so normalise back to at least 16 bytes.
fn serial_hex(raw: &[u8]) -> String {
    let mut bytes = raw;
    while bytes.len() > 16 && bytes[0] == 0 {
        bytes = &bytes[1..];
    }
    let pad = 16usize.saturating_sub(bytes.len());
    let mut out = "00".repeat(pad);
    out.push_str(&hex::encode(bytes));
    out
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, KeyPair, SanType, SerialNumber};

    use super::*;

    fn cert_with_uri(uri: &str, serial: &[u8]) -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names.push(SanType::URI(uri.try_into().unwrap()));
        params.serial_number = Some(SerialNumber::from_slice(serial));
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn a_worker_certificate_names_its_worker() {
        let serial = [0x9f; 16];
        let der = cert_with_uri("spiffe://c0ffee/worker/42", &serial);
        let id = worker_cert(&der, "c0ffee").unwrap();
        assert_eq!(id.worker_id, 42);
        assert_eq!(id.serial_hex, hex::encode(serial));
    }

    #[test]
    fn serials_round_trip_whatever_der_does_to_them() {
        for serial in [[0x00; 16], [0x01; 16], [0xff; 16]] {
            let mut raw = serial.to_vec();
            // A sign byte, and a minimal encoding without the leading zeros.
            raw.insert(0, 0);
            assert_eq!(serial_hex(&raw), hex::encode(serial));
            let trimmed: Vec<u8> = serial.iter().copied().skip_while(|b| *b == 0).collect();
            assert_eq!(serial_hex(&trimmed), hex::encode(serial));
        }
    }

    #[test]
    fn other_roles_clusters_and_names_are_refused_by_name() {
        let other_cluster = cert_with_uri("spiffe://beef/worker/42", &[1]);
        assert_eq!(
            worker_cert(&other_cluster, "c0ffee").unwrap_err(),
            WorkerCertError::WrongCluster { found: "beef".into(), expected: "c0ffee".into() }
        );
        let gateway = cert_with_uri("spiffe://muster/gateway/gw-1", &[1]);
        let err = worker_cert(&gateway, "c0ffee").unwrap_err();
        assert!(err.to_string().contains("role gateway"), "{err}");
        let registrar = cert_with_uri("spiffe://c0ffee/registrar/r", &[1]);
        assert!(matches!(worker_cert(&registrar, "c0ffee"), Err(WorkerCertError::NotAWorker { .. })));
        let bad_id = cert_with_uri("spiffe://c0ffee/worker/w-1", &[1]);
        assert_eq!(worker_cert(&bad_id, "c0ffee").unwrap_err(), WorkerCertError::BadWorkerId("w-1".into()));
        let zero = cert_with_uri("spiffe://c0ffee/worker/0", &[1]);
        assert!(matches!(worker_cert(&zero, "c0ffee"), Err(WorkerCertError::BadWorkerId(_))));
        let web = cert_with_uri("https://example.com/", &[1]);
        assert_eq!(worker_cert(&web, "c0ffee").unwrap_err(), WorkerCertError::NoSpiffeId);
        assert_eq!(worker_cert(b"junk", "c0ffee").unwrap_err(), WorkerCertError::Unparsable);
    }
}
