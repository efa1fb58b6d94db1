//! What both systems share in the watch benchmark: the payload every write carries (its
//! sequence number and when it was sent), the book of when each write was acknowledged, the
//! fixed-rate writer, and the tally each watcher keeps of what it received.
//!
//! A write's payload says when it was sent, so a watcher measures *write-to-delivery* without
//! asking anyone; the writer notes when each write was acknowledged (the commit as a client
//! sees it), so a watcher also measures *commit-to-delivery*: how long after the writer learned
//! of the commit the event reached it (zero when the event arrived first, which happens: a
//! follower may deliver before the leader's answer reaches the writer).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::Semaphore;

/// Writes in flight at once at most; a system slower than the offered rate falls behind.
const MAX_IN_FLIGHT: usize = 1024;

/// The benchmark's time line: every instant as nanoseconds since its start, so a payload can
/// carry one.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    epoch: Instant,
}

impl Clock {
    pub fn start() -> Self {
        Self { epoch: Instant::now() }
    }

    pub fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    pub fn now(&self) -> u64 {
        self.nanos(Instant::now())
    }
}

/// The measured window on the benchmark's clock: writes sent inside it are measured.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub from: u64,
    pub to: u64,
}

impl Window {
    pub fn contains(&self, at: u64) -> bool {
        (self.from..self.to).contains(&at)
    }

    pub fn length(&self) -> Duration {
        Duration::from_nanos(self.to - self.from)
    }
}

/// The first 16 bytes of every written value: sequence number and send time (big-endian),
/// padded to the value size.
pub fn payload(seq: u64, sent: u64, value_bytes: usize) -> Vec<u8> {
    let mut value = Vec::with_capacity(value_bytes.max(16));
    value.extend_from_slice(&seq.to_be_bytes());
    value.extend_from_slice(&sent.to_be_bytes());
    value.resize(value_bytes.max(16), b'x');
    value
}

/// `(seq, sent)` of a value written by [`payload`].
pub fn parse_payload(value: &[u8]) -> Option<(u64, u64)> {
    let seq = u64::from_be_bytes(value.get(..8)?.try_into().ok()?);
    let sent = u64::from_be_bytes(value.get(8..16)?.try_into().ok()?);
    Some((seq, sent))
}

/// When each write was acknowledged (0: not yet), by sequence number.
pub struct AckBook {
    acked_at: Vec<AtomicU64>,
}

impl AckBook {
    pub fn new(writes: usize) -> Self {
        Self { acked_at: (0..writes).map(|_| AtomicU64::new(0)).collect() }
    }

    fn record(&self, seq: u64, at: u64) {
        if let Some(slot) = self.acked_at.get(seq as usize) {
            slot.store(at.max(1), Ordering::Release);
        }
    }

    fn acked_at(&self, seq: u64) -> Option<u64> {
        let at = self.acked_at.get(seq as usize)?.load(Ordering::Acquire);
        (at != 0).then_some(at)
    }

    pub fn capacity(&self) -> usize {
        self.acked_at.len()
    }
}

/// One write of the fixed-rate load: `seq` and its send time; resolves once committed.
pub trait Writer: Send + Sync + 'static {
    fn write(&self, seq: u64, sent: u64) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// What the writer did.
#[derive(Debug, Default)]
pub struct WriterTally {
    /// Writes sent inside the window and acknowledged.
    pub acked_in_window: AtomicU64,
    pub sent: AtomicU64,
    pub errors: AtomicU64,
    pub first_error: std::sync::Mutex<Option<String>>,
    /// Ticks the writer could not send at (`MAX_IN_FLIGHT` writes outstanding).
    pub skipped: AtomicU64,
}

/// Writes at `rate` per second until `until` (on `clock`), spreading the writes over
/// `writers`; every write's ack time goes into `book`.
pub async fn write_at_rate<W: Writer>(
    writers: Vec<W>,
    rate: f64,
    clock: Clock,
    window: Window,
    until: Instant,
    book: Arc<AckBook>,
    tally: Arc<WriterTally>,
) {
    let writers: Vec<Arc<W>> = writers.into_iter().map(Arc::new).collect();
    let limit = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    while Instant::now() < until && (seq as usize) < book.capacity() {
        ticks.tick().await;
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tally.skipped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let writer = writers[seq as usize % writers.len()].clone();
        let (book, tally) = (book.clone(), tally.clone());
        let this = seq;
        seq += 1;
        tokio::spawn(async move {
            let _permit = permit;
            let sent = clock.now();
            tally.sent.fetch_add(1, Ordering::Relaxed);
            match writer.write(this, sent).await {
                Ok(()) => {
                    book.record(this, clock.now());
                    if window.contains(sent) {
                        tally.acked_in_window.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(err) => {
                    tally.errors.fetch_add(1, Ordering::Relaxed);
                    let mut first = tally.first_error.lock().unwrap_or_else(|p| p.into_inner());
                    first.get_or_insert_with(|| format!("{err:#}"));
                }
            }
        });
    }
    // Let the last writes finish: every permit back.
    let _ = limit.acquire_many(MAX_IN_FLIGHT as u32).await;
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 60 s at 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Counts shared by every watcher of one row, read while the row runs, and the row's window
/// (set once every watcher is ready; nothing is measured before).
#[derive(Debug)]
pub struct Shared {
    window_from: AtomicU64,
    window_to: AtomicU64,
    /// Measured events (their write was sent inside the window) received, by all watchers.
    pub measured: AtomicU64,
    /// Watchers whose stream is set up (created / synced).
    pub ready: AtomicU64,
    /// Watchers whose stream failed.
    pub failed: AtomicU64,
    pub first_error: std::sync::Mutex<Option<String>>,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            window_from: AtomicU64::new(u64::MAX),
            window_to: AtomicU64::new(0),
            measured: AtomicU64::new(0),
            ready: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            first_error: std::sync::Mutex::new(None),
        }
    }
}

impl Shared {
    pub fn set_window(&self, window: Window) {
        self.window_to.store(window.to, Ordering::Relaxed);
        self.window_from.store(window.from, Ordering::Relaxed);
    }

    pub fn window(&self) -> Window {
        Window { from: self.window_from.load(Ordering::Relaxed), to: self.window_to.load(Ordering::Relaxed) }
    }

    pub fn fail(&self, err: impl std::fmt::Display) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.first_error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_with(|| err.to_string());
    }
}

