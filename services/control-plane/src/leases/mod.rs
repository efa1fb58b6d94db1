//! Worker leases, held in the leader's memory and never written to Raft per heartbeat.
//!
//! Gateways send batches of beats ([`Leases::report`]); each refreshes a lease
//! (`deadline = beat + TTL + grace`). The [`sweeper`] runs on the leader only: it confirms
//! leadership, then proposes the state changes (expiry, return, graceful leave) as one
//! term-tagged Raft command per sweep. On a new term every lease restarts at the failover TTL,
//! never below the largest TTL a gateway can have issued plus grace.
//!
//! - [`table`]: the leases, the fleet mirror and the gateways (pure, clock passed in);
//! - [`serials`]: which certificate a worker may beat with;
//! - [`notices`]: revocations and retired certificates pushed to every gateway;
//! - [`scheduling`]: cordons and drains, told to gateways; drains ended by report or deadline;
//! - [`expiry`]: rate-limited down-marking and the mass-silence pause;
//! - [`sweeper`]: the leader's task.

pub mod expiry;
pub mod notices;
pub mod scheduling;
pub mod serials;
pub mod sweeper;
pub mod table;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use muster_config::{AdaptiveTtlConfig, ControlPlaneConfig, LeaseTuning};
use muster_middleware::ApiError;
use muster_proto::v1;
use tokio::sync::watch;

use crate::errors::storage_error;
use crate::leadership::Leadership;
use crate::store::FsmReader;
use expiry::ExpiryGate;
use table::{FleetRead, LeaseTable};

/// The longest `host:port` a gateway may advertise (a 253-byte DNS name, brackets, a port).
const MAX_GATEWAY_ADDR: usize = 262;

/// How often the leader re-reads the fleet from the FSM while entries are being applied.
const FLEET_REFRESH: Duration = Duration::from_secs(1);

/// The most live gateways one gateway certificate may report as (`<name>/<instance>`), so a
/// stolen certificate cannot flood the gateway list every worker receives.
pub const MAX_INSTANCES_PER_GATEWAY_CERT: usize = 64;

/// How long `RevokeWorker` waits for every live gateway to apply the revocation (a few batch
/// intervals at the default 250 ms).
pub const REVOCATION_WAIT: Duration = Duration::from_secs(3);

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct LeaseStats {
    pub batches: AtomicU64,
    pub beats: AtomicU64,
    pub expiries: AtomicU64,
    pub returns: AtomicU64,
    pub mass_silence_pauses: AtomicU64,
    pub refusals: AtomicU64,
}

pub struct Leases {
    pub policy: AdaptiveTtlConfig,
    pub tuning: LeaseTuning,
    pub stats: LeaseStats,
    table: Mutex<LeaseTable>,
    gate: Mutex<ExpiryGate>,
    /// When the fleet mirror was last read, at which applied index.
    refreshed: Mutex<(Instant, u64)>,
    /// Bumped whenever a gateway reports the notices it has applied.
    notices_applied: watch::Sender<u64>,
}

fn millis(duration: Duration) -> u32 {
    u32::try_from(duration.as_millis()).unwrap_or(u32::MAX)
}

impl Leases {
    pub fn new(config: &ControlPlaneConfig) -> Self {
        let now = Instant::now();
        Self {
            policy: config.cluster.adaptive_ttl_config().unwrap_or_default(),
            tuning: config.leases.clone(),
            stats: LeaseStats::default(),
            table: Mutex::new(LeaseTable::default()),
            gate: Mutex::new(ExpiryGate::new(&config.leases, now)),
            refreshed: Mutex::new((now, 0)),
            notices_applied: watch::Sender::new(0),
        }
    }

    fn table(&self) -> MutexGuard<'_, LeaseTable> {
        self.table.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn ttl_policy(&self) -> v1::TtlPolicy {
        v1::TtlPolicy {
            min_ttl_ms: millis(self.policy.min_ttl),
            max_ttl_ms: millis(self.policy.max_ttl),
            grace_ms: millis(self.policy.grace),
            max_heartbeats_per_second: self.policy.max_heartbeats_per_second,
            failover_ttl_ms: millis(self.policy.failover_ttl),
        }
    }

    /// How long every lease lasts after an election: the failover TTL, but never less than the
    /// largest TTL any gateway can have issued for this fleet, plus grace.
    pub fn failover_window(&self, workers: u64) -> Duration {
        self.policy.failover_ttl.max(self.policy.largest_issuable_ttl(workers) + self.policy.grace)
    }

