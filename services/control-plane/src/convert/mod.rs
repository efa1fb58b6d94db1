//! Protobuf ↔ openraft conversions, one file per family of types.
//!
//! openraft's types are foreign to this crate and so are the generated protobuf types, so the
//! conversions are free functions (`*_to_pb` / `*_from_pb`). Decoding checks presence of the
//! fields openraft needs and fails with [`ConvertError`] naming the missing one.

mod entry;
mod ids;
mod membership;
mod messages;

pub use entry::{entry_from_pb, entry_to_pb};
pub use ids::{log_id_from_pb, log_id_to_pb, opt_log_id_from_pb, opt_log_id_to_pb, vote_from_pb, vote_to_pb};
pub use membership::{
    membership_from_pb, membership_to_pb, snapshot_meta_from_pb, snapshot_meta_to_pb, stored_membership_from_pb,
    stored_membership_to_pb,
};
pub use messages::{
    append_request_from_pb, append_request_to_pb, append_response_from_pb, append_response_to_pb,
    stream_append_result_from_pb, stream_append_result_to_pb, vote_request_from_pb, vote_request_to_pb,
    vote_response_from_pb, vote_response_to_pb,
};

/// A protobuf message lacked a field openraft needs, or held an impossible value.
#[derive(Debug, thiserror::Error)]
#[error("malformed {message}: {problem}")]
pub struct ConvertError {
    pub message: &'static str,
    pub problem: String,
}

impl ConvertError {
    pub(crate) fn missing(message: &'static str, field: &str) -> Self {
        Self { message, problem: format!("field `{field}` is required") }
    }
}

impl From<ConvertError> for tonic::Status {
    fn from(err: ConvertError) -> Self {
        muster_middleware::ApiError::InvalidArgument(err.to_string()).into()
    }
}
