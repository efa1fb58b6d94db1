//! The batching task: every `batch_interval`, one `ReportLiveness` to the control-plane leader
//! with every beat received since the last one. It is also the gateway's own registration and
//! lease, so it is sent even when no worker is connected.
//!
//! The answer drives the rest of the gateway: the TTL policy, N and G (a new view for the
//! acks and the budget), refusals (streams ended, remembered) and admissions (held first
//! reports acked). A failed batch keeps its beats and merges them under the next one, so a
//! state change (a LEFT) is delayed by an outage but never lost; failures are retried with
//! backoff and logged sparingly.
//!
//! One round may take several requests: the beats are split so no request passes
//! [`MAX_BATCH_BYTES`] (well under the leader's message limit), and what a failure carries
//! forward is one merged beat per worker, so a retry is never larger than the beats it holds.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use muster_client::ControlPlaneClient;
use muster_proto::v1;
use tokio::sync::watch;

use crate::admission::Refusal;
use crate::beats::{Beat, merge_older};
use crate::metrics::Metrics;
use crate::split::split_beats;
use crate::state::GatewayState;
use crate::view::View;

/// Longest pause between attempts while the control plane is failing.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(2);
/// While failures continue, one warning per this long.
const WARN_EVERY: Duration = Duration::from_secs(30);
/// How long the last batch on shutdown may take.
const FINAL_FLUSH_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest `ReportLivenessRequest` sent: a quarter of the leader's default 4 MiB limit.
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;

/// Where batches go: the control-plane client, or a fake in tests.
pub trait Upstream: Send + Sync + 'static {
    fn report_liveness(
        &self,
        request: v1::ReportLivenessRequest,
    ) -> impl Future<Output = Result<v1::ReportLivenessResponse, String>> + Send;
}

impl Upstream for ControlPlaneClient {
    async fn report_liveness(&self, request: v1::ReportLivenessRequest) -> Result<v1::ReportLivenessResponse, String> {
        ControlPlaneClient::report_liveness(self, request).await.map_err(|err| err.to_string())
    }
}

pub struct Batcher<U> {
    state: Arc<GatewayState>,
    upstream: Arc<U>,
    interval: Duration,
    /// Beats of failed batches, merged under the next one.
    carry: HashMap<u64, Beat>,
    failures: u32,
    last_warned: Option<Instant>,
    /// Byte budget of one request ([`MAX_BATCH_BYTES`]).
    max_batch_bytes: usize,
}

impl<U: Upstream> Batcher<U> {
    pub fn new(state: Arc<GatewayState>, upstream: Arc<U>, interval: Duration) -> Self {
        Self {
            state,
            upstream,
            interval,
            carry: HashMap::new(),
            failures: 0,
            last_warned: None,
            max_batch_bytes: MAX_BATCH_BYTES,
        }
    }

    /// The same batcher with another per-request byte budget.
    pub fn with_max_batch_bytes(mut self, max_batch_bytes: usize) -> Self {
        self.max_batch_bytes = max_batch_bytes;
        self
    }

    /// Sends the beats received since the last round (in as many requests as the byte budget
    /// needs) and applies each answer; on failure the beats not yet delivered are kept for the
    /// next round. Returns how many beats were delivered.
    pub async fn send_batch(&mut self) -> Result<usize, String> {
        let mut beats = self.state.pending.drain();
        merge_older(&mut beats, std::mem::take(&mut self.carry));
        let now = Instant::now();
        let budget = self.state.view().budget_per_second;
        let header = v1::ReportLivenessRequest {
            gateway_id: self.state.id.clone(),
            gateway_addr: self.state.addr.clone(),
            beats: Vec::new(),
            connected_workers: self.state.admission.connected(),
            // 0 when the policy sets no limit.
            budget_per_second: if budget.is_finite() { budget } else { 0.0 },
            notices_term: 0,
            notices_seen: 0,
        };
        let wire = beats.iter().map(|(worker, beat)| beat.to_wire(*worker, now)).collect();
        let mut delivered = 0;
        for mut request in split_beats(header, wire, self.max_batch_bytes) {
            // Current for each request: the answer to the one before may have carried notices.
            (request.notices_term, request.notices_seen) = self.state.notices_seen();
            let ids: Vec<u64> = request.beats.iter().map(|beat| beat.worker_id).collect();
            match self.upstream.report_liveness(request).await {
                Ok(response) => {
                    let sent: HashMap<u64, Beat> = ids.iter().filter_map(|id| beats.remove_entry(id)).collect();
                    self.apply(&response, &sent, Instant::now());
                    delivered += sent.len();
                }
                Err(err) => {
                    Metrics::count(&self.state.metrics.batch_failures);
                    self.carry = beats;
                    return Err(err);
                }
            }
        }
        Ok(delivered)
    }

