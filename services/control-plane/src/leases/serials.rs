//! Which certificate a worker may beat with. The FSM records a worker's current certificate
//! serial and, after a renewal, the one it replaced; the replaced one stays good until the
//! worker first beats with the current one (an agent switches to its renewed certificate on its
//! next stream), then it is retired. Every other serial — a certificate replaced twice over, or
//! one the cluster never issued — is refused, so a stolen old certificate stops working once
//! the worker has moved on, and a minted one never starts.

use muster_proto::v1;

/// A worker's recorded serials (hex; empty for none).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Serials {
    current: Box<str>,
    previous: Box<str>,
}

/// What a beat's serial means for its worker.
#[derive(Debug, PartialEq, Eq)]
pub enum Standing {
    Accepted,
    /// The current certificate, while a replaced one is still recorded: retire that one.
    RetiresPrevious(Box<str>),
    Refused,
}

impl Serials {
    pub fn new(current: &str, previous: &str) -> Self {
        Self { current: current.into(), previous: previous.into() }
    }

    pub fn of(record: &v1::WorkerRecord) -> Self {
        Self::new(&record.cert_serial, &record.previous_cert_serial)
    }

    /// Judges the serial a beat carried. An empty one (an insecure gateway has no certificate
    /// to read) and a worker with no recorded certificate cannot be checked, and pass.
    pub fn judge(&self, serial: &str) -> Standing {
        if serial.is_empty() || self.current.is_empty() {
            return Standing::Accepted;
        }
        if serial == &*self.current {
            if self.previous.is_empty() { Standing::Accepted } else { Standing::RetiresPrevious(self.previous.clone()) }
        } else if serial == &*self.previous {
            Standing::Accepted
        } else {
            Standing::Refused
        }
    }

    /// The replaced certificate is retired (queued for the FSM; refused from now on).
    pub fn retire_previous(&mut self) {
        self.previous = Box::default();
    }
}

/// The refusal of one certificate of `worker_id`, for the batch answer and for every gateway.
pub fn refusal(worker_id: u64, serial: &str, why: &str) -> v1::WorkerRefusal {
    v1::WorkerRefusal {
        worker_id,
        state: v1::WorkerState::Unspecified as i32,
        reason: format!(
            "certificate serial {serial} is {why}; the worker must use its current certificate, or be registered \
             again with a new token"
        ),
        cert_serial: serial.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_and_previous_pass_until_the_previous_retires_and_others_are_refused() {
        let mut serials = Serials::new("0b", "0a");
        assert_eq!(serials.judge("0a"), Standing::Accepted, "the worker has not switched yet");
        assert_eq!(serials.judge("0b"), Standing::RetiresPrevious("0a".into()));
        assert_eq!(serials.judge("ff"), Standing::Refused, "minted or replaced twice over");
        serials.retire_previous();
        assert_eq!(serials.judge("0b"), Standing::Accepted);
        assert_eq!(serials.judge("0a"), Standing::Refused, "retired");
    }

    #[test]
    fn what_cannot_be_checked_passes() {
        assert_eq!(Serials::default().judge("0a"), Standing::Accepted, "no certificate recorded");
        assert_eq!(Serials::new("0b", "").judge(""), Standing::Accepted, "an insecure gateway");
    }
}
