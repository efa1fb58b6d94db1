//! The leader's mirror of what workers are to be given no new work, read with the rest of the
//! fleet: the cordoned ones and the drains. Gateways put both in the workers' acks (every
//! batch answer lists the draining and cordoned workers of the batch), a worker's `drained`
//! report ends its drain, and the sweeper ends the drains whose deadline passed. Both ends go
//! through Raft as a transition's `drain_outcome`; the mirror notes them at once so a drain is
//! ended once, not once per sweep.

use std::collections::{HashMap, HashSet};

use muster_proto::v1;
use muster_proto::v1::{DrainOutcome, WorkerState};

/// The drain of `record`, if it is draining (a drain of format 1 has no record: an empty one).
pub fn of(record: &v1::WorkerRecord) -> Option<v1::WorkerDrain> {
    let draining = WorkerState::Draining as i32;
    let in_drain = record.state == draining
        || (record.state == WorkerState::Unreachable as i32 && record.resume_state == draining);
    in_drain.then(|| record.drain.unwrap_or_default())
}

#[derive(Debug, Default)]
pub struct Scheduling {
    drains: HashMap<u64, v1::WorkerDrain>,
    /// Ineligible workers (cordoned, or draining).
    ineligible: HashSet<u64>,
}

impl Scheduling {
    pub fn from_records<'a>(records: impl IntoIterator<Item = &'a v1::WorkerRecord>) -> Self {
        let mut scheduling = Self::default();
        for record in records {
            scheduling.learn(record);
        }
        scheduling
    }

    /// Notes the worker's drain and eligibility as the FSM has them now.
    pub fn learn(&mut self, record: &v1::WorkerRecord) {
        let id = record.worker_id;
        match of(record) {
            Some(drain) => self.drains.insert(id, drain),
            None => self.drains.remove(&id),
        };
        if record.ineligible || self.drains.contains_key(&id) {
            self.ineligible.insert(id);
        } else {
            self.ineligible.remove(&id);
        }
    }

    pub fn get(&self, worker_id: u64) -> Option<&v1::WorkerDrain> {
        self.drains.get(&worker_id)
    }

    /// Whether the worker's drain is in progress (so a `drained` report ends it).
    pub fn in_progress(&self, worker_id: u64) -> bool {
        self.drains.get(&worker_id).is_some_and(|drain| drain.outcome == DrainOutcome::Unspecified as i32)
    }

    /// Drains in progress whose deadline is `now_unix` or earlier.
    pub fn past_deadline(&self, now_unix: i64) -> Vec<u64> {
        let mut passed: Vec<u64> = self
            .drains
            .iter()
            .filter(|(_, drain)| {
                drain.outcome == DrainOutcome::Unspecified as i32
                    && drain.deadline_unix != 0
                    && drain.deadline_unix <= now_unix
            })
            .map(|(id, _)| *id)
            .collect();
        passed.sort_unstable();
        passed
    }

    /// A transition ending the worker's drain was committed: note the outcome (the next fleet
    /// read confirms it, or brings back the drain if the FSM found it did not hold).
    pub fn ended(&mut self, worker_id: u64, outcome: i32, now_unix: i64) {
        if let Some(drain) = self.drains.get_mut(&worker_id).filter(|drain| drain.outcome == 0) {
            drain.outcome = outcome;
            drain.ended_at_unix = now_unix;
        }
    }

    /// The notices for the workers of one batch that are draining or cordoned.
    pub fn notices(&self, worker_ids: impl IntoIterator<Item = u64>) -> Vec<v1::SchedulingNotice> {
        if self.ineligible.is_empty() {
            return Vec::new();
        }
        worker_ids
            .into_iter()
            .filter(|worker_id| self.ineligible.contains(worker_id))
            .map(|worker_id| v1::SchedulingNotice {
                worker_id,
                drain: self.drains.get(&worker_id).copied(),
                ineligible: true,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(worker_id: u64, state: WorkerState, drain: Option<v1::WorkerDrain>) -> v1::WorkerRecord {
        v1::WorkerRecord { worker_id, state: state as i32, drain, ..Default::default() }
    }

    fn drain(deadline_unix: i64) -> v1::WorkerDrain {
        v1::WorkerDrain { started_at_unix: 100, deadline_unix, ..Default::default() }
    }

    #[test]
    fn only_draining_and_cordoned_workers_are_noticed() {
        let mut unreachable = record(3, WorkerState::Unreachable, Some(drain(0)));
        unreachable.resume_state = WorkerState::Draining as i32;
        let records = [
            record(1, WorkerState::Draining, Some(drain(200))),
            record(2, WorkerState::Ready, None),
            unreachable,
            record(4, WorkerState::Draining, None),
            record(5, WorkerState::Left, Some(drain(0))),
            v1::WorkerRecord { ineligible: true, ..record(6, WorkerState::Ready, None) },
        ];
        let scheduling = Scheduling::from_records(&records);
        let notices = scheduling.notices(1..=6);
        let noticed: Vec<(u64, bool)> = notices.iter().map(|n| (n.worker_id, n.drain.is_some())).collect();
        assert_eq!(
            noticed,
            [(1, true), (3, true), (4, true), (6, false)],
            "a format-1 drain is noticed too; a worker that left is not; a cordoned one has no drain"
        );
        assert!(notices.iter().all(|n| n.ineligible));
        assert_eq!(scheduling.get(4), Some(&v1::WorkerDrain::default()));
    }

    #[test]
    fn deadlines_pass_once_and_a_refresh_follows_the_fsm() {
        let mut drains = Scheduling::from_records(&[
            record(1, WorkerState::Draining, Some(drain(200))),
            record(2, WorkerState::Draining, Some(drain(0))),
            record(3, WorkerState::Draining, Some(drain(300))),
        ]);
        assert!(drains.past_deadline(199).is_empty());
        assert_eq!(drains.past_deadline(200), [1], "no deadline never passes");
        drains.ended(1, DrainOutcome::DeadlinePassed as i32, 200);
        assert!(drains.past_deadline(250).is_empty(), "ended once");
        assert!(!drains.in_progress(1) && drains.in_progress(2));
        drains.learn(&record(1, WorkerState::Ready, None));
        assert_eq!(drains.get(1), None, "undrained");
        assert_eq!(drains.past_deadline(400), [3]);
    }
}
