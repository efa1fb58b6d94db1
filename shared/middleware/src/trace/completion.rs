//! How a call ended, recorded on its span and logged once: the part of tracing tower-http's
//! `TraceLayer` cannot do, so it is written here, as the inner half of the same stack.
//!
//! - A call whose response body is dropped before the end (a worker that goes away mid
//!   stream, a timeout) is CANCELLED: tower-http's hooks are never called for it, so only a
//!   wrapper that sees the drop can say so.
//! - The `rpc finished` line carries the whole call's latency: tower-http's end-of-stream hook
//!   sees only the time since the response headers.
//! - A client sends its span's context as `traceparent`: the request is mutable only here
//!   (tower-http's span hook sees it read-only), and the span is the current one because
//!   tower-http enters it around this call.
//!
//! The code comes from the headers of a trailers-only answer (errors, usually), else from the
//! trailers that end every normal call and stream.

use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http::uri::PathAndQuery;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project::pin_project;
use tower::{Layer, Service};
use tracing::{Level, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::{Side, level_for, propagation};

const OK: i32 = 0;
const CANCELLED: i32 = 1;
const UNKNOWN: i32 = 2;

/// Whether a server-side code is worth a warning whatever the method's usual level.
fn is_server_fault(code: i32) -> bool {
    matches!(code, 2 | 13 | 15)
}

/// Reads `grpc-status` from headers or trailers.
fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    headers.get("grpc-status")?.to_str().ok()?.trim().parse().ok()
}

/// Installs [`Completed`]; only [`super::layer`] builds it, inside tower-http's trace layer.
#[derive(Clone, Copy, Debug)]
pub struct CompletionLayer {
    pub(super) side: Side,
    pub(super) quiet: &'static [&'static str],
}

impl<S> Layer<S> for CompletionLayer {
    type Service = Completed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Completed { inner, side: self.side, quiet: self.quiet }
    }
}

/// The service built by [`CompletionLayer`].
#[derive(Clone, Debug)]
pub struct Completed<S> {
    inner: S,
    side: Side,
    quiet: &'static [&'static str],
}

impl<S, B, ResBody> Service<Request<B>> for Completed<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    S::Error: Display,
{
    type Response = Response<CompletedBody<ResBody>>;
    type Error = S::Error;
    type Future = CompletedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let path = request.uri().path();
        let level = level_for(self.quiet, path);
        // tower-http entered the call's span around this call; a quiet span that is
        // disabled leaves the caller's span current, which is what then travels on.
        let current = Span::current();
        if self.side == Side::Client {
            propagation::inject(&current.context(), request.headers_mut());
        }
        let span = if current.metadata().is_some_and(|meta| meta.name() == self.side.span_name()) {
            current
        } else {
            Span::none()
        };
        let completion = Completion::new(span, level, self.side, request.uri().path_and_query());
        CompletedFuture { inner: self.inner.call(request), completion: Some(completion) }
    }
}

/// The pending end of one call: records the code on the span and logs one line, exactly once.
pub(crate) struct Completion {
    span: Span,
    level: Level,
    side: Side,
    start: Instant,
    /// Kept only when the span is disabled (quiet method), so a warning can still name it.
    path: Option<PathAndQuery>,
    done: bool,
}

impl Completion {
    fn new(span: Span, level: Level, side: Side, path: Option<&PathAndQuery>) -> Self {
        let path = span.is_disabled().then(|| path.cloned()).flatten();
        Self { span, level, side, start: Instant::now(), path, done: false }
    }

    fn finish(&mut self, code: i32, error: Option<&dyn Display>) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        self.span.record("grpc.status_code", code);
        let elapsed_ms = self.start.elapsed().as_secs_f64() * 1000.0;
        let error = error.map(ToString::to_string);
        let error = error.as_deref();
        let path = self.path.as_ref().map(PathAndQuery::path);
        let span = &self.span;
        let level = if self.side == Side::Server && is_server_fault(code) { Level::WARN } else { self.level };
        if level == Level::WARN {
            tracing::warn!(parent: span, grpc.status_code = code, elapsed_ms, error, path, "rpc finished");
        } else if level == Level::DEBUG {
            tracing::debug!(parent: span, grpc.status_code = code, elapsed_ms, error, path, "rpc finished");
        } else {
            tracing::info!(parent: span, grpc.status_code = code, elapsed_ms, error, path, "rpc finished");
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        // Dropped without an outcome: the peer went away or a timeout dropped the call. No
        // classifier sees that; by the same rule, only the client counts it as a failure.
        if !self.done && self.side == Side::Client {
            self.span.record("otel.status_code", "error");
        }
        self.finish(CANCELLED, Some(&"dropped before the call completed"));
    }
}

/// The response future of [`Completed`].
#[pin_project]
pub struct CompletedFuture<F> {
    #[pin]
    inner: F,
    completion: Option<Completion>,
}

impl<F, B, E> Future for CompletedFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Display,
{
    type Output = Result<Response<CompletedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let mut completion = this.completion.take();
        match result {
            Ok(response) => {
                if let (Some(done), Some(code)) = (&mut completion, grpc_status(response.headers())) {
                    // Trailers-only response: the outcome is already known.
                    done.finish(code, None);
                    completion = None;
                }
                Poll::Ready(Ok(response.map(|inner| CompletedBody { inner, completion })))
            }
            Err(err) => {
                if let Some(done) = &mut completion {
                    done.finish(UNKNOWN, Some(&err));
                }
                Poll::Ready(Err(err))
            }
        }
    }
}

/// A response body that finishes its call when the trailers or the end go by, or when it is
/// dropped before either.
#[pin_project]
pub struct CompletedBody<B> {
    #[pin]
    inner: B,
    completion: Option<Completion>,
}

impl<B> Body for CompletedBody<B>
where
    B: Body,
    B::Error: Display,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = ready!(this.inner.poll_frame(cx));
        if let Some(completion) = this.completion {
            match &polled {
                Some(Ok(frame)) => {
                    if let Some(trailers) = frame.trailers_ref() {
                        completion.finish(grpc_status(trailers).unwrap_or(OK), None);
                    }
                }
                Some(Err(err)) => completion.finish(UNKNOWN, Some(err)),
                None => completion.finish(OK, None),
            }
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
