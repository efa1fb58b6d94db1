//! What the sweeper may do with the leases that expired: mark them down at a bounded rate, or,
//! when a large share of the fleet went silent at once, hold off. A gateway crash or a network
//! partition silences many healthy workers together; marking them all Unreachable would be a
//! false alarm, and whatever schedules work on them would stampede. So the sweeper pauses
//! expiry for a while, logs why, and then (if they are still silent) marks them at its usual
//! rate.
//!
//! "At once" means: at the same time, the silent share of the fleet (expired leases plus
//! workers already Unreachable or queued to be) is at least `mass_expiry_fraction`. The first
//! few of a real mass silence are marked before the share is reached, because their leases
//! end first (a fault at time t ends each lease one TTL after that worker's last beat, spread
//! over a whole TTL); the pause then holds the rest. As in Kubernetes' node lifecycle
//! controller, the episode lasts while the share stays high, and there is one pause per
//! episode.

use std::time::{Duration, Instant};

use muster_config::LeaseTuning;

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Mark this many of the expired workers (oldest first) Unreachable now.
    Expire(usize),
    /// A mass silence was just detected: extend these leases to the end of the pause.
    PauseUntil(Instant),
    /// Still inside a pause: leave the leases as they are.
    Paused,
}

#[derive(Debug)]
pub struct ExpiryGate {
    per_second: f64,
    tokens: f64,
    refilled: Instant,
    fraction: f64,
    min_workers: usize,
    pause: Duration,
    paused_until: Option<Instant>,
    /// A mass silence was seen and has not ended yet: one pause per episode.
    in_episode: bool,
}

impl ExpiryGate {
    pub fn new(tuning: &LeaseTuning, now: Instant) -> Self {
        let per_second = f64::from(tuning.max_expiries_per_second);
        Self {
            per_second,
            tokens: per_second,
            refilled: now,
            fraction: tuning.mass_expiry_fraction,
            min_workers: tuning.mass_expiry_min_workers as usize,
            pause: tuning.mass_expiry_pause,
            paused_until: None,
            in_episode: false,
        }
    }

    /// Decides what to do with `expired` leases, when `silent` more workers are already
    /// Unreachable (or queued to be) in a fleet of `fleet`.
    pub fn judge(&mut self, expired: usize, silent: usize, fleet: usize, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.per_second);
        self.refilled = now;

        let quiet = expired + silent;
        let mass = quiet >= self.min_workers && (quiet as f64) >= self.fraction * (fleet.max(1) as f64);
        if !mass {
            self.in_episode = false;
        } else if !self.in_episode {
            self.in_episode = true;
            let until = now + self.pause;
            self.paused_until = Some(until);
            return Verdict::PauseUntil(until);
        }
        if self.paused_until.is_some_and(|until| now < until) {
            return Verdict::Paused;
        }
        self.paused_until = None;
        let allowed = (self.tokens.floor() as usize).min(expired);
        self.tokens -= allowed as f64;
        Verdict::Expire(allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(now: Instant) -> ExpiryGate {
        let tuning = LeaseTuning {
            max_expiries_per_second: 10,
            mass_expiry_fraction: 0.3,
            mass_expiry_min_workers: 5,
            mass_expiry_pause: Duration::from_secs(60),
            ..LeaseTuning::default()
        };
        ExpiryGate::new(&tuning, now)
    }

    #[test]
    fn a_single_death_in_a_small_fleet_is_marked_at_once() {
        let now = Instant::now();
        assert_eq!(gate(now).judge(1, 0, 3, now), Verdict::Expire(1));
    }

    #[test]
    fn down_marking_is_rate_limited() {
        let now = Instant::now();
        let mut gate = gate(now);
        // 4 of 1000 is no mass silence; 10 tokens a second.
        assert_eq!(gate.judge(4, 0, 1000, now), Verdict::Expire(4));
        assert_eq!(gate.judge(4, 0, 1000, now), Verdict::Expire(4));
        assert_eq!(gate.judge(4, 0, 1000, now), Verdict::Expire(2));
        assert_eq!(gate.judge(4, 0, 1000, now), Verdict::Expire(0));
        assert_eq!(gate.judge(4, 0, 1000, now + Duration::from_millis(300)), Verdict::Expire(3));
    }

    #[test]
    fn a_mass_silence_pauses_once_then_expires_at_the_usual_rate() {
        let now = Instant::now();
        let mut gate = gate(now);
        let until = now + Duration::from_secs(60);
        assert_eq!(gate.judge(400, 0, 1000, now), Verdict::PauseUntil(until));
        assert_eq!(gate.judge(400, 0, 1000, now + Duration::from_secs(30)), Verdict::Paused);
        // Still silent after the pause: no second pause for the same episode.
        assert_eq!(gate.judge(400, 0, 1000, until + Duration::from_secs(1)), Verdict::Expire(10));
        // The episode ends when the silence does; a new one pauses again.
        assert_eq!(gate.judge(0, 0, 1000, until + Duration::from_secs(2)), Verdict::Expire(0));
        let later = until + Duration::from_secs(3);
        assert_eq!(gate.judge(400, 0, 1000, later), Verdict::PauseUntil(later + Duration::from_secs(60)));
    }

    #[test]
    fn a_silence_arriving_over_several_sweeps_is_one_mass_silence() {
        let now = Instant::now();
        let mut gate = gate(now);
        // 100 of 1000 leases end first: 10% is no mass silence, so 10 are marked (the rate).
        assert_eq!(gate.judge(100, 0, 1000, now), Verdict::Expire(10));
        // A sweep later 250 more end; with the 10 marked and 90 still expired it is 35%.
        let next = now + Duration::from_millis(250);
        assert_eq!(gate.judge(340, 10, 1000, next), Verdict::PauseUntil(next + Duration::from_secs(60)));
    }
}
