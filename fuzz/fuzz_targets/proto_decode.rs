//! Protobuf decoding of what peers, clients and workers send, and the conversions to
//! openraft's types a node applies to peer RPCs. Decoding refuses or accepts; what it accepts
//! re-encodes to the same message, and a conversion that accepts a message converts back to
//! one that converts the same way.
//!
//! Input: `[kind: u8]` (modulo `PROTO_KINDS`) then the encoded message.
#![no_main]

use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use muster_control_plane::convert as pb;
use muster_fuzz::{Input, PROTO_KINDS};
use muster_proto::v1;
use prost::Message;

/// Decodes `bytes` as `M`; when it decodes, the encoding decodes back to the same message.
fn decode<M: Message + Default + PartialEq + Debug>(bytes: &[u8]) -> Option<M> {
    let message = M::decode(bytes).ok()?;
    let again = M::decode(message.encode_to_vec().as_slice()).expect("an encoding decodes");
    // A NaN float field makes a message unequal to itself; the others must match.
    #[allow(clippy::eq_op)]
    if message == message {
        assert_eq!(again, message);
    }
    Some(message)
}

/// `from_pb(message)`; when it converts, `to_pb` of the result converts and re-encodes alike.
fn convert<M: PartialEq + Debug + Clone, T, E: Debug>(
    message: M,
    from_pb: impl Fn(M) -> Result<T, E>,
    to_pb: impl Fn(&T) -> M,
) {
    let Ok(value) = from_pb(message) else { return };
    let back = to_pb(&value);
    let again = from_pb(back.clone()).expect("a converted message converts again");
    assert_eq!(to_pb(&again), back, "conversion is stable");
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let kind = usize::from(input.u8()) % PROTO_KINDS;
    let bytes = input.rest();
    match kind {
        0 => drop(decode::<v1::Command>(bytes)),
        1 => {
            if let Some(entry) = decode::<v1::Entry>(bytes) {
                convert(entry, pb::entry_from_pb, pb::entry_to_pb);
            }
        }
        2 => {
            if let Some(request) = decode::<v1::AppendEntriesRequest>(bytes) {
                convert(request, pb::append_request_from_pb, pb::append_request_to_pb);
            }
        }
        3 => {
            if let Some(response) = decode::<v1::AppendEntriesResponse>(bytes) {
                convert(response, pb::append_response_from_pb, pb::append_response_to_pb);
            }
        }
        4 => {
            if let Some(request) = decode::<v1::VoteRequest>(bytes) {
                convert(request, pb::vote_request_from_pb, pb::vote_request_to_pb);
            }
        }
        5 => {
            if let Some(response) = decode::<v1::VoteResponse>(bytes) {
                convert(response, pb::vote_response_from_pb, pb::vote_response_to_pb);
            }
        }
        6 => {
            if let Some(meta) = decode::<v1::SnapshotMeta>(bytes) {
                let id = meta.snapshot_id.clone();
                convert(meta, pb::snapshot_meta_from_pb, |m| pb::snapshot_meta_to_pb(m, &id));
            }
        }
        7 => {
            if let Some(membership) = decode::<v1::Membership>(bytes) {
                convert(membership, |m| pb::membership_from_pb(m, "fuzz"), pb::membership_to_pb);
            }
        }
        8 => drop(decode::<v1::SnapshotChunk>(bytes)),
        9 => drop(decode::<v1::RegisterRequest>(bytes)),
        10 => drop(decode::<v1::StatusReport>(bytes)),
        _ => drop(decode::<v1::ReportLivenessRequest>(bytes)),
    }
});
