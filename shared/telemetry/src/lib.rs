//! Tracing and OpenTelemetry initialisation shared by every deployable.
//!
//! Every binary calls [`init`] once at start-up and keeps the returned [`TelemetryGuard`]
//! alive until it exits; dropping the guard flushes spans that are still buffered for OTLP.
//!
//! Layout:
//! - `format`: [`LogFormat`], the `--log-format pretty|json` switch.
//! - `filter`: the `MUSTER_LOG` / `RUST_LOG` / default-level precedence.
//! - `otlp`: the OTLP gRPC span exporter, built only when `OTEL_EXPORTER_OTLP_ENDPOINT`
//!   (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; the resource names the binary
//!   (`service.name = muster-<binary>`, see [`service_name`]) and spans leave in batches every
//!   `OTEL_BSP_SCHEDULE_DELAY` ms (default 5000), plus a final flush when the guard drops.
//! - `init`: assembles the subscriber, installs the W3C propagator, owns the guard.

#![forbid(unsafe_code)]

mod filter;
mod format;
mod init;
mod otlp;
mod service;

pub use format::{LogFormat, ParseLogFormatError};
pub use init::{TelemetryGuard, init, init_for_tests};
pub use service::{HasTelemetry, run_service, service_name, shutdown_signal};
