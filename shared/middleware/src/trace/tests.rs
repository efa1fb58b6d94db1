//! End-to-end checks of both trace layers against a real OpenTelemetry SDK tracer.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt as _;
use opentelemetry::trace::{SpanId, SpanKind, Status, TraceContextExt as _, TraceId, TracerProvider as _};
use opentelemetry::{Value, global};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tower::{Layer as _, ServiceExt as _, service_fn};
use tracing::Instrument as _;
use tracing::level_filters::LevelFilter;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt as _;

use super::{GrpcClientTraceLayer, GrpcTraceLayer};

/// A request body, as gRPC requests have one (tower-http's trace layer asks for a `Body`).
type NoBody = http_body_util::Empty<&'static [u8]>;

const PATH: &str = "/muster.v1.WorkerService/Register";
const HEARTBEAT: &str = "/muster.v1.HeartbeatService/ReportStatus";
const QUIET: &[&str] = &["/muster.v1.HeartbeatService/"];

/// A thread-local subscriber exporting to memory; dropped at the end of each test.
struct Harness {
    exporter: InMemorySpanExporter,
    provider: SdkTracerProvider,
    _default: tracing::subscriber::DefaultGuard,
}

impl Harness {
    fn new() -> Self {
        global::set_text_map_propagator(TraceContextPropagator::new());
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
        let subscriber = tracing_subscriber::registry()
            .with(LevelFilter::INFO)
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let _default = tracing::subscriber::set_default(subscriber);
        Self { exporter, provider, _default }
    }

    fn spans(&self) -> Vec<SpanData> {
        self.provider.force_flush().unwrap();
        self.exporter.get_finished_spans().unwrap()
    }

    fn span(&self, kind: SpanKind) -> SpanData {
        let spans = self.spans();
        let found = spans.iter().find(|s| s.span_kind == kind);
        found.unwrap_or_else(|| panic!("no {kind:?} span in {spans:#?}")).clone()
    }
}

/// A response body that ends with the given trailers, like a finished gRPC call.
struct Trailers(Option<HeaderMap>);

impl Trailers {
    fn status(code: u8) -> Self {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from(u16::from(code)));
        Self(Some(trailers))
    }
}

impl Body for Trailers {
    type Data = &'static [u8];
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Poll::Ready(self.get_mut().0.take().map(|t| Ok(Frame::trailers(t))))
    }
}

fn request(path: &str) -> Request<NoBody> {
    Request::builder().uri(path).body(NoBody::new()).unwrap()
}

fn attribute(span: &SpanData, key: &str) -> Option<Value> {
    span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| kv.value.clone())
}

/// Server handler answering with `code` in trailers and reporting the trace it ran in.
fn server_with_status(
    code: u8,
    seen: Arc<Mutex<Option<TraceId>>>,
) -> super::GrpcTrace<
    impl tower::Service<Request<NoBody>, Response = Response<Trailers>, Error = Infallible, Future = impl Send> + Clone,
> {
    GrpcTraceLayer::new().with_quiet_paths(QUIET).layer(service_fn(move |_req: Request<NoBody>| {
        let trace_id = tracing::Span::current().context().span().span_context().trace_id();
        *seen.lock().unwrap() = Some(trace_id);
        async move { Ok::<_, Infallible>(Response::new(Trailers::status(code))) }
    }))
}

