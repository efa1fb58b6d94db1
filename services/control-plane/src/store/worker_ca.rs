//! The cluster's worker CA as the FSM holds it: a certificate and its fingerprint, never a key.
//!
//! Registrars hold the worker CA key in a file; the FSM only records which certificate they
//! agreed on, so a copy of the log or of a snapshot is not a copy of the key. Older releases
//! stored the key here: such entries and snapshots still apply, the key is dropped on the way
//! in ([`stored`]) and the CA is marked `key_exposed`, and the first registrar that brings its
//! own CA retires it ([`retire`]). The retired certificate stays trusted, not used, until
//! the worker certificates it signed have expired.

use std::io;

use muster_proto::v1;
use prost::Message;
use redb::{ReadableTable, WriteTransaction};

use super::db::{FSM_META, META_WORKER_CA, WORKERS, decode, io_err};

/// `ca` as the state machine may store it: no key (one that was there marks the CA
/// `key_exposed`) and its fingerprint filled in. Deterministic, so every replica agrees.
pub(crate) fn stored(ca: &v1::InitWorkerCa) -> v1::InitWorkerCa {
    let mut out = ca.clone();
    if !out.key_pem.is_empty() {
        out.key_pem.clear();
        out.key_exposed = true;
    }
    if out.sha256.is_empty() {
        out.sha256 = fingerprint(&out.cert_pem);
    }
    out
}

/// Drops a legacy key from a log entry, marking its CA `key_exposed` so it applies exactly as
/// before; true when there was one. Used on every append and by the start-up scrub.
pub(crate) fn strip_entry(entry: &mut v1::Entry) -> bool {
    let Some(v1::entry::Payload::Normal(command)) = &mut entry.payload else { return false };
    match &mut command.op {
        Some(v1::command::Op::InitWorkerCa(init)) if !init.key_pem.is_empty() => {
            init.key_pem.clear();
            init.key_exposed = true;
            true
        }
        _ => false,
    }
}

/// Refuses a worker CA certificate `field` of a request that is too large to store in Raft or
/// is not a PEM certificate; returns its fingerprint.
pub fn check_cert_pem(field: &str, pem: &str) -> Result<String, String> {
    let limit = muster_proto::limits::MAX_CA_CERT_PEM_BYTES;
    if pem.len() > limit {
        return Err(format!("{field}: {} bytes; the limit is {limit} (max_ca_cert_pem_bytes)", pem.len()));
    }
    let sha256 = fingerprint(pem);
    if sha256.is_empty() {
        return Err(format!("{field}: not a PEM certificate"));
    }
    Ok(sha256)
}

/// Hex SHA-256 of the first certificate in `pem`; empty when it does not parse.
pub fn fingerprint(pem: &str) -> String {
    muster_tls::cert_summary(pem, "worker CA certificate", "the worker CA record").map(|s| s.sha256).unwrap_or_default()
}

/// What a registrar's `EnsureWorkerCa` with `proposed_pem` should do, given the CA recorded.
pub fn plan(existing: Option<&v1::InitWorkerCa>, proposed_pem: &str) -> Option<v1::command::Op> {
    let Some(existing) = existing else {
        return Some(v1::command::Op::InitWorkerCa(v1::InitWorkerCa {
            cert_pem: proposed_pem.to_owned(),
            ..Default::default()
        }));
    };
    if existing.key_exposed && existing.sha256 != fingerprint(proposed_pem) {
        return Some(v1::command::Op::RetireLegacyWorkerCa(v1::RetireLegacyWorkerCa {
            cert_pem: proposed_pem.to_owned(),
            legacy_sha256: existing.sha256.clone(),
        }));
    }
    // The same CA, or a different one the registrar must refuse: answer with what is there.
    None
}

fn current(txn: &WriteTransaction) -> io::Result<Option<v1::InitWorkerCa>> {
    let meta = txn.open_table(FSM_META).map_err(io_err)?;
    let existing = meta.get(META_WORKER_CA).map_err(io_err)?.map(|v| decode(v.value(), "worker CA"));
    Ok(existing.transpose()?.map(|ca| stored(&ca)))
}

fn put(txn: &WriteTransaction, ca: &v1::InitWorkerCa) -> io::Result<()> {
    let mut meta = txn.open_table(FSM_META).map_err(io_err)?;
    meta.insert(META_WORKER_CA, ca.encode_to_vec().as_slice()).map_err(io_err)?;
    Ok(())
}

fn answer(index: u64, succeeded: bool, ca: v1::InitWorkerCa) -> v1::CommandResult {
    v1::CommandResult { index, succeeded, worker_ca: Some(ca), ..Default::default() }
}

/// Records the worker CA certificate unless one exists; answers with the CA in force.
pub(crate) fn init(txn: &WriteTransaction, index: u64, init: &v1::InitWorkerCa) -> io::Result<v1::CommandResult> {
    if let Some(existing) = current(txn)? {
        return Ok(answer(index, false, existing));
    }
    if init.cert_pem.is_empty() {
        return Ok(v1::CommandResult::refusing(
            index,
            v1::Refusal::IncompleteCommand,
            "a worker CA needs a certificate",
        ));
    }
    let ca = v1::InitWorkerCa {
        cert_pem: init.cert_pem.clone(),
        key_pem: init.key_pem.clone(),
        key_exposed: init.key_exposed,
        ..Default::default()
    };
    let ca = stored(&ca);
    put(txn, &ca)?;
    Ok(answer(index, true, ca))
}

