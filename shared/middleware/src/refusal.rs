//! Typed refusals on the wire: [`Refused`] is a [`v1::Refusal`] with the words for a human,
//! [`Refused::code`] is the one table from reason to gRPC code, and the reason travels in the
//! `x-muster-refusal` metadata entry (the enum value's proto name) so a caller can branch on
//! it with [`refusal`] instead of reading the message.

use std::fmt;

use muster_proto::v1;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};

use crate::ApiError;

/// Metadata key carrying a refusal's reason, as the proto name (`REFUSAL_TOKEN_EXPIRED`).
pub const REFUSAL_HEADER: &str = "x-muster-refusal";

/// A refusal: why, typed, and what to tell the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub reason: v1::Refusal,
    pub message: String,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Refused {
    pub fn new(reason: v1::Refusal, message: impl Into<String>) -> Self {
        Self { reason, message: message.into() }
    }

    /// The refusal a command result carries, if it was refused.
    pub fn of(result: &v1::CommandResult) -> Option<Self> {
        result.refused().map(|reason| Self::new(reason, result.error.clone()))
    }

    /// `result` when it was not refused, its refusal as an [`ApiError`] when it was.
    pub fn check(result: v1::CommandResult) -> Result<v1::CommandResult, ApiError> {
        match Self::of(&result) {
            Some(refused) => Err(refused.into()),
            None => Ok(result),
        }
    }

    /// The gRPC code each reason is reported with.
    pub fn code(&self) -> Code {
        use v1::Refusal as R;
        match self.reason {
            R::TokenMalformed | R::TokenUnsupportedVersion | R::IncompleteCommand => Code::InvalidArgument,
            R::TokenUnknown | R::TokenForged => Code::Unauthenticated,
            R::TokenExpired | R::TokenUsedUp | R::TokenRevoked | R::WorkerRevoked | R::UnknownCertificate => {
                Code::PermissionDenied
            }
            R::TokenExists => Code::AlreadyExists,
            R::TokenNotFound | R::UnknownWorker => Code::NotFound,
            // A refusal recorded by a release without the enum says only that the state did
            // not allow the command.
            R::TokenWrongCluster
            | R::InvalidTransition
            | R::StaleTerm
            | R::NoWorkerCa
            | R::WorkerCaRotation
            | R::Unspecified => Code::FailedPrecondition,
        }
    }
}

impl From<Refused> for ApiError {
    fn from(refused: Refused) -> Self {
        ApiError::Refused(refused)
    }
}

pub(crate) fn insert_refusal(metadata: &mut MetadataMap, reason: v1::Refusal) {
    metadata.insert(REFUSAL_HEADER, MetadataValue::from_static(reason.as_str_name()));
}

/// The typed reason a Muster server refused with, if the status carries one.
pub fn refusal(status: &Status) -> Option<v1::Refusal> {
    let name = status.metadata().get(REFUSAL_HEADER)?.to_str().ok()?;
    v1::Refusal::from_str_name(name).filter(|reason| *reason != v1::Refusal::Unspecified)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_picks_the_code_and_survives_the_trip_through_http_headers() {
        let status = Status::from(ApiError::from(Refused::new(v1::Refusal::TokenUsedUp, "token t has been used up")));
        assert_eq!((status.code(), status.message()), (Code::PermissionDenied, "token t has been used up"));
        let response = status.into_http::<()>();
        let back = Status::from_header_map(response.headers()).unwrap();
        assert_eq!(refusal(&back), Some(v1::Refusal::TokenUsedUp));
        let forged = Status::from(ApiError::from(Refused::new(v1::Refusal::TokenForged, "")));
        assert_eq!((forged.code(), refusal(&forged)), (Code::Unauthenticated, Some(v1::Refusal::TokenForged)));
    }

    #[test]
    fn a_status_without_a_known_reason_has_none() {
        assert_eq!(refusal(&Status::permission_denied("registration refused (used_up): spent")), None);
        let mut metadata = MetadataMap::new();
        metadata.insert(REFUSAL_HEADER, MetadataValue::from_static("REFUSAL_SUNSPOTS"));
        assert_eq!(refusal(&Status::with_metadata(Code::PermissionDenied, "", metadata)), None);
    }

    #[test]
    fn every_result_refusal_becomes_that_refusal() {
        let result = v1::CommandResult::refusing(4, v1::Refusal::UnknownWorker, "no worker 9");
        let refused = Refused::of(&result).unwrap();
        assert_eq!(
            (refused.reason, refused.code(), refused.message.as_str()),
            (v1::Refusal::UnknownWorker, Code::NotFound, "no worker 9")
        );
        assert_eq!(Refused::of(&v1::CommandResult { succeeded: true, ..Default::default() }), None);
    }
}