#[tokio::test]
async fn client_injects_traceparent_and_server_span_adopts_the_trace() {
    let harness = Harness::new();
    let seen_trace = Arc::new(Mutex::new(None));
    let seen_header = Arc::new(Mutex::new(None));
    let server = server_with_status(0, seen_trace.clone());
    let header = seen_header.clone();
    let client = GrpcClientTraceLayer::new().layer(service_fn(move |req: Request<NoBody>| {
        *header.lock().unwrap() = req.headers().get("traceparent").cloned();
        server.clone().oneshot(req)
    }));

    let root = tracing::info_span!("root");
    let root_trace = root.context().span().span_context().trace_id();
    let response = client.oneshot(request(PATH)).instrument(root.clone()).await.unwrap();
    response.into_body().collect().await.unwrap();
    drop(root);

    let client_span = harness.span(SpanKind::Client);
    let server_span = harness.span(SpanKind::Server);
    let header = seen_header.lock().unwrap().clone().expect("traceparent was injected");
    let expected = format!("00-{}-{}-01", client_span.span_context.trace_id(), client_span.span_context.span_id());
    assert_eq!(header.to_str().unwrap(), expected);
    assert_eq!(client_span.span_context.trace_id(), root_trace);
    assert_eq!(server_span.span_context.trace_id(), root_trace);
    assert_eq!(server_span.parent_span_id, client_span.span_context.span_id());
    assert_eq!(*seen_trace.lock().unwrap(), Some(root_trace));
    assert_eq!(server_span.name, "muster.v1.WorkerService/Register");
    assert_eq!(attribute(&server_span, "rpc.service"), Some("muster.v1.WorkerService".into()));
    assert_eq!(attribute(&server_span, "rpc.method"), Some("Register".into()));
    assert_eq!(attribute(&server_span, "grpc.status_code"), Some(Value::I64(0)));
    assert_eq!(server_span.status, Status::Unset);
}

