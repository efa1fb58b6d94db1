//! One worker's stream, minus the transport: turns each `StatusReport` into a recorded beat
//! and the numbers for its ack (TTL with stagger, stretched when over budget). O(1) per
//! report: a bucket lock, a pending-map insert, no allocation beyond the ack.
//!
//! Liveness is never refused for budget reasons: an over-budget report is recorded like any
//! other, and only its TTL is stretched, so throttling can slow workers down but can never
//! manufacture an expiry.
//!
//! Heartbeats are sampled for tracing ([`TraceSampler`]): the stream's own span is DEBUG, and
//! only a `heartbeat_trace_ratio` share of reports get an exported INFO span.

use std::sync::Arc;
use std::time::{Duration, Instant};

use muster_proto::limits::{self, LimitError};
use muster_proto::v1;
use muster_proto::v1::WorkerState;
use tracing::Span;
use tracing::field::Empty;

use crate::ack::Reply;
use crate::beats::Beat;
use crate::budget::Take;
use crate::identity::WorkerIdentity;
use crate::metrics::Metrics;
use crate::profile_updates::ProfileUpdates;
use crate::state::GatewayState;
use crate::ttl;

/// Picks the reports that get an exported `heartbeat.report` span: a `ratio` share, drawn
/// per report. Unsampled reports cost a comparison (ratio 0) or one random draw, and get no
/// span at all.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TraceSampler {
    ratio: f64,
}

impl TraceSampler {
    /// `ratio` in `[0, 1]` (validated with the config): 0 traces nothing, 1 every report.
    pub fn new(ratio: f64) -> Self {
        Self { ratio }
    }

