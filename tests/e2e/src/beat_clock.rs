//! When a simulated client sends its next report at a fixed interval: on a grid of its own,
//! at a random phase.
//!
//! A fleet of real machines beats at independent phases (the agent also staggers every TTL).
//! A simulated fleet whose clients each wait `interval` after their previous report keeps
//! whatever phases the connection storm gave them, and any stall lines more of them up: the
//! load arrives in waves (±50 % within one interval was measured), and the server is timed
//! on its worst 10 ms rather than on the offered rate. On its own grid a client keeps its
//! phase through a stall: a late report goes at once, and the next one is back on the grid.

use std::time::{Duration, Instant};

/// One client's send schedule.
#[derive(Debug, Default)]
pub struct BeatClock {
    /// The current grid: its interval and the slot last handed out.
    grid: Option<(Duration, Instant)>,
}

impl BeatClock {
    pub fn new() -> Self {
        Self::default()
    }

    /// When to send the next report, at `interval` (zero: at once), the previous one having
    /// gone before `now`. A new or changed interval starts a grid at a random phase in
    /// `[now, now + interval)`; a slot missed (the ack came after it) is skipped, and the
    /// report goes at once.
    pub fn next(&mut self, interval: Duration, now: Instant) -> Instant {
        self.next_with_phase(interval, now, rand::random::<f64>())
    }

    /// [`next`](Self::next) with the phase of a new grid given (a fraction of `interval`).
    fn next_with_phase(&mut self, interval: Duration, now: Instant, phase: f64) -> Instant {
        if interval.is_zero() {
            self.grid = None;
            return now;
        }
        let slot = match self.grid {
            Some((current, last)) if current == interval => last + interval,
            _ => now + interval.mul_f64(phase),
        };
        if slot >= now {
            self.grid = Some((interval, slot));
            return slot;
        }
        // Missed: at once, and the grid moves to its last slot before now, so the next call
        // hands out the first one after it.
        let missed = u32::try_from((now - slot).as_nanos() / interval.as_nanos()).unwrap_or(u32::MAX);
        self.grid = Some((interval, slot + interval * missed));
        now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_client_keeps_its_phase_through_late_acks() {
        let t0 = Instant::now();
        let mut clock = BeatClock::new();
        assert_eq!(clock.next_with_phase(100 * MS, t0, 0.25), t0 + 25 * MS);
        assert_eq!(clock.next(100 * MS, t0 + 30 * MS), t0 + 125 * MS);
        // The ack of the 125 ms report came at 260 ms: the 225 ms slot is gone, the report
        // goes at once, and the grid carries on at 325 ms.
        assert_eq!(clock.next(100 * MS, t0 + 260 * MS), t0 + 260 * MS);
        assert_eq!(clock.next(100 * MS, t0 + 270 * MS), t0 + 325 * MS);
        // Exactly on the slot is on time.
        assert_eq!(clock.next(100 * MS, t0 + 425 * MS), t0 + 425 * MS);
    }

    #[test]
    fn a_changed_interval_starts_a_new_grid_and_zero_means_at_once() {
        let t0 = Instant::now();
        let mut clock = BeatClock::new();
        clock.next_with_phase(100 * MS, t0, 0.5);
        assert_eq!(clock.next(Duration::ZERO, t0 + 60 * MS), t0 + 60 * MS);
        assert_eq!(clock.next(Duration::ZERO, t0 + 61 * MS), t0 + 61 * MS);
        assert_eq!(clock.next_with_phase(40 * MS, t0 + 70 * MS, 0.5), t0 + 90 * MS);
        assert_eq!(clock.next(40 * MS, t0 + 95 * MS), t0 + 130 * MS);
    }

    #[test]
    fn phases_spread_a_fleet_over_the_interval() {
        let t0 = Instant::now();
        let interval = 500 * MS;
        let mut per_bin = [0u32; 10];
        for _ in 0..10_000 {
            let first = BeatClock::new().next(interval, t0);
            per_bin[((first - t0).as_millis() / 50) as usize] += 1;
        }
        // 1,000 expected per 50 ms bin; a wave of the kind this prevents would put 1,500.
        assert!(per_bin.iter().all(|n| (850..1150).contains(n)), "{per_bin:?}");
    }
}
