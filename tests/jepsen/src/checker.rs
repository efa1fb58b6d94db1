//! The linearizability checker: is there one order of the operations on each key, within
//! their invoke..complete intervals, that the register of [`crate::model`] accepts?
//!
//! Per key (linearizability is compositional, so keys are checked alone), the search of Wing
//! & Gong with Lowe's memoization, as Porcupine runs it: the call and return events sorted by
//! time form a doubly linked list; the search repeatedly linearizes the first pending call
//! the model accepts (removing its call and return), and backtracks when it reaches a return
//! whose operation is not yet linearized. A cache of (linearized set, state) pairs prunes
//! every configuration already explored, which keeps the search close to linear on the
//! histories real systems produce.
//!
//! Failed operations are dropped. An indeterminate write has a call but no return: it may be
//! linearized anywhere after its invocation, and the search succeeds once every
//! acknowledged operation is placed, so it may also never take effect.

use std::collections::HashSet;
use std::fmt;

use crate::history::{Command, History, Op, Outcome, Reply, Value, secs, show};
use crate::model::{State, step};

/// Search steps allowed per key before the verdict for it is "unknown".
pub const DEFAULT_BUDGET: u64 = 20_000_000;

/// The checker's answer for a whole history.
#[derive(Debug)]
pub struct Verdict {
    pub keys: usize,
    pub ops: usize,
    pub violations: Vec<Violation>,
    /// Keys whose search ran out of budget, with their operation counts.
    pub unknown: Vec<(String, usize)>,
}

impl Verdict {
    pub fn is_linearizable(&self) -> bool {
        self.violations.is_empty() && self.unknown.is_empty()
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_linearizable() {
            return write!(f, "linearizable ({} operations on {} keys)", self.ops, self.keys);
        }
        if !self.violations.is_empty() {
            writeln!(f, "NOT linearizable: {} of {} keys have no valid order", self.violations.len(), self.keys)?;
            for violation in &self.violations {
                write!(f, "{violation}")?;
            }
        }
        for (key, ops) in &self.unknown {
            writeln!(f, "unknown: key {key} ({ops} operations) exceeded the search budget")?;
        }
        Ok(())
    }
}

/// Why one key's operations have no valid order, as far as the search got.
#[derive(Clone, Debug)]
pub struct Violation {
    pub key: String,
    pub ops: usize,
    /// How many operations the longest valid prefix holds.
    pub prefix_len: usize,
    /// The last few operations of that prefix, oldest first.
    pub prefix_tail: Vec<Op>,
    /// The key's state after the prefix.
    pub state: State,
    /// The operation that had to come next (its return was reached) but could not.
    pub blocked: Option<Op>,
    /// What the blocked operation observed, and the writes that bear on it.
    pub hint: Option<String>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "key {}: not linearizable ({} operations)", self.key, self.ops)?;
        writeln!(
            f,
            "  the longest valid order places {} operations and leaves the key {}; its last ones:",
            self.prefix_len,
            show(self.state)
        )?;
        for op in &self.prefix_tail {
            writeln!(f, "    {op}")?;
        }
        if let Some(blocked) = &self.blocked {
            writeln!(f, "  then no order fits this operation, which had completed:\n    {blocked}")?;
        }
        if let Some(hint) = &self.hint {
            writeln!(f, "  {hint}")?;
        }
        Ok(())
    }
}

/// Checks every key of `history` with at most `budget` search steps per key.
pub fn check(history: &History, budget: u64) -> Verdict {
    let by_key = history.by_key();
    let mut verdict = Verdict { keys: by_key.len(), ops: 0, violations: Vec::new(), unknown: Vec::new() };
    for (key, ops) in by_key {
        verdict.ops += ops.len();
        match check_key(key, &ops, budget) {
            KeyVerdict::Linearizable => {}
            KeyVerdict::Violation(violation) => verdict.violations.push(*violation),
            KeyVerdict::Unknown => verdict.unknown.push((key.to_string(), ops.len())),
        }
    }
    verdict
}

#[derive(Debug)]
pub enum KeyVerdict {
    Linearizable,
    Violation(Box<Violation>),
    Unknown,
}

const NIL: usize = usize::MAX;
const HEAD: usize = 0;
/// Linearized operations shown before the one that does not fit.
const TAIL_SHOWN: usize = 4;

/// The event list: node 0 is the head sentinel, then one node per call and return in time
/// order (calls first on equal times: operations that touch are taken as concurrent).
struct Events {
    op: Vec<usize>,
    is_call: Vec<bool>,
    prev: Vec<usize>,
    next: Vec<usize>,
    call_of: Vec<usize>,
    return_of: Vec<Option<usize>>,
}

impl Events {
    fn new(ops: &[&Op]) -> Self {
        let mut order: Vec<(u64, u8, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            order.push((op.invoke, 0, i));
            if op.is_determinate() {
                order.push((op.complete, 1, i));
            }
        }
        order.sort_unstable();
        let n = order.len() + 1;
        let mut events = Events {
            op: vec![NIL; n],
            is_call: vec![false; n],
            prev: (0..n).map(|i| i.wrapping_sub(1)).collect(),
            next: (1..=n).map(|i| if i == n { NIL } else { i }).collect(),
            call_of: vec![NIL; ops.len()],
            return_of: vec![None; ops.len()],
        };
        events.prev[HEAD] = NIL;
        for (node, &(_, kind, i)) in (1..).zip(&order) {
            events.op[node] = i;
            events.is_call[node] = kind == 0;
            if kind == 0 {
                events.call_of[i] = node;
            } else {
                events.return_of[i] = Some(node);
            }
        }
        events
    }

