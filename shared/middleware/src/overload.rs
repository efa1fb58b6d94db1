//! A process-wide cap on calls in flight that answers `RESOURCE_EXHAUSTED` when full.
//!
//! tower's `GlobalConcurrencyLimit` + `LoadShed` refuse work immediately instead of queueing
//! it, but they fail with an opaque `Overloaded` error; this layer turns that into a gRPC
//! status naming the limit, so clients can back off and retry (another node, or later).
//! Only the handler future holds a slot: a streaming call frees it once its response starts,
//! streams being bounded by HTTP/2 `max_concurrent_streams` instead.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use pin_project::pin_project;
use tokio::sync::Semaphore;
use tonic::Status;
use tower::limit::{ConcurrencyLimit, GlobalConcurrencyLimitLayer};
use tower::load_shed::LoadShed;
use tower::load_shed::error::Overloaded;
use tower::{BoxError, Layer, Service};

/// Sheds calls beyond `max_in_flight` across every connection of the server it wraps.
#[derive(Clone, Debug)]
pub struct OverloadLayer {
    semaphore: Arc<Semaphore>,
    max_in_flight: usize,
}

impl OverloadLayer {
    pub fn new(max_in_flight: usize) -> Self {
        Self { semaphore: Arc::new(Semaphore::new(max_in_flight)), max_in_flight }
    }

    /// Calls currently holding a slot (for metrics).
    pub fn in_flight(&self) -> usize {
        self.max_in_flight.saturating_sub(self.semaphore.available_permits())
    }
}

impl<S> Layer<S> for OverloadLayer {
    type Service = Overload<LoadShed<ConcurrencyLimit<S>>>;

    fn layer(&self, inner: S) -> Self::Service {
        let limited = GlobalConcurrencyLimitLayer::with_semaphore(self.semaphore.clone()).layer(inner);
        Overload { inner: LoadShed::new(limited), max_in_flight: self.max_in_flight }
    }
}

/// Maps a shed call to a trailers-only `RESOURCE_EXHAUSTED` response.
#[derive(Clone, Debug)]
pub struct Overload<S> {
    inner: S,
    max_in_flight: usize,
}

impl<S, B, ResBody> Service<Request<B>> for Overload<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = BoxError;
    type Future = OverloadFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        OverloadFuture { inner: self.inner.call(req), max_in_flight: self.max_in_flight }
    }
}

/// The response future of [`Overload`].
#[pin_project]
pub struct OverloadFuture<F> {
    #[pin]
    inner: F,
    max_in_flight: usize,
}

impl<F, ResBody, E> Future for OverloadFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    E: Into<BoxError>,
    ResBody: Default,
{
    type Output = Result<Response<ResBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match ready!(this.inner.poll(cx)).map_err(Into::into) {
            Err(err) if err.is::<Overloaded>() => {
                let message = format!("server overloaded: {} requests in flight", this.max_in_flight);
                Poll::Ready(Ok(Status::from(crate::ApiError::ResourceExhausted(message)).into_http()))
            }
            other => Poll::Ready(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;
    use tower::ServiceExt as _;
    use tower_test::mock;

    use super::*;

    type Body = tonic::body::Body;

    fn request() -> Request<()> {
        Request::builder().uri("/muster.v1.ClientService/Write").body(()).unwrap()
    }

    // hyper clones the service for every request and drives it with `oneshot`, so a shed
    // call leaves no pending permit acquisition behind; the tests call it the same way.

    #[tokio::test]
    async fn sheds_beyond_the_limit_with_resource_exhausted_and_recovers() {
        let layer = OverloadLayer::new(1);
        let (mock, mut handle) = mock::pair::<Request<()>, Response<Body>>();
        let service = layer.layer(mock);

        let first = tokio::spawn(service.clone().oneshot(request()));
        let (_, reply) = handle.next_request().await.unwrap();
        assert_eq!(layer.in_flight(), 1);

        let response = service.clone().oneshot(request()).await.unwrap();
        let status = Status::from_header_map(response.headers()).unwrap();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(status.message(), "server overloaded: 1 requests in flight");

        reply.send_response(Response::new(Body::default()));
        first.await.unwrap().unwrap();
        assert_eq!(layer.in_flight(), 0);

        let second = tokio::spawn(service.clone().oneshot(request()));
        let (_, reply) = handle.next_request().await.unwrap();
        reply.send_response(Response::new(Body::default()));
        let response = second.await.unwrap().unwrap();
        assert!(response.headers().get("grpc-status").is_none());
    }

    #[tokio::test]
    async fn the_limit_is_shared_by_services_built_from_one_layer() {
        let layer = OverloadLayer::new(1);
        let (mock_a, mut handle_a) = mock::pair::<Request<()>, Response<Body>>();
        let (mock_b, _handle_b) = mock::pair::<Request<()>, Response<Body>>();
        let (a, b) = (layer.layer(mock_a), layer.layer(mock_b));

        let _held = tokio::spawn(a.oneshot(request()));
        let _pending = handle_a.next_request().await.unwrap();
        let response = b.oneshot(request()).await.unwrap();
        let status = Status::from_header_map(response.headers()).unwrap();
        assert_eq!(status.code(), Code::ResourceExhausted);
    }

    #[tokio::test]
    async fn other_errors_pass_through() {
        let (mut service, mut handle) = mock::spawn_layer::<Request<()>, Response<Body>, _>(OverloadLayer::new(4));
        handle.allow(1);
        assert!(service.poll_ready().is_ready());
        let call = service.call(request());
        let (_, reply) = handle.next_request().await.unwrap();
        reply.send_error("disk on fire");
        assert_eq!(call.await.unwrap_err().to_string(), "disk on fire");
    }
}
