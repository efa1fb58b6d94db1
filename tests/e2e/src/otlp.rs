//! A fake OpenTelemetry collector, so a test can assert on the traces real processes export.
//!
//! [`OtlpReceiver`] serves the OTLP/gRPC `TraceService` on 127.0.0.1 (port 0) and keeps every
//! span it is sent, flattened to [`ReceivedSpan`] (the resource's `service.name`, ids, name,
//! kind, attributes). Start processes with [`OtlpReceiver::env`] (a short batch delay, so
//! spans arrive while the test waits, not at exit), then [`OtlpReceiver::wait_for_trace`]
//! polls until one trace passes the test's check.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context as _, ensure};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
pub use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

/// `OTEL_BSP_SCHEDULE_DELAY` for processes under test, in milliseconds (the SDK default is 5 s).
const SCHEDULE_DELAY_MS: &str = "100";

/// One exported span.
#[derive(Clone, Debug, PartialEq)]
pub struct ReceivedSpan {
    /// The exporting process's resource `service.name` (e.g. `muster-registrar`).
    pub service: String,
    /// Lower-case hex, as Jaeger shows them.
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    pub kind: SpanKind,
    /// Every attribute, its value rendered as text.
    pub attributes: BTreeMap<String, String>,
}

impl ReceivedSpan {
    pub fn is_root(&self) -> bool {
        self.parent_span_id.is_empty()
    }

    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// Every span received so far of one trace, in arrival order.
#[derive(Clone, Debug)]
pub struct Trace {
    pub trace_id: String,
    pub spans: Vec<ReceivedSpan>,
}

impl Trace {
    pub fn roots(&self) -> Vec<&ReceivedSpan> {
        self.spans.iter().filter(|span| span.is_root()).collect()
    }

    /// The spans named `name` that `service` exported.
    pub fn find(&self, service: &str, name: &str) -> Vec<&ReceivedSpan> {
        self.spans.iter().filter(|span| span.service == service && span.name == name).collect()
    }

    /// Spans whose parent is not (yet) in this trace; a root does not count.
    pub fn orphans(&self) -> Vec<&ReceivedSpan> {
        let ids: BTreeSet<&str> = self.spans.iter().map(|span| span.span_id.as_str()).collect();
        self.spans.iter().filter(|span| !span.is_root() && !ids.contains(span.parent_span_id.as_str())).collect()
    }

    /// The services that exported spans of this trace.
    pub fn services(&self) -> BTreeSet<&str> {
        self.spans.iter().map(|span| span.service.as_str()).collect()
    }

    /// The trace as an indented tree (`service: name [kind]`), orphans last, for messages.
    pub fn render(&self) -> String {
        fn walk(trace: &Trace, span: &ReceivedSpan, depth: usize, out: &mut String) {
            let _ =
                writeln!(out, "{:indent$}{}: {} [{:?}]", "", span.service, span.name, span.kind, indent = depth * 2);
            for child in trace.spans.iter().filter(|child| child.parent_span_id == span.span_id) {
                walk(trace, child, depth + 1, out);
            }
        }
        let mut out = format!("trace {} ({} spans)\n", self.trace_id, self.spans.len());
        for top in self.roots().into_iter().chain(self.orphans()) {
            walk(self, top, 1, &mut out);
        }
        out
    }
}

/// The collector; dropping it stops the server.
pub struct OtlpReceiver {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl OtlpReceiver {
    /// Serves OTLP/gRPC on a free loopback port.
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0").await
    }

