//! The wire types of Muster: everything under `proto/muster/v1`, generated at build time.
//!
//! `v1` holds messages, clients (`*_client`) and servers (`*_server`) for every service;
//! [`FILE_DESCRIPTOR_SET`] feeds tonic-reflection so `grpcurl` can list and describe them.

#![allow(clippy::all, clippy::pedantic)]

use std::fmt;

pub mod backup;
pub mod clock;
pub mod codec;
pub mod limits;
mod refusal;
mod worker_ca;

pub mod v1 {
    tonic::include_proto!("muster.v1");
}

/// The newest format of Raft commands this release applies. A release that adds a kind of
/// command (or changes what one means) raises it; a node that meets a command of a higher
/// format, or of a kind it does not know, stops applying instead of skipping it (which would
/// leave its state behind the others').
pub const COMMAND_FORMAT_VERSION: u32 = 3;

/// The format a command is written in: the lowest that has its kind, so a release that reads
/// only older formats applies every command but the new kinds (and stops at one of those).
///
/// | format | adds |
/// |---|---|
/// | 1 | every kind up to `Noop` |
/// | 2 | `RotateWorkerCa`; `RemoveWorkers`; `UpdateWorker` changing `eligible`, `drain` or `undrain`; `WorkerTransitions` ending a drain (`drain_outcome`); `RegisterWorker` replacing a worker |
/// | 3 | `CommandBatch` (several commands in one entry) |
///
/// A batch is written in the highest format of itself and what it holds.
pub fn command_format(op: Option<&v1::command::Op>) -> u32 {
    use v1::command::Op;
    match op {
        Some(Op::Batch(batch)) => {
            batch.commands.iter().map(|inner| command_format(inner.op.as_ref())).fold(3, u32::max)
        }
        Some(Op::RotateWorkerCa(_) | Op::RemoveWorkers(_)) => 2,
        Some(Op::UpdateWorker(v1::UpdateWorker { change: Some(change), .. })) => {
            use v1::update_worker::Change;
            match change {
                Change::Eligible(_) | Change::Drain(_) | Change::Undrain(_) => 2,
                Change::State(_) | Change::Labels(_) => 1,
            }
        }
        Some(Op::WorkerTransitions(batch)) if batch.transitions.iter().any(|t| t.drain_outcome != 0) => 2,
        Some(Op::RegisterWorker(register)) if register.replaces_worker_id != 0 => 2,
        _ => 1,
    }
}

/// Encoded `FileDescriptorSet` of every Muster proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/muster_descriptor.bin"));

impl v1::RotateWorkerCa {
    /// The step, as logs and `Display` name it.
    pub fn step_name(&self) -> &'static str {
        match &self.step {
            Some(v1::rotate_worker_ca::Step::TrustNext(_)) => "trust-next",
            Some(v1::rotate_worker_ca::Step::PromoteSha256(_)) => "promote",
            Some(v1::rotate_worker_ca::Step::DropRetired(_)) => "drop-retired",
            None => "none",
        }
    }
}

