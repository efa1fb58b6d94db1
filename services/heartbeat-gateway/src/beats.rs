//! The beats received since the last batch, keyed by worker: every report lands here (O(1),
//! one short lock on one of a few shards) and the batch task swaps the maps out every
//! `batch_interval`. Several reports from one worker in one interval collapse into the latest,
//! but a state change or profile any of them carried is kept: a LEFT must never be lost to a
//! plain beat that followed it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use muster_proto::v1;

/// Shards of the pending map: enough that report handlers on a few cores rarely meet.
const SHARDS: usize = 16;

/// One worker's latest beat, as it will be forwarded.
#[derive(Clone, Debug, PartialEq)]
pub struct Beat {
    /// When the gateway received it (the leader dates the lease from then).
    pub received: Instant,
    /// The TTL issued with its ack.
    pub ttl_ms: u32,
    /// `WorkerState` to forward, or UNSPECIFIED for a plain beat.
    pub reported_state: i32,
    pub profile: Option<v1::WorkerProfile>,
    pub cert_serial: Option<Arc<str>>,
    /// The worker's stream waits for this batch's answer before it is acked (admission).
    pub held: bool,
    /// The worker reported its drain finished.
    pub drained: bool,
}

impl Beat {
    /// Merges an older beat of the same worker into this newer one: the newer timing wins, the
    /// older state, profile and serial survive where the newer one has none.
    pub fn absorb_older(&mut self, older: Beat) {
        if self.reported_state == v1::WorkerState::Unspecified as i32 {
            self.reported_state = older.reported_state;
        }
        if self.profile.is_none() {
            self.profile = older.profile;
        }
        if self.cert_serial.is_none() {
            self.cert_serial = older.cert_serial;
        }
        self.held |= older.held;
        self.drained |= older.drained;
    }

    /// The wire form, `age_ms` counted up to `now` (the moment the batch is sent).
    pub fn to_wire(&self, worker_id: u64, now: Instant) -> v1::WorkerBeat {
        let age = now.saturating_duration_since(self.received).as_millis();
        v1::WorkerBeat {
            worker_id,
            ttl_ms: self.ttl_ms,
            age_ms: u32::try_from(age).unwrap_or(u32::MAX),
            reported_state: self.reported_state,
            profile: self.profile.clone(),
            cert_serial: self.cert_serial.as_deref().unwrap_or_default().to_string(),
            drained: self.drained,
        }
    }
}

/// Merges `older` beats into `newer` (a failed batch into the next one).
pub fn merge_older(newer: &mut HashMap<u64, Beat>, older: HashMap<u64, Beat>) {
    for (worker, old) in older {
        match newer.get_mut(&worker) {
            Some(beat) => beat.absorb_older(old),
            None => {
                newer.insert(worker, old);
            }
        }
    }
}

/// The beats received since the last drain.
#[derive(Debug)]
pub struct Pending {
    shards: Box<[Mutex<HashMap<u64, Beat>>]>,
}

impl Default for Pending {
    fn default() -> Self {
        Self { shards: (0..SHARDS).map(|_| Mutex::default()).collect() }
    }
}

impl Pending {
    fn shard(&self, worker: u64) -> &Mutex<HashMap<u64, Beat>> {
        // Worker ids are dense counters: the low bits spread them evenly.
        &self.shards[(worker as usize) % SHARDS]
    }

    /// Records a beat, folding it over any earlier one of the same worker.
    pub fn record(&self, worker: u64, beat: Beat) {
        let mut shard = self.shard(worker).lock().unwrap_or_else(PoisonError::into_inner);
        match shard.get_mut(&worker) {
            Some(existing) => {
                let older = std::mem::replace(existing, beat);
                existing.absorb_older(older);
            }
            None => {
                shard.insert(worker, beat);
            }
        }
    }

    /// Takes everything recorded so far.
    pub fn drain(&self) -> HashMap<u64, Beat> {
        let mut all = HashMap::new();
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            let capacity = shard.len();
            let taken = std::mem::replace(&mut *shard, HashMap::with_capacity(capacity));
            drop(shard);
            if all.is_empty() {
                all = taken;
            } else {
                all.extend(taken);
            }
        }
        all
    }

    /// Beats waiting for the next batch.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.lock().unwrap_or_else(PoisonError::into_inner).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const READY: i32 = v1::WorkerState::Ready as i32;
    const LEFT: i32 = v1::WorkerState::Left as i32;

    fn beat(at: Instant, ttl_ms: u32, state: i32) -> Beat {
        Beat {
            received: at,
            ttl_ms,
            reported_state: state,
            profile: None,
            cert_serial: None,
            held: false,
            drained: false,
        }
    }

    #[test]
    fn the_latest_beat_wins_but_states_and_profiles_survive() {
        let t0 = Instant::now();
        let pending = Pending::default();
        let profile = v1::WorkerProfile { hostname: "h".into(), ..Default::default() };
        pending.record(7, Beat { profile: Some(profile.clone()), held: true, ..beat(t0, 10_000, READY) });
        pending.record(7, beat(t0 + Duration::from_millis(5), 11_000, 0));
        pending.record(8, beat(t0, 10_000, 0));
        assert_eq!(pending.len(), 2);

        let drained = pending.drain();
        assert!(pending.is_empty());
        let seven = &drained[&7];
        assert_eq!((seven.ttl_ms, seven.reported_state, seven.held), (11_000, READY, true));
        assert_eq!(seven.profile.as_ref(), Some(&profile));
        assert_eq!(seven.received, t0 + Duration::from_millis(5));
    }

    #[test]
    fn a_newer_state_replaces_an_older_one() {
        let t0 = Instant::now();
        let pending = Pending::default();
        pending.record(1, beat(t0, 1, READY));
        pending.record(1, beat(t0, 2, LEFT));
        pending.record(1, beat(t0, 3, 0));
        assert_eq!(pending.drain()[&1].reported_state, LEFT);
    }

    #[test]
    fn a_failed_batch_merges_under_the_next() {
        let t0 = Instant::now();
        let mut failed = HashMap::from([(1, beat(t0, 1, LEFT)), (2, beat(t0, 1, 0))]);
        failed.get_mut(&2).unwrap().cert_serial = Some("ab".into());
        let mut next = HashMap::from([(2, beat(t0 + Duration::from_secs(1), 2, 0)), (3, beat(t0, 3, 0))]);
        merge_older(&mut next, failed);
        assert_eq!(next.len(), 3);
        assert_eq!(next[&1].reported_state, LEFT, "a LEFT from a failed batch is never dropped");
        assert_eq!((next[&2].ttl_ms, next[&2].cert_serial.as_deref()), (2, Some("ab")));
    }

    #[test]
    fn the_wire_form_counts_age_at_send_time() {
        let t0 = Instant::now();
        let mut b = beat(t0, 9_000, LEFT);
        b.cert_serial = Some("0a".into());
        let wire = b.to_wire(5, t0 + Duration::from_millis(120));
        assert_eq!((wire.worker_id, wire.ttl_ms, wire.age_ms, wire.reported_state), (5, 9_000, 120, LEFT));
        assert_eq!(wire.cert_serial, "0a");
        assert_eq!(b.to_wire(5, t0 - Duration::from_millis(1)).age_ms, 0);
    }
}
