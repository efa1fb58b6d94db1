//! Which workers may report here, and their streams.
//!
//! A gateway has no per-connection RPC to the control plane: a worker it has not admitted yet
//! has its first report held until the next batch answer, which either refuses it (revoked or
//! unknown: its stream ends with the reason) or admits it. Refusals are remembered, so a
//! revoked worker that reconnects is turned away at once. One stream per worker: a newer
//! stream ends the older one (the newest connection is the one the worker is using). The
//! table only holds connected workers and refusals, so it stays as small as the fleet.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

const SHARDS: usize = 16;

/// How long a "not known to the cluster" refusal is remembered (revocations are forever):
/// long enough to shed a reconnect loop, short enough to recover from a transient answer.
pub const UNKNOWN_REFUSAL_TTL: Duration = Duration::from_secs(60);

/// Why a worker may not report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    Revoked,
    /// The cluster does not know the worker; the leader's reason.
    Unknown(String),
}

/// Why a stream is being ended by the gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndReason {
    Refused(Refusal),
    /// The worker opened a newer stream on this gateway.
    Replaced,
    ShuttingDown,
}

/// What a stream hears from the rest of the gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Control {
    /// Not admitted yet: the first report waits for the next batch answer.
    Held,
    Admitted,
    End(EndReason),
}

/// A stream's registration: its id in the table and its control channel.
#[derive(Debug)]
pub struct Opened {
    pub stream_id: u64,
    pub control: watch::Receiver<Control>,
}

#[derive(Debug)]
struct Entry {
    stream: Option<(u64, watch::Sender<Control>)>,
    admitted: bool,
    refused: Option<(Refusal, Instant)>,
}

impl Entry {
    /// The refusal still in force at `now`, if any.
    fn refusal(&self, now: Instant) -> Option<&Refusal> {
        match &self.refused {
            Some((Refusal::Unknown(_), at)) if now.saturating_duration_since(*at) >= UNKNOWN_REFUSAL_TTL => None,
            Some((refusal, _)) => Some(refusal),
            None => None,
        }
    }
}

#[derive(Debug)]
pub struct Admission {
    shards: Box<[Mutex<HashMap<u64, Entry>>]>,
    next_stream: AtomicU64,
    connected: AtomicU64,
}

impl Default for Admission {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            next_stream: AtomicU64::new(1),
            connected: AtomicU64::new(0),
        }
    }
}

impl Admission {
    fn shard(&self, worker: u64) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        self.shards[(worker as usize) % SHARDS].lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Workers with a stream open.
    pub fn connected(&self) -> u64 {
        self.connected.load(Ordering::Relaxed)
    }