    /// An INFO `heartbeat.report` span for a sampled report of `worker_id`, else
    /// [`Span::none`]. The caller records `heartbeat.ttl_ms` and `heartbeat.throttled`.
    pub fn span(&self, worker_id: u64, sequence: u64) -> Span {
        if self.ratio <= 0.0 || rand::random::<f64>() >= self.ratio {
            return Span::none();
        }
        tracing::info_span!(
            "heartbeat.report",
            worker.id = worker_id,
            heartbeat.sequence = sequence,
            heartbeat.ttl_ms = Empty,
            heartbeat.throttled = Empty,
            otel.status_code = Empty,
            error = Empty,
        )
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReportError {
    #[error("state {0} cannot be reported by a worker: report READY, or LEFT on a graceful exit")]
    BadState(String),
    /// The report still counted as a beat (the worker keeps its lease); its profile and state
    /// were not forwarded.
    #[error("report refused, its profile breaks a limit: {0}")]
    Profile(#[from] LimitError),
}

#[derive(Debug)]
pub struct Session {
    pub worker_id: u64,
    cert_serial: Option<Arc<str>>,
    last_report: Option<Instant>,
    /// The state last forwarded to the leader for this worker by this stream.
    last_forwarded: i32,
    /// Admitted: acks go out at once; else the first one waits for the batch answer.
    pub admitted: bool,
    /// Which of the worker's profiles go to the leader.
    profiles: ProfileUpdates,
}

impl Session {
    pub fn new(identity: WorkerIdentity, admitted: bool) -> Self {
        Self {
            worker_id: identity.worker_id,
            cert_serial: identity.cert_serial,
            last_report: None,
            last_forwarded: WorkerState::Unspecified as i32,
            admitted,
            profiles: ProfileUpdates::default(),
        }
    }

    /// Records `report` (received at `now`) and computes its ack. `stagger` is uniform in
    /// `[0, 1)`.
    pub fn report(
        &mut self,
        state: &GatewayState,
        report: v1::StatusReport,
        now: Instant,
        stagger: f64,
    ) -> Result<Reply, ReportError> {
        let reported = match WorkerState::try_from(report.state) {
            Ok(s @ (WorkerState::Unspecified | WorkerState::Ready | WorkerState::Left)) => s,
            Ok(other) => return Err(ReportError::BadState(other.as_str_name().to_string())),
            Err(_) => return Err(ReportError::BadState(report.state.to_string())),
        };
        // An oversize profile is refused, but the report still proves the worker alive: it is
        // recorded as a plain beat so a misconfigured worker never loses its lease over it.
        let refused = report.profile.as_ref().and_then(|profile| limits::validate_profile(profile).err());

        let (throttled, wait) = self.budget(state, now);
        Metrics::count(if throttled { &state.metrics.throttled } else { &state.metrics.accepted });
        Metrics::count(&state.metrics.heartbeats);
        self.last_report = Some(now);

        let base = state.view().base_ttl_ms;
        // Over budget: wait for room, plus up to half a TTL more so a burst spreads out.
        let spread = if throttled { (f64::from(base) * 0.5 * stagger) as u128 } else { 0 };
        let wait_ms = u32::try_from(wait.as_millis() + spread).unwrap_or(u32::MAX);
        let ttl_ms = ttl::staggered(base, stagger).saturating_add(wait_ms);

        // Forward a state only when it changes, or on a full report (a gateway or a new leader
        // that never saw this worker learns everything at once).
        let forward = if refused.is_some() {
            WorkerState::Unspecified
        } else if report.full {
            if reported == WorkerState::Unspecified { WorkerState::Ready } else { reported }
        } else if reported != WorkerState::Unspecified && reported as i32 != self.last_forwarded {
            reported
        } else {
            WorkerState::Unspecified
        };
        if forward != WorkerState::Unspecified {
            self.last_forwarded = forward as i32;
        }
        // A refused report's profile is dropped (not held for later either).
        let profile = match refused {
            None => self.profiles.forward(report.profile, report.full, now),
            Some(_) => None,
        };
        if profile.is_some() {
            Metrics::count(&state.metrics.profiles_forwarded);
        }
        state.pending.record(
            self.worker_id,
            Beat {
                received: now,
                ttl_ms,
                reported_state: forward as i32,
                profile,
                // Every beat: the leader checks it is the worker's current certificate.
                cert_serial: self.cert_serial.clone(),
                // A refused report gets no ack to hold.
                held: !self.admitted && refused.is_none(),
                drained: report.drained,
            },
        );
        if let Some(err) = refused {
            Metrics::count(&state.metrics.reports_refused);
            return Err(err.into());
        }
        Ok(Reply {
            worker_id: self.worker_id,
            sequence: report.sequence,
            reported_epoch: report.gateways_epoch,
            ttl_ms,
            throttled,
        })
    }

    /// A report too large to decode came in: it is refused, but it still proves the worker
    /// alive, so a plain beat is recorded and the worker keeps its lease.
    pub fn oversize(&mut self, state: &GatewayState, now: Instant) {
        Metrics::count(&state.metrics.reports_refused);
        let beat = Beat {
            received: now,
            ttl_ms: state.view().base_ttl_ms,
            reported_state: WorkerState::Unspecified as i32,
            profile: None,
            cert_serial: self.cert_serial.clone(),
            held: false,
            drained: false,
        };
        state.pending.record(self.worker_id, beat);
    }

    /// Whether this report is over budget, and by how long to stretch its TTL. A report
    /// sooner than `min_report_interval` after the previous one takes no token.
    fn budget(&self, state: &GatewayState, now: Instant) -> (bool, Duration) {
        let since = self.last_report.map(|last| now.saturating_duration_since(last));
        match since {
            Some(since) if since < state.min_report_interval => {
                let remaining = state.min_report_interval - since;
                (true, state.wait_for_room(now).max(remaining))
            }
            _ => match state.take_budget(now) {
                Take::Granted => (false, Duration::ZERO),
                Take::Throttled(wait) => (true, wait),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::View;

    const READY: i32 = WorkerState::Ready as i32;
    const LEFT: i32 = WorkerState::Left as i32;

    fn gateway(budget: u32, now: Instant) -> GatewayState {
        let state = GatewayState::new("gw-1".into(), "127.0.0.1:3671".into(), Duration::from_secs(1), now);
        let response = v1::ReportLivenessResponse {
            policy: Some(v1::TtlPolicy {
                min_ttl_ms: 10_000,
                max_ttl_ms: 600_000,
                grace_ms: 10_000,
                max_heartbeats_per_second: budget,
                failover_ttl_ms: 300_000,
            }),
            worker_count: 1_000,
            gateways: vec![v1::GatewayEndpoint { gateway_id: "gw-1".into(), addr: "x:1".into() }],
            gateways_epoch: 3,
            ..Default::default()
        };
        state.apply_view(View::from_response(&response, &state.view()), now);
        state
    }

    fn session(worker_id: u64, admitted: bool) -> Session {
        Session::new(WorkerIdentity { worker_id, cert_serial: Some("ab".into()) }, admitted)
    }

    fn report(sequence: u64, state: i32, full: bool) -> v1::StatusReport {
        let profile = full.then(|| v1::WorkerProfile { hostname: "h".into(), ..Default::default() });
        v1::StatusReport { sequence, state, full, profile, gateways_epoch: 3, drained: false }
    }

    #[test]
    fn a_full_report_forwards_ready_and_the_profile_then_plain_beats_forward_nothing() {
        let t0 = Instant::now();
        let state = gateway(50, t0);
        let mut s = session(1, false);
        let reply = s.report(&state, report(1, READY, true), t0, 0.0).unwrap();
        assert_eq!(reply, Reply { worker_id: 1, sequence: 1, reported_epoch: 3, ttl_ms: 20_000, throttled: false });
        let beat = state.pending.drain().remove(&1).unwrap();
        assert_eq!((beat.reported_state, beat.ttl_ms, beat.held), (READY, 20_000, true));
        assert!(beat.profile.is_some());
        assert_eq!(beat.cert_serial.as_deref(), Some("ab"));

        let t1 = t0 + Duration::from_secs(20);
        s.admitted = true;
        s.report(&state, report(2, READY, false), t1, 0.5).unwrap();
        let beat = state.pending.drain().remove(&1).unwrap();
        assert_eq!((beat.reported_state, beat.ttl_ms, beat.held), (0, 21_000, false));
        assert_eq!(beat.profile, None);
        assert_eq!(beat.cert_serial.as_deref(), Some("ab"), "every beat names its certificate");

        let left = s.report(&state, report(3, LEFT, false), t1 + Duration::from_secs(20), 0.0).unwrap();
        assert!(!left.throttled);
        assert_eq!(state.pending.drain()[&1].reported_state, LEFT);
    }

    #[test]
    fn over_budget_reports_are_recorded_and_stretched() {
        let t0 = Instant::now();
        let state = gateway(2, t0);
        let mut sessions: Vec<Session> = (1..=3).map(|id| session(id, true)).collect();
        let replies: Vec<Reply> =
            sessions.iter_mut().map(|s| s.report(&state, report(1, READY, true), t0, 0.0).unwrap()).collect();
        assert!(!replies[0].throttled && !replies[1].throttled);
        // Budget 2/s, burst 2: the third waits 500ms for its slot on top of its TTL.
        assert!(replies[2].throttled);
        assert_eq!(replies[2].ttl_ms, replies[0].ttl_ms + 500);
        assert_eq!(state.pending.len(), 3, "a throttled beat is still a beat");
        assert_eq!(state.pending.drain()[&3].ttl_ms, replies[2].ttl_ms, "the leader gets the TTL issued");
        assert_eq!(state.metrics.throttled.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(state.metrics.accepted.load(std::sync::atomic::Ordering::Relaxed), 2);
    }

    #[test]
    fn reports_inside_the_minimum_interval_take_no_token() {
        let t0 = Instant::now();
        let state = gateway(50, t0);
        let mut s = session(1, true);
        s.report(&state, report(1, READY, true), t0, 0.0).unwrap();
        let early = s.report(&state, report(2, READY, false), t0 + Duration::from_millis(100), 0.0).unwrap();
        assert!(early.throttled);
        assert_eq!(early.ttl_ms, 20_000 + 900, "stretched by the rest of the interval");
        // The bucket (burst 50) lost only one token: 49 more reports from others are granted.
        let granted = (2..=50)
            .filter(|id| !session(*id, true).report(&state, report(1, READY, true), t0, 0.0).unwrap().throttled)
            .count();
        assert_eq!(granted, 49);
        let on_time = s.report(&state, report(3, READY, false), t0 + Duration::from_secs(2), 0.0).unwrap();
        assert!(!on_time.throttled);
    }

    #[test]
    fn a_repeated_state_is_forwarded_once_and_odd_states_are_refused() {
        let t0 = Instant::now();
        let state = gateway(50, t0);
        let mut s = session(1, true);
        s.report(&state, report(1, LEFT, false), t0, 0.0).unwrap();
        assert_eq!(state.pending.drain()[&1].reported_state, LEFT);
        s.report(&state, report(2, LEFT, false), t0 + Duration::from_secs(2), 0.0).unwrap();
        assert_eq!(state.pending.drain()[&1].reported_state, 0);
        let err = s.report(&state, report(3, WorkerState::Revoked as i32, false), t0, 0.0).unwrap_err();
        assert!(err.to_string().contains("WORKER_STATE_REVOKED"), "{err}");
        assert!(s.report(&state, report(4, 99, false), t0, 0.0).is_err());
    }

    #[test]
    fn an_oversize_profile_is_refused_naming_the_limit_but_still_counts_as_a_beat() {
        let t0 = Instant::now();
        let state = gateway(50, t0);
        let mut s = session(1, false);
        let mut oversize = report(1, READY, true);
        let labels = (0..65).map(|i| (format!("k{i}"), "v".into())).collect();
        oversize.profile.as_mut().unwrap().labels = labels;
        let err = s.report(&state, oversize, t0, 0.0).unwrap_err();
        assert!(matches!(err, ReportError::Profile(_)), "{err}");
        assert!(err.to_string().contains("max_labels"), "{err}");
        let beat = state.pending.drain().remove(&1).expect("the lease is kept");
        assert_eq!((beat.reported_state, beat.held), (0, false));
        assert_eq!(beat.profile, None, "the oversize profile is not forwarded");
        assert_eq!(state.metrics.reports_refused.load(std::sync::atomic::Ordering::Relaxed), 1);

        // The next good report (a new stream) forwards state and profile as usual.
        let mut s = session(1, false);
        s.report(&state, report(1, READY, true), t0 + Duration::from_secs(1), 0.0).unwrap();
        let beat = state.pending.drain().remove(&1).unwrap();
        assert_eq!(beat.reported_state, READY);
        assert!(beat.profile.is_some());

        s.oversize(&state, t0 + Duration::from_secs(2));
        let beat = state.pending.drain().remove(&1).expect("an undecodable report still counts");
        assert_eq!((beat.reported_state, beat.profile, beat.ttl_ms), (0, None, 20_000));
    }

    #[test]
    fn the_trace_ratio_decides_which_reports_are_exported() {
        use opentelemetry::trace::TracerProvider as _;
        use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
        use tracing_subscriber::layer::SubscriberExt as _;

        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing::level_filters::LevelFilter::INFO)
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("gateway")));
        tracing::subscriber::with_default(subscriber, || {
            for (ratio, exported) in [(0.0, 0), (1.0, 50)] {
                let sampler = TraceSampler::new(ratio);
                for sequence in 1..=50 {
                    sampler.span(7, sequence).in_scope(|| {});
                }
                provider.force_flush().unwrap();
                let spans = exporter.get_finished_spans().unwrap();
                assert_eq!(spans.len(), exported, "ratio {ratio}");
                assert!(spans.iter().all(|span| span.name == "heartbeat.report"));
                let worker = spans.first().and_then(|s| s.attributes.iter().find(|kv| kv.key.as_str() == "worker.id"));
                assert!(exported == 0 || worker.is_some_and(|kv| kv.value.as_str() == "7"), "{spans:#?}");
                exporter.reset();
            }
        });
    }
}
