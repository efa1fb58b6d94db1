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

/// Runs `service` on a multi-threaded runtime with telemetry for `name`; the telemetry guard
/// is dropped (flushing OTLP) before the runtime shuts down.
pub fn run_service<F>(name: &str, telemetry: &muster_config::TelemetryConfig, service: impl FnOnce() -> F) -> ExitCode
where
    F: Future<Output = anyhow::Result<()>>,
{
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("{name}: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let _telemetry = crate::init(name, telemetry.log_format.into(), &telemetry.log_level);
        match service().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                tracing::error!("{name} failed: {err:#}");
                eprintln!("{name}: {err:#}");
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
