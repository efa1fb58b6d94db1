//! The registrar's `/metrics`: outcome counters, Register latency by outcome, and token
//! refusals by reason. The reason comes back from the control plane (token checks and
//! consumption are one Raft command there) as a typed refusal, counted before the service
//! words its answer to the worker (which hides whether a token exists).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use muster_admin::metrics::{Histogram, LATENCY_BUCKETS, histogram, label};
use muster_admin::{counter, metrics};
use muster_middleware::{ApiError, Refused};
use muster_proto::v1;
use tonic::Code;

/// How a call ended, as the `outcome` label says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// The caller's fault: bad token or CSR, rate limit.
    Refused,
    /// Ours or the control plane's: unavailable, internal, timed out.
    Error,
}

impl Outcome {
    const ALL: [Outcome; 3] = [Outcome::Ok, Outcome::Refused, Outcome::Error];

    pub fn of<T>(result: &Result<T, ApiError>) -> Self {
        match result {
            Ok(_) => Outcome::Ok,
            Err(err) => match err.code() {
                Code::InvalidArgument
                | Code::NotFound
                | Code::AlreadyExists
                | Code::PermissionDenied
                | Code::Unauthenticated
                | Code::FailedPrecondition
                | Code::ResourceExhausted
                | Code::OutOfRange => Outcome::Refused,
                _ => Outcome::Error,
            },
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Error => "error",
        }
    }
}

/// Counters for `/metrics`.
#[derive(Debug)]
pub struct Stats {
    pub registered: AtomicU64,
    pub refused: AtomicU64,
    pub rate_limited: AtomicU64,
    pub renewed: AtomicU64,
    pub renewals_refused: AtomicU64,
    /// Register latency, one per [`Outcome`] (in `Outcome::ALL` order).
    register_duration: [Histogram; 3],
    /// One per [`v1::Refusal::TOKEN`] entry.
    token_failures: [AtomicU64; v1::Refusal::TOKEN.len()],
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            registered: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            renewed: AtomicU64::new(0),
            renewals_refused: AtomicU64::new(0),
            register_duration: Outcome::ALL.map(|_| Histogram::new(LATENCY_BUCKETS)),
            token_failures: Default::default(),
        }
    }
}

impl Stats {
    /// Counts one finished Register call, and the token refusal it was, if it was one.
    pub fn register_done<T>(&self, result: &Result<T, ApiError>, took: Duration) {
        let outcome = Outcome::of(result);
        let counter = if outcome == Outcome::Ok { &self.registered } else { &self.refused };
        counter.fetch_add(1, Ordering::Relaxed);
        self.register_duration[outcome as usize].observe_duration(took);
        if let Err(ApiError::Refused(Refused { reason, .. })) = result
            && let Some(index) = v1::Refusal::TOKEN.iter().position(|token| token == reason)
        {
            self.token_failures[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let rows = [
            ("muster_registrar_registrations_total", "Workers registered.", &self.registered),
            (
                "muster_registrar_refusals_total",
                "Register calls refused or failed (token, CSR, rate limit or upstream).",
                &self.refused,
            ),
            (
                "muster_registrar_rate_limited_total",
                "Register and Renew calls refused by the per-IP limit.",
                &self.rate_limited,
            ),
            ("muster_registrar_renewals_total", "Worker certificates renewed.", &self.renewed),
            (
                "muster_registrar_renewal_refusals_total",
                "Renew calls refused (no or foreign certificate, revoked worker, CSR or upstream).",
                &self.renewals_refused,
            ),
        ];
        for (name, help, value) in rows {
            counter(&mut out, name, help, "", value.load(Ordering::Relaxed));
        }
        metrics::family(
            &mut out,
            "muster_registrar_token_failures_total",
            "Bootstrap tokens the control plane refused at Register, by reason.",
            metrics::Kind::Counter,
            v1::Refusal::TOKEN
                .iter()
                .zip(&self.token_failures)
                .map(|(reason, count)| (label("reason", reason.label()), count.load(Ordering::Relaxed))),
        );
        let outcomes = Outcome::ALL.map(|outcome| label("outcome", outcome.as_str()));
        histogram(
            &mut out,
            "muster_registrar_register_duration_seconds",
            "Register latency (CSR check, token consumption through Raft, signing), by outcome.",
            outcomes.iter().map(String::as_str).zip(&self.register_duration),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_latency_and_token_reasons_are_counted() {
        let stats = Stats::default();
        stats.register_done(&Ok(()), Duration::from_millis(30));
        let used_up = Refused::new(v1::Refusal::TokenUsedUp, "token t has been used up");
        stats.register_done::<()>(&Err(used_up.into()), Duration::from_millis(3));
        let down = ApiError::Unavailable("control plane unreachable".into());
        stats.register_done::<()>(&Err(down), Duration::from_secs(20));

        let text = stats.render();
        assert!(text.contains("muster_registrar_registrations_total{} 1\n"), "{text}");
        assert!(text.contains("muster_registrar_refusals_total{} 2\n"), "{text}");
        assert!(text.contains("# TYPE muster_registrar_token_failures_total counter\n"), "{text}");
        assert!(text.contains("muster_registrar_token_failures_total{reason=\"used_up\"} 1\n"), "{text}");
        for reason in v1::Refusal::TOKEN.iter().map(|r| r.label()).filter(|r| *r != "used_up") {
            assert!(text.contains(&format!("muster_registrar_token_failures_total{{reason=\"{reason}\"}} 0\n")));
        }
        let name = "muster_registrar_register_duration_seconds";
        assert!(text.contains(&format!("# TYPE {name} histogram\n")), "{text}");
        assert!(text.contains(&format!("{name}_bucket{{outcome=\"ok\",le=\"0.05\"}} 1\n")), "{text}");
        assert!(text.contains(&format!("{name}_bucket{{outcome=\"refused\",le=\"0.005\"}} 1\n")), "{text}");
        assert!(text.contains(&format!("{name}_bucket{{outcome=\"error\",le=\"10\"}} 0\n")), "{text}");
        assert!(text.contains(&format!("{name}_count{{outcome=\"error\"}} 1\n")), "{text}");
    }
}
