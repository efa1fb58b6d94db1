//! Process-wide subscriber set-up and the guard that flushes OTLP spans on exit.

use std::io::IsTerminal;
use std::time::Duration;

use opentelemetry::global;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tokio::runtime::{Handle, RuntimeFlavor};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, fmt};

use crate::{LogFormat, filter, otlp};

/// How long dropping the guard may wait for buffered spans to reach the collector.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// The default filter for [`init_for_tests`] when neither `MUSTER_LOG` nor `RUST_LOG` is set.
const TEST_DEFAULT_LEVEL: &str = "info,muster=debug";

/// Keeps OTLP export alive; dropping it exports buffered spans and shuts the exporter down.
///
/// Hold it in `main` for the life of the process. Drop it on a multi-threaded Tokio runtime or
/// outside any runtime: the gRPC exporter needs the runtime to make progress while the drop
/// blocks, so on a current-thread runtime the flush can only time out.
#[must_use = "dropping the guard immediately shuts OTLP export down"]
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Whether spans are being exported over OTLP.
    pub fn exports_otlp(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let Some(provider) = self.provider.take() else {
            return;
        };
        let shutdown = move || provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT);
        let result = match Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(shutdown)
            }
            _ => shutdown(),
        };
        if let Err(err) = result {
            tracing::warn!(error = %err, "OTLP span export did not shut down cleanly");
        }
    }
}

/// Installs the process-wide subscriber: a stderr fmt layer in `format`, filtered by
/// `MUSTER_LOG`, else `RUST_LOG`, else `default_level`; plus an OpenTelemetry layer exporting
/// over OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set, with
/// the resource attribute `service.name = service_name`.
///
/// The W3C TraceContext propagator is installed globally in every case, so the gRPC trace
/// layers always read and write `traceparent`.
///
/// Call it once, early, from inside the Tokio runtime (the OTLP exporter spawns onto it; outside
/// a runtime export is skipped with a warning). A second call in the same process keeps the
/// first subscriber and returns an inert guard, so tests may call it freely.
pub fn init(service_name: &str, format: LogFormat, default_level: &str) -> TelemetryGuard {
    global::set_text_map_propagator(TraceContextPropagator::new());
    let (filter, filter_warning) = filter::from_env(default_level);
    let (provider, otlp_warning) = if otlp::endpoint_configured() {
        match otlp::tracer_provider(service_name, None) {
            Ok(provider) => (Some(provider), None),
            Err(err) => (None, Some(format!("OTLP export disabled: {err}"))),
        }
    } else {
        (None, None)
    };
    let guard = install(service_name, format, filter, provider);
    for warning in [filter_warning, otlp_warning].into_iter().flatten() {
        tracing::warn!("{warning}");
    }
    guard
}

/// Installs a subscriber that writes through the test harness's capture, without OTLP.
///
/// Filtered by `MUSTER_LOG` / `RUST_LOG`, else `info` with Muster's crates at `debug`. Safe to
/// call from every test: only the first call in a process installs anything.
pub fn init_for_tests() {
    global::set_text_map_propagator(TraceContextPropagator::new());
    let (filter, _) = filter::from_env(TEST_DEFAULT_LEVEL);
    // Another test in this process may have installed a subscriber already; keep it.
    let _ = tracing_subscriber::registry().with(filter).with(fmt::layer().with_test_writer()).try_init();
}

/// Assembles and installs the subscriber; returns a guard owning `provider` if it is in use.
fn install(
    service_name: &str,
    format: LogFormat,
    filter: EnvFilter,
    provider: Option<SdkTracerProvider>,
) -> TelemetryGuard {
    let fmt_layer = match format {
        LogFormat::Pretty => {
            fmt::layer().with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal()).boxed()
        }
        LogFormat::Json => fmt::layer().json().with_writer(std::io::stderr).boxed(),
    };
    let otel_layer = provider
        .as_ref()
        .map(|provider| tracing_opentelemetry::layer().with_tracer(provider.tracer(service_name.to_owned())));
    let installed = tracing_subscriber::registry().with(filter).with(fmt_layer).with(otel_layer).try_init().is_ok();
    if !installed {
        // A subscriber was already installed by an earlier call; the new provider has no
        // layer feeding it, so let the (inert) guard below shut it down straight away.
        drop(TelemetryGuard { provider });
        return TelemetryGuard::default();
    }
    if let Some(provider) = &provider {
        global::set_tracer_provider(provider.clone());
    }
    TelemetryGuard { provider }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_twice_does_not_panic_and_second_guard_is_inert() {
        let first = init("muster-test", LogFormat::Json, "info");
        let second = init("muster-test", LogFormat::Pretty, "debug");
        assert!(!second.exports_otlp());
        tracing::info!("still logging after a second init");
        drop(second);
        drop(first);
        init_for_tests();
    }

    #[test]
    fn propagator_is_installed_globally() {
        let _guard = init("muster-test", LogFormat::Pretty, "info");
        let fields: Vec<String> = global::get_text_map_propagator(|p| p.fields().map(str::to_owned).collect());
        assert!(fields.iter().any(|f| f == "traceparent"), "{fields:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn guard_with_a_provider_shuts_down_inside_a_multi_thread_runtime() {
        let provider = otlp::tracer_provider("muster-test", Some("http://127.0.0.1:9")).unwrap();
        let guard = install("muster-test", LogFormat::Pretty, EnvFilter::new("info"), Some(provider));
        // Whether or not this test process already had a subscriber, dropping must not hang.
        drop(guard);
    }
}
