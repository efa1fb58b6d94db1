//! `traceparent` in and out of HTTP/2 headers through the global OpenTelemetry propagator.
//! Injected values are marked never-indexed: each call's differs, so HPACK's table would only
//! churn on them (see `request_layers`).

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use opentelemetry::Context;
use opentelemetry::global;
use opentelemetry::propagation::{Extractor, Injector};

/// Reads the remote parent from request headers (an empty context when there is none).
pub(crate) fn extract(headers: &HeaderMap) -> Context {
    global::get_text_map_propagator(|propagator| {
        propagator.extract_with_context(&Context::new(), &HeaderExtractor(headers))
    })
}

/// Writes `cx` into request headers (nothing when `cx` holds no valid span).
pub(crate) fn inject(cx: &Context, headers: &mut HeaderMap) {
    global::get_text_map_propagator(|propagator| {
        propagator.inject_context(cx, &mut HeaderInjector(headers));
    });
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(mut value)) = (HeaderName::from_bytes(key.as_bytes()), HeaderValue::try_from(value)) {
            value.set_sensitive(true);
            self.0.insert(name, value);
        }
    }
}
