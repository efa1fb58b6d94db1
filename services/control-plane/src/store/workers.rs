//! The FSM's worker-tier commands: registering a worker against a bootstrap token, recording
//! its certificates, and the operator's and the leader's changes to it (the worker CA is in
//! [`super::worker_ca`]).

use std::io;

use muster_proto::v1;
use prost::Message;
use redb::{ReadableTable, WriteTransaction};

use super::db::{FSM_META, META_CLUSTER_ID, META_NEXT_WORKER_ID, TOKENS, WORKERS, decode, io_err};
use super::history::Changes;
use super::worker_drain::{end_drain, start_drain, undrain};

/// Checks the presented token, takes one use of it and stores a new worker under the next id,
/// all in the caller's transaction: either everything happens or nothing does.
pub(crate) fn register(
    txn: &WriteTransaction,
    index: u64,
    command: &v1::RegisterWorker,
    changes: &mut Changes,
) -> io::Result<v1::CommandResult> {
    let mut meta = txn.open_table(FSM_META).map_err(io_err)?;
    let cluster_id =
        meta.get(META_CLUSTER_ID).map_err(io_err)?.map(|v| String::from_utf8_lossy(v.value()).into_owned());
    let mut tokens = txn.open_table(TOKENS).map_err(io_err)?;
    let token = tokens.get(command.token_id.as_str()).map_err(io_err)?.map(|v| decode(v.value(), "token"));
    let mut token: Option<v1::TokenRecord> = token.transpose()?;
    let presented = muster_token::Presented {
        token_id: &command.token_id,
        secret_sha256: &command.secret_sha256,
        cluster_id: &command.token_cluster_id,
    };
    if let Err(err) = muster_token::verify_presented(
        &presented,
        token.as_ref(),
        cluster_id.as_deref().unwrap_or(""),
        command.now_unix,
    ) {
        return Ok(v1::CommandResult::refusing(index, err.reason(), err.to_string()));
    }
    let Some(token) = token.as_mut() else {
        return Ok(v1::CommandResult::refusing(index, v1::Refusal::TokenUnknown, "no such token"));
    };
    let mut workers = txn.open_table(WORKERS).map_err(io_err)?;
    let replaced = match command.replaces_worker_id {
        0 => None,
        id => workers.get(id).map_err(io_err)?.map(|v| decode::<v1::WorkerRecord>(v.value(), "worker")).transpose()?,
    };
    if let Some(old) = replaced.as_ref().filter(|old| old.state == v1::WorkerState::Revoked as i32) {
        let message = format!(
            "worker {} was revoked; a revoked worker never comes back by registering again. Delete the node's \
             identity dir to register it as a new worker",
            old.worker_id
        );
        return Ok(v1::CommandResult::refusing(index, v1::Refusal::WorkerRevoked, message));
    }
    token.remaining_uses -= 1;
    tokens.insert(token.token_id.as_str(), token.encode_to_vec().as_slice()).map_err(io_err)?;

    let worker_id = next_worker_id(&meta)?;
    meta.insert(META_NEXT_WORKER_ID, (worker_id + 1).to_le_bytes().as_slice()).map_err(io_err)?;
    let profile = command.profile.clone().unwrap_or_default();
    let mut labels = token.labels.clone();
    labels.extend(profile.labels.clone());
    let mut worker = v1::WorkerRecord {
        worker_id,
        name: profile.hostname.clone(),
        labels,
        state: v1::WorkerState::Ready as i32,
        profile: Some(profile),
        token_id: token.token_id.clone(),
        registered_at_unix: command.now_unix,
        state_changed_at_unix: command.now_unix,
        // Kept even if the old record was removed since: operators can still follow the node.
        replaces: command.replaces_worker_id,
        ..Default::default()
    };
    put_worker(&mut workers, index, None, &mut worker, changes)?;
    if let Some(mut old) = replaced {
        // The old identity expired and its node now runs as `worker`: it is gone for good.
        let before = old.clone();
        if old.state != v1::WorkerState::Left as i32 {
            old.state = v1::WorkerState::Left as i32;
            old.state_changed_at_unix = command.now_unix;
            old.resume_state = 0;
        }
        old.replaced_by = worker_id;
        put_worker(&mut workers, index, Some(&before), &mut old, changes)?;
    }
    Ok(v1::CommandResult {
        index,
        succeeded: true,
        worker: Some(worker),
        token: Some(token.clone()),
        ..Default::default()
    })
}

