//! Who is on the other end: extracts the Muster role and name from a verified peer
//! certificate's `spiffe://muster/<role>/<name>` URI SAN, for per-role authorization.

use x509_parser::extensions::GeneralName;

use crate::{Role, TRUST_DOMAIN_PREFIX, spiffe_id};

/// Identity of a verified peer certificate.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PeerIdentity {
    pub role: Role,
    pub name: String,
}

impl PeerIdentity {
    /// `spiffe://muster/<role>/<name>`.
    pub fn spiffe_id(&self) -> String {
        spiffe_id(self.role, &self.name)
    }

    /// Parses `spiffe://muster/<role>/<name>` (as [`Self::spiffe_id`] writes it).
    pub fn from_spiffe_id(uri: &str) -> Option<Self> {
        parse_spiffe(uri)
    }
}

/// Parses the first well-formed `spiffe://muster/<role>/<name>` URI SAN of a DER certificate.
/// `None` when the DER does not parse or no such SAN exists. Only call this on certificates
/// the TLS stack has already verified against the cluster CA.
pub fn peer_identity(cert_der: &[u8]) -> Option<PeerIdentity> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    identity_of(&cert)
}

/// [`peer_identity`] and the certificate's `notAfter` (Unix seconds), from one parse.
pub fn peer_identity_and_expiry(cert_der: &[u8]) -> Option<(PeerIdentity, i64)> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    Some((identity_of(&cert)?, cert.validity().not_after.timestamp()))
}

fn identity_of(cert: &x509_parser::certificate::X509Certificate<'_>) -> Option<PeerIdentity> {
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        GeneralName::URI(uri) => parse_spiffe(uri),
        _ => None,
    })
}

/// Whether a gateway whose certificate is named `cert_name` may announce itself as
/// `gateway_id`: its own name, or `<name>/<instance>` for replicas that share one certificate
/// (compose's `--scale`, a Deployment). A gateway certificate never speaks for another name.
pub fn gateway_id_allowed(cert_name: &str, gateway_id: &str) -> bool {
    // The id goes into the gateway list every worker receives: short and printable.
    let printable =
        gateway_id.len() <= GATEWAY_ID_MAX_BYTES && !gateway_id.chars().any(|c| c.is_whitespace() || c.is_control());
    let instance = gateway_id.split_once('/').map(|(_, instance)| instance);
    let named = gateway_cert_name(gateway_id) == cert_name
        && instance.is_none_or(|instance| !instance.is_empty() && !instance.contains('/'));
    printable && named
}

/// The certificate name a gateway id reports under: `<name>` of `<name>` or `<name>/<instance>`.
pub fn gateway_cert_name(gateway_id: &str) -> &str {
    gateway_id.split_once('/').map_or(gateway_id, |(name, _)| name)
}

/// The longest gateway id (as the gateway's own `gateway_id` setting allows).
pub const GATEWAY_ID_MAX_BYTES: usize = 128;

fn parse_spiffe(uri: &str) -> Option<PeerIdentity> {
    let path = uri.strip_prefix(TRUST_DOMAIN_PREFIX)?.strip_prefix('/')?;
    let (role, name) = path.split_once('/')?;
    if name.is_empty() || name.contains('/') {
        return None;
    }
    Some(PeerIdentity { role: role.parse().ok()?, name: name.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gateway_certificate_speaks_for_its_own_name_only() {
        assert!(gateway_id_allowed("gw", "gw"));
        assert!(gateway_id_allowed("gw", "gw/10.0.0.7-3671"));
        let long = format!("gw/{}", "x".repeat(GATEWAY_ID_MAX_BYTES));
        for other in ["evil-gw", "gw2", "gw/", "gw/a/b", "g", "", "gwx/1", "gw/a b", "gw/a\n", long.as_str()] {
            assert!(!gateway_id_allowed("gw", other), "{other}");
        }
        assert_eq!((gateway_cert_name("gw"), gateway_cert_name("gw/10.0.0.7-3671")), ("gw", "gw"));
    }

    #[test]
    fn parses_only_muster_spiffe_ids() {
        let id = parse_spiffe("spiffe://muster/worker/w-1").unwrap();
        assert_eq!((id.role, id.name.as_str()), (Role::Worker, "w-1"));
        for bad in [
            "spiffe://musterx/worker/w-1",
            "spiffe://muster/worker/",
            "spiffe://muster/worker",
            "spiffe://muster/worker/a/b",
            "spiffe://muster/admin/a",
            "spiffe://other/worker/a",
        ] {
            assert_eq!(parse_spiffe(bad), None, "{bad}");
        }
    }
}