/// The latest expiry of the worker certificates the cluster has recorded.
fn latest_worker_cert_expiry(txn: &WriteTransaction) -> io::Result<i64> {
    let workers = txn.open_table(WORKERS).map_err(io_err)?;
    let mut latest = 0;
    for row in workers.iter().map_err(io_err)? {
        let (_, value) = row.map_err(io_err)?;
        let worker: v1::WorkerRecord = decode(value.value(), "worker")?;
        latest = latest.max(worker.cert_expires_at_unix);
    }
    Ok(latest)
}

fn out_of_order(index: u64, why: String) -> v1::CommandResult {
    v1::CommandResult::refusing(index, v1::Refusal::WorkerCaRotation, &why)
}

/// One step of a planned rotation: trust the next CA, promote it, or drop the retired ones.
/// Each step checks the state the previous one left; a step already taken answers with the
/// state, not succeeded (so a retried call is harmless).
pub(crate) fn rotate(txn: &WriteTransaction, index: u64, rotate: &v1::RotateWorkerCa) -> io::Result<v1::CommandResult> {
    use v1::rotate_worker_ca::Step;
    let Some(mut ca) = current(txn)? else {
        return Ok(v1::CommandResult::refusing(index, v1::Refusal::NoWorkerCa, "the cluster has no worker CA yet"));
    };
    match &rotate.step {
        Some(Step::TrustNext(pem)) => {
            let sha256 = fingerprint(pem);
            if sha256.is_empty() {
                return Ok(v1::CommandResult::refusing(
                    index,
                    v1::Refusal::IncompleteCommand,
                    "the next worker CA is not a PEM certificate",
                ));
            }
            if ca.next_sha256 == sha256 {
                return Ok(answer(index, false, ca));
            }
            if !ca.next_sha256.is_empty() {
                return Ok(out_of_order(
                    index,
                    format!("a rotation to worker CA {} is in progress; promote it first", ca.next_sha256),
                ));
            }
            if sha256 == ca.sha256 || ca.retired.iter().any(|r| r.sha256 == sha256) {
                return Ok(out_of_order(index, format!("worker CA {sha256} is the current or a retired one")));
            }
            ca.next_cert_pem = pem.clone();
            ca.next_sha256 = sha256;
        }
        Some(Step::PromoteSha256(sha256)) => {
            if ca.sha256 == *sha256 && ca.next_sha256.is_empty() {
                return Ok(answer(index, false, ca));
            }
            if ca.next_sha256 != *sha256 {
                let why = if ca.next_sha256.is_empty() {
                    format!("worker CA {sha256} is not trusted as the next one; trust it first")
                } else {
                    format!("the next worker CA is {}, not {sha256}", ca.next_sha256)
                };
                return Ok(out_of_order(index, why));
            }
            let trusted_until_unix = latest_worker_cert_expiry(txn)?;
            ca.retired.push(v1::RetiredWorkerCa {
                cert_pem: std::mem::take(&mut ca.cert_pem),
                sha256: std::mem::take(&mut ca.sha256),
                trusted_until_unix,
            });
            ca.cert_pem = std::mem::take(&mut ca.next_cert_pem);
            ca.sha256 = std::mem::take(&mut ca.next_sha256);
        }
        Some(Step::DropRetired(_)) => {
            if ca.retired.is_empty() {
                return Ok(answer(index, false, ca));
            }
            ca.retired.clear();
        }
        None => {
            return Ok(v1::CommandResult::refusing(
                index,
                v1::Refusal::IncompleteCommand,
                "a rotation step is required",
            ));
        }
    }
    put(txn, &ca)?;
    Ok(answer(index, true, ca))
}

/// Switches to the proposed CA when the current one is still `legacy_sha256` and its key was
/// exposed; the old certificate stays trusted until the latest recorded worker certificate
/// expires (every worker certificate so far was signed by it).
pub(crate) fn retire(
    txn: &WriteTransaction,
    index: u64,
    retire: &v1::RetireLegacyWorkerCa,
) -> io::Result<v1::CommandResult> {
    let Some(existing) = current(txn)? else {
        return Ok(v1::CommandResult::refusing(
            index,
            v1::Refusal::NoWorkerCa,
            "the cluster has no worker CA to retire",
        ));
    };
    if !existing.key_exposed || existing.sha256 != retire.legacy_sha256 || retire.cert_pem.is_empty() {
        return Ok(answer(index, false, existing));
    }
    let trusted_until = latest_worker_cert_expiry(txn)?;
    let mut retired = existing.retired.clone();
    retired.push(v1::RetiredWorkerCa {
        cert_pem: existing.cert_pem.clone(),
        sha256: existing.sha256.clone(),
        trusted_until_unix: trusted_until,
    });
    let ca = v1::InitWorkerCa {
        cert_pem: retire.cert_pem.clone(),
        sha256: fingerprint(&retire.cert_pem),
        retired,
        ..Default::default()
    };
    put(txn, &ca)?;
    Ok(answer(index, true, ca))
}

#[cfg(test)]
mod tests;
