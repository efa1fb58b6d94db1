//! Which workers may report here, and their streams.
//!
//! A gateway has no per-connection RPC to the control plane: a worker it has not admitted yet
//! has its first report held until the next batch answer, which either refuses it (revoked or
//! unknown: its stream ends with the reason) or admits it. Admission is per certificate: a
//! stream with another certificate serial than the admitted one (a renewed certificate, or a
//! stolen old one) is held again until the leader has judged that serial. Refusals are
//! remembered, so a revoked worker that reconnects is turned away at once; the leader also
//! pushes revocations and retired certificates to every gateway ([`Admission::refuse`] and
//! [`Admission::refuse_certificate`] end the stream at once, before its next report). One
//! stream per worker: a newer stream ends the older one (the newest connection is the one the
//! worker is using). The table only holds connected workers and refusals, so it stays as small
//! as the fleet.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

const SHARDS: usize = 16;

/// How long a "not known to the cluster" refusal, or a refused certificate, is remembered
/// (revocations are forever): long enough to shed a reconnect loop, short enough to recover
/// from a transient answer.
pub const UNKNOWN_REFUSAL_TTL: Duration = Duration::from_secs(60);
/// Refused certificates remembered per worker (the oldest is forgotten first).
const REFUSED_CERTIFICATES: usize = 4;

/// The serial (hex) of the certificate on a stream; None on an insecure gateway.
pub type Serial = Option<Arc<str>>;

/// Why a worker may not report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    Revoked,
    /// The cluster does not know the worker; the leader's reason.
    Unknown(String),
    /// This certificate of the worker is not its current one (replaced, or never issued); the
    /// leader's reason.
    Certificate(String),
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
struct Stream {
    id: u64,
    serial: Serial,
    control: watch::Sender<Control>,
}

#[derive(Debug, Default)]
struct Entry {
    stream: Option<Stream>,
    /// The certificate the leader admitted (None: not admitted).
    admitted: Option<Serial>,
    refused: Option<(Refusal, Instant)>,
    /// Certificates refused, with the leader's reason, newest last.
    refused_serials: Vec<(Arc<str>, String, Instant)>,
}

fn in_force(at: Instant, now: Instant) -> bool {
    now.saturating_duration_since(at) < UNKNOWN_REFUSAL_TTL
}

impl Entry {
    /// The refusal of the worker, or of `serial`, still in force at `now`, if any.
    fn refusal(&self, serial: &Serial, now: Instant) -> Option<Refusal> {
        match &self.refused {
            Some((Refusal::Revoked, _)) => return Some(Refusal::Revoked),
            Some((refusal, at)) if in_force(*at, now) => return Some(refusal.clone()),
            _ => {}
        }
        let serial = serial.as_ref()?;
        self.refused_serials
            .iter()
            .find(|(refused, _, at)| refused == serial && in_force(*at, now))
            .map(|(_, reason, _)| Refusal::Certificate(reason.clone()))
    }

    /// A refusal of the worker or of one of its certificates is in force.
    fn has_refusal(&self, now: Instant) -> bool {
        self.refused.as_ref().is_some_and(|(refusal, at)| *refusal == Refusal::Revoked || in_force(*at, now))
            || self.refused_serials.iter().any(|(_, _, at)| in_force(*at, now))
    }

