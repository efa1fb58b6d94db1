//! `RaftClientService/Watch`: the puts and deletes of one key or a prefix.

use muster_proto::v1;

use super::follow::{Selector, messages};
use super::outbound::WatchMessage;

impl WatchMessage for v1::WatchResponse {
    fn resume_point(&self) -> Option<u64> {
        (!self.fragment).then_some(self.revision)
    }
}

pub struct KvSelector {
    pub key: String,
    pub prefix: bool,
    pub prev_kv: bool,
    pub node_id: u64,
}

impl KvSelector {
    fn wants(&self, key: &str) -> bool {
        if self.prefix { key.starts_with(&self.key) } else { key == self.key }
    }

    /// The first message: the watch follows changes after `revision`.
    pub fn created(&self, revision: u64) -> v1::WatchResponse {
        v1::WatchResponse { revision, created: true, node_id: self.node_id, ..Default::default() }
    }
}

impl Selector for KvSelector {
    type Message = v1::WatchResponse;

    fn messages(&self, record: &v1::HistoryRecord) -> Vec<v1::WatchResponse> {
        let events: Vec<v1::KvEvent> = record
            .kv
            .iter()
            .filter(|event| event.kv.as_ref().is_some_and(|kv| self.wants(&kv.key)))
            .map(|event| v1::KvEvent {
                prev_kv: if self.prev_kv { event.prev_kv.clone() } else { None },
                ..event.clone()
            })
            .collect();
        messages(events, |events, fragment| v1::WatchResponse {
            events,
            revision: record.revision,
            fragment,
            node_id: self.node_id,
            ..Default::default()
        })
    }

    fn progress(&self, revision: u64) -> v1::WatchResponse {
        v1::WatchResponse { revision, progress: true, node_id: self.node_id, ..Default::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, revision: u64) -> v1::KvEvent {
        v1::KvEvent {
            r#type: v1::KvEventType::Put as i32,
            revision,
            kv: Some(v1::KeyValue { key: key.into(), mod_revision: revision, ..Default::default() }),
            prev_kv: Some(v1::KeyValue { key: key.into(), ..Default::default() }),
        }
    }

    #[test]
    fn a_key_or_a_prefix_and_previous_values_only_when_asked() {
        let record =
            v1::HistoryRecord { revision: 9, kv: vec![put("app/a", 9), put("apple", 9)], ..Default::default() };
        let prefix = KvSelector { key: "app/".into(), prefix: true, prev_kv: false, node_id: 2 };
        let messages = prefix.messages(&record);
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].events.len(), 1);
        assert!(messages[0].events[0].prev_kv.is_none());
        assert_eq!((messages[0].revision, messages[0].node_id, messages[0].fragment), (9, 2, false));
        let key = KvSelector { key: "apple".into(), prefix: false, prev_kv: true, node_id: 2 };
        assert!(key.messages(&record)[0].events[0].prev_kv.is_some());
        let none = KvSelector { key: "zzz".into(), prefix: true, prev_kv: false, node_id: 2 };
        assert!(none.messages(&record).is_empty());
    }
}
