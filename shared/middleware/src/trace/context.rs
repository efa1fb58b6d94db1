//! The trace context as a string, for work that leaves the request's task.
//!
//! A Raft command is applied by the state-machine task (on every node), long after and far
//! from the request that proposed it; carrying the proposer's W3C `traceparent` in the
//! command lets each apply join the proposer's trace. Both helpers cost a span check and
//! nothing more when the span is disabled or no OpenTelemetry layer is installed.

use opentelemetry::global;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt as _;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

const TRACEPARENT: &str = "traceparent";

/// `span`'s W3C `traceparent`, or an empty string when the span is disabled or not sampled
/// (so untraced work carries nothing).
pub fn traceparent(span: &Span) -> String {
    if span.is_disabled() {
        return String::new();
    }
    let cx = span.context();
    if !cx.span().span_context().is_sampled() {
        return String::new();
    }
    let mut carrier = Traceparent(String::new());
    global::get_text_map_propagator(|propagator| propagator.inject_context(&cx, &mut carrier));
    carrier.0
}

/// Makes `span` a child of the remote span that `traceparent` names. Does nothing for an
/// empty or malformed value, a disabled span, or a span already started.
pub fn set_remote_parent(span: &Span, traceparent: &str) {
    if traceparent.is_empty() || span.is_disabled() {
        return;
    }
    let cx = global::get_text_map_propagator(|propagator| propagator.extract(&Traceparent(traceparent.to_owned())));
    if cx.span().span_context().is_valid() {
        // Fails only without an OpenTelemetry layer, where there is no trace to join.
        let _ = span.set_parent(cx);
    }
}

/// A carrier holding just the `traceparent` entry.
struct Traceparent(String);

impl Injector for Traceparent {
    fn set(&mut self, key: &str, value: String) {
        if key == TRACEPARENT {
            self.0 = value;
        }
    }
}

impl Extractor for Traceparent {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}