    /// Serves OTLP/gRPC on `bind` (`0.0.0.0:0` for exporters in containers, which reach the
    /// host as `host.docker.internal`).
    pub async fn start_on(bind: &str) -> Self {
        let listener = TcpListener::bind(bind).await.expect("binding the OTLP receiver");
        let addr = listener.local_addr().expect("a bound listener has an address");
        let spans = Arc::new(Mutex::new(Vec::new()));
        let service = TraceServiceServer::new(Collector(spans.clone()));
        let server = tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await;
            if let Err(err) = served {
                eprintln!("e2e: the OTLP receiver stopped: {err}");
            }
        });
        Self { addr, spans, server }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// What `OTEL_EXPORTER_OTLP_ENDPOINT` should say.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Environment that makes a Muster process export here, every span (whatever the test's
    /// own environment says), within [`SCHEDULE_DELAY_MS`] of its end.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", self.endpoint()),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", self.endpoint()),
            ("OTEL_BSP_SCHEDULE_DELAY", SCHEDULE_DELAY_MS.to_string()),
            ("OTEL_TRACES_SAMPLER", "parentbased_always_on".to_string()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<ReceivedSpan>> {
        self.spans.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.lock().clone()
    }

    /// The spans received so far, grouped by trace (in order of each trace's first span).
    pub fn traces(&self) -> Vec<Trace> {
        let mut traces: Vec<Trace> = Vec::new();
        for span in self.lock().iter() {
            match traces.iter_mut().find(|trace| trace.trace_id == span.trace_id) {
                Some(trace) => trace.spans.push(span.clone()),
                None => traces.push(Trace { trace_id: span.trace_id.clone(), spans: vec![span.clone()] }),
            }
        }
        traces
    }

    /// Polls until some trace passes `check`, for at most `within`; panics naming `what`, the
    /// largest trace and why it failed otherwise. Spans trickle in per process and batch, so
    /// `check` should demand everything it needs (e.g. no [`Trace::orphans`]).
    pub async fn wait_for_trace<F>(&self, what: &str, within: Duration, check: F) -> Trace
    where
        F: Fn(&Trace) -> anyhow::Result<()>,
    {
        let check = &check;
        crate::eventually_msg(format!("a trace where {what}"), within, || async move {
            let traces = self.traces();
            let mut closest: Option<(usize, String)> = None;
            for trace in traces.iter() {
                match check(trace) {
                    Ok(()) => return Ok(trace.clone()),
                    Err(err) if closest.as_ref().is_none_or(|(size, _)| trace.spans.len() > *size) => {
                        closest = Some((trace.spans.len(), format!("{err:#}\n{}", trace.render())));
                    }
                    Err(_) => {}
                }
            }
            match closest {
                Some((_, why)) => anyhow::bail!("{} traces received; the largest fails: {why}", traces.len()),
                None => anyhow::bail!("no span received yet"),
            }
        })
        .await
    }
}

pub const AGENT: &str = "muster-worker-agent";
pub const REGISTRAR: &str = "muster-registrar";
pub const CONTROL_PLANE: &str = "muster-control-plane";
pub const REGISTER: &str = "muster.v1.WorkerRegistrationService/Register";
pub const REGISTER_WORKER: &str = "muster.v1.WorkerRegistryService/RegisterWorker";

/// The one span of `trace` that `service` exported as `name` with `kind`; an error naming
/// what is missing otherwise.
fn has(trace: &Trace, service: &str, name: &str, kind: SpanKind) -> anyhow::Result<()> {
    let found = trace.find(service, name).into_iter().any(|span| span.kind == kind);
    ensure!(found, "no {kind:?} span {name:?} from {service}");
    Ok(())
}

/// Everything the trace of one worker's Register must hold, on a cluster of `nodes`: the
/// worker-agent's `worker.register` is the only root; the Register call as the agent's client
/// span and the registrar's server span; RegisterWorker from the registrar to the control
/// plane; the token's consumption as the leader's `raft.client_write` with a `raft.apply`
/// under it on every node; no span whose parent is missing; exactly the three services.
/// `Ok` only once it is complete (spans arrive per process and batch).
pub fn is_the_register_trace(trace: &Trace, nodes: u64) -> anyhow::Result<()> {
    let roots = trace.roots();
    ensure!(roots.len() == 1, "{} root spans", roots.len());
    let root = roots[0];
    ensure!(root.service == AGENT && root.name == "worker.register", "the root is {}: {}", root.service, root.name);

    has(trace, AGENT, REGISTER, SpanKind::Client)?;
    has(trace, REGISTRAR, REGISTER, SpanKind::Server)?;
    has(trace, REGISTRAR, REGISTER_WORKER, SpanKind::Client)?;
    has(trace, CONTROL_PLANE, REGISTER_WORKER, SpanKind::Server)?;

    // The token's consumption: committed on the leader, applied on every node.
    let write = trace
        .find(CONTROL_PLANE, "raft.client_write")
        .into_iter()
        .find(|span| span.attribute("raft.command").is_some_and(|c| c.starts_with("register-worker")))
        .context("no raft.client_write of the register-worker command")?;
    let applies: std::collections::BTreeSet<&str> = trace
        .find(CONTROL_PLANE, "raft.apply")
        .into_iter()
        .filter(|span| span.parent_span_id == write.span_id)
        .filter_map(|span| span.attribute("raft.node_id"))
        .collect();
    ensure!(
        applies.iter().any(|node| Some(*node) == write.attribute("raft.node_id")),
        "no raft.apply on the leader under its raft.client_write (applies on nodes {applies:?})"
    );
    ensure!(applies.len() as u64 >= nodes, "raft.apply only on nodes {applies:?} so far");

    let orphans: Vec<String> = trace.orphans().iter().map(|span| format!("{}: {}", span.service, span.name)).collect();
    ensure!(orphans.is_empty(), "spans whose parent is not in the trace: {orphans:?}");
    let services: Vec<&str> = trace.services().into_iter().collect();
    ensure!(services == [CONTROL_PLANE, REGISTRAR, AGENT], "services {services:?}");
    Ok(())
}

struct Collector(Arc<Mutex<Vec<ReceivedSpan>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let received = flatten(request.into_inner());
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).extend(received);
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

/// One [`ReceivedSpan`] per span in an export, tagged with its resource's service name.
fn flatten(request: ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    let mut spans = Vec::new();
    for resource_spans in request.resource_spans {
        let resource = attributes(resource_spans.resource.map(|r| r.attributes).unwrap_or_default());
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for span in resource_spans.scope_spans.into_iter().flat_map(|scope| scope.spans) {
            spans.push(ReceivedSpan {
                service: service.clone(),
                trace_id: hex::encode(&span.trace_id),
                span_id: hex::encode(&span.span_id),
                parent_span_id: hex::encode(&span.parent_span_id),
                kind: SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified),
                name: span.name,
                attributes: attributes(span.attributes),
            });
        }
    }
    spans
}

fn attributes(attributes: Vec<KeyValue>) -> BTreeMap<String, String> {
    attributes.into_iter().map(|kv| (kv.key, kv.value.map(text).unwrap_or_default())).collect()
}

fn text(value: AnyValue) -> String {
    match value.value {
        Some(Value::StringValue(s)) => s,
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}