/// An operator's drain, undrain, revoke, relabel, cordon or uncordon. Revocation is final.
pub(crate) fn update(
    txn: &WriteTransaction,
    index: u64,
    update: &v1::UpdateWorker,
    changes: &mut Changes,
) -> io::Result<v1::CommandResult> {
    use v1::update_worker::Change;
    let mut workers = txn.open_table(WORKERS).map_err(io_err)?;
    let current = workers.get(update.worker_id).map_err(io_err)?.map(|v| decode(v.value(), "worker"));
    let Some(mut worker): Option<v1::WorkerRecord> = current.transpose()? else {
        return Ok(v1::CommandResult::refusing(
            index,
            v1::Refusal::UnknownWorker,
            format!("no worker {}", update.worker_id),
        ));
    };
    let revoked = worker.state == v1::WorkerState::Revoked as i32;
    let before = worker.clone();
    match &update.change {
        Some(Change::State(state)) => {
            let target = v1::WorkerState::try_from(*state).unwrap_or_default();
            let from = v1::WorkerState::try_from(worker.state).unwrap_or_default();
            let allowed = match target {
                v1::WorkerState::Revoked => true,
                v1::WorkerState::Draining => {
                    matches!(from, v1::WorkerState::Ready | v1::WorkerState::Unreachable | v1::WorkerState::Draining)
                }
                _ => false,
            };
            if !allowed {
                let message = format!(
                    "worker {} is {}; it cannot become {}",
                    worker.worker_id,
                    from.as_str_name(),
                    target.as_str_name()
                );
                return Ok(v1::CommandResult::refusing(index, v1::Refusal::InvalidTransition, message));
            }
            if worker.state != *state {
                worker.state = *state;
                worker.state_changed_at_unix = update.now_unix;
            }
        }
        Some(Change::Labels(change)) if !revoked => {
            for key in &change.remove {
                worker.labels.remove(key);
            }
            worker.labels.extend(change.set.clone());
        }
        Some(Change::Labels(_)) => {
            return Ok(v1::CommandResult::refusing(
                index,
                v1::Refusal::InvalidTransition,
                format!("worker {} is revoked", worker.worker_id),
            ));
        }
        Some(Change::Drain(start)) => {
            if let Err(message) = start_drain(&mut worker, start, update.now_unix) {
                return Ok(v1::CommandResult::refusing(index, v1::Refusal::InvalidTransition, message));
            }
        }
        Some(Change::Undrain(_)) => {
            if let Err(message) = undrain(&mut worker, update.now_unix) {
                return Ok(v1::CommandResult::refusing(index, v1::Refusal::InvalidTransition, message));
            }
        }
        Some(Change::Eligible(eligible)) => {
            let state = v1::WorkerState::try_from(worker.state).unwrap_or_default();
            if matches!(state, v1::WorkerState::Left | v1::WorkerState::Revoked) {
                let message =
                    format!("worker {} is {}: it takes no work either way", worker.worker_id, state.as_str_name());
                return Ok(v1::CommandResult::refusing(index, v1::Refusal::InvalidTransition, message));
            }
            worker.ineligible = !eligible;
        }
        None => return Ok(v1::CommandResult::refusing(index, v1::Refusal::IncompleteCommand, "no change given")),
    }
    put_worker(&mut workers, index, Some(&before), &mut worker, changes)?;
    Ok(v1::CommandResult { index, succeeded: true, worker: Some(worker), ..Default::default() })
}

