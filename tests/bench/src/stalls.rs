//! How much the machine itself stalled during a window, measured the way jHiccup does: a
//! thread asks to sleep 1 ms at a time and records by how much each sleep overran.
//!
//! A tail latency means nothing without this beside it. On a shared virtual machine both
//! vCPUs can stop for tens of milliseconds at a time (seen here: no perf sample on either CPU
//! for 20-30 ms, at the moments the gateway's acks stopped), and every ack in flight then waits
//! as long: such a window's p99 is the host's, not the system's. The thread costs nothing
//! measurable (a thousand wake-ups a second).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;

/// What the sleeping thread asks for each time.
const TICK: Duration = Duration::from_millis(1);
/// Overruns up to this are the timer's ordinary slack, not stalls.
const SLACK: Duration = Duration::from_millis(1);
/// Stalls this long or longer are counted apart: each can push acks past a 20 ms p99 target.
pub const LONG_STALL: Duration = Duration::from_millis(10);

/// The stalls seen in one window.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Stalls {
    /// The longest overrun of one sleep.
    pub worst: Duration,
    /// Overruns of at least [`LONG_STALL`].
    pub long: u32,
    /// All overruns beyond the slack, added up.
    pub total: Duration,
}

impl Stalls {
    fn record(&mut self, overrun: Duration) {
        if overrun <= SLACK {
            return;
        }
        self.worst = self.worst.max(overrun);
        self.total += overrun;
        if overrun >= LONG_STALL {
            self.long += 1;
        }
    }
}

/// The sleeping thread; [`finish`](Self::finish) stops it and says what it saw.
pub struct StallMonitor {
    seen: Arc<Mutex<Stalls>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StallMonitor {
    pub fn start() -> anyhow::Result<Self> {
        let seen = Arc::new(Mutex::new(Stalls::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::Builder::new()
                .name("stall-monitor".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let asleep = Instant::now();
                        std::thread::sleep(TICK);
                        let overrun = asleep.elapsed().saturating_sub(TICK);
                        seen.lock().unwrap_or_else(|p| p.into_inner()).record(overrun);
                    }
                })
                .context("starting the stall monitor thread")?
        };
        Ok(Self { seen, stop, thread: Some(thread) })
    }

    /// Stops the thread; the stalls since [`start`](Self::start).
    pub fn finish(mut self) -> Stalls {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        *self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for StallMonitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn slack_is_ignored_and_long_stalls_are_counted() {
        let mut stalls = Stalls::default();
        for overrun in [Duration::from_micros(80), MS, 3 * MS, 12 * MS, 30 * MS] {
            stalls.record(overrun);
        }
        assert_eq!(stalls, Stalls { worst: 30 * MS, long: 2, total: 45 * MS });
    }
}
