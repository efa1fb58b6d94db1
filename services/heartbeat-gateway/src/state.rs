//! The state every stream and the batch task share: the current view, the budget bucket, the
//! pending beats, the admission table, metrics and [`Readiness`]. Locks here are short and
//! never held across an await.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use muster_proto::v1;

use crate::ack::Reply;
use crate::admission::Admission;
use crate::beats::Pending;
use crate::budget::{Take, TokenBucket};
use crate::metrics::Metrics;
use crate::readiness::Readiness;
use crate::view::View;

pub struct GatewayState {
    pub id: String,
    /// The advertised address (what workers dial).
    pub addr: String,
    pub min_report_interval: Duration,
    pub pending: Pending,
    pub admission: Admission,
    pub metrics: Metrics,
    pub readiness: Readiness,
    view: RwLock<Arc<View>>,
    bucket: Mutex<TokenBucket>,
    /// The leader notices applied: (leader term, highest sequence number).
    notices: Mutex<(u64, u64)>,
    /// Workers on this gateway that are draining or cordoned, as the last batch answer with
    /// each one's beat said (no one else is here).
    scheduling: RwLock<HashMap<u64, v1::SchedulingNotice>>,
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
            readiness: Readiness::default(),
            view: RwLock::new(Arc::new(view)),
            bucket: Mutex::new(bucket),
            notices: Mutex::new((0, 0)),
            scheduling: RwLock::default(),
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

    /// The ack for a reply under the current view; its TTL is counted as issued.
    pub fn ack(&self, reply: &Reply) -> v1::StatusAck {
        self.metrics.ttl_issued.observe(f64::from(reply.ttl_ms) / 1000.0);
        let scheduling = self.scheduling.read().unwrap_or_else(PoisonError::into_inner);
        let notice = if scheduling.is_empty() { None } else { scheduling.get(&reply.worker_id) };
        reply.ack(&self.view(), &self.id, notice)
    }

    /// `worker` has no stream here any more: what the leader said of it is dropped.
    pub fn forget_scheduling(&self, worker: u64) {
        // A read lock first: with no worker draining or cordoned, a stream's end takes no writer.
        if self.scheduling.read().unwrap_or_else(PoisonError::into_inner).contains_key(&worker) {
            self.scheduling.write().unwrap_or_else(PoisonError::into_inner).remove(&worker);
        }
    }

    /// A batch answer: each worker of the batch is draining or cordoned if the leader listed
    /// it, and neither otherwise.
    pub fn learn_scheduling(&self, batch: impl IntoIterator<Item = u64>, notices: &[v1::SchedulingNotice]) {
        let mut scheduling = self.scheduling.write().unwrap_or_else(PoisonError::into_inner);
        if scheduling.is_empty() && notices.is_empty() {
            return;
        }
        for worker_id in batch {
            scheduling.remove(&worker_id);
        }
        for notice in notices {
            scheduling.insert(notice.worker_id, *notice);
        }
    }

    /// The notices applied so far, as the next batch reports them: (term, sequence number).
    pub fn notices_seen(&self) -> (u64, u64) {
        *self.notices.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every notice of `term` up to `through` is applied.
    pub fn notices_applied(&self, term: u64, through: u64) {
        *self.notices.lock().unwrap_or_else(PoisonError::into_inner) = (term, through);
    }

    /// Serving, and the leader accepted a batch within the policy's grace.
    pub fn is_fresh(&self, now: Instant) -> bool {
        self.readiness.is_fresh(now, self.view().policy.grace)
    }

    /// Stops taking streams and ends the open ones (shutdown).
    pub fn begin_close(&self) {
        self.readiness.begin_close();
        self.admission.end_all();
    }
}

/// The longest a throttled worker is sent away for: the policy's longest TTL.
fn max_wait(view: &View) -> Duration {
    view.policy.max_ttl
}

impl muster_admin::AdminSource for GatewayState {
    fn is_ready(&self) -> bool {
        self.readiness.is_ready(Instant::now(), self.view().policy.grace)
    }

    fn not_ready_reason(&self) -> String {
        self.readiness.not_ready_reason(Instant::now())
    }

    fn render_metrics(&self) -> String {
        self.metrics.render(self.admission.connected(), self.pending.len() as u64)
    }
}
