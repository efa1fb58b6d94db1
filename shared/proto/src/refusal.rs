//! [`v1::Refusal`], the typed reason a command or request was refused, and the few helpers
//! every side uses to write and read it on a [`v1::CommandResult`].
//!
//! A refusal crosses three boundaries: the state machine writes it into the result, the
//! control plane's handler turns it into a gRPC error (`muster_middleware::ApiError::Refused`,
//! which picks the code and sends the value in a trailer), and a caller such as the registrar
//! reads it back from the status. Nothing on that path parses a message.

use crate::v1;

impl v1::Refusal {
    /// Every token refusal, in the order metrics list them.
    pub const TOKEN: [v1::Refusal; 8] = [
        v1::Refusal::TokenMalformed,
        v1::Refusal::TokenUnsupportedVersion,
        v1::Refusal::TokenWrongCluster,
        v1::Refusal::TokenUnknown,
        v1::Refusal::TokenForged,
        v1::Refusal::TokenExpired,
        v1::Refusal::TokenUsedUp,
        v1::Refusal::TokenRevoked,
    ];

    /// A short snake_case name for metric labels and logs ("expired", "used_up", ...). It is
    /// also what releases before the enum wrote in `CommandResult.error_code`, which is why a
    /// token's and a worker's revocation share "revoked".
    pub fn label(self) -> &'static str {
        match self {
            v1::Refusal::Unspecified => "",
            v1::Refusal::TokenMalformed => "malformed",
            v1::Refusal::TokenUnsupportedVersion => "unsupported_version",
            v1::Refusal::TokenWrongCluster => "wrong_cluster",
            v1::Refusal::TokenUnknown => "unknown",
            v1::Refusal::TokenForged => "forged",
            v1::Refusal::TokenExpired => "expired",
            v1::Refusal::TokenUsedUp => "used_up",
            v1::Refusal::TokenRevoked | v1::Refusal::WorkerRevoked => "revoked",
            v1::Refusal::TokenExists => "token_exists",
            v1::Refusal::TokenNotFound => "token_not_found",
            v1::Refusal::UnknownWorker => "unknown_worker",
            v1::Refusal::InvalidTransition => "invalid_transition",
            v1::Refusal::UnknownCertificate => "unknown_certificate",
            v1::Refusal::StaleTerm => "stale_term",
            v1::Refusal::NoWorkerCa => "no_worker_ca",
            v1::Refusal::IncompleteCommand => "invalid",
            v1::Refusal::WorkerCaRotation => "worker_ca_rotation",
        }
    }
}

impl v1::CommandResult {
    /// A refused command: nothing applied, `error` says why in words.
    #[allow(deprecated)] // error_code: written for nodes of the previous release, see the proto.
    pub fn refusing(index: u64, refusal: v1::Refusal, error: impl Into<String>) -> Self {
        v1::CommandResult {
            index,
            error: error.into(),
            refusal: refusal as i32,
            error_code: refusal.label().to_owned(),
            ..Default::default()
        }
    }

    /// Why the command was refused; `None` when it was not (a failed comparison or a delete
    /// of nothing is not a refusal). A refusal recorded by a release without the enum (a
    /// retry answered from an old session) reads as [`v1::Refusal::Unspecified`].
    pub fn refused(&self) -> Option<v1::Refusal> {
        let refusal = self.refusal();
        (refusal != v1::Refusal::Unspecified || !self.error.is_empty()).then_some(refusal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_result_reads_back_its_refusal_and_carries_the_old_code() {
        let result = v1::CommandResult::refusing(7, v1::Refusal::TokenUsedUp, "token t has been used up");
        assert_eq!(result.refused(), Some(v1::Refusal::TokenUsedUp));
        #[allow(deprecated)]
        let code = result.error_code.as_str();
        assert_eq!((result.index, result.succeeded, code), (7, false, "used_up"));
        assert_eq!(v1::CommandResult { succeeded: true, ..Default::default() }.refused(), None);
        let old_release = v1::CommandResult { error: "no worker 3".into(), ..Default::default() };
        assert_eq!(old_release.refused(), Some(v1::Refusal::Unspecified));
    }

    #[test]
    fn token_labels_are_distinct() {
        let labels: std::collections::HashSet<_> = v1::Refusal::TOKEN.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), v1::Refusal::TOKEN.len());
    }
}
