//! Per-service caller roles. The port's middleware already required a certificate from the
//! cluster CA and put the caller's role in the request; services that only one kind of
//! caller may use check it here. Without TLS (`--insecure`) there is no role to check.

use muster_middleware::{ApiError, PeerRole};

/// Refuses the call unless the caller's certificate role is one of `allowed`.
pub fn require_role<T>(request: &tonic::Request<T>, allowed: &[&str], service: &str) -> Result<(), ApiError> {
    match request.extensions().get::<PeerRole>() {
        None => Ok(()),
        Some(PeerRole(role)) if allowed.contains(&role.as_str()) => Ok(()),
        Some(PeerRole(role)) => Err(ApiError::PermissionDenied(format!(
            "{service} is for {} certificates; this one is a {role} certificate",
            allowed.join(" or ")
        ))),
    }
}
