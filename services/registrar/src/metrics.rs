//! The registrar's `/metrics`: outcome counters, Register latency by outcome, and token
//! refusals by reason. The reason comes back from the control plane (token checks and
//! consumption are one Raft command there) in the refusal's message; it is read at the one
//! place the registrar turns the control plane's answer into its own.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use muster_admin::metrics::{Histogram, LATENCY_BUCKETS, histogram, label};
use muster_admin::{counter, metrics};
use tonic::{Code, Status};

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

    pub fn of<T>(result: &Result<T, Status>) -> Self {
        match result {
            Ok(_) => Outcome::Ok,
            Err(status) => match status.code() {
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
    /// One per [`muster_token::REASONS`] entry.
    token_failures: [AtomicU64; muster_token::REASONS.len()],
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
    /// Counts one finished Register call.
    pub fn register_done<T>(&self, result: &Result<T, Status>, took: Duration) {
        let outcome = Outcome::of(result);
        let counter = if outcome == Outcome::Ok { &self.registered } else { &self.refused };
        counter.fetch_add(1, Ordering::Relaxed);
        self.register_duration[outcome as usize].observe_duration(took);
    }

    /// Counts the control plane's refusal of a token, if `status` is one.
    pub fn token_refused(&self, status: &Status) {
        let Some(reason) = muster_token::refusal_reason(status.message()) else { return };
        if let Some(index) = muster_token::REASONS.iter().position(|known| *known == reason) {
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
            muster_token::REASONS
                .iter()
                .zip(&self.token_failures)
                .map(|(reason, count)| (label("reason", reason), count.load(Ordering::Relaxed))),
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
        let used_up = Status::permission_denied("registration refused (used_up): token t has been used up");
        stats.token_refused(&used_up);
        stats.register_done::<()>(&Err(used_up), Duration::from_millis(3));
        let down = Status::unavailable("control plane unreachable");
        stats.token_refused(&down);
        stats.register_done::<()>(&Err(down), Duration::from_secs(20));

        let text = stats.render();
        assert!(text.contains("muster_registrar_registrations_total{} 1\n"), "{text}");
        assert!(text.contains("muster_registrar_refusals_total{} 2\n"), "{text}");
        assert!(text.contains("# TYPE muster_registrar_token_failures_total counter\n"), "{text}");
        assert!(text.contains("muster_registrar_token_failures_total{reason=\"used_up\"} 1\n"), "{text}");
        for reason in muster_token::REASONS.iter().filter(|r| **r != "used_up") {
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