/// The leader's liveness transitions. A batch proposed in one term and applied under an entry
/// of another is refused whole (the lease view it came from belongs to a deposed leader);
/// each transition applies only if the worker is still in one of its `from` states.
pub(crate) fn transitions(
    txn: &WriteTransaction,
    index: u64,
    entry_term: u64,
    batch: &v1::WorkerTransitions,
    changes: &mut Changes,
) -> io::Result<v1::CommandResult> {
    if batch.term != entry_term {
        let message = format!("transitions of term {} in an entry of term {entry_term}", batch.term);
        return Ok(v1::CommandResult::refusing(index, v1::Refusal::StaleTerm, message));
    }
    let mut workers = txn.open_table(WORKERS).map_err(io_err)?;
    let mut applied = 0u32;
    for transition in &batch.transitions {
        let current = workers.get(transition.worker_id).map_err(io_err)?.map(|v| decode(v.value(), "worker"));
        let Some(mut worker): Option<v1::WorkerRecord> = current.transpose()? else { continue };
        if worker.state == v1::WorkerState::Revoked as i32 {
            continue;
        }
        let before = worker.clone();
        // Retiring the replaced certificate does not depend on the state.
        let retired = !transition.retire_serial.is_empty() && worker.previous_cert_serial == transition.retire_serial;
        if retired {
            worker.previous_cert_serial.clear();
        }
        let moved =
            transition.from.contains(&worker.state) && apply_transition(&mut worker, transition, batch.now_unix);
        // The drain's end does not depend on the transition's states either (its own checks).
        let drain_ended =
            transition.drain_outcome != 0 && end_drain(&mut worker, transition.drain_outcome, batch.now_unix);
        if retired || moved || drain_ended {
            put_worker(&mut workers, index, Some(&before), &mut worker, changes)?;
            applied += 1;
        }
    }
    Ok(v1::CommandResult { index, succeeded: true, transitions_applied: applied, ..Default::default() })
}

/// Applies one liveness transition to `worker`, which is in one of its `from` states; false
/// when the target does not apply from there (nothing changed).
fn apply_transition(worker: &mut v1::WorkerRecord, transition: &v1::WorkerTransition, now_unix: i64) -> bool {
    let from = worker.state;
    let next = match v1::WorkerState::try_from(transition.to).unwrap_or_default() {
        v1::WorkerState::Unreachable if from != v1::WorkerState::Unreachable as i32 => {
            worker.resume_state = from;
            v1::WorkerState::Unreachable as i32
        }
        // Back from expiry: to whatever it expired from (a draining worker stays draining).
        v1::WorkerState::Ready if from == v1::WorkerState::Unreachable as i32 => {
            match std::mem::take(&mut worker.resume_state) {
                draining if draining == v1::WorkerState::Draining as i32 => draining,
                _ => v1::WorkerState::Ready as i32,
            }
        }
        target @ (v1::WorkerState::Ready | v1::WorkerState::Left) => {
            worker.resume_state = 0;
            target as i32
        }
        // A profile update or a retirement keeps the state it was queued in.
        _ if transition.to == from => from,
        _ => return false,
    };
    if next != from {
        worker.state = next;
        worker.state_changed_at_unix = now_unix;
    }
    if let Some(profile) = &transition.profile {
        worker.profile = Some(profile.clone());
    }
    true
}

/// Notes a worker's newly issued certificate.
pub(crate) fn record_cert(
    txn: &WriteTransaction,
    index: u64,
    record: &v1::RecordWorkerCert,
    changes: &mut Changes,
) -> io::Result<v1::CommandResult> {
    let mut workers = txn.open_table(WORKERS).map_err(io_err)?;
    let current = workers.get(record.worker_id).map_err(io_err)?.map(|v| decode(v.value(), "worker"));
    let Some(mut worker): Option<v1::WorkerRecord> = current.transpose()? else {
        return Ok(v1::CommandResult::refusing(
            index,
            v1::Refusal::UnknownWorker,
            format!("no worker {}", record.worker_id),
        ));
    };
    if worker.state == v1::WorkerState::Revoked as i32 {
        return Ok(v1::CommandResult::refusing(
            index,
            v1::Refusal::WorkerRevoked,
            format!("worker {} is revoked", record.worker_id),
        ));
    }
    if record.serial == worker.cert_serial {
        // A retry of a record already applied.
        return Ok(v1::CommandResult { index, succeeded: true, worker: Some(worker), ..Default::default() });
    }
    let before = worker.clone();
    let presented = record.presented_serial.as_str();
    match serial_standing(&worker, presented) {
        SerialStanding::Current => worker.previous_cert_serial = std::mem::take(&mut worker.cert_serial),
        // The worker renews with the certificate it had before its last renewal (it never got
        // the renewed one): that one is dropped, the presented one stays the previous.
        SerialStanding::Previous => {}
        SerialStanding::Unpinned => worker.previous_cert_serial.clear(),
        SerialStanding::Refused(why) => {
            let id = record.worker_id;
            return Ok(v1::CommandResult::refusing(
                index,
                v1::Refusal::UnknownCertificate,
                format!("worker {id}: {why}"),
            ));
        }
    }
    worker.cert_serial = record.serial.clone();
    worker.cert_expires_at_unix = record.expires_at_unix;
    put_worker(&mut workers, index, Some(&before), &mut worker, changes)?;
    Ok(v1::CommandResult { index, succeeded: true, worker: Some(worker), ..Default::default() })
}

