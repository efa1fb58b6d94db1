//! Notices: refusals the leader pushes to every gateway, not only to the one whose batch
//! carried the worker. A revocation or a retired certificate has to end the worker's stream
//! wherever it is before its next report, and the gateway acks reports without asking the
//! leader, so the leader cannot wait for the worker's next beat to say no.
//!
//! Each notice gets a sequence number in the leader's term. A gateway sends back the highest
//! it has applied (`notices_seen`, with the term), and the leader answers with the ones after
//! it; a gateway's `notices_seen` is therefore proof that its admission table holds them, which
//! is what `RevokeWorker` waits for. The log is bounded: a gateway that fell further behind
//! than [`MAX_NOTICES`] gets what is left, and the leader's per-beat checks catch the rest on
//! the worker's next batch. A new term starts a new log (and the new leader's fleet read
//! already holds every revocation and serial).

use std::collections::{HashMap, VecDeque};

use muster_proto::v1;

/// How many notices a leader keeps for gateways that have not seen them yet.
pub const MAX_NOTICES: usize = 4096;

#[derive(Debug)]
pub struct Notices {
    /// The sequence number of the next notice (the first is 1).
    next: u64,
    log: VecDeque<(u64, v1::WorkerRefusal)>,
    /// Gateway id → the highest notice it has applied, in this term.
    seen: HashMap<String, u64>,
}

impl Default for Notices {
    fn default() -> Self {
        Self { next: 1, log: VecDeque::new(), seen: HashMap::new() }
    }
}

impl Notices {
    /// Queues `refusal` for every gateway; returns its sequence number.
    pub fn push(&mut self, refusal: v1::WorkerRefusal) -> u64 {
        let seq = self.next;
        self.next += 1;
        if self.log.len() == MAX_NOTICES {
            self.log.pop_front();
        }
        self.log.push_back((seq, refusal));
        seq
    }

    /// The last sequence number handed out (0: none yet).
    pub fn last(&self) -> u64 {
        self.next - 1
    }

    /// Notes that `gateway` applied every notice up to `seen` (a `seen` from another term counts
    /// as nothing) and returns the ones it has not, with the sequence number of the last.
    pub fn exchange(&mut self, gateway: &str, seen: u64) -> (Vec<v1::WorkerRefusal>, u64) {
        let seen = seen.min(self.last());
        let entry = self.seen.entry(gateway.to_string()).or_default();
        *entry = (*entry).max(seen);
        let unseen = self.log.iter().filter(|(seq, _)| *seq > seen).map(|(_, refusal)| refusal.clone()).collect();
        (unseen, self.last())
    }

    /// Of `gateways`, those that have not yet applied notice `seq`.
    pub fn behind<'a>(&self, seq: u64, gateways: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
        gateways.into_iter().filter(|id| self.seen.get(*id).is_none_or(|seen| *seen < seq)).collect()
    }

    /// Forgets gateways no longer heard from.
    pub fn retain_gateways(&mut self, mut live: impl FnMut(&str) -> bool) {
        self.seen.retain(|id, _| live(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revoked(worker_id: u64) -> v1::WorkerRefusal {
        v1::WorkerRefusal { worker_id, state: v1::WorkerState::Revoked as i32, ..Default::default() }
    }

    #[test]
    fn each_gateway_gets_what_it_has_not_applied_and_its_ack_is_recorded() {
        let mut notices = Notices::default();
        assert_eq!(notices.exchange("gw-a", 0), (vec![], 0));
        let first = notices.push(revoked(1));
        let second = notices.push(revoked(2));
        assert_eq!((first, second), (1, 2));
        assert_eq!(notices.behind(first, ["gw-a", "gw-b"]), vec!["gw-a", "gw-b"]);

        let (unseen, through) = notices.exchange("gw-a", 0);
        assert_eq!((unseen.len(), through), (2, 2));
        assert_eq!(notices.behind(first, ["gw-a"]), vec!["gw-a"], "sent is not applied");
        let (unseen, _) = notices.exchange("gw-a", 2);
        assert!(unseen.is_empty());
        assert_eq!(notices.behind(second, ["gw-a", "gw-b"]), vec!["gw-b"]);
        // A gateway cannot claim notices that do not exist yet.
        notices.exchange("gw-b", 99);
        let third = notices.push(revoked(3));
        assert_eq!(notices.behind(third, ["gw-b"]), vec!["gw-b"]);
        assert_eq!(notices.exchange("gw-b", 2).0, vec![revoked(3)]);
    }

    #[test]
    fn the_log_is_bounded() {
        let mut notices = Notices::default();
        for id in 0..(MAX_NOTICES as u64 + 10) {
            notices.push(revoked(id));
        }
        let (unseen, through) = notices.exchange("late", 0);
        assert_eq!((unseen.len(), through), (MAX_NOTICES, MAX_NOTICES as u64 + 10));
        assert_eq!(unseen[0].worker_id, 10, "the oldest were dropped");
    }
}
