//! The resource limits every Muster gRPC server runs with, applied in one place.
//!
//! `max_message_bytes` cannot be set on the server builder in tonic: callers apply it per
//! service with `.max_decoding_message_size(limits.max_message_bytes)` (and the encoding
//! twin where responses can be large).

use std::time::Duration;

use tonic::transport::Server;
use tower::layer::util::{Identity, Stack};

use crate::overload::OverloadLayer;
use crate::request_layers::{RequestLayers, request_layers};

/// How often an idle HTTP/2 connection is pinged, so dead peers are noticed.
pub const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a keepalive ping may go unanswered before the connection is closed.
pub const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP keepalive, for peers that vanish without a FIN behind NAT or load balancers.
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// Per-server limits, normally read from configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// Deadline for a handler to produce its response (the client's `grpc-timeout`, if
    /// shorter, wins). For streams it bounds the time to the first response headers.
    pub request_timeout: Duration,
    /// Calls in flight per connection (queued beyond) and across the server (shed beyond).
    pub max_concurrent_requests: usize,
    /// HTTP/2 streams one connection may have open at once.
    pub max_concurrent_streams: u32,
    /// Largest decoded request message, applied per service by the caller.
    pub max_message_bytes: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            max_concurrent_requests: 1024,
            max_concurrent_streams: 256,
            max_message_bytes: 4 * 1024 * 1024,
        }
    }
}

/// A tonic server builder with `limits`, keepalives and `TCP_NODELAY` applied, and the
/// [request layers](crate::request_layers) (request ids, sensitive headers) outermost.
pub fn server_builder(limits: &ServerLimits) -> Server<Stack<RequestLayers, Identity>> {
    Server::builder()
        .timeout(limits.request_timeout)
        .concurrency_limit_per_connection(limits.max_concurrent_requests)
        .max_concurrent_streams(limits.max_concurrent_streams)
        .tcp_nodelay(true)
        .tcp_keepalive(Some(TCP_KEEPALIVE))
        .http2_keepalive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
        .layer(request_layers())
}

/// The server-wide in-flight cap for `limits`: install with `Server::layer` (inside the trace
/// layer). Excess calls get `RESOURCE_EXHAUSTED` "server overloaded: N requests in flight".
pub fn overload_layer(limits: &ServerLimits) -> OverloadLayer {
    OverloadLayer::new(limits.max_concurrent_requests)
}
