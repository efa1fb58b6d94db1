//! What a certificate should say: the roles of Muster's components, the SPIFFE-style names
//! derived from them, and the request (`CertSpec`) the CA turns into a certificate.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::TlsError;

/// Every Muster URI SAN looks like `spiffe://muster/<role>/<name>`.
pub const TRUST_DOMAIN_PREFIX: &str = "spiffe://muster";

/// The kind of component a certificate belongs to; services authorize peers by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    ControlPlane,
    Registrar,
    Gateway,
    Worker,
    Operator,
    /// A read-only consumer (a scheduler, a dashboard): reads and watches KV and workers.
    Watcher,
}

impl Role {
    /// All roles, in a stable order.
    pub const ALL: [Role; 6] =
        [Role::ControlPlane, Role::Registrar, Role::Gateway, Role::Worker, Role::Operator, Role::Watcher];

    /// The role as it appears in SPIFFE IDs and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ControlPlane => "control-plane",
            Role::Registrar => "registrar",
            Role::Gateway => "gateway",
            Role::Worker => "worker",
            Role::Operator => "operator",
            Role::Watcher => "watcher",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = TlsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL.into_iter().find(|role| role.as_str() == s).ok_or_else(|| TlsError::UnknownRole(s.to_owned()))
    }
}

/// `spiffe://muster/<role>/<name>`: the URI SAN of a certificate for `name` in `role`.
pub fn spiffe_id(role: Role, name: &str) -> String {
    format!("{TRUST_DOMAIN_PREFIX}/{}/{name}", role.as_str())
}

/// The hosts a node certificate covers by default: its name plus loopback.
pub fn default_node_hosts(name: &str) -> Vec<String> {
    vec![name.to_owned(), "localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()]
}

/// A request for one leaf certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertSpec {
    /// Common name and the last segment of the SPIFFE ID; also the file stem in a PKI dir.
    pub name: String,
    pub role: Role,
    /// DNS names or IP addresses, written as DNS or IP SANs.
    pub hosts: Vec<String>,
    pub validity: Duration,
    /// Adds the serverAuth extended key usage.
    pub server_auth: bool,
    /// Adds the clientAuth extended key usage.
    pub client_auth: bool,
}

impl CertSpec {
    /// A node that both serves and dials: default hosts, server and client auth.
    pub fn node(name: &str, role: Role, validity: Duration) -> Self {
        CertSpec {
            name: name.to_owned(),
            role,
            hosts: default_node_hosts(name),
            validity,
            server_auth: true,
            client_auth: true,
        }
    }

    /// The operator's client-only certificate, named "operator".
    pub fn operator(validity: Duration) -> Self {
        CertSpec {
            name: "operator".to_owned(),
            role: Role::Operator,
            hosts: Vec::new(),
            validity,
            server_auth: false,
            client_auth: true,
        }
    }

    /// `spiffe://muster/<role>/<name>` for this spec.
    pub fn spiffe_id(&self) -> String {
        spiffe_id(self.role, &self.name)
    }

    /// Rejects specs that would yield a useless or ambiguous certificate.
    pub(crate) fn validate(&self) -> Result<(), TlsError> {
        validate_name(&self.name, "CertSpec.name")?;
        if self.validity.is_zero() {
            return Err(invalid("CertSpec.validity", "0s", "must be positive"));
        }
        if !self.server_auth && !self.client_auth {
            return Err(invalid("CertSpec.server_auth/client_auth", &self.name, "at least one must be set"));
        }
        if self.server_auth && self.hosts.is_empty() {
            return Err(invalid("CertSpec.hosts", &self.name, "a server certificate needs at least one host"));
        }
        for host in &self.hosts {
            validate_host(host)?;
        }
        Ok(())
    }
}

/// A certificate and its private key, both PEM-encoded.
#[derive(Clone, PartialEq, Eq)]
pub struct Pem {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for Pem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pem").field("cert_pem", &self.cert_pem).field("key_pem", &"[elided]").finish()
    }
}

/// Names end up in SPIFFE paths and file names: keep them to `[A-Za-z0-9._-]`, no leading dot.
pub(crate) fn validate_name(name: &str, field: &str) -> Result<(), TlsError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || name.starts_with('.') || !name.chars().all(ok_char) {
        return Err(invalid(
            field,
            name,
            "must be non-empty, use only letters, digits, '-', '_', '.', and not start with '.'",
        ));
    }
    Ok(())
}

fn validate_host(host: &str) -> Result<(), TlsError> {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '*');
    if host.is_empty() || host.len() > 253 || !host.chars().all(ok_char) {
        return Err(invalid("CertSpec.hosts", host, "not an IP address or DNS name"));
    }
    Ok(())
}

pub(crate) fn invalid(field: &str, value: &str, reason: &str) -> TlsError {
    TlsError::Invalid { field: field.to_owned(), value: value.to_owned(), reason: reason.to_owned() }
}