/// Reads `stream` until `stop` fires, handing every message to `on_message`; a stream that
/// ends or fails, or a message `on_message` refuses (`Err`), counts as a failed watch.
pub async fn read_until_stopped<M>(
    mut stream: tonic::Streaming<M>,
    shared: &Shared,
    mut stop: tokio::sync::watch::Receiver<bool>,
    what: &str,
    mut on_message: impl FnMut(M) -> Result<(), String>,
) {
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => return,
            message = stream.message() => match message {
                Ok(Some(message)) => {
                    if let Err(problem) = on_message(message) {
                        shared.fail(format!("{what}: {problem}"));
                        return;
                    }
                }
                Ok(None) => return shared.fail(format!("{what}: the stream ended")),
                Err(status) => return shared.fail(format!("{what}: {status}")),
            },
        }
    }
}

/// What one watcher received.
pub struct Tally {
    clock: Clock,
    book: Arc<AckBook>,
    shared: Arc<Shared>,
    /// Write sent → event received, in µs, for measured events.
    pub from_write: Histogram<u64>,
    /// Write acknowledged → event received, in µs (1 when the event came first).
    pub from_commit: Histogram<u64>,
    /// Events received inside the window (whenever their write was sent).
    pub received_in_window: u64,
    /// Stream messages received inside the window.
    pub messages_in_window: u64,
}

impl Tally {
    pub fn new(clock: Clock, book: Arc<AckBook>, shared: Arc<Shared>) -> Self {
        Self {
            clock,
            book,
            shared,
            from_write: new_histogram(),
            from_commit: new_histogram(),
            received_in_window: 0,
            messages_in_window: 0,
        }
    }

    /// One stream message arrived, carrying `events` events; returns its arrival time.
    pub fn message(&mut self, events: usize) -> u64 {
        let now = self.clock.now();
        if self.shared.window().contains(now) {
            self.messages_in_window += 1;
            self.received_in_window += events as u64;
        }
        now
    }

    /// One stream message of `events` events, among them the measured writes `(seq, sent)`.
    pub fn message_carrying(&mut self, events: usize, writes: impl Iterator<Item = (u64, u64)>) {
        let now = self.message(events);
        for (seq, sent) in writes {
            self.event(seq, sent, now);
        }
    }

    /// A measured event: the write `seq` sent at `sent`, received at `now`.
    pub fn event(&mut self, seq: u64, sent: u64, now: u64) {
        if !self.shared.window().contains(sent) {
            return;
        }
        self.shared.measured.fetch_add(1, Ordering::Relaxed);
        self.from_write.saturating_record(now.saturating_sub(sent).div_ceil(1000).max(1));
        let after_ack = self.book.acked_at(seq).map_or(0, |acked| now.saturating_sub(acked));
        self.from_commit.saturating_record(after_ack.div_ceil(1000).max(1));
    }

    /// Adds `other` into `self` (same bounds, so adding cannot fail).
    pub fn merge(&mut self, other: &Tally) {
        let _ = self.from_write.add(&other.from_write);
        let _ = self.from_commit.add(&other.from_commit);
        self.received_in_window += other.received_in_window;
        self.messages_in_window += other.messages_in_window;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_carries_seq_and_send_time_at_the_value_size() {
        let value = payload(7, 123_456_789, 128);
        assert_eq!(value.len(), 128);
        assert_eq!(parse_payload(&value), Some((7, 123_456_789)));
        assert_eq!(payload(1, 2, 4).len(), 16, "never shorter than the header");
        assert_eq!(parse_payload(b"short"), None);
    }

    #[test]
    fn an_event_is_measured_from_its_write_and_from_its_ack() {
        let clock = Clock::start();
        let window = Window { from: 1_000_000, to: 2_000_000 };
        let book = Arc::new(AckBook::new(4));
        let shared = Arc::new(Shared::default());
        shared.set_window(window);
        let mut tally = Tally::new(clock, book.clone(), shared.clone());
        book.record(1, 1_500_000);
        // Sent at 1.2 ms, acked at 1.5 ms, received at 1.7 ms.
        tally.event(1, 1_200_000, 1_700_000);
        // Received before the writer's ack was known: zero after the commit.
        tally.event(2, 1_300_000, 1_400_000);
        // Sent outside the window: not measured.
        tally.event(3, 2_500_000, 2_600_000);
        assert_eq!(tally.from_write.len(), 2);
        assert_eq!(shared.measured.load(Ordering::Relaxed), 2);
        assert_eq!(tally.from_write.max(), tally.from_write.highest_equivalent(500));
        assert_eq!(tally.from_commit.max(), tally.from_commit.highest_equivalent(200));
        assert_eq!(tally.from_commit.min(), 1);
    }
}