    /// The lease table for the current term, started if this node just became leader. Errors
    /// with a leader hint on a follower.
    fn leading_table(
        &self,
        node: &impl Leadership<Applied = FsmReader>,
        now: Instant,
    ) -> Result<(MutexGuard<'_, LeaseTable>, u64), ApiError> {
        let standing = node.standing();
        if !standing.leading {
            return Err(node.not_leader());
        }
        let (term, applied) = (standing.term, standing.applied_index);
        let mut table = self.table();
        if table.term() != term {
            let fleet = read_fleet(node)?;
            let count = fleet.states.values().filter(|s| **s != v1::WorkerState::Revoked as i32).count() as u64;
            let window = self.failover_window(count);
            tracing::info!(
                term,
                workers = fleet.states.len(),
                failover_secs = window.as_secs(),
                "leading: every lease restarts at the failover TTL"
            );
            table.begin_term(term, now, fleet, window);
            *self.refreshed.lock().unwrap_or_else(|p| p.into_inner()) = (now, applied);
        } else {
            let mut refreshed = self.refreshed.lock().unwrap_or_else(|p| p.into_inner());
            if refreshed.1 != applied && now.saturating_duration_since(refreshed.0) >= FLEET_REFRESH {
                table.refresh_fleet(read_fleet(node)?, now, self.policy.min_ttl + self.policy.grace);
                *refreshed = (now, applied);
            }
        }
        Ok((table, term))
    }

    /// One gateway batch: refresh leases, queue state changes, answer with the policy, N, the
    /// live gateways and the workers to disconnect.
    pub fn report(
        &self,
        node: &impl Leadership<Applied = FsmReader>,
        request: v1::ReportLivenessRequest,
    ) -> Result<v1::ReportLivenessResponse, ApiError> {
        if request.gateway_id.is_empty() || request.gateway_addr.is_empty() {
            return Err(ApiError::InvalidArgument("gateway_id and gateway_addr are required".into()));
        }
        // Both go into the gateway list every worker receives.
        let max_id = muster_tls::GATEWAY_ID_MAX_BYTES;
        if request.gateway_id.len() > max_id || request.gateway_addr.len() > MAX_GATEWAY_ADDR {
            return Err(ApiError::InvalidArgument(format!(
                "gateway_id is limited to {max_id} bytes and gateway_addr to {MAX_GATEWAY_ADDR} (a host name and a port)"
            )));
        }
        let now = Instant::now();
        let (mut table, term) = self.leading_table(node, now)?;
        if table.other_instances(&request.gateway_id, now, self.tuning.gateway_lease) >= MAX_INSTANCES_PER_GATEWAY_CERT
        {
            return Err(ApiError::ResourceExhausted(format!(
                "{MAX_INSTANCES_PER_GATEWAY_CERT} gateways already report under the certificate name of {:?}; one \
                 gateway certificate may serve at most {MAX_INSTANCES_PER_GATEWAY_CERT} live instances",
                request.gateway_id
            )));
        }
        table.record_gateway(&request.gateway_id, &request.gateway_addr, now);
        let gateway: Arc<str> = Arc::from(request.gateway_id.as_str());
        let mut refused = Vec::new();
        for beat in &request.beats {
            let id = beat.worker_id;
            let mut stored = if table.state(id).is_none() || beat.profile.is_some() {
                node.applied().worker(id).map_err(storage_error)?
            } else {
                None
            };
            if let Some(record) = &stored {
                table.learn_worker(record);
            }
            let received = now.checked_sub(Duration::from_millis(u64::from(beat.age_ms))).unwrap_or(now);
            let mut refusal = table.record_beat(&gateway, beat, received, self.policy.grace);
            // A refused certificate may be a renewal the mirror has not read yet: read the
            // worker and judge once more (a refused beat changed nothing in the table).
            if refusal.as_ref().is_some_and(|r| !r.cert_serial.is_empty()) && stored.is_none() {
                stored = node.applied().worker(id).map_err(storage_error)?;
                if let Some(record) = &stored {
                    table.learn_worker(record);
                    refusal = table.record_beat(&gateway, beat, received, self.policy.grace);
                }
            }
            match refusal {
                Some(refusal) => refused.push(refusal),
                None => {
                    if beat.drained {
                        table.report_drained(id);
                    }
                    if let (Some(record), Some(profile)) = (stored, &beat.profile)
                        && record.profile.as_ref() != Some(profile)
                        && beat.reported_state != v1::WorkerState::Left as i32
                        // Gateways refuse oversize profiles; one that slips through never reaches Raft.
                        && muster_proto::limits::validate_profile(profile).is_ok()
                    {
                        table.queue_profile(id, record.state, profile.clone());
                    }
                }
            }
        }
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats.beats.fetch_add(request.beats.len() as u64, Ordering::Relaxed);
        self.stats.refusals.fetch_add(refused.len() as u64, Ordering::Relaxed);
        let seen = if request.notices_term == term { request.notices_seen } else { 0 };
        let (notices, notices_through) = table.exchange_notices(&request.gateway_id, seen);
        refused.extend(notices);
        let gateways = table.live_gateways(now, self.tuning.gateway_lease);
        let scheduling = table.scheduling_notices(request.beats.iter().map(|beat| beat.worker_id));
        let response = v1::ReportLivenessResponse {
            policy: Some(self.ttl_policy()),
            worker_count: table.worker_count(),
            gateways_epoch: table::gateways_epoch(&gateways),
            gateways,
            refused,
            leader_term: term,
            notices_through,
            scheduling,
        };
        drop(table);
        // Only a RevokeWorker waiting for the gateways listens.
        if seen > 0 && self.notices_applied.receiver_count() > 0 {
            self.notices_applied.send_modify(|count| *count += 1);
        }
        Ok(response)
    }