    fn apply(&self, response: &v1::ReportLivenessResponse, beats: &HashMap<u64, Beat>, now: Instant) {
        let state = &self.state;
        let previous = state.view();
        let view = View::from_response(response, &previous);
        if (view.worker_count, view.live_gateways, view.policy)
            != (previous.worker_count, previous.live_gateways, previous.policy)
        {
            tracing::debug!(
                workers = view.worker_count,
                gateways = view.live_gateways,
                ttl_ms = view.base_ttl_ms,
                budget_per_second = view.budget_per_second,
                "heartbeat policy updated"
            );
        }
        state.apply_view(view, now);

        let mut refused = HashSet::new();
        for refusal in &response.refused {
            if !refusal.cert_serial.is_empty() {
                tracing::info!(
                    worker_id = refusal.worker_id,
                    serial = %refusal.cert_serial,
                    reason = %refusal.reason,
                    "the leader refused a worker certificate; disconnecting streams that use it"
                );
                state.admission.refuse_certificate(
                    refusal.worker_id,
                    &refusal.cert_serial,
                    refusal.reason.clone(),
                    now,
                );
                Metrics::count(&state.metrics.refused);
                refused.insert((refusal.worker_id, Some(refusal.cert_serial.as_str())));
                continue;
            }
            let reason = if refusal.state == v1::WorkerState::Revoked as i32 {
                Refusal::Revoked
            } else {
                Refusal::Unknown(refusal.reason.clone())
            };
            tracing::info!(worker_id = refusal.worker_id, reason = ?reason, "the leader refused a worker; disconnecting it");
            state.admission.refuse(refusal.worker_id, reason, now);
            Metrics::count(&state.metrics.refused);
            refused.insert((refusal.worker_id, None));
        }
        state.learn_scheduling(beats.keys().copied(), &response.scheduling);
        // Applied before the next request says so (`notices_seen`).
        state.notices_applied(response.leader_term, response.notices_through);
        for (worker, beat) in beats {
            let serial_refused = refused.contains(&(*worker, beat.cert_serial.as_deref()));
            if beat.held && !refused.contains(&(*worker, None)) && !serial_refused {
                state.admission.admit(*worker, &beat.cert_serial, now);
            }
        }
        Metrics::count(&state.metrics.batches);
        state.metrics.beats_forwarded.fetch_add(beats.len() as u64, Ordering::Relaxed);
        state.readiness.batch_succeeded(now);
    }

    /// Retries until the leader accepts one batch (start-up: the gateway learns its policy).
    pub async fn until_first_success(&mut self) {
        loop {
            match self.send_batch().await {
                Ok(_) => {
                    self.recovered();
                    return;
                }
                Err(err) => {
                    self.failed(
                        &err,
                        "waiting for the control-plane leader to accept this gateway's first liveness batch",
                    );
                    tokio::time::sleep(self.retry_delay()).await;
                }
            }
        }
    }

