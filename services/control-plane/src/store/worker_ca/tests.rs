use std::time::Duration;

use muster_tls::CertificateAuthority;

use super::*;
use crate::store::open_database;

const DAY: Duration = Duration::from_secs(24 * 3600);

fn ca(name: &str) -> CertificateAuthority {
    CertificateAuthority::generate(name, DAY).unwrap()
}

fn db() -> (tempfile::TempDir, std::sync::Arc<redb::Database>) {
    let dir = tempfile::tempdir().unwrap();
    let db = open_database(&dir.path().join("fsm.redb")).unwrap();
    (dir, db)
}

fn add_worker(txn: &WriteTransaction, id: u64, expires: i64) {
    let worker = v1::WorkerRecord { worker_id: id, cert_expires_at_unix: expires, ..Default::default() };
    txn.open_table(WORKERS).unwrap().insert(id, worker.encode_to_vec().as_slice()).unwrap();
}

fn raw_ca(txn: &WriteTransaction) -> Vec<u8> {
    txn.open_table(FSM_META).unwrap().get(META_WORKER_CA).unwrap().unwrap().value().to_vec()
}

#[test]
fn the_first_certificate_wins_and_is_stored_with_its_fingerprint() {
    let (a, b) = (ca("a"), ca("b"));
    let (_dir, db) = db();
    let txn = db.begin_write().unwrap();
    let first = init(&txn, 1, &v1::InitWorkerCa { cert_pem: a.cert_pem().into(), ..Default::default() }).unwrap();
    assert!(first.succeeded);
    let stored = first.worker_ca.unwrap();
    assert_eq!(stored.sha256, a.cert_sha256());
    assert!(!stored.key_exposed);
    let lost = init(&txn, 2, &v1::InitWorkerCa { cert_pem: b.cert_pem().into(), ..Default::default() }).unwrap();
    assert!(!lost.succeeded);
    assert_eq!(lost.worker_ca.unwrap().sha256, a.cert_sha256());
}

#[test]
fn a_legacy_entry_applies_without_keeping_its_key() {
    let legacy = ca("legacy");
    let (_dir, db) = db();
    let txn = db.begin_write().unwrap();
    let old =
        v1::InitWorkerCa { cert_pem: legacy.cert_pem().into(), key_pem: legacy.key_pem().into(), ..Default::default() };
    let result = init(&txn, 1, &old).unwrap();
    let stored = result.worker_ca.unwrap();
    assert!(stored.key_pem.is_empty() && stored.key_exposed);
    assert_eq!(stored.sha256, legacy.cert_sha256());
    let raw = raw_ca(&txn);
    assert!(!String::from_utf8_lossy(&raw).contains("PRIVATE KEY"));
}

#[test]
fn retiring_an_exposed_ca_switches_and_trusts_the_old_one_until_its_workers_expire() {
    let (legacy, new) = (ca("legacy"), ca("new"));
    let (_dir, db) = db();
    let txn = db.begin_write().unwrap();
    let old =
        v1::InitWorkerCa { cert_pem: legacy.cert_pem().into(), key_pem: legacy.key_pem().into(), ..Default::default() };
    init(&txn, 1, &old).unwrap();
    add_worker(&txn, 1, 1_000);
    add_worker(&txn, 2, 5_000);

    // Only the CA still in force is retired.
    let wrong = v1::RetireLegacyWorkerCa { cert_pem: new.cert_pem().into(), legacy_sha256: "00".into() };
    assert!(!retire(&txn, 2, &wrong).unwrap().succeeded);

    let command = v1::RetireLegacyWorkerCa { cert_pem: new.cert_pem().into(), legacy_sha256: legacy.cert_sha256() };
    let ca = retire(&txn, 3, &command).unwrap().worker_ca.unwrap();
    assert_eq!(ca.sha256, new.cert_sha256());
    assert!(!ca.key_exposed);
    assert_eq!(ca.retired.len(), 1);
    assert_eq!(ca.retired[0].sha256, legacy.cert_sha256());
    assert_eq!(ca.retired[0].trusted_until_unix, 5_000);

    let both = ca.trust_bundle(4_999);
    assert!(both.starts_with(new.cert_pem()) && both.contains(legacy.cert_pem()));
    assert_eq!(ca.trust_bundle(5_000), new.cert_pem());

    // Applied again (a replay, a second registrar), nothing changes.
    let again = retire(&txn, 4, &command).unwrap();
    assert!(!again.succeeded);
    assert_eq!(again.worker_ca.unwrap(), ca);
}

