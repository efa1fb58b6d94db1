//! The tower-http layers in front of every Muster listener, gRPC and admin alike: each request
//! gets an `x-request-id` (UUID-shaped, unless the caller sent one) that the response carries back
//! and the call's span records, so a user's report and the server's log meet; and credentials
//! in headers are marked sensitive, so no log or debug dump prints them.
//!
//! What tower-http offers but Muster's gRPC servers do not take from it, and why: its
//! `TimeoutLayer` answers HTTP 408 and its `RequestBodyLimitLayer` HTTP 413, which a gRPC
//! client reads as a transport failure; tonic's own timeout (DEADLINE_EXCEEDED, honouring the
//! caller's `grpc-timeout`) and `max_decoding_message_size` (RESOURCE_EXHAUSTED naming the
//! limit) answer in gRPC terms. The admin listener, plain HTTP, uses both (`muster-admin`).

use std::hash::{BuildHasher as _, RandomState};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use http::header::{AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION};
use http::{HeaderName, HeaderValue, Request};
use tower::ServiceBuilder;
use tower::layer::util::{Identity, Stack};
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
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
    Stack<SetRequestIdLayer<MakeRequestIds>, Stack<SetSensitiveRequestHeadersLayer, Identity>>,
>;

/// The layers every listener puts outermost (before tracing, so the span sees the id).
pub fn request_layers() -> RequestLayers {
    ServiceBuilder::new()
        .layer(SetSensitiveRequestHeadersLayer::new(SENSITIVE_HEADERS))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestIds))
        .layer(PropagateRequestIdLayer::x_request_id())
        .into_inner()
}

/// Request ids shaped like a UUID (8-4-4-4-12 hex digits): the first half random for this
/// process, the second a counter, so ids stay unique across processes and restarts. A v4 UUID
/// per request cost a `getrandom` system call on every call a node served.
#[derive(Clone, Copy, Debug, Default)]
pub struct MakeRequestIds;

impl MakeRequestId for MakeRequestIds {
    fn make_request_id<B>(&mut self, _request: &Request<B>) -> Option<RequestId> {
        // The standard library seeds each RandomState from the OS once per thread and then
        // varies it: one hash of nothing is a random 64-bit value.
        static PROCESS: LazyLock<u64> = LazyLock::new(|| RandomState::new().hash_one(std::process::id()));
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Some(RequestId::new(HeaderValue::from_str(&request_id(*PROCESS, NEXT.fetch_add(1, Ordering::Relaxed))).ok()?))
    }
}

fn request_id(process: u64, counter: u64) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        process >> 32,
        (process >> 16) & 0xffff,
        process & 0xffff,
        counter >> 48,
        counter & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_uuid_shaped_and_distinct() {
        assert_eq!(request_id(0x0123_4567_89ab_cdef, 0x1_0000_0000_0002), "01234567-89ab-cdef-0001-000000000002");
        let mut make = MakeRequestIds;
        let request = Request::new(());
        let one = make.make_request_id(&request).unwrap();
        let two = make.make_request_id(&request).unwrap();
        assert_ne!(one.header_value(), two.header_value());
        let text = one.header_value().to_str().unwrap();
        assert_eq!((text.len(), text.matches('-').count()), (36, 4), "{text}");
    }
}
