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
    /// The node speaks another transport than this client (TLS against plaintext or the
    /// reverse): no retry can help, and the fix is a flag.
    #[error("{target}: {detail}; {mismatch}")]
    Transport { target: String, detail: String, mismatch: TransportMismatch },
}

/// A client and a node that do not agree on TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TransportMismatch {
    #[error(
        "the node expects TLS: drop --insecure and give its certificates (--tls-dir DIR, or --ca, --cert and --key)"
    )]
    NodeWantsTls,
    #[error("the node speaks plaintext: pass --insecure, or start the node with TLS")]
    NodeIsPlaintext,
}

impl TransportMismatch {
    /// Recognises the mismatch from a call's error. These are the texts of this process's own
    /// transport (hyper/h2 and rustls) for the first bytes of the other protocol, never a
    /// message a server sent; `tests/e2e/tests/musterctl.rs` pins both.
    pub(crate) fn of(status: &tonic::Status, client_uses_tls: bool) -> Option<Self> {
        let message = status.message();
        if client_uses_tls {
            message.contains("InvalidContentType").then_some(Self::NodeIsPlaintext)
        } else {
            (status.code() == tonic::Code::Internal && message.starts_with("h2 protocol error"))
                .then_some(Self::NodeWantsTls)
        }
    }
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