    fn unlink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = next;
        if next != NIL {
            self.prev[next] = prev;
        }
    }

    fn relink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = node;
        if next != NIL {
            self.prev[next] = node;
        }
    }

    /// Removes operation `i`'s call and return (undone by [`unlift`](Self::unlift), in
    /// reverse order, as dancing links require).
    fn lift(&mut self, i: usize) {
        self.unlink(self.call_of[i]);
        if let Some(ret) = self.return_of[i] {
            self.unlink(ret);
        }
    }

    fn unlift(&mut self, i: usize) {
        if let Some(ret) = self.return_of[i] {
            self.relink(ret);
        }
        self.relink(self.call_of[i]);
    }
}

/// A set of operation indices.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Self {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

/// The deepest dead end the search reached: the basis of the explanation.
struct DeadEnd {
    prefix: Vec<usize>,
    state: State,
    blocked: Option<usize>,
}

/// Checks the operations of one key (failed ones already removed).
pub fn check_key(key: &str, ops: &[&Op], budget: u64) -> KeyVerdict {
    let mut events = Events::new(ops);
    let mut remaining = ops.iter().filter(|op| op.is_determinate()).count();
    let mut linearized = Bits::new(ops.len());
    let mut cache: HashSet<(Bits, State)> = HashSet::new();
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut state: State = None;
    let mut deepest: Option<DeadEnd> = None;
    let mut entry = events.next[HEAD];
    let mut steps = 0u64;
    loop {
        if remaining == 0 {
            return KeyVerdict::Linearizable;
        }
        steps += 1;
        if steps > budget {
            return KeyVerdict::Unknown;
        }
        if entry != NIL && events.is_call[entry] {
            let i = events.op[entry];
            if let Some(next_state) = step(state, &ops[i].command, &ops[i].outcome) {
                linearized.set(i);
                if cache.insert((linearized.clone(), next_state)) {
                    stack.push((i, state));
                    state = next_state;
                    events.lift(i);
                    remaining -= usize::from(ops[i].is_determinate());
                    entry = events.next[HEAD];
                    continue;
                }
                linearized.clear(i);
            }
            entry = events.next[entry];
            continue;
        }
        // A return (or the end) reached with its operation not linearized: backtrack.
        if deepest.as_ref().is_none_or(|d| stack.len() > d.prefix.len()) {
            let blocked = (entry != NIL).then(|| events.op[entry]);
            deepest = Some(DeadEnd { prefix: stack.iter().map(|&(i, _)| i).collect(), state, blocked });
        }
        let Some((i, previous)) = stack.pop() else {
            let dead_end = deepest.unwrap_or(DeadEnd { prefix: Vec::new(), state: None, blocked: None });
            return KeyVerdict::Violation(Box::new(explain(key, ops, dead_end)));
        };
        state = previous;
        linearized.clear(i);
        events.unlift(i);
        remaining += usize::from(ops[i].is_determinate());
        entry = events.next[events.call_of[i]];
    }
}

fn explain(key: &str, ops: &[&Op], dead_end: DeadEnd) -> Violation {
    let tail_start = dead_end.prefix.len().saturating_sub(TAIL_SHOWN);
    let blocked = dead_end.blocked.map(|i| ops[i]);
    Violation {
        key: key.to_string(),
        ops: ops.len(),
        prefix_len: dead_end.prefix.len(),
        prefix_tail: dead_end.prefix[tail_start..].iter().map(|&i| ops[i].clone()).collect(),
        state: dead_end.state,
        blocked: blocked.cloned(),
        hint: blocked.and_then(|op| hint(ops, op)),
    }
}

/// What `blocked` saw, who wrote it, and the last write acknowledged before `blocked` was
/// invoked: for a stale read, the write it missed.
fn hint(ops: &[&Op], blocked: &Op) -> Option<String> {
    let seen = match &blocked.outcome {
        Outcome::Ok(Reply::Read(value)) => *value,
        Outcome::Ok(Reply::Write { previous, .. }) => *previous,
        _ => return None,
    };
    let written = |op: &Op| -> Option<Option<Value>> {
        match (&op.command, &op.outcome) {
            (Command::Put(v), _) => Some(Some(*v)),
            (Command::Delete, _) => Some(None),
            (Command::Cas { new, .. }, Outcome::Ok(Reply::Write { succeeded: true, .. }) | Outcome::Indeterminate) => {
                Some(Some(*new))
            }
            _ => None,
        }
    };
    let writer = seen.and_then(|v| ops.iter().find(|op| written(op) == Some(Some(v))));
    let mut text = match (seen, writer) {
        (None, _) => "it saw the key absent".to_string(),
        (Some(v), Some(writer)) => format!("it saw {v}, written by: {writer}"),
        (Some(v), None) => format!("it saw {v}, which no operation on this key wrote"),
    };
    // A write of another value that began after the seen value's write had completed, and
    // was acknowledged before `blocked` began, must order between the two: `blocked` is stale.
    let seen_completed = writer.filter(|w| w.is_determinate()).map(|w| w.complete);
    let missed = ops
        .iter()
        .filter(|op| op.is_determinate() && op.complete < blocked.invoke)
        .filter(|op| seen.is_none() || seen_completed.is_some_and(|done| op.invoke > done))
        .filter(|op| written(op).is_some_and(|value| value != seen))
        .filter(|op| !matches!(op.outcome, Outcome::Ok(Reply::Write { succeeded: false, .. })))
        .max_by_key(|op| op.complete);
    if let Some(op) = missed {
        let after = if seen.is_some() { ", begun after that write had completed," } else { "" };
        text.push_str(&format!(
            "\n  but this write of another value{after} was acknowledged at {}, before the operation above was \
             invoked at {}:\n    {op}",
            secs(op.complete),
            secs(blocked.invoke)
        ));
    }
    Some(text)
}

#[cfg(test)]
mod tests;
