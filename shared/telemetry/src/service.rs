//! The body every Muster binary's `main` shares: start the runtime, initialise telemetry from
//! the `[telemetry]` settings, run the service, flush, and turn the outcome into an exit code
//! with the error printed for the operator.

use std::future::Future;
use std::process::ExitCode;

use crate::LogFormat;

impl From<muster_config::LogFormat> for LogFormat {
    fn from(format: muster_config::LogFormat) -> Self {
        match format {
            muster_config::LogFormat::Json => LogFormat::Json,
            muster_config::LogFormat::Pretty => LogFormat::Pretty,
        }
    }
}

/// Configuration a service can hand its telemetry settings from.
pub trait HasTelemetry {
    fn telemetry(&self) -> &muster_config::TelemetryConfig;
}

/// The OpenTelemetry `service.name` of the binary `name`: `muster-<name>` (e.g.
/// `muster-control-plane`), so spans from every deployable are told apart in one backend.
pub fn service_name(name: &str) -> String {
    if name.starts_with("muster") { name.to_owned() } else { format!("muster-{name}") }
}

/// A binary's whole `main` after argument parsing: a configuration error exits with code 2
/// and the error; otherwise `service` runs on a multi-threaded runtime with telemetry as
/// [`service_name`]`(name)` (OTLP export when `OTEL_EXPORTER_OTLP_ENDPOINT` is set), and the
/// telemetry guard is dropped (flushing OTLP) before the runtime shuts down.
pub fn run_service<C, F>(name: &str, config: anyhow::Result<C>, service: impl FnOnce(C) -> F) -> ExitCode
where
    C: HasTelemetry,
    F: Future<Output = anyhow::Result<()>>,
{
    let config = match config {
        Ok(config) => config,
        Err(err) => {
            eprintln!("{name}: configuration error: {err:#}");
            return ExitCode::from(2);
        }
    };
    let telemetry = config.telemetry().clone();
    let log_format = LogFormat::from(telemetry.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("{name}: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let _telemetry = crate::init(&service_name(name), telemetry.log_format.into(), &telemetry.log_level);
        match service(config).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                // Once, on stderr: a JSON line for a log collector, else a plain line for the
                // person at the terminal.
                match log_format {
                    LogFormat::Json => tracing::error!("{name} failed: {err:#}"),
                    LogFormat::Pretty => eprintln!("{name}: {err:#}"),
                }
                ExitCode::FAILURE
            }
        }
    })
}

/// Resolves on SIGINT or SIGTERM (what `docker stop`, systemd and Kubernetes send).
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = interrupt => {},
        _ = terminate => {},
    }
}

impl HasTelemetry for muster_config::ControlPlaneConfig {
    fn telemetry(&self) -> &muster_config::TelemetryConfig {
        &self.telemetry
    }
}

#[cfg(test)]
mod tests {
    use super::service_name;

    #[test]
    fn every_binary_is_a_muster_service() {
        assert_eq!(service_name("control-plane"), "muster-control-plane");
        assert_eq!(service_name("heartbeat-gateway"), "muster-heartbeat-gateway");
        assert_eq!(service_name("musterctl-dev"), "musterctl-dev");
    }
}
