//! The sequential specification the checker holds each key to: a register that may be
//! absent, with get, put, delete and compare-and-swap, where every write also reports the
//! value it replaced (Muster's `CommandResult.previous`).

use crate::history::{Command, Outcome, Reply, Value};

/// A key's state: its value, or absent.
pub type State = Option<Value>;

/// The state after applying `command` to `state`, if what the server answered (`outcome`) is
/// possible from `state`. An indeterminate write has no answer to match: it applies as
/// specified. Failed operations never reach the model.
pub fn step(state: State, command: &Command, outcome: &Outcome) -> Option<State> {
    let (next, expected_reply) = match *command {
        Command::Read { .. } => (state, Reply::Read(state)),
        Command::Put(value) => (Some(value), Reply::Write { succeeded: true, previous: state }),
        Command::Delete => (None, Reply::Write { succeeded: state.is_some(), previous: state }),
        Command::Cas { expected, new } => {
            let swapped = state == expected;
            (if swapped { Some(new) } else { state }, Reply::Write { succeeded: swapped, previous: state })
        }
    };
    match outcome {
        Outcome::Ok(reply) => (*reply == expected_reply).then_some(next),
        Outcome::Indeterminate => Some(next),
        Outcome::Fail => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok_write(succeeded: bool, previous: State) -> Outcome {
        Outcome::Ok(Reply::Write { succeeded, previous })
    }

    #[test]
    fn reads_must_see_the_state() {
        assert_eq!(step(Some(1), &Command::Read { lease: false }, &Outcome::Ok(Reply::Read(Some(1)))), Some(Some(1)));
        assert_eq!(step(Some(1), &Command::Read { lease: false }, &Outcome::Ok(Reply::Read(None))), None);
        assert_eq!(step(None, &Command::Read { lease: false }, &Outcome::Ok(Reply::Read(None))), Some(None));
    }

    #[test]
    fn writes_must_report_the_value_they_replaced() {
        assert_eq!(step(Some(1), &Command::Put(2), &ok_write(true, Some(1))), Some(Some(2)));
        assert_eq!(step(Some(1), &Command::Put(2), &ok_write(true, None)), None);
        assert_eq!(step(Some(1), &Command::Delete, &ok_write(true, Some(1))), Some(None));
        assert_eq!(step(None, &Command::Delete, &ok_write(false, None)), Some(None));
        assert_eq!(step(None, &Command::Delete, &ok_write(true, None)), None);
    }

    #[test]
    fn cas_swaps_only_on_a_match() {
        let cas = Command::Cas { expected: Some(1), new: 2 };
        assert_eq!(step(Some(1), &cas, &ok_write(true, Some(1))), Some(Some(2)));
        assert_eq!(step(Some(3), &cas, &ok_write(false, Some(3))), Some(Some(3)));
        assert_eq!(step(Some(3), &cas, &ok_write(true, Some(3))), None);
        let create = Command::Cas { expected: None, new: 5 };
        assert_eq!(step(None, &create, &ok_write(true, None)), Some(Some(5)));
        assert_eq!(step(None, &create, &Outcome::Indeterminate), Some(Some(5)));
        assert_eq!(step(Some(4), &create, &Outcome::Indeterminate), Some(Some(4)));
    }
}
