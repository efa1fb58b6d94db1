//! Which profiles a stream forwards to the leader. A full report's always (a new stream: the
//! gateway, or a new leader, may never have seen the worker). A plain report's only when it
//! differs from the last one this stream forwarded, and at most one per
//! [`PROFILE_UPDATE_INTERVAL`]: a newer one waits (the latest wins) and goes with the first
//! report after it. Each forwarded change becomes a Raft write and a watch event, so a worker
//! (or a stolen worker certificate) changing its profile on every beat costs the cluster one
//! change per interval, not one per beat.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::{Duration, Instant};

use muster_proto::v1;

/// The shortest time between two profile changes forwarded for one stream.
pub const PROFILE_UPDATE_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub struct ProfileUpdates {
    /// A digest of the last profile forwarded, and when.
    forwarded: Option<(u64, Instant)>,
    /// A changed profile waiting for the interval (boxed: rare, and sessions are many).
    waiting: Option<Box<v1::WorkerProfile>>,
}

impl ProfileUpdates {
    /// The profile to forward with this report (received at `now`), if any.
    pub fn forward(
        &mut self,
        profile: Option<v1::WorkerProfile>,
        full: bool,
        now: Instant,
    ) -> Option<v1::WorkerProfile> {
        if let Some(profile) = profile {
            let digest = digest(&profile);
            if full {
                self.waiting = None;
                self.forwarded = Some((digest, now));
                return Some(profile);
            }
            if self.forwarded.is_some_and(|(last, _)| last == digest) {
                self.waiting = None;
                return None;
            }
            self.waiting = Some(Box::new(profile));
        }
        self.waiting.as_ref()?;
        if self.forwarded.is_some_and(|(_, at)| now.saturating_duration_since(at) < PROFILE_UPDATE_INTERVAL) {
            return None;
        }
        let profile = *self.waiting.take()?;
        self.forwarded = Some((digest(&profile), now));
        Some(profile)
    }
}

/// The same for equal profiles whatever the order of their maps.
fn digest(profile: &v1::WorkerProfile) -> u64 {
    let mut hasher = DefaultHasher::new();
    (&profile.hostname, &profile.os, &profile.arch, &profile.version).hash(&mut hasher);
    let mut labels: Vec<_> = profile.labels.iter().collect();
    labels.sort_unstable();
    labels.hash(&mut hasher);
    let mut capacity: Vec<_> = profile.capacity.iter().collect();
    capacity.sort_unstable();
    capacity.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_gpus(gpus: u64) -> v1::WorkerProfile {
        v1::WorkerProfile { hostname: "h".into(), capacity: [("gpus".to_string(), gpus)].into(), ..Default::default() }
    }

    #[test]
    fn changes_are_forwarded_once_and_at_most_one_per_interval() {
        let start = Instant::now();
        let mut updates = ProfileUpdates::default();
        assert_eq!(updates.forward(Some(with_gpus(1)), true, start), Some(with_gpus(1)), "full: always");
        assert_eq!(updates.forward(Some(with_gpus(1)), false, start), None, "unchanged: never");
        let soon = start + Duration::from_secs(1);
        assert_eq!(updates.forward(Some(with_gpus(2)), false, soon), None, "too soon: it waits");
        assert_eq!(updates.forward(Some(with_gpus(3)), false, soon), None, "the latest wins");
        assert_eq!(updates.forward(None, false, start + Duration::from_secs(5)), None);
        let later = start + PROFILE_UPDATE_INTERVAL;
        assert_eq!(updates.forward(None, false, later), Some(with_gpus(3)), "sent with the first report after");
        assert_eq!(updates.forward(None, false, later + PROFILE_UPDATE_INTERVAL), None, "once");
        assert_eq!(updates.forward(Some(with_gpus(1)), true, later), Some(with_gpus(1)), "a full report is not held");
    }

    #[test]
    fn the_digest_ignores_map_order() {
        let mut a = with_gpus(1);
        let mut b = with_gpus(1);
        for i in 0..20 {
            a.labels.insert(format!("k{i}"), "v".into());
        }
        for i in (0..20).rev() {
            b.labels.insert(format!("k{i}"), "v".into());
        }
        assert_eq!(digest(&a), digest(&b));
        assert_ne!(digest(&a), digest(&with_gpus(1)));
    }
}