    /// Batches every interval until `stop` turns true, then flushes what is left.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>, health: Option<tonic_health::server::HealthReporter>) {
        let mut next = tokio::time::Instant::now() + self.interval;
        let mut fresh = true;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = stop.wait_for(|stop| *stop) => break,
            }
            let started = tokio::time::Instant::now();
            next = match self.send_batch().await {
                Ok(_) => {
                    self.recovered();
                    started + self.interval
                }
                Err(err) => {
                    self.failed(&err, "liveness batch failed; its beats are kept for the next one");
                    tokio::time::Instant::now() + self.retry_delay()
                }
            };
            let now_fresh = self.state.is_fresh(Instant::now());
            if now_fresh != fresh {
                fresh = now_fresh;
                if let Some(health) = &health {
                    set_health(health, fresh).await;
                }
            }
        }
        if !self.carry.is_empty() || !self.state.pending.is_empty() {
            match tokio::time::timeout(FINAL_FLUSH_TIMEOUT, self.send_batch()).await {
                Ok(Ok(beats)) => tracing::info!(beats, "flushed the last liveness batch"),
                Ok(Err(err)) => tracing::warn!(error = %err, "the last liveness batch failed"),
                Err(_) => tracing::warn!("the last liveness batch timed out"),
            }
        }
    }

    fn retry_delay(&self) -> Duration {
        let exponent = self.failures.saturating_sub(1).min(16);
        self.interval.saturating_mul(1 << exponent).min(MAX_RETRY_DELAY).max(self.interval)
    }

    fn failed(&mut self, err: &str, what: &str) {
        self.failures += 1;
        let due = self.last_warned.is_none_or(|at| at.elapsed() >= WARN_EVERY);
        if self.failures == 1 || due {
            self.last_warned = Some(Instant::now());
            tracing::warn!(
                error = %err,
                failures = self.failures,
                kept_beats = self.carry.len(),
                retry_in = ?self.retry_delay(),
                "{what}"
            );
        }
    }

    fn recovered(&mut self) {
        if self.failures > 0 {
            tracing::info!(failures = self.failures, "the control-plane leader accepts liveness batches again");
        }
        self.failures = 0;
        self.last_warned = None;
    }

    #[cfg(test)]
    pub fn carried(&self) -> usize {
        self.carry.len()
    }
}

