//! Mutation testing of the checker: plant a stale read in a history and expect a rejection.
//!
//! A read is rewritten to return the value of a write `u` that an acknowledged write `x` had
//! already replaced before the read began, with `x` itself begun after `u` was acknowledged.
//! Every valid order then places `u`, `x`, the read in that order, and since values are
//! unique nothing writes `u` again: the mutated history is certainly not linearizable.

use crate::history::{Command, History, Op, Outcome, Reply, Value};

/// A stale read planted in a copy of a history.
#[derive(Debug)]
pub struct Planted {
    pub history: History,
    pub key: String,
    /// Index of the rewritten read in `history.ops`.
    pub read: usize,
    pub stale_value: Value,
    pub was: Option<Value>,
}

/// The value an acknowledged, effective write left in its key.
fn written(op: &Op) -> Option<Option<Value>> {
    match (&op.command, &op.outcome) {
        (Command::Put(v), Outcome::Ok(_)) => Some(Some(*v)),
        (Command::Cas { new, .. }, Outcome::Ok(Reply::Write { succeeded: true, .. })) => Some(Some(*new)),
        (Command::Delete, Outcome::Ok(Reply::Write { succeeded: true, .. })) => Some(None),
        _ => None,
    }
}

/// Plants a stale read in the latest read of `history` that allows one, or `None` when no
/// read does (too few writes before every read).
pub fn plant_stale_read(history: &History) -> Option<Planted> {
    let mut reads: Vec<usize> =
        (0..history.ops.len()).filter(|&i| matches!(history.ops[i].outcome, Outcome::Ok(Reply::Read(_)))).collect();
    reads.sort_by_key(|&i| std::cmp::Reverse(history.ops[i].invoke));
    for read in reads {
        let r = &history.ops[read];
        let Outcome::Ok(Reply::Read(was)) = r.outcome else { continue };
        let writes = history.ops.iter().filter(|op| op.key == r.key && op.complete < r.invoke);
        // `x`: the acknowledged write that began latest while still completing before the read.
        let Some(x) = writes.clone().filter(|op| written(op).is_some()).max_by_key(|op| op.invoke) else { continue };
        let stale = writes
            .filter(|u| u.complete < x.invoke)
            .filter_map(|u| written(u).flatten())
            .find(|&value| Some(value) != was);
        if let Some(stale_value) = stale {
            let mut mutated = history.clone();
            mutated.ops[read].outcome = Outcome::Ok(Reply::Read(Some(stale_value)));
            return Some(Planted { history: mutated, key: r.key.clone(), read, stale_value, was });
        }
    }
    None
}