/// Whether a worker in `state` is gone (left, revoked or unreachable): its record may be
/// removed; a live one (ready or draining) may not.
pub(crate) fn is_gone(state: i32) -> bool {
    use v1::WorkerState::{Left, Revoked, Unreachable};
    state == Left as i32 || state == Revoked as i32 || state == Unreachable as i32
}

/// Removes the listed workers that are gone and have been since `changed_before_unix`; other
/// ids (live, too recent, unknown) are skipped. `removed` in the result counts them.
pub(crate) fn remove(
    txn: &WriteTransaction,
    index: u64,
    command: &v1::RemoveWorkers,
    changes: &mut Changes,
) -> io::Result<v1::CommandResult> {
    let mut workers = txn.open_table(WORKERS).map_err(io_err)?;
    let mut removed = 0u32;
    for worker_id in &command.worker_ids {
        let current = workers.get(*worker_id).map_err(io_err)?.map(|v| decode(v.value(), "worker"));
        let Some(worker): Option<v1::WorkerRecord> = current.transpose()? else { continue };
        if !is_gone(worker.state) || worker.state_changed_at_unix > command.changed_before_unix {
            continue;
        }
        workers.remove(*worker_id).map_err(io_err)?;
        changes.worker_removed(index, &worker);
        removed += 1;
    }
    Ok(v1::CommandResult { index, succeeded: true, transitions_applied: removed, ..Default::default() })
}

/// Stores `worker` as changed at `revision` (from `before`, none for a new worker) and notes
/// the change for the watch history: every write of a worker record goes through here.
fn put_worker(
    workers: &mut redb::Table<u64, &[u8]>,
    revision: u64,
    before: Option<&v1::WorkerRecord>,
    worker: &mut v1::WorkerRecord,
    changes: &mut Changes,
) -> io::Result<()> {
    worker.revision = revision;
    workers.insert(worker.worker_id, worker.encode_to_vec().as_slice()).map_err(io_err)?;
    changes.worker(revision, before, worker);
    Ok(())
}

/// Where a certificate serial presented to renew stands against a worker's record.
enum SerialStanding {
    Current,
    Previous,
    /// No certificate is recorded for the worker (registration, or a record that never got one):
    /// nothing to check against.
    Unpinned,
    Refused(String),
}

fn serial_standing(worker: &v1::WorkerRecord, presented: &str) -> SerialStanding {
    if worker.cert_serial.is_empty() {
        return SerialStanding::Unpinned;
    }
    if presented.is_empty() {
        return SerialStanding::Refused(
            "it already has a certificate; a new one is issued only by Renew with the current one".into(),
        );
    }
    if presented == worker.cert_serial {
        SerialStanding::Current
    } else if presented == worker.previous_cert_serial {
        SerialStanding::Previous
    } else {
        SerialStanding::Refused(format!(
            "certificate serial {presented} is not its current certificate (replaced, or never issued by this \
             cluster)"
        ))
    }
}

