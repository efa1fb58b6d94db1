//! The gateway's heartbeat budget: a token bucket refilled at `budget_per_second` with one
//! second's worth of burst.
//!
//! A report that finds the bucket empty is never refused (liveness is a fact, and refusing it
//! could expire a healthy worker); it takes no token and is answered with a TTL stretched by
//! the time until the bucket has room (the session adds a random share of the TTL on top, so
//! a burst spreads out). Throttled reports run up no debt: a debt would be paid by every later
//! report, and a gateway whose workers arrive a little faster than its budget would then
//! throttle all of them for good. So the accepted rate never exceeds the budget, and the
//! stretched TTLs bring the arrival rate down to it. The clock is a parameter: tests need no
//! sleeps.

use std::time::{Duration, Instant};

/// What the bucket says to one report.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Take {
    /// A token was available.
    Granted,
    /// Over budget: come back this much later than the TTL says.
    Throttled(Duration),
}

#[derive(Clone, Debug)]
pub struct TokenBucket {
    /// Tokens per second; `INFINITY` disables the bucket.
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    max_wait: Duration,
}

impl TokenBucket {
    /// A full bucket refilling at `rate` per second (burst `max(rate, 1)`), whose throttled
    /// answers never ask a worker to wait longer than `max_wait`.
    pub fn new(rate: f64, max_wait: Duration, now: Instant) -> Self {
        let rate = sanitize(rate);
        let burst = rate.max(1.0);
        Self { rate, burst, tokens: burst, last: now, max_wait }
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Changes the rate (the policy or the number of gateways changed); tokens earned at the
    /// old rate are kept, up to the new burst.
    pub fn set_rate(&mut self, rate: f64, max_wait: Duration, now: Instant) {
        self.refill(now);
        self.rate = sanitize(rate);
        self.burst = self.rate.max(1.0);
        self.tokens = self.tokens.min(self.burst);
        self.max_wait = max_wait;
    }

    /// Takes a token for one report, or says how long until there is one (taking nothing).
    pub fn take(&mut self, now: Instant) -> Take {
        self.refill(now);
        if self.rate.is_infinite() || self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Take::Granted;
        }
        Take::Throttled(whole_ms(self.wait_secs()).min(self.max_wait))
    }

    /// How long until the bucket has a token, without taking one (for reports that break the
    /// per-worker minimum interval and so get no token at all).
    pub fn wait_for_room(&mut self, now: Instant) -> Duration {
        self.refill(now);
        if self.rate.is_infinite() || self.tokens >= 1.0 {
            return Duration::ZERO;
        }
        whole_ms(self.wait_secs()).min(self.max_wait)
    }

    fn wait_secs(&self) -> f64 {
        (1.0 - self.tokens) / self.rate
    }

    fn refill(&mut self, now: Instant) {
        // An earlier `now` (callers race to the lock) earns nothing and does not move `last`.
        let Some(elapsed) = now.checked_duration_since(self.last) else { return };
        self.last = now;
        if self.rate.is_infinite() {
            self.tokens = self.burst;
            return;
        }
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.rate).min(self.burst);
    }
}

/// Seconds rounded up to whole milliseconds (TTLs are in ms), forgiving float noise below a
/// nanosecond so 0.1s stays 100ms.
fn whole_ms(secs: f64) -> Duration {
    let ms = (secs * 1000.0 - 1e-6).ceil();
    if ms <= 0.0 { Duration::ZERO } else { Duration::from_millis(ms.min(u32::MAX as f64) as u64) }
}

/// A rate that makes arithmetic sense: NaN or non-positive rates become a trickle, not a panic.
fn sanitize(rate: f64) -> f64 {
    if rate.is_nan() || rate <= 0.0 { 1e-3 } else { rate }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX_WAIT: Duration = Duration::from_secs(600);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_full_bucket_grants_one_second_of_burst_then_throttles() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10.0, MAX_WAIT, t0);
        for _ in 0..10 {
            assert_eq!(bucket.take(t0), Take::Granted);
        }
        // Empty: the next report waits for the next token, 100ms away.
        assert_eq!(bucket.take(t0), Take::Throttled(ms(100)));
    }

    #[test]
    fn throttled_reports_take_nothing_so_a_steady_overload_still_gets_its_budget() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10.0, MAX_WAIT, t0);
        for _ in 0..10 {
            bucket.take(t0);
        }
        let waits: Vec<Take> = (0..3).map(|_| bucket.take(t0)).collect();
        assert_eq!(waits, [Take::Throttled(ms(100)); 3]);
        // Arrivals at 12/s against a budget of 10/s: 10 of every 12 are granted, for ever.
        let mut granted = 0;
        for n in 1..=120u64 {
            if bucket.take(t0 + Duration::from_micros(n * 1_000_000 / 12)) == Take::Granted {
                granted += 1;
            }
        }
        assert!((99..=101).contains(&granted), "{granted} of 120 granted over 10 s");
    }

    #[test]
    fn refill_is_capped_at_the_burst() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(2.0, MAX_WAIT, t0);
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(bucket.take(later), Take::Granted);
        assert_eq!(bucket.take(later), Take::Granted);
        assert!(matches!(bucket.take(later), Take::Throttled(_)));
    }

    #[test]
    fn a_fractional_budget_still_allows_one_report() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(0.5, MAX_WAIT, t0);
        assert_eq!(bucket.take(t0), Take::Granted, "burst is at least one token");
        assert_eq!(bucket.take(t0), Take::Throttled(Duration::from_secs(2)));
    }

    #[test]
    fn the_wait_is_bounded_by_max_wait() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(0.1, Duration::from_secs(3), t0);
        bucket.take(t0);
        assert_eq!(bucket.take(t0), Take::Throttled(Duration::from_secs(3)));
    }

    #[test]
    fn wait_for_room_takes_nothing() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(4.0, MAX_WAIT, t0);
        assert_eq!(bucket.wait_for_room(t0), Duration::ZERO);
        for _ in 0..4 {
            assert_eq!(bucket.take(t0), Take::Granted);
        }
        assert_eq!(bucket.wait_for_room(t0), ms(250));
        assert_eq!(bucket.wait_for_room(t0), ms(250), "asking again reserves nothing");
        assert_eq!(bucket.take(t0 + ms(250)), Take::Granted);
    }

    #[test]
    fn a_rate_change_keeps_earned_tokens_up_to_the_new_burst() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(50.0, MAX_WAIT, t0);
        bucket.set_rate(5.0, MAX_WAIT, t0);
        assert_eq!(bucket.rate(), 5.0);
        for _ in 0..5 {
            assert_eq!(bucket.take(t0), Take::Granted);
        }
        assert_eq!(bucket.take(t0), Take::Throttled(ms(200)));
    }

    #[test]
    fn an_unlimited_bucket_always_grants_and_time_never_runs_backwards() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(f64::INFINITY, MAX_WAIT, t0);
        for _ in 0..1_000 {
            assert_eq!(bucket.take(t0), Take::Granted);
        }
        let mut bucket = TokenBucket::new(1.0, MAX_WAIT, t0 + ms(10));
        assert_eq!(bucket.take(t0), Take::Granted, "an earlier clock reading earns and costs nothing extra");
        assert_eq!(bucket.take(t0), Take::Throttled(Duration::from_secs(1)));
        let mut bad = TokenBucket::new(f64::NAN, MAX_WAIT, t0);
        assert_eq!(bad.take(t0), Take::Granted);
    }
}