async fn set_health(health: &tonic_health::server::HealthReporter, fresh: bool) {
    use tonic_health::ServingStatus;
    let status = if fresh { ServingStatus::Serving } else { ServingStatus::NotServing };
    health.set_service_status("", status).await;
    health.set_service_status(crate::service::SERVICE_NAME, status).await;
    if fresh {
        tracing::info!("liveness batches reach the leader again: serving");
    } else {
        tracing::warn!("no liveness batch accepted by the leader lately: reporting NOT_SERVING");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::admission::{Control, EndReason};

    /// Records requests; answers with the scripted results in order (then successes).
    #[derive(Default)]
    struct Fake {
        requests: Mutex<Vec<v1::ReportLivenessRequest>>,
        script: Mutex<Vec<Result<v1::ReportLivenessResponse, String>>>,
    }

    impl Upstream for Fake {
        async fn report_liveness(
            &self,
            request: v1::ReportLivenessRequest,
        ) -> Result<v1::ReportLivenessResponse, String> {
            self.requests.lock().unwrap().push(request);
            let mut script = self.script.lock().unwrap();
            if script.is_empty() { Ok(ok_response(Vec::new())) } else { script.remove(0) }
        }
    }

    fn ok_response(refused: Vec<v1::WorkerRefusal>) -> v1::ReportLivenessResponse {
        v1::ReportLivenessResponse {
            policy: Some(v1::TtlPolicy {
                min_ttl_ms: 1_000,
                max_ttl_ms: 60_000,
                grace_ms: 2_000,
                max_heartbeats_per_second: 10,
                failover_ttl_ms: 60_000,
            }),
            worker_count: 100,
            gateways: vec![v1::GatewayEndpoint { gateway_id: "gw-1".into(), addr: "a:1".into() }],
            gateways_epoch: 5,
            refused,
            leader_term: 1,
            notices_through: 0,
            scheduling: Vec::new(),
        }
    }

    fn setup() -> (Arc<GatewayState>, Arc<Fake>, Batcher<Fake>) {
        let state = Arc::new(GatewayState::new("gw-1".into(), "a:1".into(), Duration::from_secs(1), Instant::now()));
        let fake = Arc::new(Fake::default());
        let batcher = Batcher::new(state.clone(), fake.clone(), Duration::from_millis(250));
        (state, fake, batcher)
    }

    fn beat(state: i32, held: bool) -> Beat {
        Beat {
            received: Instant::now(),
            ttl_ms: 1_000,
            reported_state: state,
            profile: None,
            cert_serial: None,
            held,
            drained: false,
        }
    }

    #[tokio::test]
    async fn an_empty_batch_registers_the_gateway_and_installs_the_policy() {
        let (state, fake, mut batcher) = setup();
        assert_eq!(batcher.send_batch().await.unwrap(), 0);
        let request = fake.requests.lock().unwrap()[0].clone();
        assert_eq!((request.gateway_id.as_str(), request.gateway_addr.as_str()), ("gw-1", "a:1"));
        assert!(request.beats.is_empty());
        let view = state.view();
        assert_eq!((view.worker_count, view.base_ttl_ms, view.budget_per_second), (100, 10_000, 10.0));
        assert!(state.is_fresh(Instant::now()));
        assert_eq!(state.metrics.batches.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_failed_batch_keeps_its_beats_for_the_next() {
        let (state, fake, mut batcher) = setup();
        fake.script.lock().unwrap().push(Err("leader unreachable".into()));
        state.pending.record(1, beat(v1::WorkerState::Left as i32, false));
        assert!(batcher.send_batch().await.is_err());
        assert_eq!(batcher.carried(), 1);
        assert_eq!(state.metrics.batch_failures.load(Ordering::Relaxed), 1);
        state.pending.record(1, beat(0, false));
        state.pending.record(2, beat(0, false));
        assert_eq!(batcher.send_batch().await.unwrap(), 2);
        let second = fake.requests.lock().unwrap()[1].clone();
        let one = second.beats.iter().find(|b| b.worker_id == 1).unwrap();
        assert_eq!(one.reported_state, v1::WorkerState::Left as i32, "the LEFT survived the failure");
        assert_eq!(batcher.carried(), 0);
    }

    fn full_beat(label_bytes: usize) -> Beat {
        let profile = v1::WorkerProfile {
            hostname: "node".into(),
            labels: [("big".to_string(), "x".repeat(label_bytes))].into(),
            ..Default::default()
        };
        Beat { profile: Some(profile), ..beat(v1::WorkerState::Ready as i32, false) }
    }

    #[tokio::test]
    async fn large_rounds_are_split_under_the_byte_budget() {
        use prost::Message as _;
        let (state, fake, batcher) = setup();
        let mut batcher = batcher.with_max_batch_bytes(64 * 1024);
        for worker in 1..=20 {
            state.pending.record(worker, full_beat(8_000));
        }
        assert_eq!(batcher.send_batch().await.unwrap(), 20);
        let requests = fake.requests.lock().unwrap().clone();
        assert!(requests.len() >= 3, "{} requests", requests.len());
        assert!(requests.iter().all(|r| r.encoded_len() <= 64 * 1024));
        assert_eq!(requests.iter().map(|r| r.beats.len()).sum::<usize>(), 20);
        assert_eq!(state.metrics.beats_forwarded.load(Ordering::Relaxed), 20);
    }

    #[tokio::test]
    async fn a_failed_round_is_never_resent_larger() {
        use prost::Message as _;
        let (state, fake, batcher) = setup();
        let mut batcher = batcher.with_max_batch_bytes(64 * 1024);
        // The leader refuses everything for a while; the workers keep sending full reports.
        for _ in 0..10 {
            fake.script.lock().unwrap().push(Err("message too large".into()));
        }
        for _round in 0..10 {
            for worker in 1..=20 {
                state.pending.record(worker, full_beat(8_000));
            }
            assert!(batcher.send_batch().await.is_err());
            assert!(batcher.carried() <= 20, "one carried beat per worker, not {}", batcher.carried());
        }
        assert_eq!(batcher.send_batch().await.unwrap(), 20);
        let requests = fake.requests.lock().unwrap().clone();
        assert!(requests.iter().all(|r| r.encoded_len() <= 64 * 1024), "no request outgrows the budget");
        let last_round: usize = requests[10..].iter().map(|r| r.beats.len()).sum();
        assert_eq!(last_round, 20, "each worker's beat is delivered once");
        assert_eq!(batcher.carried(), 0);
    }

    #[tokio::test]
    async fn a_round_failing_midway_keeps_only_the_undelivered_beats() {
        let (state, fake, batcher) = setup();
        let mut batcher = batcher.with_max_batch_bytes(20 * 1024);
        for worker in 1..=6 {
            state.pending.record(worker, full_beat(8_000));
        }
        {
            let mut script = fake.script.lock().unwrap();
            script.push(Ok(ok_response(Vec::new())));
            script.push(Err("leader lost".into()));
        }
        assert!(batcher.send_batch().await.is_err());
        let first = fake.requests.lock().unwrap()[0].beats.len();
        assert!(first > 0 && first < 6);
        assert_eq!(batcher.carried(), 6 - first);
        assert_eq!(batcher.send_batch().await.unwrap(), 6 - first);
    }

    #[tokio::test]
    async fn the_answer_admits_held_workers_and_ends_refused_ones() {
        let (state, fake, mut batcher) = setup();
        let now = Instant::now();
        let (held, revoked, unknown) = (
            state.admission.open(1, None, now).unwrap(),
            state.admission.open(2, None, now).unwrap(),
            state.admission.open(3, None, now).unwrap(),
        );
        for worker in 1..=3 {
            state.pending.record(worker, beat(v1::WorkerState::Ready as i32, true));
        }
        let refusals = vec![
            v1::WorkerRefusal { worker_id: 2, state: v1::WorkerState::Revoked as i32, ..Default::default() },
            v1::WorkerRefusal { worker_id: 3, state: 0, reason: "no worker 3".into(), ..Default::default() },
        ];
        fake.script.lock().unwrap().push(Ok(ok_response(refusals)));
        batcher.send_batch().await.unwrap();
        assert_eq!(*held.control.borrow(), Control::Admitted);
        assert_eq!(*revoked.control.borrow(), Control::End(EndReason::Refused(Refusal::Revoked)));
        assert_eq!(*unknown.control.borrow(), Control::End(EndReason::Refused(Refusal::Unknown("no worker 3".into()))));
        assert_eq!(state.admission.open(2, None, Instant::now()).unwrap_err(), Refusal::Revoked);
        assert_eq!(state.metrics.refused.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_refused_certificate_ends_only_its_streams_and_notices_are_acknowledged() {
        let (state, fake, mut batcher) = setup();
        let now = Instant::now();
        let serial = |hex: &str| Some(Arc::<str>::from(hex));
        // Worker 1 is beating with its old certificate; worker 2 reconnects with a renewed one.
        let old = state.admission.open(1, serial("0a"), now).unwrap();
        state.admission.admit(1, &serial("0a"), now);
        let renewed = state.admission.open(2, serial("0d"), now).unwrap();
        state.pending.record(2, Beat { cert_serial: serial("0d"), ..beat(v1::WorkerState::Ready as i32, true) });
        let retired = v1::WorkerRefusal {
            worker_id: 1,
            reason: "certificate serial 0a is replaced".into(),
            cert_serial: "0a".into(),
            ..Default::default()
        };
        let mut response = ok_response(vec![retired]);
        (response.leader_term, response.notices_through) = (4, 17);
        fake.script.lock().unwrap().push(Ok(response));
        batcher.send_batch().await.unwrap();
        let reason = "certificate serial 0a is replaced".to_string();
        assert_eq!(*old.control.borrow(), Control::End(EndReason::Refused(Refusal::Certificate(reason))));
        assert_eq!(*renewed.control.borrow(), Control::Admitted);
        assert!(state.admission.open(1, serial("0b"), Instant::now()).is_ok(), "the worker's other certificate");
        // The next batch tells the leader the notices are applied.
        batcher.send_batch().await.unwrap();
        let second = fake.requests.lock().unwrap()[1].clone();
        assert_eq!((second.notices_term, second.notices_seen), (4, 17));
    }

    #[tokio::test(start_paused = true)]
    async fn the_task_batches_every_interval_and_flushes_on_stop() {
        let (state, fake, batcher) = setup();
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(batcher.run(stopped, None));
        tokio::time::sleep(Duration::from_millis(1_010)).await;
        assert_eq!(fake.requests.lock().unwrap().len(), 4, "one batch per 250ms, even with no workers");
        state.pending.record(7, beat(v1::WorkerState::Left as i32, false));
        stop.send_replace(true);
        task.await.unwrap();
        let requests = fake.requests.lock().unwrap();
        assert_eq!(requests.len(), 5);
        assert_eq!(requests[4].beats[0].worker_id, 7, "the last beats are flushed on stop");
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off() {
        let (_state, fake, batcher) = setup();
        for _ in 0..4 {
            fake.script.lock().unwrap().push(Err("down".into()));
        }
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(batcher.run(stopped, None));
        // Attempts at 250ms, then +250ms, +500ms, +1s, +2s (success).
        tokio::time::sleep(Duration::from_millis(2_100)).await;
        assert_eq!(fake.requests.lock().unwrap().len(), 4);
        tokio::time::sleep(Duration::from_millis(2_000)).await;
        assert_eq!(fake.requests.lock().unwrap().len(), 5);
        stop.send_replace(true);
        task.await.unwrap();
    }
}
