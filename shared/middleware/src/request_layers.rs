//! The tower-http layers in front of every Muster listener, gRPC and admin alike: each request
//! gets an `x-request-id` (a UUID, unless the caller sent one) that the response carries back
//! and the call's span records, so a user's report and the server's log meet; and credentials
//! in headers are marked sensitive, so no log or debug dump prints them.
//!
//! What tower-http offers but Muster's gRPC servers do not take from it, and why: its
//! `TimeoutLayer` answers HTTP 408 and its `RequestBodyLimitLayer` HTTP 413, which a gRPC
//! client reads as a transport failure; tonic's own timeout (DEADLINE_EXCEEDED, honouring the
//! caller's `grpc-timeout`) and `max_decoding_message_size` (RESOURCE_EXHAUSTED naming the
//! limit) answer in gRPC terms. The admin listener, plain HTTP, uses both (`muster-admin`).

use http::HeaderName;
use http::header::{AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION};
use tower::ServiceBuilder;
use tower::layer::util::{Identity, Stack};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;

/// The header a request's id travels in, both ways.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The longest caller-chosen request id a span records (a UUID is 36 bytes); a longer one is
/// still echoed to its caller but kept out of spans and exported traces.
pub const MAX_REQUEST_ID_BYTES: usize = 128;

/// Headers whose values are never logged or shown in a debug dump.
pub const SENSITIVE_HEADERS: [HeaderName; 3] = [AUTHORIZATION, PROXY_AUTHORIZATION, COOKIE];

/// Outermost first: mark credentials sensitive, give the request an id, copy it to the response.
pub type RequestLayers = Stack<
    PropagateRequestIdLayer,
    Stack<SetRequestIdLayer<MakeRequestUuid>, Stack<SetSensitiveRequestHeadersLayer, Identity>>,
>;

/// The layers every listener puts outermost (before tracing, so the span sees the id).
pub fn request_layers() -> RequestLayers {
    ServiceBuilder::new()
        .layer(SetSensitiveRequestHeadersLayer::new(SENSITIVE_HEADERS))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(PropagateRequestIdLayer::x_request_id())
        .into_inner()
}
