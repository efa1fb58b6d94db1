//! Retry pacing shared by registration, heartbeats and renewal: jittered exponential backoff
//! (a fleet that lost its gateway together must not come back in lockstep), and a bound that
//! keeps a heartbeat retry from sleeping past the lease deadline.

use std::time::Duration;

/// The shortest pause [`before_deadline`] returns, so a failing fleet never spins.
pub const MIN_PAUSE: Duration = Duration::from_millis(50);

/// Doubling pauses from `initial` up to `cap`, each jittered.
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    cap: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, cap: Duration) -> Self {
        Self { initial, cap, current: initial }
    }

    /// Back to `initial` (after a success).
    pub fn reset(&mut self) {
        self.current = self.initial;
    }

    /// The next pause: a random point in [d/2, d] for the current d, which then doubles.
    pub fn next_pause(&mut self) -> Duration {
        let pause = jitter(self.current);
        self.current = (self.current * 2).min(self.cap);
        pause
    }
}

/// A random point in [d/2, d].
pub fn jitter(duration: Duration) -> Duration {
    let half = duration / 2;
    half + half.mul_f64(rand::random::<f64>())
}

/// `pause`, cut so the next attempt starts at least `margin` before a deadline that is
/// `until_deadline` away (never below [`MIN_PAUSE`]). Once the deadline has passed (`None`, or
/// no time left) the lease is lost anyway and `pause` applies unchanged.
pub fn before_deadline(pause: Duration, until_deadline: Option<Duration>, margin: Duration) -> Duration {
    match until_deadline {
        Some(left) if !left.is_zero() => pause.min(left.saturating_sub(margin)).max(MIN_PAUSE),
        _ => pause,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_cap_with_jitter() {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
        let expected = [200, 400, 800, 1600, 2000, 2000];
        for millis in expected {
            let pause = backoff.next_pause();
            let d = Duration::from_millis(millis);
            assert!(pause >= d / 2 && pause <= d, "{pause:?} not in [{:?}, {d:?}]", d / 2);
        }
        backoff.reset();
        assert!(backoff.next_pause() <= Duration::from_millis(200));
    }

    #[test]
    fn a_retry_never_sleeps_past_the_deadline_minus_the_margin() {
        let margin = Duration::from_secs(1);
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        for left_ms in [30_000u64, 6_000, 3_000, 1_500, 1_001, 1_000, 10, 1] {
            let left = Duration::from_millis(left_ms);
            let pause = before_deadline(backoff.next_pause(), Some(left), margin);
            assert!(pause <= Duration::from_secs(5));
            assert!(pause <= left.saturating_sub(margin).max(MIN_PAUSE), "{left:?} left, paused {pause:?}");
            assert!(pause >= MIN_PAUSE);
        }
        let lost = before_deadline(Duration::from_secs(4), None, margin);
        assert_eq!(lost, Duration::from_secs(4), "with the deadline gone the plain backoff applies");
        assert_eq!(before_deadline(Duration::from_secs(4), Some(Duration::ZERO), margin), Duration::from_secs(4));
    }
}
