//! What a run records: every client operation with the monotonic times it was invoked and
//! completed, and what came of it. The checker reads nothing else.
//!
//! Values are unique per write (`Value` is a number; on the wire its decimal text), so a read
//! names the one write it saw. An operation ends in one of three ways:
//! - [`Outcome::Ok`]: acknowledged, with what the server answered;
//! - [`Outcome::Fail`]: it definitely did not take effect (a refused request, or a read that
//!   returned nothing: reads change nothing, so a failed read is simply dropped);
//! - [`Outcome::Indeterminate`]: a write whose answer was lost (timeout, connection lost,
//!   leadership changed): it may take effect at any time after its invocation, or never.

use std::fmt;
use std::time::Duration;

/// A value some write stored: unique within a run.
pub type Value = u64;

/// Nanoseconds since the start of the run, on the monotonic clock.
pub type Nanos = u64;

/// What a client asked for, on one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// A get, linearizable (ReadIndex) or served under the leader's lease; both promise a
    /// linearizable answer.
    Read {
        lease: bool,
    },
    Put(Value),
    Delete,
    /// Set `new` if the key holds `expected` (`None`: if the key is absent).
    Cas {
        expected: Option<Value>,
        new: Value,
    },
}

impl Command {
    pub fn is_write(&self) -> bool {
        !matches!(self, Command::Read { .. })
    }
}

/// What the server answered to an acknowledged operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// A read: the value found, `None` when the key was absent.
    Read(Option<Value>),
    /// A write: whether it changed the key (a CAS whose comparison failed, or a delete of an
    /// absent key, did not) and the value the key held just before it.
    Write { succeeded: bool, previous: Option<Value> },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok(Reply),
    Fail,
    Indeterminate,
}

/// One operation of the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    /// The client (logical process) that issued it.
    pub process: usize,
    pub key: String,
    pub command: Command,
    pub invoke: Nanos,
    /// When the client stopped waiting (for an indeterminate write, not when it took effect).
    pub complete: Nanos,
    pub outcome: Outcome,
}

impl Op {
    /// Whether the operation must be placed in the linearization: ok operations must, failed
    /// ones never are, indeterminate writes may be.
    pub fn is_determinate(&self) -> bool {
        matches!(self.outcome, Outcome::Ok(_))
    }
}

/// A whole run's operations, in no particular order.
#[derive(Clone, Debug, Default)]
pub struct History {
    pub ops: Vec<Op>,
}

impl History {
    /// Operations of one key, the failed ones removed (they did not happen).
    pub fn by_key(&self) -> std::collections::BTreeMap<&str, Vec<&Op>> {
        let mut keys: std::collections::BTreeMap<&str, Vec<&Op>> = Default::default();
        for op in self.ops.iter().filter(|op| op.outcome != Outcome::Fail) {
            keys.entry(op.key.as_str()).or_default().push(op);
        }
        keys
    }

    /// Operations counted by kind and outcome.
    pub fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        for op in &self.ops {
            let row = match op.command {
                Command::Read { .. } => &mut counts.reads,
                Command::Put(_) => &mut counts.puts,
                Command::Delete => &mut counts.deletes,
                Command::Cas { .. } => &mut counts.cas,
            };
            match op.outcome {
                Outcome::Ok(_) => row.ok += 1,
                Outcome::Fail => row.fail += 1,
                Outcome::Indeterminate => row.indeterminate += 1,
            }
        }
        counts
    }
}

/// Ok / fail / indeterminate counts of one kind of operation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub ok: usize,
    pub fail: usize,
    pub indeterminate: usize,
}

impl Tally {
    pub fn total(&self) -> usize {
        self.ok + self.fail + self.indeterminate
    }

    fn add(self, other: Tally) -> Tally {
        Tally {
            ok: self.ok + other.ok,
            fail: self.fail + other.fail,
            indeterminate: self.indeterminate + other.indeterminate,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub reads: Tally,
    pub puts: Tally,
    pub deletes: Tally,
    pub cas: Tally,
}

impl Counts {
    pub fn all(&self) -> Tally {
        self.reads.add(self.puts).add(self.deletes).add(self.cas)
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{:<8} {:>8} {:>8} {:>8} {:>14}", "op", "total", "ok", "fail", "indeterminate")?;
        for (name, t) in
            [("get", self.reads), ("put", self.puts), ("delete", self.deletes), ("cas", self.cas), ("all", self.all())]
        {
            writeln!(f, "{name:<8} {:>8} {:>8} {:>8} {:>14}", t.total(), t.ok, t.fail, t.indeterminate)?;
        }
        Ok(())
    }
}

/// `12.345s`: a history time for people.
pub fn secs(nanos: Nanos) -> String {
    format!("{:.3}s", Duration::from_nanos(nanos).as_secs_f64())
}

/// A value as the reports print it (`absent` for none).
pub fn show(value: Option<Value>) -> String {
    value.map_or_else(|| "absent".to_string(), |v| v.to_string())
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match &self.command {
            Command::Read { lease: false } => "get".to_string(),
            Command::Read { lease: true } => "lease get".to_string(),
            Command::Put(v) => format!("put {v}"),
            Command::Delete => "delete".to_string(),
            Command::Cas { expected, new } => format!("cas {} -> {new}", show(*expected)),
        };
        let outcome = match &self.outcome {
            Outcome::Ok(Reply::Read(value)) => format!("ok, read {}", show(*value)),
            Outcome::Ok(Reply::Write { succeeded, previous }) => {
                format!("ok, {} (previous {})", if *succeeded { "applied" } else { "not applied" }, show(*previous))
            }
            Outcome::Fail => "failed".to_string(),
            Outcome::Indeterminate => "indeterminate".to_string(),
        };
        let complete = if self.outcome == Outcome::Indeterminate { "?".to_string() } else { secs(self.complete) };
        write!(f, "client {} {what} [{} .. {complete}]: {outcome}", self.process, secs(self.invoke))
    }
}