    /// Nothing worth keeping: no stream, no refusal in force.
    fn is_idle(&self, now: Instant) -> bool {
        self.stream.is_none() && !self.has_refusal(now)
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

    /// Registers a new stream of `worker` with the certificate `serial`, ending the one it
    /// replaces; refused workers and certificates are turned away. The stream starts admitted
    /// only if this very certificate was.
    pub fn open(&self, worker: u64, serial: Serial, now: Instant) -> Result<Opened, Refusal> {
        let mut shard = self.shard(worker);
        let entry = shard.entry(worker).or_default();
        if let Some(refusal) = entry.refusal(&serial, now) {
            return Err(refusal);
        }
        entry.refused = None;
        let stream_id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let admitted = entry.admitted.as_ref() == Some(&serial);
        let (sender, control) = watch::channel(if admitted { Control::Admitted } else { Control::Held });
        match entry.stream.replace(Stream { id: stream_id, serial, control: sender }) {
            Some(old) => {
                old.control.send_replace(Control::End(EndReason::Replaced));
            }
            None => {
                self.connected.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(Opened { stream_id, control })
    }

    /// The stream `stream_id` of `worker` ended; forgets the worker unless a refusal of it is
    /// still in force. False when a newer stream of the worker had replaced it already.
    pub fn close(&self, worker: u64, stream_id: u64) -> bool {
        let mut shard = self.shard(worker);
        let Some(entry) = shard.get_mut(&worker) else { return false };
        if entry.stream.as_ref().is_none_or(|stream| stream.id != stream_id) {
            return false;
        }
        entry.stream = None;
        self.connected.fetch_sub(1, Ordering::Relaxed);
        if entry.is_idle(Instant::now()) {
            shard.remove(&worker);
        }
        true
    }

    /// The batch answer did not refuse `worker`'s certificate `serial`: it may report with it,
    /// and a held report of a stream with that certificate is acked.
    pub fn admit(&self, worker: u64, serial: &Serial, now: Instant) {
        let mut shard = self.shard(worker);
        let Some(entry) = shard.get_mut(&worker) else { return };
        if entry.admitted.as_ref() == Some(serial) || entry.refusal(serial, now).is_some() {
            return;
        }
        entry.admitted = Some(serial.clone());
        if let Some(stream) = &entry.stream
            && stream.serial == *serial
        {
            stream.control.send_replace(Control::Admitted);
        }
    }

    /// The leader refused `worker` (every certificate of it): end its stream and remember why.
    pub fn refuse(&self, worker: u64, refusal: Refusal, now: Instant) {
        let mut shard = self.shard(worker);
        let entry = shard.entry(worker).or_default();
        entry.admitted = None;
        if let Some(stream) = &entry.stream {
            stream.control.send_replace(Control::End(EndReason::Refused(refusal.clone())));
        }
        entry.refused = Some((refusal, now));
    }

    /// The leader refused one certificate of `worker`: end a stream that uses it and turn it
    /// away for a while. A worker this gateway has no entry for needs nothing: a stream with
    /// that certificate would be held until the leader refuses it again.
    pub fn refuse_certificate(&self, worker: u64, serial: &str, reason: String, now: Instant) {
        let mut shard = self.shard(worker);
        let Some(entry) = shard.get_mut(&worker) else { return };
        let serial: Arc<str> = Arc::from(serial);
        let refused = Some(serial.clone());
        if entry.admitted.as_ref() == Some(&refused) {
            entry.admitted = None;
        }
        if let Some(stream) = &entry.stream
            && stream.serial == refused
        {
            stream.control.send_replace(Control::End(EndReason::Refused(Refusal::Certificate(reason.clone()))));
        }
        entry.refused_serials.retain(|(known, _, _)| *known != serial);
        if entry.refused_serials.len() == REFUSED_CERTIFICATES {
            entry.refused_serials.remove(0);
        }
        entry.refused_serials.push((serial, reason, now));
    }

    /// Ends every stream (the gateway is shutting down; workers fail over to another one).
    pub fn end_all(&self) {
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            for entry in shard.values() {
                if let Some(stream) = &entry.stream {
                    stream.control.send_replace(Control::End(EndReason::ShuttingDown));
                }
            }
        }
    }

    /// Workers refused, whole or by certificate, still in force (for tests and metrics).
    pub fn refused(&self, now: Instant) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
                shard.values().filter(|entry| entry.has_refusal(now)).count()
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
        let first = table.open(1, None, now).unwrap();
        assert_eq!(state(&first), Control::Held);
        assert_eq!(table.connected(), 1);
        table.admit(1, &None, now);
        assert_eq!(state(&first), Control::Admitted);
        // Once admitted, a newer stream starts admitted; the older one is ended.
        let second = table.open(1, None, now).unwrap();
        assert_eq!(state(&second), Control::Admitted);
        assert_eq!(state(&first), Control::End(EndReason::Replaced));
        assert_eq!(table.connected(), 1, "one worker, one stream");
        // The replaced stream closing late does not forget the newer one.
        assert!(!table.close(1, first.stream_id), "not the worker's stream any more");
        assert_eq!(table.connected(), 1);
        assert!(table.close(1, second.stream_id), "its last stream");
        assert_eq!(table.connected(), 0);
        // Forgotten: the next stream is held again.
        assert_eq!(state(&table.open(1, None, now).unwrap()), Control::Held);
    }

    #[test]
    fn a_revoked_worker_is_ended_and_refused_for_good() {
        let now = Instant::now();
        let table = Admission::default();
        let stream = table.open(5, None, now).unwrap();
        table.admit(5, &None, now);
        table.refuse(5, Refusal::Revoked, now);
        assert_eq!(state(&stream), Control::End(EndReason::Refused(Refusal::Revoked)));
        table.close(5, stream.stream_id);
        assert_eq!(table.connected(), 0);
        assert_eq!(table.open(5, None, now + Duration::from_secs(86_400)).unwrap_err(), Refusal::Revoked);
        table.admit(5, &None, now);
        assert_eq!(table.open(5, None, now).unwrap_err(), Refusal::Revoked, "a late admission does not undo it");
        assert_eq!(table.refused(now), 1);
    }

    #[test]
    fn refusals_of_unconnected_workers_are_remembered_and_unknown_ones_expire() {
        let now = Instant::now();
        let table = Admission::default();
        table.refuse(9, Refusal::Unknown("no such worker".into()), now);
        assert_eq!(table.open(9, None, now).unwrap_err(), Refusal::Unknown("no such worker".into()));
        let later = now + UNKNOWN_REFUSAL_TTL;
        let opened = table.open(9, None, later).unwrap();
        assert_eq!(state(&opened), Control::Held);
        assert_eq!(table.refused(later), 0);
    }

    #[test]
    fn shutting_down_ends_every_stream() {
        let now = Instant::now();
        let table = Admission::default();
        let streams: Vec<Opened> = (1..=3).map(|id| table.open(id, None, now).unwrap()).collect();
        table.end_all();
        for stream in &streams {
            assert_eq!(state(stream), Control::End(EndReason::ShuttingDown));
        }
    }

    fn serial(hex: &str) -> Serial {
        Some(Arc::from(hex))
    }

    #[test]
    fn admission_is_per_certificate() {
        let now = Instant::now();
        let table = Admission::default();
        let old = table.open(3, serial("0a"), now).unwrap();
        table.admit(3, &serial("0a"), now);
        assert_eq!(state(&old), Control::Admitted);
        // A stream with another certificate (renewed, or stolen) waits for the leader's word.
        let renewed = table.open(3, serial("0b"), now).unwrap();
        assert_eq!(state(&renewed), Control::Held);
        assert_eq!(state(&old), Control::End(EndReason::Replaced));
        table.admit(3, &serial("0b"), now);
        assert_eq!(state(&renewed), Control::Admitted);
        // Admitting the old certificate again (a late answer) does not admit the new stream twice
        // over or end it.
        table.admit(3, &serial("0a"), now);
        assert_eq!(state(&renewed), Control::Admitted);
    }

    #[test]
    fn a_refused_certificate_ends_its_stream_and_is_turned_away_for_a_while() {
        let now = Instant::now();
        let table = Admission::default();
        let stream = table.open(4, serial("0a"), now).unwrap();
        table.admit(4, &serial("0a"), now);
        table.refuse_certificate(4, "0a", "replaced".into(), now);
        assert_eq!(state(&stream), Control::End(EndReason::Refused(Refusal::Certificate("replaced".into()))));
        table.close(4, stream.stream_id);
        assert_eq!(table.refused(now), 1);
        assert_eq!(table.open(4, serial("0a"), now).unwrap_err(), Refusal::Certificate("replaced".into()));
        // The worker's current certificate is still welcome, held until admitted.
        let current = table.open(4, serial("0b"), now).unwrap();
        assert_eq!(state(&current), Control::Held);
        // A refused certificate is not admitted by a batch that still carried it.
        table.admit(4, &serial("0a"), now);
        assert_eq!(state(&current), Control::Held);
        table.close(4, current.stream_id);
        let later = now + UNKNOWN_REFUSAL_TTL;
        assert_eq!(table.refused(later), 0);
        assert_eq!(state(&table.open(4, serial("0a"), later).unwrap()), Control::Held, "asked again after a while");
    }

    #[test]
    fn refusing_a_certificate_of_an_unseen_worker_keeps_nothing() {
        let now = Instant::now();
        let table = Admission::default();
        table.refuse_certificate(8, "0a", "replaced".into(), now);
        assert_eq!(table.refused(now), 0);
        for _ in 0..10 {
            let stream = table.open(8, serial("0c"), now).unwrap();
            table.refuse_certificate(8, &format!("{}", stream.stream_id), "minted".into(), now);
            table.close(8, stream.stream_id);
        }
        let shard = table.shard(8);
        assert_eq!(shard[&8].refused_serials.len(), REFUSED_CERTIFICATES, "bounded per worker");
    }
}
