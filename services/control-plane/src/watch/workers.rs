//! `WorkerAdminService/WatchWorkers`: the matching workers, then every change to them.

use std::collections::HashMap;

use muster_proto::v1;

use super::follow::{Selector, messages};
use super::outbound::WatchMessage;

impl WatchMessage for v1::WatchWorkersResponse {
    fn resume_point(&self) -> Option<u64> {
        (!self.fragment).then_some(self.revision)
    }
}

/// Which workers a watch follows: by state and labels, as `ListWorkers` filters.
pub struct WorkerSelector {
    pub state: i32,
    pub labels: HashMap<String, String>,
    pub node_id: u64,
}

impl WorkerSelector {
    /// Whether a worker in `state` with `labels` is one this watch follows.
    fn matches(&self, state: i32, labels: &HashMap<String, String>) -> bool {
        (self.state == 0 || state == self.state)
            && self.labels.iter().all(|(key, value)| labels.get(key) == Some(value))
    }

    pub fn matches_record(&self, worker: &v1::WorkerRecord) -> bool {
        self.matches(worker.state, &worker.labels)
    }

    /// A change is sent when the worker matched before it or matches after it, so a watcher
    /// sees a worker leave what it follows.
    fn wants(&self, event: &v1::WorkerEvent) -> bool {
        let Some(worker) = &event.worker else { return false };
        if self.matches_record(worker) {
            return true;
        }
        if event.r#type == v1::WorkerEventType::Registered as i32 {
            return false;
        }
        let labels_before = if event.r#type == v1::WorkerEventType::LabelsChanged as i32 {
            &event.previous_labels
        } else {
            &worker.labels
        };
        self.matches(event.previous_state, labels_before)
    }

    /// A page of the initial listing at `revision`; more of the listing follows it.
    pub fn listing(&self, workers: Vec<v1::WorkerRecord>, revision: u64) -> v1::WatchWorkersResponse {
        v1::WatchWorkersResponse { workers, revision, fragment: true, node_id: self.node_id, ..Default::default() }
    }

    /// The end of the initial listing: changes after `revision` follow.
    pub fn synced(&self, revision: u64) -> v1::WatchWorkersResponse {
        v1::WatchWorkersResponse { revision, synced: true, node_id: self.node_id, ..Default::default() }
    }
}

impl Selector for WorkerSelector {
    type Message = v1::WatchWorkersResponse;

    fn messages(&self, record: &v1::HistoryRecord) -> Vec<v1::WatchWorkersResponse> {
        let events: Vec<v1::WorkerEvent> = record.workers.iter().filter(|event| self.wants(event)).cloned().collect();
        messages(events, |events, fragment| v1::WatchWorkersResponse {
            events,
            revision: record.revision,
            fragment,
            node_id: self.node_id,
            ..Default::default()
        })
    }

    fn progress(&self, revision: u64) -> v1::WatchWorkersResponse {
        v1::WatchWorkersResponse { revision, progress: true, node_id: self.node_id, ..Default::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use v1::{WorkerEventType as Event, WorkerState as State};

    fn event(r#type: Event, before: State, after: State, labels: &[(&str, &str)]) -> v1::WorkerEvent {
        let labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        v1::WorkerEvent {
            r#type: r#type as i32,
            revision: 4,
            worker: Some(v1::WorkerRecord { worker_id: 1, state: after as i32, labels, ..Default::default() }),
            previous_state: before as i32,
            previous_labels: HashMap::new(),
        }
    }

    #[test]
    fn a_watcher_of_a_state_sees_workers_enter_and_leave_it() {
        let ready = WorkerSelector { state: State::Ready as i32, labels: HashMap::new(), node_id: 1 };
        assert!(ready.wants(&event(Event::Registered, State::Unspecified, State::Ready, &[])));
        assert!(ready.wants(&event(Event::Unreachable, State::Ready, State::Unreachable, &[])));
        assert!(!ready.wants(&event(Event::Left, State::Unreachable, State::Left, &[])));
        assert!(!ready.wants(&event(Event::Registered, State::Unspecified, State::Draining, &[])));
    }

    #[test]
    fn a_watcher_of_labels_sees_a_worker_lose_them() {
        let zone = WorkerSelector { state: 0, labels: [("zone".into(), "a".into())].into(), node_id: 1 };
        let mut relabelled = event(Event::LabelsChanged, State::Ready, State::Ready, &[("zone", "b")]);
        assert!(!zone.wants(&relabelled));
        relabelled.previous_labels = [("zone".into(), "a".into())].into();
        assert!(zone.wants(&relabelled));
        assert!(zone.wants(&event(Event::Draining, State::Ready, State::Draining, &[("zone", "a")])));
    }

    #[test]
    fn a_record_without_wanted_events_sends_nothing() {
        let ready = WorkerSelector { state: State::Ready as i32, labels: HashMap::new(), node_id: 1 };
        let record = v1::HistoryRecord {
            revision: 4,
            workers: vec![event(Event::Left, State::Draining, State::Left, &[])],
            ..Default::default()
        };
        assert!(ready.messages(&record).is_empty());
        let all = WorkerSelector { state: 0, labels: HashMap::new(), node_id: 1 };
        assert_eq!(all.messages(&record)[0].events.len(), 1);
    }
}
