//! A Jepsen-style test of Muster's KV API: clients put, delete, compare-and-swap and read a
//! few keys of a real cluster while a nemesis kills and pauses its nodes; every operation is
//! recorded, and the history is checked for linearizability.
//!
//! - [`history`]: the recorded operations (invoke and complete times, ok / fail /
//!   indeterminate);
//! - [`model`]: the register each key must behave as;
//! - [`checker`]: the Wing & Gong / Lowe linearizability search, per key;
//! - [`mutate`]: plants a stale read in a history, to test the checker itself;
//! - [`workload`]: the clients that produce a history against a cluster;
//! - [`probe`]: the exactly-once probe (retried writes applied once, none lost);
//! - [`nemesis`]: the faults (kill -9, SIGSTOP) and their log;
//! - [`run`]: one whole run, from starting the cluster to the report.

pub mod checker;
pub mod history;
pub mod model;
pub mod mutate;
pub mod nemesis;
pub mod probe;
pub mod run;
pub mod workload;