/// Worker ids come from the log and are never reused; the first is 1.
fn next_worker_id(meta: &redb::Table<&str, &[u8]>) -> io::Result<u64> {
    let stored = meta.get(META_NEXT_WORKER_ID).map_err(io_err)?;
    Ok(stored.and_then(|v| v.value().try_into().ok().map(u64::from_le_bytes)).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fsm::apply_command;
    use crate::store::{FsmReader, open_database};

    const NOW: i64 = 1_800_000_000;

    fn setup(uses: u32) -> (tempfile::TempDir, std::sync::Arc<redb::Database>, v1::BootstrapToken) {
        let dir = tempfile::tempdir().unwrap();
        let db = open_database(&dir.path().join("db")).unwrap();
        let spec = muster_token::TokenSpec {
            ttl_seconds: 60,
            uses,
            labels: [("rack".to_string(), "r1".to_string())].into(),
            ..Default::default()
        };
        let issued = muster_token::generate(&spec, "c1", &[], NOW);
        let txn = db.begin_write().unwrap();
        txn.open_table(FSM_META).unwrap().insert(META_CLUSTER_ID, b"c1".as_slice()).unwrap();
        let create = v1::Command {
            op: Some(v1::command::Op::CreateToken(v1::CreateToken { record: Some(issued.record) })),
            ..Default::default()
        };
        apply_command(&txn, 1, 1, &create, &mut Changes::default()).unwrap();
        txn.commit().unwrap();
        (dir, db, muster_token::decode(&issued.token).unwrap())
    }

    fn register_with(db: &redb::Database, index: u64, token: &v1::BootstrapToken, now: i64) -> v1::CommandResult {
        register_replacing(db, index, token, now, 0)
    }

    fn register_replacing(
        db: &redb::Database,
        index: u64,
        token: &v1::BootstrapToken,
        now: i64,
        replaces_worker_id: u64,
    ) -> v1::CommandResult {
        let command = v1::RegisterWorker {
            replaces_worker_id,
            token_id: token.token_id.clone(),
            secret_sha256: muster_token::secret_hash(token),
            token_cluster_id: token.cluster_id.clone(),
            now_unix: now,
            profile: Some(v1::WorkerProfile {
                hostname: format!("host-{index}"),
                labels: [("zone".to_string(), "a".to_string())].into(),
                ..Default::default()
            }),
        };
        let txn = db.begin_write().unwrap();
        let result = register(&txn, index, &command, &mut Changes::default()).unwrap();
        txn.commit().unwrap();
        result
    }

    #[test]
    fn a_token_registers_as_many_workers_as_it_has_uses_with_fresh_ids() {
        let (_dir, db, token) = setup(2);
        let first = register_with(&db, 2, &token, NOW);
        let second = register_with(&db, 3, &token, NOW);
        let third = register_with(&db, 4, &token, NOW);
        let ids: Vec<u64> = [&first, &second].iter().map(|r| r.worker.as_ref().unwrap().worker_id).collect();
        assert_eq!(ids, [1, 2]);
        let worker = first.worker.unwrap();
        assert_eq!(worker.labels.get("rack").map(String::as_str), Some("r1"), "token labels apply");
        assert_eq!(worker.labels.get("zone").map(String::as_str), Some("a"), "the worker's own labels apply");
        assert_eq!(worker.state, v1::WorkerState::Ready as i32);
        assert_eq!((third.succeeded, third.refused()), (false, Some(v1::Refusal::TokenUsedUp)));
        assert_eq!(FsmReader::new(db).token(&token.token_id).unwrap().unwrap().remaining_uses, 0);
    }

    #[test]
    fn refusals_consume_nothing() {
        let (_dir, db, token) = setup(1);
        assert_eq!(register_with(&db, 2, &token, NOW + 60).refused(), Some(v1::Refusal::TokenExpired));
        let mut forged = token.clone();
        forged.secret[0] ^= 1;
        assert_eq!(register_with(&db, 3, &forged, NOW).refused(), Some(v1::Refusal::TokenForged));
        let mut elsewhere = token.clone();
        elsewhere.cluster_id = "c2".into();
        assert_eq!(register_with(&db, 4, &elsewhere, NOW).refused(), Some(v1::Refusal::TokenWrongCluster));
        let result = register_with(&db, 5, &token, NOW);
        assert!(result.succeeded, "{result:?}");
        assert_eq!(result.worker.unwrap().worker_id, 1, "refused attempts allocated no id");
    }

    fn change(db: &redb::Database, index: u64, worker_id: u64, change: v1::update_worker::Change) -> v1::CommandResult {
        let txn = db.begin_write().unwrap();
        let update_worker = v1::UpdateWorker { worker_id, change: Some(change), now_unix: NOW };
        let result = update(&txn, index, &update_worker, &mut Changes::default()).unwrap();
        txn.commit().unwrap();
        result
    }

    fn change_state(db: &redb::Database, index: u64, worker_id: u64, state: v1::WorkerState) -> v1::CommandResult {
        change(db, index, worker_id, v1::update_worker::Change::State(state as i32))
    }

    #[test]
    fn drain_then_revoke_and_revocation_is_final() {
        let (_dir, db, token) = setup(1);
        let id = register_with(&db, 2, &token, NOW).worker.unwrap().worker_id;
        assert!(change_state(&db, 3, id, v1::WorkerState::Draining).succeeded);
        assert!(change_state(&db, 4, id, v1::WorkerState::Revoked).succeeded);
        let back = change_state(&db, 5, id, v1::WorkerState::Draining);
        assert_eq!((back.succeeded, back.refused()), (false, Some(v1::Refusal::InvalidTransition)));
        assert!(!change_state(&db, 6, id, v1::WorkerState::Ready).succeeded, "operators cannot mark a worker ready");
        assert_eq!(change_state(&db, 7, 99, v1::WorkerState::Draining).refused(), Some(v1::Refusal::UnknownWorker));

        let txn = db.begin_write().unwrap();
        let labels = v1::LabelChange { set: [("a".to_string(), "1".to_string())].into(), remove: vec![] };
        let relabel =
            v1::UpdateWorker { worker_id: id, change: Some(v1::update_worker::Change::Labels(labels)), now_unix: NOW };
        assert!(
            !update(&txn, 8, &relabel, &mut Changes::default()).unwrap().succeeded,
            "a revoked worker keeps its labels"
        );
    }

    fn set_eligible(db: &redb::Database, index: u64, worker_id: u64, eligible: bool) -> v1::CommandResult {
        change(db, index, worker_id, v1::update_worker::Change::Eligible(eligible))
    }

    #[test]
    fn cordoning_leaves_liveness_alone_and_a_gone_worker_cannot_be_cordoned() {
        let (_dir, db, token) = setup(1);
        let id = register_with(&db, 2, &token, NOW).worker.unwrap().worker_id;
        let cordoned = set_eligible(&db, 3, id, false).worker.unwrap();
        assert!(cordoned.ineligible);
        assert_eq!(cordoned.state, v1::WorkerState::Ready as i32, "still Ready: liveness comes from leases");
        assert_eq!(cordoned.revision, 3);
        let drained = change_state(&db, 4, id, v1::WorkerState::Draining).worker.unwrap();
        assert!(drained.ineligible, "a drain keeps the cordon");
        assert!(!set_eligible(&db, 5, id, true).worker.unwrap().ineligible);
        assert!(change_state(&db, 6, id, v1::WorkerState::Revoked).succeeded);
        assert_eq!(set_eligible(&db, 7, id, true).refused(), Some(v1::Refusal::InvalidTransition));
        assert_eq!(set_eligible(&db, 8, 99, false).refused(), Some(v1::Refusal::UnknownWorker));
    }

    #[test]
    fn labels_are_set_and_removed() {
        let (_dir, db, token) = setup(1);
        let id = register_with(&db, 2, &token, NOW).worker.unwrap().worker_id;
        let txn = db.begin_write().unwrap();
        let labels =
            v1::LabelChange { set: [("tier".to_string(), "gpu".to_string())].into(), remove: vec!["rack".into()] };
        let relabel =
            v1::UpdateWorker { worker_id: id, change: Some(v1::update_worker::Change::Labels(labels)), now_unix: NOW };
        let worker = update(&txn, 3, &relabel, &mut Changes::default()).unwrap().worker.unwrap();
        assert_eq!(worker.labels.get("tier").map(String::as_str), Some("gpu"));
        assert!(!worker.labels.contains_key("rack"));
        assert_eq!(worker.labels.get("zone").map(String::as_str), Some("a"));
    }

    fn transition(
        db: &redb::Database,
        index: u64,
        term: u64,
        worker_id: u64,
        to: v1::WorkerState,
    ) -> v1::CommandResult {
        use v1::WorkerState::{Draining, Left, Ready, Unreachable};
        let from = match to {
            Unreachable => vec![Ready as i32, Draining as i32],
            Left => vec![Ready as i32, Unreachable as i32, Draining as i32],
            _ => vec![Unreachable as i32, Left as i32],
        };
        let transition = v1::WorkerTransition { worker_id, to: to as i32, from, ..Default::default() };
        apply_transitions(db, index, term, vec![transition])
    }

    fn apply_transitions(
        db: &redb::Database,
        index: u64,
        term: u64,
        transitions_: Vec<v1::WorkerTransition>,
    ) -> v1::CommandResult {
        let batch = v1::WorkerTransitions { term, now_unix: NOW, transitions: transitions_ };
        let txn = db.begin_write().unwrap();
        let result = transitions(&txn, index, 3, &batch, &mut Changes::default()).unwrap();
        txn.commit().unwrap();
        result
    }

    fn record(db: &redb::Database, index: u64, worker_id: u64, serial: &str, presented: &str) -> v1::CommandResult {
        let command = v1::RecordWorkerCert {
            worker_id,
            serial: serial.into(),
            expires_at_unix: NOW + 3600,
            presented_serial: presented.into(),
        };
        let txn = db.begin_write().unwrap();
        let result = record_cert(&txn, index, &command, &mut Changes::default()).unwrap();
        txn.commit().unwrap();
        result
    }

    fn serials_of(db: &std::sync::Arc<redb::Database>, worker_id: u64) -> (String, String) {
        let worker = FsmReader::new(db.clone()).worker(worker_id).unwrap().unwrap();
        (worker.cert_serial, worker.previous_cert_serial)
    }

    #[test]
    fn a_certificate_is_recorded_only_against_the_current_or_previous_one() {
        let (_dir, db, token) = setup(1);
        register_with(&db, 2, &token, NOW);
        let pair = |current: &str, previous: &str| (current.to_string(), previous.to_string());
        assert!(record(&db, 3, 1, "0a", "").succeeded, "registration");
        assert_eq!(serials_of(&db, 1), pair("0a", ""));
        // Another registration-style record would replace the certificate without showing it.
        assert_eq!(record(&db, 4, 1, "ee", "").refused(), Some(v1::Refusal::UnknownCertificate));
        // A certificate the cluster never issued cannot be renewed into a recorded one.
        let minted = record(&db, 5, 1, "ee", "ff");
        assert_eq!(minted.refused(), Some(v1::Refusal::UnknownCertificate));
        assert!(minted.error.contains("certificate serial ff is not its current certificate"), "{}", minted.error);
        assert_eq!(serials_of(&db, 1), pair("0a", ""));

        assert!(record(&db, 6, 1, "0b", "0a").succeeded, "renewal");
        assert_eq!(serials_of(&db, 1), pair("0b", "0a"));
        assert!(record(&db, 7, 1, "0b", "0a").succeeded, "a retried record changes nothing");
        assert_eq!(serials_of(&db, 1), pair("0b", "0a"));
        // The worker never got 0b and renews with 0a again: 0b is dropped.
        assert!(record(&db, 8, 1, "0c", "0a").succeeded);
        assert_eq!(serials_of(&db, 1), pair("0c", "0a"));
        // Renewed twice over: 0b is nobody's now.
        assert_eq!(record(&db, 9, 1, "0d", "0b").refused(), Some(v1::Refusal::UnknownCertificate));
    }

    #[test]
    fn the_leader_retires_the_replaced_certificate_whatever_the_state() {
        use v1::WorkerState::{Draining, Ready};
        let (_dir, db, token) = setup(2);
        register_with(&db, 2, &token, NOW);
        register_with(&db, 3, &token, NOW);
        for (index, worker) in [(4, 1), (5, 2)] {
            record(&db, index, worker, "0a", "");
            record(&db, index + 10, worker, "0b", "0a");
        }
        change_state(&db, 20, 2, Draining);
        let retire = |worker_id, state: v1::WorkerState, serial: &str| v1::WorkerTransition {
            worker_id,
            to: state as i32,
            from: vec![state as i32],
            retire_serial: serial.into(),
            ..Default::default()
        };
        // A stale state (worker 2 is draining now) still retires; a serial that is not the
        // previous one retires nothing.
        let result = apply_transitions(&db, 21, 3, vec![retire(1, Ready, "0a"), retire(2, Ready, "0a")]);
        assert_eq!(result.transitions_applied, 2);
        assert_eq!(serials_of(&db, 1), ("0b".to_string(), String::new()));
        assert_eq!(serials_of(&db, 2), ("0b".to_string(), String::new()));
        assert_eq!((state_of(&db, 1), state_of(&db, 2)), (Ready, Draining));
        assert_eq!(apply_transitions(&db, 22, 3, vec![retire(1, Ready, "0b")]).transitions_applied, 1);
        assert_eq!(serials_of(&db, 1), ("0b".to_string(), String::new()));
    }

    fn state_of(db: &std::sync::Arc<redb::Database>, worker_id: u64) -> v1::WorkerState {
        let worker = FsmReader::new(db.clone()).worker(worker_id).unwrap().unwrap();
        v1::WorkerState::try_from(worker.state).unwrap()
    }

    #[test]
    fn liveness_transitions_expire_and_restore_including_draining() {
        use v1::WorkerState::{Draining, Left, Ready, Revoked, Unreachable};
        let (_dir, db, token) = setup(3);
        for index in 2..5 {
            register_with(&db, index, &token, NOW);
        }
        assert_eq!(transition(&db, 10, 3, 1, Unreachable).transitions_applied, 1);
        assert_eq!(state_of(&db, 1), Unreachable);
        // Expiring twice does nothing: the worker is no longer in a leased state.
        assert_eq!(transition(&db, 11, 3, 1, Unreachable).transitions_applied, 0);
        transition(&db, 12, 3, 1, Ready);
        assert_eq!(state_of(&db, 1), Ready);

        // A draining worker that expires comes back draining.
        change_state(&db, 13, 2, Draining);
        transition(&db, 14, 3, 2, Unreachable);
        transition(&db, 15, 3, 2, Ready);
        assert_eq!(state_of(&db, 2), Draining);

        // Left, and back on the next beat; a revoked worker never changes.
        transition(&db, 16, 3, 3, Left);
        assert_eq!(state_of(&db, 3), Left);
        transition(&db, 17, 3, 3, Ready);
        assert_eq!(state_of(&db, 3), Ready);
        change_state(&db, 18, 3, Revoked);
        assert_eq!(transition(&db, 19, 3, 3, Unreachable).transitions_applied, 0);
        assert_eq!(state_of(&db, 3), Revoked);
    }

    #[test]
    fn transitions_from_another_term_are_refused() {
        let (_dir, db, token) = setup(1);
        register_with(&db, 2, &token, NOW);
        let result = transition(&db, 3, 2, 1, v1::WorkerState::Unreachable);
        assert_eq!(result.refused(), Some(v1::Refusal::StaleTerm));
        assert_eq!(state_of(&db, 1), v1::WorkerState::Ready);
    }

    #[test]
    fn only_gone_workers_past_the_cutoff_are_removed_and_ids_are_never_reused() {
        let (_dir, db, token) = setup(3);
        let live = register_with(&db, 2, &token, NOW).worker.unwrap().worker_id;
        let gone = register_with(&db, 3, &token, NOW).worker.unwrap().worker_id;
        transition(&db, 4, 3, gone, v1::WorkerState::Left);
        let remove = |index, changed_before_unix| {
            let txn = db.begin_write().unwrap();
            let command = v1::RemoveWorkers { worker_ids: vec![gone, live, 99], changed_before_unix };
            let mut changes = Changes::default();
            let result = remove(&txn, index, &command, &mut changes).unwrap();
            txn.commit().unwrap();
            (result.transitions_applied, changes.workers)
        };
        let (removed, events) = remove(5, NOW - 1);
        assert_eq!((removed, events.len()), (0, 0), "left after the cut-off: kept");
        let (removed, events) = remove(6, NOW);
        assert_eq!(removed, 1, "the live worker and the unknown id are skipped");
        assert_eq!(events[0].r#type, v1::WorkerEventType::Removed as i32);
        assert_eq!(
            events[0].worker.as_ref().map(|w| (w.worker_id, w.state)),
            Some((gone, v1::WorkerState::Left as i32))
        );
        let reader = FsmReader::new(db.clone());
        assert!(reader.worker(gone).unwrap().is_none() && reader.worker(live).unwrap().is_some());
        let next = register_with(&db, 7, &token, NOW).worker.unwrap().worker_id;
        assert_eq!(next, gone + 1, "the removed (highest) id is not handed out again");
    }

    #[test]
    fn a_replacement_links_both_workers_and_a_revoked_worker_is_never_replaced() {
        let (_dir, db, token) = setup(4);
        let old = register_with(&db, 2, &token, NOW).worker.unwrap().worker_id;
        transition(&db, 3, 3, old, v1::WorkerState::Unreachable);
        let new = register_replacing(&db, 4, &token, NOW, old).worker.unwrap();
        assert_eq!(new.replaces, old);
        let reader = FsmReader::new(db.clone());
        let old_record = reader.worker(old).unwrap().unwrap();
        assert_eq!((old_record.state, old_record.replaced_by), (v1::WorkerState::Left as i32, new.worker_id));

        let revoked = register_with(&db, 5, &token, NOW).worker.unwrap().worker_id;
        assert!(change_state(&db, 6, revoked, v1::WorkerState::Revoked).succeeded);
        let refused = register_replacing(&db, 7, &token, NOW, revoked);
        assert_eq!(refused.refused(), Some(v1::Refusal::WorkerRevoked), "{}", refused.error);
        assert!(refused.error.contains("never comes back"), "{}", refused.error);
        assert_eq!(reader.token(&token.token_id).unwrap().unwrap().remaining_uses, 1, "the refusal took no use");
        let removed = register_replacing(&db, 8, &token, NOW, 999).worker.unwrap();
        assert_eq!(removed.replaces, 999, "a removed worker is still named");
    }
}
