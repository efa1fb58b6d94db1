//! The OTLP span pipeline: a tonic (gRPC) exporter behind the SDK's batch processor.
//!
//! It exists only when an OTLP endpoint is configured, so a process without a collector pays
//! nothing for spans beyond the `tracing` fmt layer. The batch processor reads the standard
//! `OTEL_BSP_*` variables itself: `OTEL_BSP_SCHEDULE_DELAY` (milliseconds, default 5000) is
//! how long a finished span may wait before it is sent (tests set it low); the guard's drop
//! flushes whatever is left.

use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;

/// The variables that switch OTLP export on (the signal-specific one as the spec allows).
const ENDPOINT_VARS: [&str; 2] = ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"];

/// Whether the environment asks for OTLP export.
pub(crate) fn endpoint_configured() -> bool {
    ENDPOINT_VARS.iter().any(|var| std::env::var(var).is_ok_and(|v| !v.trim().is_empty()))
}

/// Builds a tracer provider exporting to `endpoint`, or to the endpoint the standard
/// `OTEL_EXPORTER_OTLP_*` variables name when `endpoint` is `None`.
///
/// The tonic channel is created lazily but its worker is spawned on the current Tokio
/// runtime, so this refuses (with a message) when called outside one.
pub(crate) fn tracer_provider(service_name: &str, endpoint: Option<&str>) -> Result<SdkTracerProvider, String> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err("OTLP export needs a Tokio runtime; call telemetry::init inside one".into());
    }
    let mut builder = SpanExporter::builder().with_tonic();
    if let Some(endpoint) = endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    let exporter = builder.build().map_err(|err| format!("cannot build the OTLP span exporter: {err}"))?;
    let resource = Resource::builder().with_service_name(service_name.to_owned()).build();
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_outside_a_tokio_runtime() {
        let err = tracer_provider("muster-test", Some("http://127.0.0.1:4317")).unwrap_err();
        assert!(err.contains("Tokio runtime"), "{err}");
    }

    #[tokio::test]
    async fn builds_inside_a_runtime_and_shuts_down_without_a_collector() {
        let provider = tracer_provider("muster-test", Some("http://127.0.0.1:9")).unwrap();
        let shutdown = tokio::task::spawn_blocking(move || provider.shutdown());
        // Nothing was recorded, so shutdown has nothing to send and must not hang.
        shutdown.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn reports_a_malformed_endpoint() {
        let err = tracer_provider("muster-test", Some("not a uri")).unwrap_err();
        assert!(err.contains("OTLP span exporter"), "{err}");
    }
}
