//! Drains in the FSM (format 2): an operator starts one (DRAINING, ineligible, an optional
//! deadline), the worker's report or the leader's view of the deadline ends it (a transition's
//! `drain_outcome`), and undrain lifts it. Pure functions on the record, applied by
//! [`super::workers`] inside its transaction.

use muster_proto::v1;

/// Starts (or restarts) a drain: DRAINING, ineligible, with the deadline given.
pub(crate) fn start_drain(worker: &mut v1::WorkerRecord, start: &v1::StartDrain, now_unix: i64) -> Result<(), String> {
    let from = v1::WorkerState::try_from(worker.state).unwrap_or_default();
    if !matches!(from, v1::WorkerState::Ready | v1::WorkerState::Unreachable | v1::WorkerState::Draining) {
        return Err(format!(
            "worker {} is {}; only a live worker can be drained",
            worker.worker_id,
            from.as_str_name()
        ));
    }
    if from != v1::WorkerState::Draining {
        worker.state = v1::WorkerState::Draining as i32;
        worker.state_changed_at_unix = now_unix;
    }
    worker.ineligible = true;
    worker.drain = Some(v1::WorkerDrain {
        started_at_unix: now_unix,
        deadline_unix: start.deadline_unix,
        outcome: v1::DrainOutcome::Unspecified as i32,
        ended_at_unix: 0,
    });
    Ok(())
}

/// Ends a drain, whatever its outcome: READY (an UNREACHABLE worker returns to READY when it
/// next beats) and eligible.
pub(crate) fn undrain(worker: &mut v1::WorkerRecord, now_unix: i64) -> Result<(), String> {
    let draining = v1::WorkerState::Draining as i32;
    if worker.state == draining {
        worker.state = v1::WorkerState::Ready as i32;
        worker.state_changed_at_unix = now_unix;
    } else if worker.state == v1::WorkerState::Unreachable as i32 && worker.resume_state == draining {
        worker.resume_state = v1::WorkerState::Ready as i32;
    } else {
        let state = v1::WorkerState::try_from(worker.state).unwrap_or_default();
        return Err(format!("worker {} is {}, not draining", worker.worker_id, state.as_str_name()));
    }
    worker.ineligible = false;
    worker.drain = None;
    Ok(())
}

/// Records how the worker's drain ended, if a drain is in progress and `outcome` holds: a
/// passed deadline is checked against the batch's clock. False when nothing changed.
pub(crate) fn end_drain(worker: &mut v1::WorkerRecord, outcome: i32, now_unix: i64) -> bool {
    let draining = v1::WorkerState::Draining as i32;
    let in_drain = worker.state == draining
        || (worker.state == v1::WorkerState::Unreachable as i32 && worker.resume_state == draining);
    let Some(drain) = worker.drain.as_mut().filter(|drain| in_drain && drain.outcome == 0) else { return false };
    let holds = match v1::DrainOutcome::try_from(outcome).unwrap_or_default() {
        v1::DrainOutcome::Drained => true,
        v1::DrainOutcome::DeadlinePassed => drain.deadline_unix != 0 && drain.deadline_unix <= now_unix,
        v1::DrainOutcome::Unspecified => false,
    };
    if holds {
        drain.outcome = outcome;
        drain.ended_at_unix = now_unix;
    }
    holds
}

#[cfg(test)]
mod tests {
    use super::*;
    use v1::{DrainOutcome, WorkerState};

    const NOW: i64 = 1_800_000_000;

    fn worker(state: WorkerState) -> v1::WorkerRecord {
        v1::WorkerRecord { worker_id: 7, state: state as i32, ..Default::default() }
    }

    fn start(deadline_unix: i64) -> v1::StartDrain {
        v1::StartDrain { deadline_unix }
    }

    #[test]
    fn a_drain_cordons_and_undrain_makes_the_worker_ready_and_eligible() {
        let mut ready = worker(WorkerState::Ready);
        start_drain(&mut ready, &start(NOW + 600), NOW).unwrap();
        assert_eq!((ready.state, ready.ineligible), (WorkerState::Draining as i32, true));
        assert_eq!(ready.drain.as_ref().map(|d| (d.started_at_unix, d.deadline_unix)), Some((NOW, NOW + 600)));
        undrain(&mut ready, NOW + 1).unwrap();
        assert_eq!((ready.state, ready.ineligible, ready.drain), (WorkerState::Ready as i32, false, None));
        assert_eq!(ready.state_changed_at_unix, NOW + 1);
        let err = undrain(&mut ready, NOW + 2).unwrap_err();
        assert!(err.contains("READY, not draining"), "{err}");

        for gone in [WorkerState::Left, WorkerState::Revoked] {
            let err = start_drain(&mut worker(gone), &start(0), NOW).unwrap_err();
            assert!(err.contains("only a live worker"), "{err}");
        }
    }

    #[test]
    fn an_unreachable_worker_drains_and_undrains_without_a_beat() {
        let mut silent = worker(WorkerState::Unreachable);
        silent.resume_state = WorkerState::Ready as i32;
        start_drain(&mut silent, &start(0), NOW).unwrap();
        assert_eq!(silent.state, WorkerState::Draining as i32, "as format 1: leased again, expiring if silent");
        silent.state = WorkerState::Unreachable as i32;
        silent.resume_state = WorkerState::Draining as i32;
        assert!(end_drain(&mut silent, DrainOutcome::Drained as i32, NOW), "ends while unreachable too");
        undrain(&mut silent, NOW).unwrap();
        assert_eq!((silent.state, silent.resume_state), (WorkerState::Unreachable as i32, WorkerState::Ready as i32));
    }

    #[test]
    fn a_drain_ends_once_and_a_deadline_only_once_passed() {
        let mut draining = worker(WorkerState::Ready);
        start_drain(&mut draining, &start(NOW + 60), NOW).unwrap();
        assert!(!end_drain(&mut draining, DrainOutcome::DeadlinePassed as i32, NOW + 59), "not yet");
        assert!(end_drain(&mut draining, DrainOutcome::DeadlinePassed as i32, NOW + 60));
        let drain = draining.drain.unwrap();
        assert_eq!((drain.outcome, drain.ended_at_unix), (DrainOutcome::DeadlinePassed as i32, NOW + 60));
        assert!(!end_drain(&mut draining, DrainOutcome::Drained as i32, NOW + 61), "already ended");
        assert_eq!(draining.state, WorkerState::Draining as i32, "still draining until undrained");

        let mut open_ended = worker(WorkerState::Ready);
        start_drain(&mut open_ended, &start(0), NOW).unwrap();
        assert!(!end_drain(&mut open_ended, DrainOutcome::DeadlinePassed as i32, i64::MAX), "no deadline");
        assert!(!end_drain(&mut worker(WorkerState::Ready), DrainOutcome::Drained as i32, NOW), "not draining");
        // A restarted drain starts over.
        assert!(end_drain(&mut open_ended, DrainOutcome::Drained as i32, NOW));
        start_drain(&mut open_ended, &start(NOW + 5), NOW + 1).unwrap();
        assert_eq!(open_ended.drain.map(|d| d.outcome), Some(DrainOutcome::Unspecified as i32));
    }
}
