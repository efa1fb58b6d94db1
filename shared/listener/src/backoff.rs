//! Accept errors that back off. When the process runs out of descriptors (`EMFILE`,
//! `ENFILE`) `accept` fails at once, every time, until something closes: retrying
//! immediately burns a core and writes a log line per attempt. Here each failure sleeps,
//! twice as long as the one before up to [`MAX_DELAY`], and the errors are logged at most once
//! per [`LOG_INTERVAL`] with how many there were. Errors about one aborted connection
//! (`ECONNABORTED`, `ECONNRESET`) are retried at once: the listener itself is fine.

use std::future::Future;
use std::io;
use std::time::Duration;

use tokio::time::Instant;

/// The first pause after an accept error.
pub const MIN_DELAY: Duration = Duration::from_millis(5);
/// The longest pause between attempts.
pub const MAX_DELAY: Duration = Duration::from_secs(1);
/// Accept errors are logged at most once per this interval.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The backoff state of one accept loop.
#[derive(Debug)]
pub struct AcceptBackoff {
    listener: &'static str,
    delay: Duration,
    last_log: Option<Instant>,
    unlogged: u64,
    logged: u64,
}

impl AcceptBackoff {
    /// `listener` names the listener in log lines (e.g. `"api"`, `"admin"`).
    pub fn new(listener: &'static str) -> Self {
        Self { listener, delay: Duration::ZERO, last_log: None, unlogged: 0, logged: 0 }
    }

    /// Runs `attempt` until it succeeds, pausing and logging as described in the module.
    pub async fn accept<T, F, Fut>(&mut self, mut attempt: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = io::Result<T>>,
    {
        loop {
            match attempt().await {
                Ok(accepted) => {
                    self.delay = Duration::ZERO;
                    return accepted;
                }
                Err(err) => {
                    let pause = self.on_error(&err, Instant::now());
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                }
            }
        }
    }

    /// Records one failed attempt at `now`; returns how long to pause before the next.
    fn on_error(&mut self, err: &io::Error, now: Instant) -> Duration {
        self.unlogged += 1;
        if self.last_log.is_none_or(|last| now.duration_since(last) >= LOG_INTERVAL) {
            tracing::warn!(
                listener = self.listener,
                error = %err,
                errors = self.unlogged,
                "accept failed; backing off (logged at most every {LOG_INTERVAL:?})"
            );
            self.last_log = Some(now);
            self.unlogged = 0;
            self.logged += 1;
        }
        if is_connection_error(err) {
            return Duration::ZERO;
        }
        self.delay = (self.delay * 2).clamp(MIN_DELAY, MAX_DELAY);
        self.delay
    }

    /// How many log lines this loop has written.
    pub fn logged(&self) -> u64 {
        self.logged
    }
}

fn is_connection_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionRefused
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emfile() -> io::Error {
        // EMFILE on Linux.
        io::Error::from_raw_os_error(24)
    }

    #[tokio::test(start_paused = true)]
    async fn descriptor_exhaustion_backs_off_and_logs_once_per_interval() {
        let mut backoff = AcceptBackoff::new("test");
        let started = Instant::now();
        let mut attempts = 0u32;
        let accepted = backoff
            .accept(|| {
                attempts += 1;
                let result = if attempts <= 100 { Err(emfile()) } else { Ok(attempts) };
                async move { result }
            })
            .await;
        assert_eq!(accepted, 101);
        let elapsed = started.elapsed();
        // 5, 10, ..., 640 ms, then 1 s for the remaining 93 attempts.
        let expected: Duration = (0..100).map(|n| (MIN_DELAY * 2u32.pow(n.min(10))).min(MAX_DELAY)).sum();
        assert_eq!(elapsed, expected);
        assert!(elapsed > Duration::from_secs(90), "{elapsed:?}");
        let intervals = elapsed.as_secs() / LOG_INTERVAL.as_secs();
        assert!(backoff.logged() <= intervals + 1, "{} lines in {elapsed:?}", backoff.logged());
        assert!(backoff.logged() >= 2);
    }

    #[tokio::test(start_paused = true)]
    async fn success_resets_the_delay_and_aborted_connections_do_not_pause() {
        let mut backoff = AcceptBackoff::new("test");
        let now = Instant::now();
        assert_eq!(backoff.on_error(&emfile(), now), MIN_DELAY);
        assert_eq!(backoff.on_error(&emfile(), now), MIN_DELAY * 2);
        let done = backoff.accept(|| async { io::Result::Ok(()) }).await;
        assert_eq!(done, ());
        assert_eq!(backoff.on_error(&emfile(), now), MIN_DELAY);
        let aborted = io::Error::from(io::ErrorKind::ConnectionAborted);
        assert_eq!(backoff.on_error(&aborted, now), Duration::ZERO);
        assert_eq!(backoff.logged(), 1, "errors within one interval share one line");
    }
}