#[test]
fn a_ca_whose_key_never_was_stored_is_not_retired() {
    let (a, b) = (ca("a"), ca("b"));
    let (_dir, db) = db();
    let txn = db.begin_write().unwrap();
    init(&txn, 1, &v1::InitWorkerCa { cert_pem: a.cert_pem().into(), ..Default::default() }).unwrap();
    let command = v1::RetireLegacyWorkerCa { cert_pem: b.cert_pem().into(), legacy_sha256: a.cert_sha256() };
    let result = retire(&txn, 2, &command).unwrap();
    assert!(!result.succeeded);
    assert_eq!(result.worker_ca.unwrap().sha256, a.cert_sha256());
}

fn step(step: v1::rotate_worker_ca::Step) -> v1::RotateWorkerCa {
    v1::RotateWorkerCa { step: Some(step) }
}

#[test]
fn a_planned_rotation_trusts_the_next_ca_then_promotes_it_then_drops_the_old_one() {
    use v1::rotate_worker_ca::Step;
    let (current, next, other) = (ca("current"), ca("next"), ca("other"));
    let (_dir, db) = db();
    let txn = db.begin_write().unwrap();
    let refused = rotate(&txn, 1, &step(Step::TrustNext(next.cert_pem().into()))).unwrap();
    assert_eq!(refused.refusal, v1::Refusal::NoWorkerCa as i32, "no CA to rotate yet");
    init(&txn, 2, &v1::InitWorkerCa { cert_pem: current.cert_pem().into(), ..Default::default() }).unwrap();
    add_worker(&txn, 7, 5_000);
    add_worker(&txn, 8, 9_000);

    // Out of order: promote before trusting, drop with nothing retired.
    let early = rotate(&txn, 3, &step(Step::PromoteSha256(next.cert_sha256()))).unwrap();
    assert_eq!(early.refusal, v1::Refusal::WorkerCaRotation as i32, "{}", early.error);
    assert!(!rotate(&txn, 4, &step(Step::DropRetired(true))).unwrap().succeeded, "nothing to drop");
    let own = rotate(&txn, 5, &step(Step::TrustNext(current.cert_pem().into()))).unwrap();
    assert_eq!(own.refusal, v1::Refusal::WorkerCaRotation as i32, "the current CA is not a next one");

    let trusted = rotate(&txn, 6, &step(Step::TrustNext(next.cert_pem().into()))).unwrap();
    assert!(trusted.succeeded);
    let ca_now = trusted.worker_ca.unwrap();
    assert_eq!(
        (ca_now.sha256.as_str(), ca_now.next_sha256.as_str()),
        (current.cert_sha256().as_str(), next.cert_sha256().as_str())
    );
    let bundle = ca_now.trust_bundle(0);
    assert!(bundle.contains(current.cert_pem().trim()) && bundle.contains(next.cert_pem().trim()));
    assert!(!rotate(&txn, 7, &step(Step::TrustNext(next.cert_pem().into()))).unwrap().succeeded, "again: no change");
    let second = rotate(&txn, 8, &step(Step::TrustNext(other.cert_pem().into()))).unwrap();
    assert_eq!(second.refusal, v1::Refusal::WorkerCaRotation as i32, "one rotation at a time");
    let wrong = rotate(&txn, 9, &step(Step::PromoteSha256(other.cert_sha256()))).unwrap();
    assert_eq!(wrong.refusal, v1::Refusal::WorkerCaRotation as i32, "only the trusted next CA is promoted");

    let promoted = rotate(&txn, 10, &step(Step::PromoteSha256(next.cert_sha256()))).unwrap();
    assert!(promoted.succeeded);
    let ca_now = promoted.worker_ca.unwrap();
    assert_eq!(ca_now.sha256, next.cert_sha256());
    assert!(ca_now.next_sha256.is_empty() && ca_now.next_cert_pem.is_empty());
    assert_eq!(ca_now.retired.len(), 1);
    assert_eq!(ca_now.retired[0].sha256, current.cert_sha256());
    assert_eq!(ca_now.retired[0].trusted_until_unix, 9_000, "until the last worker certificate expires");
    assert!(ca_now.trust_bundle(8_999).contains(current.cert_pem().trim()));
    assert!(!rotate(&txn, 11, &step(Step::PromoteSha256(next.cert_sha256()))).unwrap().succeeded, "again: no change");

    let dropped = rotate(&txn, 12, &step(Step::DropRetired(true))).unwrap();
    assert!(dropped.succeeded);
    let ca_now = dropped.worker_ca.unwrap();
    assert!(ca_now.retired.is_empty());
    assert_eq!(ca_now.trust_bundle(0).trim(), next.cert_pem().trim());
    // What a node reads back is what the command answered.
    assert_eq!(current_record(&txn), ca_now);
}

fn current_record(txn: &WriteTransaction) -> v1::InitWorkerCa {
    v1::InitWorkerCa::decode(raw_ca(txn).as_slice()).unwrap()
}
