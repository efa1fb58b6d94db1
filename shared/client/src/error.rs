//! What can go wrong talking to the control plane.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no control-plane endpoints configured")]
    NoEndpoints,
    #[error("invalid endpoint {endpoint:?}: {message}")]
    InvalidEndpoint { endpoint: String, message: String },
    /// The server answered with an error that retrying will not fix.
    #[error("{} ({:?})", .0.message(), .0.code())]
    Status(tonic::Status),
    /// Every node tried until the timeout; `target` is the last one asked.
    #[error("gave up after {elapsed:?}; the last node tried, {target}, answered: {last}")]
    Exhausted { elapsed: Duration, target: String, last: String },
}

impl ClientError {
    /// The gRPC status, when the server answered.
    pub fn status(&self) -> Option<&tonic::Status> {
        match self {
            ClientError::Status(status) => Some(status),
            _ => None,
        }
    }
}
