//! Log entries: blank, normal (a [`v1::Command`]) or membership.

use muster_proto::v1;

use super::{ConvertError, log_id_from_pb, log_id_to_pb, membership_from_pb, membership_to_pb};
use crate::types::{Entry, EntryPayload};

pub fn entry_to_pb(entry: &Entry) -> v1::Entry {
    let payload = match &entry.payload {
        EntryPayload::Blank => v1::entry::Payload::Blank(v1::Blank {}),
        EntryPayload::Normal(command) => v1::entry::Payload::Normal(command.clone()),
        EntryPayload::Membership(membership) => v1::entry::Payload::Membership(membership_to_pb(membership)),
    };
    v1::Entry { log_id: Some(log_id_to_pb(&entry.log_id)), payload: Some(payload) }
}

pub fn entry_from_pb(entry: v1::Entry) -> Result<Entry, ConvertError> {
    let log_id = entry.log_id.ok_or_else(|| ConvertError::missing("Entry", "log_id"))?;
    let log_id = log_id_from_pb(log_id, "Entry")?;
    let payload = match entry.payload.ok_or_else(|| ConvertError::missing("Entry", "payload"))? {
        v1::entry::Payload::Blank(_) => EntryPayload::Blank,
        v1::entry::Payload::Normal(command) => EntryPayload::Normal(command),
        v1::entry::Payload::Membership(m) => EntryPayload::Membership(membership_from_pb(m, "Entry")?),
    };
    Ok(Entry { log_id, payload })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{LeaderId, LogId};

    #[test]
    fn normal_entry_round_trips() {
        let command = v1::Command {
            client_id: 9,
            sequence: 1,
            op: Some(v1::command::Op::Put(v1::KvPut { key: "a".into(), value: b"1".to_vec() })),
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            format_version: muster_proto::COMMAND_FORMAT_VERSION,
        };
        let entry =
            Entry { log_id: LogId::new(LeaderId { term: 3, node_id: 2 }, 17), payload: EntryPayload::Normal(command) };
        assert_eq!(entry_from_pb(entry_to_pb(&entry)).unwrap(), entry);
    }
}
