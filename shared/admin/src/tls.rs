//! The TLS series every deployable exports beside its own: when the certificate it serves with
//! and each CA it trusts expire, and how its hot reloads went. [`with_tls`] adds them to any
//! component's metrics, so every deployable exports the same names the same way.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use muster_tls::LiveTls;

use crate::AdminSource;
use crate::metrics::{Kind, counter, header, join, label, sample};

/// Writes the TLS series of `live`.
pub fn render(out: &mut String, live: &LiveTls) {
    let name = "muster_tls_cert_expires_at_seconds";
    header(
        out,
        name,
        "When a certificate in use expires (Unix seconds): the one this process presents (role and name from \
         its Muster identity) and each CA it trusts (role=\"ca\", name = the CA's common name).",
        Kind::Gauge,
    );
    for expiry in live.expiries() {
        let labels = join(&[&label("role", &expiry.role), &label("name", &expiry.name)]);
        sample(out, name, &labels, expiry.not_after_unix.max(0) as u64);
    }
    let stats = &live.stats;
    counter(
        out,
        "muster_tls_reloads_total",
        "Times changed TLS files were loaded and put in use without a restart.",
        "",
        stats.reloads.load(Ordering::Relaxed),
    );
    counter(
        out,
        "muster_tls_reload_failures_total",
        "Times changed TLS files were refused (the material in use stayed); the log names the file.",
        "",
        stats.failures.load(Ordering::Relaxed),
    );
}

/// `source`, with the TLS series after its own (none under `--insecure`).
pub fn with_tls(source: Arc<dyn AdminSource>, live: Option<Arc<LiveTls>>) -> Arc<dyn AdminSource> {
    match live {
        Some(live) => Arc::new(WithTls { source, live }),
        None => source,
    }
}

struct WithTls {
    source: Arc<dyn AdminSource>,
    live: Arc<LiveTls>,
}

impl AdminSource for WithTls {
    fn is_ready(&self) -> bool {
        self.source.is_ready()
    }

    fn not_ready_reason(&self) -> String {
        self.source.not_ready_reason()
    }

    fn render_metrics(&self) -> String {
        let mut out = self.source.render_metrics();
        render(&mut out, &self.live);
        out
    }
}
