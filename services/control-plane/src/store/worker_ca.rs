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

/// Hex SHA-256 of the first certificate in `pem`; empty when it does not parse.
pub fn fingerprint(pem: &str) -> String {
    muster_tls::cert_summary(pem, "worker CA certificate", "the worker CA record").map(|s| s.sha256).unwrap_or_default()
}

/// The certificates to trust for worker client certificates at `now_unix`, PEM-concatenated:
/// the current CA, then each retired one that may still have valid workers.
pub fn trust_bundle(ca: &v1::InitWorkerCa, now_unix: i64) -> String {
    let mut bundle = ca.cert_pem.clone();
    for retired in ca.retired.iter().filter(|r| r.trusted_until_unix > now_unix) {
        if !bundle.is_empty() && !bundle.ends_with('\n') {
            bundle.push('\n');
        }
        bundle.push_str(&retired.cert_pem);
    }
    bundle
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
    let workers = txn.open_table(WORKERS).map_err(io_err)?;
    let mut trusted_until = 0;
    for row in workers.iter().map_err(io_err)? {
        let (_, value) = row.map_err(io_err)?;
        let worker: v1::WorkerRecord = decode(value.value(), "worker")?;
        trusted_until = trusted_until.max(worker.cert_expires_at_unix);
    }
    drop(workers);
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