impl fmt::Display for v1::Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use v1::command::Op;
        match &self.op {
            Some(Op::Put(put)) => write!(f, "put {} ({} bytes)", put.key, put.value.len())?,
            Some(Op::Delete(del)) => write!(f, "delete {}", del.key)?,
            Some(Op::Cas(cas)) => write!(f, "cas {}", cas.key)?,
            Some(Op::InitCluster(init)) => write!(f, "init-cluster {}", init.cluster_id)?,
            Some(Op::CreateToken(create)) => {
                write!(f, "create-token {}", create.record.as_ref().map_or("?", |r| r.token_id.as_str()))?
            }
            Some(Op::RevokeToken(revoke)) => write!(f, "revoke-token {}", revoke.token_id)?,
            Some(Op::RegisterWorker(register)) => write!(f, "register-worker with token {}", register.token_id)?,
            Some(Op::InitWorkerCa(_)) => write!(f, "init-worker-ca")?,
            Some(Op::Noop(_)) => write!(f, "no-op")?,
            Some(Op::RetireLegacyWorkerCa(retire)) => write!(f, "retire-legacy-worker-ca {}", retire.legacy_sha256)?,
            Some(Op::RotateWorkerCa(rotate)) => write!(f, "rotate-worker-ca {}", rotate.step_name())?,
            Some(Op::RecordWorkerCert(record)) => write!(f, "record-worker-cert {}", record.worker_id)?,
            Some(Op::RemoveWorkers(remove)) => write!(f, "remove-workers ({})", remove.worker_ids.len())?,
            Some(Op::Batch(batch)) => write!(f, "batch ({} commands)", batch.commands.len())?,
            Some(Op::UpdateWorker(update)) => write!(f, "update-worker {}", update.worker_id)?,
            Some(Op::WorkerTransitions(batch)) => {
                write!(f, "worker-transitions ({} in term {})", batch.transitions.len(), batch.term)?
            }
            None => write!(f, "empty")?,
        }
        if self.client_id != 0 {
            write!(f, " [client {} seq {}]", self.client_id, self.sequence)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_is_written_in_the_lowest_format_that_has_its_kind() {
        let put = v1::command::Op::Put(v1::KvPut::default());
        assert_eq!(command_format(Some(&put)), 1, "a release reading format 1 applies it");
        let rotate = v1::command::Op::RotateWorkerCa(v1::RotateWorkerCa::default());
        assert_eq!(command_format(Some(&rotate)), 2);
        let remove = v1::command::Op::RemoveWorkers(v1::RemoveWorkers::default());
        assert_eq!(command_format(Some(&remove)), 2);
        let register = v1::RegisterWorker::default();
        assert_eq!(command_format(Some(&v1::command::Op::RegisterWorker(register.clone()))), 1);
        let replacing = v1::RegisterWorker { replaces_worker_id: 3, ..register };
        assert_eq!(command_format(Some(&v1::command::Op::RegisterWorker(replacing))), 2);
        assert_eq!(command_format(None), 1);
        let batch = |commands: Vec<v1::command::Op>| {
            let commands = commands.into_iter().map(|op| v1::Command { op: Some(op), ..Default::default() }).collect();
            v1::command::Op::Batch(v1::CommandBatch { commands })
        };
        assert_eq!(command_format(Some(&batch(vec![put.clone(), remove]))), 3, "format 3 has batches");
        assert_eq!(command_format(Some(&batch(vec![]))), 3);
        assert_eq!(command_format(Some(&batch(vec![batch(vec![put])]))), 3, "a nested batch is still format 3");
        let cordon = v1::command::Op::UpdateWorker(v1::UpdateWorker {
            change: Some(v1::update_worker::Change::Eligible(false)),
            ..Default::default()
        });
        assert_eq!(command_format(Some(&cordon)), 2, "a change format-1 releases would decode as none");
        let drain = v1::command::Op::UpdateWorker(v1::UpdateWorker {
            change: Some(v1::update_worker::Change::State(v1::WorkerState::Draining as i32)),
            ..Default::default()
        });
        assert_eq!(command_format(Some(&drain)), 1, "format 1's drain keeps its meaning");
        for change in
            [v1::update_worker::Change::Drain(v1::StartDrain::default()), v1::update_worker::Change::Undrain(true)]
        {
            let op = v1::command::Op::UpdateWorker(v1::UpdateWorker { change: Some(change), ..Default::default() });
            assert_eq!(command_format(Some(&op)), 2);
        }
        let beat = v1::WorkerTransition { to: v1::WorkerState::Ready as i32, ..Default::default() };
        let ended = v1::WorkerTransition { drain_outcome: v1::DrainOutcome::Drained as i32, ..beat.clone() };
        let batch = |transitions| {
            v1::command::Op::WorkerTransitions(v1::WorkerTransitions { transitions, ..Default::default() })
        };
        assert_eq!(command_format(Some(&batch(vec![beat.clone()]))), 1);
        assert_eq!(command_format(Some(&batch(vec![beat, ended]))), 2, "a format-1 release would skip the outcome");
        assert!(command_format(Some(&rotate)) <= COMMAND_FORMAT_VERSION, "this release applies what it writes");
    }
}