    /// `worker_id`'s revocation is committed: drop its lease and tell every gateway, then wait
    /// (at most [`REVOCATION_WAIT`]) until every live gateway has applied it, so a stream of
    /// the worker gets no ack after `RevokeWorker` answers. Gateways that did not confirm in
    /// time are returned (they refuse the worker on its next batch instead); on a follower
    /// there is nothing to do.
    pub async fn revoke(&self, node: &impl Leadership<Applied = FsmReader>, worker_id: u64) -> Vec<String> {
        let Some((term, seq)) = self.push_revocation(node, worker_id) else { return Vec::new() };
        let mut applied = self.notices_applied.subscribe();
        let deadline = tokio::time::Instant::now() + REVOCATION_WAIT;
        loop {
            // None: deposed, and the next leader reads the revocation from the log.
            let Some(behind) = self.gateways_behind(term, seq) else { return Vec::new() };
            if behind.is_empty() {
                return behind;
            }
            match tokio::time::timeout_at(deadline, applied.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return behind,
            }
        }
    }

    /// Queues the revocation notice: (term, its sequence number), or None when not leading.
    fn push_revocation(&self, node: &impl Leadership<Applied = FsmReader>, worker_id: u64) -> Option<(u64, u64)> {
        let (mut table, term) = self.leading_table(node, Instant::now()).ok()?;
        Some((term, table.revoke(worker_id)))
    }

    /// The live gateways that have not applied notice `seq` of `term` (None: no longer `term`).
    fn gateways_behind(&self, term: u64, seq: u64) -> Option<Vec<String>> {
        let table = self.table();
        (table.term() == term).then(|| table.gateways_behind(seq, Instant::now(), self.tuning.gateway_lease))
    }

    pub fn list_gateways(
        &self,
        node: &impl Leadership<Applied = FsmReader>,
    ) -> Result<v1::ListGatewaysResponse, ApiError> {
        let now = Instant::now();
        let (table, _) = self.leading_table(node, now)?;
        let gateways = table.live_gateways(now, self.tuning.gateway_lease);
        Ok(v1::ListGatewaysResponse {
            gateways_epoch: table::gateways_epoch(&gateways),
            gateways,
            policy: Some(self.ttl_policy()),
            worker_count: table.worker_count(),
        })
    }

    /// The leases of `ids` as operators see them (empty on a follower).
    pub fn views(
        &self,
        node: &impl Leadership<Applied = FsmReader>,
        ids: impl IntoIterator<Item = u64>,
    ) -> HashMap<u64, v1::WorkerLease> {
        let standing = node.standing();
        let table = self.table();
        if !standing.leading || table.term() != standing.term {
            return HashMap::new();
        }
        let now = Instant::now();
        let now_ms = muster_proto::clock::since_epoch().as_millis() as i64;
        let unix_ms = |at: Instant| -> i64 {
            if at >= now {
                now_ms + at.duration_since(now).as_millis() as i64
            } else {
                now_ms - now.duration_since(at).as_millis() as i64
            }
        };
        ids.into_iter()
            .filter_map(|id| {
                let lease = table.lease(id)?;
                let view = v1::WorkerLease {
                    gateway_id: lease.gateway_id.to_string(),
                    last_beat_unix_ms: lease.last_beat.map_or(0, unix_ms),
                    ttl_ms: millis(lease.ttl),
                    deadline_unix_ms: unix_ms(lease.deadline),
                };
                Some((id, view))
            })
            .collect()
    }

    /// Gauges for `/metrics`: (live gateways, worker count) as this node sees them.
    /// Live gateways, N, leased workers, and the whole seconds left in the failover window.
    pub fn gauges(&self) -> (usize, u64, usize, u64) {
        let table = self.table();
        let now = Instant::now();
        (
            table.live_gateways(now, self.tuning.gateway_lease).len(),
            table.worker_count(),
            table.leased_count(),
            table.failover_remaining(now).as_secs_f64().ceil() as u64,
        )
    }
}

/// Every worker's state and certificate serials, read from the FSM.
fn read_fleet(node: &impl Leadership<Applied = FsmReader>) -> Result<FleetRead, ApiError> {
    Ok(FleetRead::from_records(node.applied().mirrored_workers().map_err(storage_error)?))
}

#[cfg(test)]
mod seam_tests;
