//! Why a gateway or registrar turned this worker away for good, read from the typed refusal
//! servers send (`x-muster-refusal`) and, from servers that send none (an older release), from
//! the code the caller expects for each case. One reading for the heartbeat stream and Renew,
//! so both tell the operator the same thing for the same refusal.

use muster_proto::v1;
use tonic::{Code, Status};

/// A refusal no other server would answer differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The worker was revoked: it can never beat or renew again.
    Revoked,
    /// The cluster does not know the worker id (a wiped cluster, another cluster's identity).
    UnknownWorker,
    /// The certificate is not the worker's current one (replaced by a renewal this agent did
    /// not keep, or never issued by this cluster).
    CertificateNotCurrent,
}

impl Ending {
    /// The ending `status` names by its typed refusal, if it carries one about the worker.
    pub fn typed(status: &Status) -> Option<Self> {
        match muster_middleware::refusal(status)? {
            v1::Refusal::WorkerRevoked => Some(Ending::Revoked),
            v1::Refusal::UnknownWorker => Some(Ending::UnknownWorker),
            v1::Refusal::UnknownCertificate => Some(Ending::CertificateNotCurrent),
            _ => None,
        }
    }

    /// The ending of `status`, from its typed refusal or else from `by_code` (the caller's
    /// reading of the codes servers without typed refusals answer with).
    pub fn of(status: &Status, by_code: impl FnOnce(Code) -> Option<Self>) -> Option<Self> {
        Self::typed(status).or_else(|| by_code(status.code()))
    }
}

#[cfg(test)]
mod tests {
    use muster_middleware::{ApiError, Refused};

    use super::*;

    fn refused(reason: v1::Refusal) -> Status {
        ApiError::from(Refused::new(reason, "no")).into()
    }

    #[test]
    fn the_typed_refusal_wins_over_the_code() {
        // A replaced certificate at Renew is PERMISSION_DENIED, like a revocation: only the
        // reason tells them apart.
        let replaced = refused(v1::Refusal::UnknownCertificate);
        assert_eq!(replaced.code(), Code::PermissionDenied);
        assert_eq!(Ending::of(&replaced, |_| Some(Ending::Revoked)), Some(Ending::CertificateNotCurrent));
        assert_eq!(Ending::of(&refused(v1::Refusal::WorkerRevoked), |_| None), Some(Ending::Revoked));
        assert_eq!(Ending::of(&refused(v1::Refusal::UnknownWorker), |_| None), Some(Ending::UnknownWorker));
    }

    #[test]
    fn without_a_reason_the_code_decides() {
        let old_server = Status::permission_denied("worker 3 is revoked");
        let by_code = |code| (code == Code::PermissionDenied).then_some(Ending::Revoked);
        assert_eq!(Ending::of(&old_server, by_code), Some(Ending::Revoked));
        assert_eq!(Ending::of(&Status::unavailable("down"), by_code), None);
        assert_eq!(Ending::typed(&refused(v1::Refusal::TokenUsedUp)), None, "not about the worker");
    }
}