#[tokio::test]
async fn server_adopts_a_foreign_traceparent() {
    let harness = Harness::new();
    let seen = Arc::new(Mutex::new(None));
    let mut req = request(PATH);
    req.headers_mut()
        .insert("traceparent", HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
    let response = server_with_status(0, seen.clone()).oneshot(req).await.unwrap();
    response.into_body().collect().await.unwrap();

    let span = harness.span(SpanKind::Server);
    let trace_id = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
    assert_eq!(span.span_context.trace_id(), trace_id);
    assert_eq!(span.parent_span_id, SpanId::from_hex("00f067aa0ba902b7").unwrap());
    assert!(span.parent_span_is_remote);
    assert_eq!(*seen.lock().unwrap(), Some(trace_id));
}

#[tokio::test]
async fn status_from_trailers_marks_only_the_client_as_failed_for_caller_errors() {
    let harness = Harness::new();
    let server = server_with_status(5, Arc::default());
    let client = GrpcClientTraceLayer::new().layer(server);
    let response = client.oneshot(request(PATH)).await.unwrap();
    response.into_body().collect().await.unwrap();

    let server_span = harness.span(SpanKind::Server);
    let client_span = harness.span(SpanKind::Client);
    assert_eq!(attribute(&server_span, "grpc.status_code"), Some(Value::I64(5)));
    assert_eq!(attribute(&client_span, "grpc.status_code"), Some(Value::I64(5)));
    assert_eq!(server_span.status, Status::Unset, "NOT_FOUND is the caller's problem");
    assert!(matches!(client_span.status, Status::Error { .. }));
}

#[tokio::test]
async fn trailers_only_error_is_read_from_the_headers() {
    let harness = Harness::new();
    let server = GrpcTraceLayer::new().layer(service_fn(|_req: Request<NoBody>| async {
        Ok::<_, Infallible>(tonic::Status::internal("boom").into_http::<tonic::body::Body>())
    }));
    let response = server.oneshot(request(PATH)).await.unwrap();
    drop(response);

    let span = harness.span(SpanKind::Server);
    assert_eq!(attribute(&span, "grpc.status_code"), Some(Value::I64(13)));
    assert!(matches!(span.status, Status::Error { .. }));
}

#[tokio::test]
async fn the_server_span_records_the_request_id() {
    let harness = Harness::new();
    let mut req = request(PATH);
    req.headers_mut().insert(crate::REQUEST_ID_HEADER, HeaderValue::from_static("ticket-4711"));
    let response = server_with_status(0, Arc::default()).oneshot(req).await.unwrap();
    response.into_body().collect().await.unwrap();
    assert_eq!(attribute(&harness.span(SpanKind::Server), "request.id"), Some("ticket-4711".into()));
}

#[tokio::test]
async fn an_oversize_request_id_stays_out_of_the_span() {
    let harness = Harness::new();
    let mut req = request(PATH);
    let huge = "x".repeat(crate::request_layers::MAX_REQUEST_ID_BYTES + 1);
    req.headers_mut().insert(crate::REQUEST_ID_HEADER, HeaderValue::from_str(&huge).unwrap());
    let response = server_with_status(0, Arc::default()).oneshot(req).await.unwrap();
    response.into_body().collect().await.unwrap();
    let span = harness.span(SpanKind::Server);
    assert_eq!(attribute(&span, "request.id"), None);
    assert_eq!(attribute(&span, "grpc.status_code"), Some(Value::I64(0)), "the call itself is traced");
}

#[tokio::test]
async fn body_dropped_before_the_end_is_recorded_as_cancelled() {
    let harness = Harness::new();
    let response = server_with_status(0, Arc::default()).oneshot(request(PATH)).await.unwrap();
    drop(response);

    let span = harness.span(SpanKind::Server);
    assert_eq!(attribute(&span, "grpc.status_code"), Some(Value::I64(1)));
}

#[tokio::test]
async fn quiet_paths_are_not_exported_at_info_but_still_propagate() {
    let harness = Harness::new();
    let seen_trace = Arc::new(Mutex::new(None));
    let server = server_with_status(0, seen_trace.clone());
    let client = GrpcClientTraceLayer::new().with_quiet_paths(QUIET).layer(server);

    let root = tracing::info_span!("root");
    let root_trace = root.context().span().span_context().trace_id();
    let response = client.oneshot(request(HEARTBEAT)).instrument(root.clone()).await.unwrap();
    response.into_body().collect().await.unwrap();
    drop(root);

    let spans = harness.spans();
    assert_eq!(spans.len(), 1, "only the root span: {spans:#?}");
    assert_eq!(spans[0].name, "root");
    // The handler still ran inside the caller's trace.
    assert_eq!(*seen_trace.lock().unwrap(), Some(root_trace));
}

#[tokio::test]
async fn without_an_opentelemetry_layer_nothing_is_injected() {
    global::set_text_map_propagator(TraceContextPropagator::new());
    let _default = tracing::subscriber::set_default(tracing_subscriber::registry());
    let client = GrpcClientTraceLayer::new().layer(service_fn(|req: Request<NoBody>| async move {
        assert!(req.headers().get("traceparent").is_none());
        Ok::<_, Infallible>(Response::new(Trailers::status(0)))
    }));
    let response = client.oneshot(request(PATH)).await.unwrap();
    response.into_body().collect().await.unwrap();
}

#[test]
fn a_traceparent_string_parents_a_span_in_another_task() {
    let harness = Harness::new();
    let proposer = tracing::info_span!("raft.client_write");
    let carried = super::traceparent(&proposer);
    let proposer_cx = proposer.context().span().span_context().clone();
    assert_eq!(carried, format!("00-{}-{}-01", proposer_cx.trace_id(), proposer_cx.span_id()));

    // As the state machine would: a fresh span elsewhere, parented by the carried string.
    let apply = std::thread::spawn({
        let subscriber = tracing::dispatcher::get_default(Clone::clone);
        move || {
            tracing::dispatcher::with_default(&subscriber, || {
                let span = tracing::info_span!("raft.apply");
                super::set_remote_parent(&span, &carried);
                span.in_scope(|| {});
            })
        }
    });
    apply.join().unwrap();
    drop(proposer);

    let spans = harness.spans();
    let apply = spans.iter().find(|s| s.name == "raft.apply").expect("raft.apply exported");
    assert_eq!(apply.span_context.trace_id(), proposer_cx.trace_id());
    assert_eq!(apply.parent_span_id, proposer_cx.span_id());
}

#[test]
fn nothing_is_carried_for_disabled_spans_or_without_opentelemetry() {
    let harness = Harness::new();
    assert_eq!(super::traceparent(&tracing::debug_span!("quiet")), "");
    assert_eq!(super::traceparent(&tracing::Span::none()), "");
    // Garbage or nothing leaves the span a root of its own trace.
    for carried in ["", "not-a-traceparent"] {
        let span = tracing::info_span!("orphan");
        super::set_remote_parent(&span, carried);
        span.in_scope(|| {});
    }
    assert!(harness.spans().iter().all(|s| s.parent_span_id == SpanId::INVALID));
    drop(harness);

    let _default = tracing::subscriber::set_default(tracing_subscriber::registry());
    assert_eq!(super::traceparent(&tracing::info_span!("untraced")), "");
}
