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
//!
//! A request id is marked never-indexed (the `http` crate's "sensitive"; only HPACK and `Debug`
//! read the flag, the id is still logged and traced). Every response carries a new one, so
//! HTTP/2's header table never gets a hit from it: indexing it made the encoder insert each id,
//! evict an old one and first compare it with every id still in the table (about 50 of them):
//! about 5 % of the servers' CPU on linearizable gets (`memcmp` 5.2 → 0.7 % in a profile), and
//! the client's decoder paid again.

use std::hash::{BuildHasher as _, RandomState};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use http::header::{AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION};
use http::{HeaderName, HeaderValue, Request};
use tower::ServiceBuilder;
use tower::layer::util::{Identity, Stack};
use tower::{Layer, Service};
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;

/// The header a request's id travels in, both ways.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The longest caller-chosen request id a span records (a UUID is 36 bytes); a longer one is
/// still echoed to its caller but kept out of spans and exported traces.
pub const MAX_REQUEST_ID_BYTES: usize = 128;

/// Headers whose values are never logged or shown in a debug dump.
pub const SENSITIVE_HEADERS: [HeaderName; 3] = [AUTHORIZATION, PROXY_AUTHORIZATION, COOKIE];

/// Outermost first: mark credentials sensitive, keep a caller's id out of header tables, give
/// the request an id, copy it to the response.
pub type RequestLayers = Stack<
    PropagateRequestIdLayer,
    Stack<
        SetRequestIdLayer<MakeRequestIds>,
        Stack<NeverIndexRequestIdLayer, Stack<SetSensitiveRequestHeadersLayer, Identity>>,
    >,
>;

/// The layers every listener puts outermost (before tracing, so the span sees the id).
pub fn request_layers() -> RequestLayers {
    ServiceBuilder::new()
        .layer(SetSensitiveRequestHeadersLayer::new(SENSITIVE_HEADERS))
        .layer(NeverIndexRequestIdLayer)
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
        let mut id = HeaderValue::from_str(&request_id(*PROCESS, NEXT.fetch_add(1, Ordering::Relaxed))).ok()?;
        id.set_sensitive(true);
        Some(RequestId::new(id))
    }
}

/// Marks the id a caller sent never-indexed, so the response that echoes it does not index
/// it either (see the module comment).
#[derive(Clone, Copy, Debug, Default)]
pub struct NeverIndexRequestIdLayer;

impl<S> Layer<S> for NeverIndexRequestIdLayer {
    type Service = NeverIndexRequestId<S>;

    fn layer(&self, inner: S) -> Self::Service {
        NeverIndexRequestId(inner)
    }
}

/// The service of [`NeverIndexRequestIdLayer`].
#[derive(Clone, Copy, Debug)]
pub struct NeverIndexRequestId<S>(S);

impl<S, B> Service<Request<B>> for NeverIndexRequestId<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        if let Some(id) = request.headers_mut().get_mut(REQUEST_ID_HEADER) {
            id.set_sensitive(true);
        }
        self.0.call(request)
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

    #[tokio::test]
    async fn every_echoed_request_id_is_never_indexed_and_a_callers_id_is_kept() {
        use tower::ServiceExt as _;
        let echo =
            tower::service_fn(|_: Request<()>| async { Ok::<_, std::convert::Infallible>(http::Response::new(())) });
        let service = ServiceBuilder::new().layer(request_layers()).service(echo);
        let made = service.clone().oneshot(Request::new(())).await.unwrap();
        let made = made.headers().get(REQUEST_ID_HEADER).expect("a made id");
        assert!(made.is_sensitive(), "a made id is indexed: {made:?}");
        let mut request = Request::new(());
        request.headers_mut().insert(REQUEST_ID_HEADER, HeaderValue::from_static("ticket-4711"));
        let echoed = service.oneshot(request).await.unwrap();
        let echoed = echoed.headers().get(REQUEST_ID_HEADER).expect("the caller's id");
        assert!(echoed.is_sensitive(), "the caller's id is indexed");
        assert_eq!(echoed.to_str().unwrap(), "ticket-4711");
    }
}
