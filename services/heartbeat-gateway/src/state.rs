//! The state every stream and the batch task share: the current view, the budget bucket, the
//! pending beats, the admission table, metrics and readiness. Locks here are short and never
//! held across an await.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use muster_proto::v1;

use crate::admission::Admission;
use crate::beats::Pending;
use crate::budget::{Take, TokenBucket};
use crate::metrics::Metrics;
use crate::session::Reply;
use crate::view::View;

/// A gateway that has not had a batch accepted for this long (or the policy's grace, if
/// longer) reports not ready: its workers' beats are not reaching the leader.
const MIN_STALE_AFTER: Duration = Duration::from_secs(2);

pub struct GatewayState {
    pub id: String,
    /// The advertised address (what workers dial).
    pub addr: String,
    pub min_report_interval: Duration,
    pub pending: Pending,
    pub admission: Admission,
    pub metrics: Metrics,
    view: RwLock<Arc<View>>,
    bucket: Mutex<TokenBucket>,
    phase: Mutex<String>,
    serving: AtomicBool,
    last_batch: Mutex<Option<Instant>>,
    closing: AtomicBool,
    /// The leader notices applied: (leader term, highest sequence number).
    notices: Mutex<(u64, u64)>,
}

impl GatewayState {
    pub fn new(id: String, addr: String, min_report_interval: Duration, now: Instant) -> Self {
        let view = View::initial();
        let bucket = TokenBucket::new(view.budget_per_second, max_wait(&view), now);
        let metrics = Metrics::default();
        metrics.set_budget(view.budget_per_second);
        Self {
            id,
            addr,
            min_report_interval,
            pending: Pending::default(),
            admission: Admission::default(),
            metrics,
            view: RwLock::new(Arc::new(view)),
            bucket: Mutex::new(bucket),
            phase: Mutex::new("starting".to_string()),
            serving: AtomicBool::new(false),
            last_batch: Mutex::new(None),
            closing: AtomicBool::new(false),
            notices: Mutex::new((0, 0)),
        }
    }

    pub fn view(&self) -> Arc<View> {
        self.view.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Installs the view from a batch answer: the bucket follows the new budget.
    pub fn apply_view(&self, view: View, now: Instant) {
        self.bucket.lock().unwrap_or_else(PoisonError::into_inner).set_rate(
            view.budget_per_second,
            max_wait(&view),
            now,
        );
        let m = &self.metrics;
        m.ttl_ms.store(view.base_ttl_ms.into(), Ordering::Relaxed);
        m.worker_count.store(view.worker_count, Ordering::Relaxed);
        m.live_gateways.store(view.live_gateways.into(), Ordering::Relaxed);
        m.set_budget(view.budget_per_second);
        *self.view.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(view);
    }

    pub fn take_budget(&self, now: Instant) -> Take {
        self.bucket.lock().unwrap_or_else(PoisonError::into_inner).take(now)
    }

    pub fn wait_for_room(&self, now: Instant) -> Duration {
        self.bucket.lock().unwrap_or_else(PoisonError::into_inner).wait_for_room(now)
    }

    /// The ack for a reply, with the cluster as the current view sees it; its TTL is counted
    /// as issued.
    pub fn ack(&self, reply: &Reply) -> v1::StatusAck {
        self.metrics.ttl_issued.observe(f64::from(reply.ttl_ms) / 1000.0);
        let view = self.view();
        let gateways = if reply.reported_epoch == view.gateways_epoch { Vec::new() } else { view.gateways.clone() };
        v1::StatusAck {
            sequence: reply.sequence,
            ttl_ms: reply.ttl_ms,
            grace_ms: u32::try_from(view.policy.grace.as_millis()).unwrap_or(u32::MAX),
            throttled: reply.throttled,
            gateways_epoch: view.gateways_epoch,
            gateways,
            gateway_id: self.id.clone(),
            worker_count: view.worker_count,
            live_gateways: view.live_gateways,
        }
    }

    /// What `/readyz` says while starting.
    pub fn set_phase(&self, phase: impl Into<String>) {
        *self.phase.lock().unwrap_or_else(PoisonError::into_inner) = phase.into();
    }

    /// The heartbeat port is served from now on.
    pub fn set_serving(&self) {
        self.serving.store(true, Ordering::Release);
    }

    /// The notices applied so far, as the next batch reports them: (term, sequence number).
    pub fn notices_seen(&self) -> (u64, u64) {
        *self.notices.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every notice of `term` up to `through` is applied.
    pub fn notices_applied(&self, term: u64, through: u64) {
        *self.notices.lock().unwrap_or_else(PoisonError::into_inner) = (term, through);
    }

    pub fn batch_succeeded(&self, now: Instant) {
        *self.last_batch.lock().unwrap_or_else(PoisonError::into_inner) = Some(now);
    }

    /// Serving, and the leader accepted a batch recently.
    pub fn is_fresh(&self, now: Instant) -> bool {
        let stale_after = MIN_STALE_AFTER.max(self.view().policy.grace);
        let last = *self.last_batch.lock().unwrap_or_else(PoisonError::into_inner);
        last.is_some_and(|last| now.saturating_duration_since(last) <= stale_after)
    }

    /// Stops taking streams and ends the open ones (shutdown).
    pub fn begin_close(&self) {
        self.closing.store(true, Ordering::Release);
        self.admission.end_all();
    }

    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }
}

/// The longest a throttled worker is sent away for: the policy's longest TTL.
fn max_wait(view: &View) -> Duration {
    view.policy.max_ttl
}

impl muster_admin::AdminSource for GatewayState {
    fn is_ready(&self) -> bool {
        self.serving.load(Ordering::Acquire) && !self.is_closing() && self.is_fresh(Instant::now())
    }

    fn not_ready_reason(&self) -> String {
        if self.is_closing() {
            return "shutting down".to_string();
        }
        if !self.serving.load(Ordering::Acquire) {
            return self.phase.lock().unwrap_or_else(PoisonError::into_inner).clone();
        }
        let last = *self.last_batch.lock().unwrap_or_else(PoisonError::into_inner);
        match last {
            Some(last) => format!(
                "no liveness batch accepted by the control-plane leader for {:.1}s",
                last.elapsed().as_secs_f64()
            ),
            None => "no liveness batch accepted by the control-plane leader yet".to_string(),
        }
    }

    fn render_metrics(&self) -> String {
        self.metrics.render(self.admission.connected(), self.pending.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use muster_admin::AdminSource;

    use super::*;

    #[test]
    fn ready_only_while_serving_and_batches_are_accepted() {
        let t0 = Instant::now();
        let state = GatewayState::new("gw".into(), "a:1".into(), Duration::from_secs(1), t0);
        state.set_phase("waiting for a registrar to create the worker CA");
        assert!(!state.is_ready());
        assert_eq!(state.not_ready_reason(), "waiting for a registrar to create the worker CA");
        state.batch_succeeded(t0);
        state.set_serving();
        // The seed's grace (10s) bounds how old the last accepted batch may be.
        assert!(state.is_fresh(t0 + Duration::from_secs(10)));
        assert!(!state.is_fresh(t0 + Duration::from_secs(11)));
        state.begin_close();
        assert!(!state.is_ready());
        assert_eq!(state.not_ready_reason(), "shutting down");
    }
}