    /// Registers a new stream of `worker`, ending the one it replaces; refused workers are
    /// turned away.
    pub fn open(&self, worker: u64, now: Instant) -> Result<Opened, Refusal> {
        let mut shard = self.shard(worker);
        let entry = shard.entry(worker).or_insert(Entry { stream: None, admitted: false, refused: None });
        if let Some(refusal) = entry.refusal(now) {
            return Err(refusal.clone());
        }
        entry.refused = None;
        let stream_id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let (sender, control) = watch::channel(if entry.admitted { Control::Admitted } else { Control::Held });
        match entry.stream.replace((stream_id, sender)) {
            Some((_, old)) => {
                old.send_replace(Control::End(EndReason::Replaced));
            }
            None => {
                self.connected.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(Opened { stream_id, control })
    }

    /// The stream `stream_id` of `worker` ended; forgets the worker unless it is refused.
    pub fn close(&self, worker: u64, stream_id: u64) {
        let mut shard = self.shard(worker);
        let Some(entry) = shard.get_mut(&worker) else { return };
        if entry.stream.as_ref().is_none_or(|(id, _)| *id != stream_id) {
            return;
        }
        entry.stream = None;
        self.connected.fetch_sub(1, Ordering::Relaxed);
        if entry.refused.is_none() {
            shard.remove(&worker);
        }
    }

    /// The batch answer did not refuse `worker`: it may report, and its held report is acked.
    pub fn admit(&self, worker: u64) {
        let mut shard = self.shard(worker);
        if let Some(entry) = shard.get_mut(&worker)
            && !entry.admitted
            && entry.refused.is_none()
        {
            entry.admitted = true;
            if let Some((_, stream)) = &entry.stream {
                stream.send_replace(Control::Admitted);
            }
        }
    }

    /// The leader refused `worker`: end its stream and remember why.
    pub fn refuse(&self, worker: u64, refusal: Refusal, now: Instant) {
        let mut shard = self.shard(worker);
        let entry = shard.entry(worker).or_insert(Entry { stream: None, admitted: false, refused: None });
        entry.admitted = false;
        if let Some((_, stream)) = &entry.stream {
            stream.send_replace(Control::End(EndReason::Refused(refusal.clone())));
        }
        entry.refused = Some((refusal, now));
    }

    /// Ends every stream (the gateway is shutting down; workers fail over to another one).
    pub fn end_all(&self) {
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            for entry in shard.values() {
                if let Some((_, stream)) = &entry.stream {
                    stream.send_replace(Control::End(EndReason::ShuttingDown));
                }
            }
        }
    }

    /// Refusals remembered (for tests and metrics).
    pub fn refused(&self, now: Instant) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
                shard.values().filter(|entry| entry.refusal(now).is_some()).count()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(opened: &Opened) -> Control {
        opened.control.borrow().clone()
    }

    #[test]
    fn a_new_worker_is_held_until_a_batch_admits_it() {
        let now = Instant::now();
        let table = Admission::default();
        let first = table.open(1, now).unwrap();
        assert_eq!(state(&first), Control::Held);
        assert_eq!(table.connected(), 1);
        table.admit(1);
        assert_eq!(state(&first), Control::Admitted);
        // Once admitted, a newer stream starts admitted; the older one is ended.
        let second = table.open(1, now).unwrap();
        assert_eq!(state(&second), Control::Admitted);
        assert_eq!(state(&first), Control::End(EndReason::Replaced));
        assert_eq!(table.connected(), 1, "one worker, one stream");
        // The replaced stream closing late does not forget the newer one.
        table.close(1, first.stream_id);
        assert_eq!(table.connected(), 1);
        table.close(1, second.stream_id);
        assert_eq!(table.connected(), 0);
        // Forgotten: the next stream is held again.
        assert_eq!(state(&table.open(1, now).unwrap()), Control::Held);
    }

    #[test]
    fn a_revoked_worker_is_ended_and_refused_for_good() {
        let now = Instant::now();
        let table = Admission::default();
        let stream = table.open(5, now).unwrap();
        table.admit(5);
        table.refuse(5, Refusal::Revoked, now);
        assert_eq!(state(&stream), Control::End(EndReason::Refused(Refusal::Revoked)));
        table.close(5, stream.stream_id);
        assert_eq!(table.connected(), 0);
        assert_eq!(table.open(5, now + Duration::from_secs(86_400)).unwrap_err(), Refusal::Revoked);
        table.admit(5);
        assert_eq!(table.open(5, now).unwrap_err(), Refusal::Revoked, "a late admission does not undo it");
        assert_eq!(table.refused(now), 1);
    }

    #[test]
    fn refusals_of_unconnected_workers_are_remembered_and_unknown_ones_expire() {
        let now = Instant::now();
        let table = Admission::default();
        table.refuse(9, Refusal::Unknown("no such worker".into()), now);
        assert_eq!(table.open(9, now).unwrap_err(), Refusal::Unknown("no such worker".into()));
        let later = now + UNKNOWN_REFUSAL_TTL;
        let opened = table.open(9, later).unwrap();
        assert_eq!(state(&opened), Control::Held);
        assert_eq!(table.refused(later), 0);
    }

    #[test]
    fn shutting_down_ends_every_stream() {
        let now = Instant::now();
        let table = Admission::default();
        let streams: Vec<Opened> = (1..=3).map(|id| table.open(id, now).unwrap()).collect();
        table.end_all();
        for stream in &streams {
            assert_eq!(state(stream), Control::End(EndReason::ShuttingDown));
        }
    }
}
