//! Whether the gateway should get workers, as `/readyz` and the health service say it: it is
//! serving the heartbeat port, not shutting down, and the control-plane leader accepted a
//! liveness batch recently (otherwise its workers' beats are not reaching the leader and they
//! are better off at another gateway). While starting it says which step it is waiting on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A gateway that has not had a batch accepted for this long (or the policy's grace, if
/// longer) reports not ready.
const MIN_STALE_AFTER: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct Readiness {
    phase: Mutex<String>,
    serving: AtomicBool,
    last_batch: Mutex<Option<Instant>>,
    closing: AtomicBool,
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            phase: Mutex::new("starting".to_owned()),
            serving: AtomicBool::new(false),
            last_batch: Mutex::new(None),
            closing: AtomicBool::new(false),
        }
    }
}

impl Readiness {
    /// What `/readyz` says while starting.
    pub fn set_phase(&self, phase: impl Into<String>) {
        *self.phase.lock().unwrap_or_else(PoisonError::into_inner) = phase.into();
    }

    /// The heartbeat port is served from now on.
    pub fn set_serving(&self) {
        self.serving.store(true, Ordering::Release);
    }

    pub fn batch_succeeded(&self, now: Instant) {
        *self.last_batch.lock().unwrap_or_else(PoisonError::into_inner) = Some(now);
    }

    /// The leader accepted a batch within `grace` (at least [`MIN_STALE_AFTER`]) of `now`.
    pub fn is_fresh(&self, now: Instant, grace: Duration) -> bool {
        let stale_after = MIN_STALE_AFTER.max(grace);
        let last = *self.last_batch.lock().unwrap_or_else(PoisonError::into_inner);
        last.is_some_and(|last| now.saturating_duration_since(last) <= stale_after)
    }

    pub fn begin_close(&self) {
        self.closing.store(true, Ordering::Release);
    }

    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    pub fn is_ready(&self, now: Instant, grace: Duration) -> bool {
        self.serving.load(Ordering::Acquire) && !self.is_closing() && self.is_fresh(now, grace)
    }

    /// Why the gateway is not ready, for `/readyz` and the log.
    pub fn not_ready_reason(&self, now: Instant) -> String {
        if self.is_closing() {
            return "shutting down".to_owned();
        }
        if !self.serving.load(Ordering::Acquire) {
            return self.phase.lock().unwrap_or_else(PoisonError::into_inner).clone();
        }
        let last = *self.last_batch.lock().unwrap_or_else(PoisonError::into_inner);
        match last {
            Some(last) => format!(
                "no liveness batch accepted by the control-plane leader for {:.1}s",
                now.saturating_duration_since(last).as_secs_f64()
            ),
            None => "no liveness batch accepted by the control-plane leader yet".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(10);

    #[test]
    fn ready_only_while_serving_and_batches_are_accepted() {
        let t0 = Instant::now();
        let readiness = Readiness::default();
        readiness.set_phase("waiting for a registrar to create the worker CA");
        assert!(!readiness.is_ready(t0, GRACE));
        assert_eq!(readiness.not_ready_reason(t0), "waiting for a registrar to create the worker CA");
        readiness.batch_succeeded(t0);
        readiness.set_serving();
        // The grace bounds how old the last accepted batch may be.
        assert!(readiness.is_ready(t0 + GRACE, GRACE));
        assert!(!readiness.is_fresh(t0 + GRACE + Duration::from_secs(1), GRACE));
        assert_eq!(
            readiness.not_ready_reason(t0 + Duration::from_secs(12)),
            "no liveness batch accepted by the control-plane leader for 12.0s"
        );
        // A short grace still allows two seconds.
        assert!(readiness.is_fresh(t0 + Duration::from_secs(2), Duration::from_millis(100)));
        readiness.begin_close();
        assert!(!readiness.is_ready(t0, GRACE));
        assert_eq!(readiness.not_ready_reason(t0), "shutting down");
    }
}
