use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use muster_proto::v1;
use muster_proto::v1::WorkerState;

use super::{FleetRead, LeaseTable, gateways_epoch};

const GRACE: Duration = Duration::from_secs(10);
const FAILOVER: Duration = Duration::from_secs(300);

fn fleet(states: &[(u64, WorkerState)]) -> FleetRead {
    let states: HashMap<u64, i32> = states.iter().map(|(id, state)| (*id, *state as i32)).collect();
    FleetRead { states, ..Default::default() }
}

fn beat(worker_id: u64, ttl_secs: u32) -> v1::WorkerBeat {
    v1::WorkerBeat { worker_id, ttl_ms: ttl_secs * 1000, ..Default::default() }
}

fn leading(now: Instant, states: &[(u64, WorkerState)]) -> LeaseTable {
    let mut table = LeaseTable::default();
    table.begin_term(7, now, fleet(states), FAILOVER);
    table
}

#[test]
fn a_new_term_gives_every_leased_worker_the_failover_window() {
    let now = Instant::now();
    let table = leading(now, &[(1, WorkerState::Ready), (2, WorkerState::Draining), (3, WorkerState::Left)]);
    assert_eq!(table.lease(1).unwrap().deadline, now + FAILOVER);
    assert_eq!(table.lease(2).unwrap().deadline, now + FAILOVER);
    assert!(table.lease(3).is_none());
    assert!(table.expired(now + FAILOVER - Duration::from_millis(1)).is_empty());
    assert_eq!(table.expired(now + FAILOVER + Duration::from_millis(1)), vec![1, 2]);
    assert_eq!(table.worker_count(), 2);
}

#[test]
fn a_beat_sets_the_deadline_to_beat_plus_ttl_plus_grace() {
    // A worker registered in this term (no failover window of its own).
    let now = Instant::now();
    let mut table = leading(now, &[]);
    table.refresh_fleet(fleet(&[(1, WorkerState::Ready)]), now, GRACE);
    let gateway: Arc<str> = Arc::from("gw-a");
    assert!(table.record_beat(&gateway, &beat(1, 20), now, GRACE).is_none());
    let lease = table.lease(1).unwrap();
    assert_eq!(lease.deadline, now + Duration::from_secs(30));
    assert_eq!(&*lease.gateway_id, "gw-a");
    assert!(table.expired(now + Duration::from_secs(30)).is_empty());
    assert_eq!(table.expired(now + Duration::from_secs(31)), vec![1]);
    // An older beat arriving late (another gateway's batch) does not shorten the lease.
    table.record_beat(&gateway, &beat(1, 5), now - Duration::from_secs(1), GRACE);
    assert_eq!(table.lease(1).unwrap().deadline, now + Duration::from_secs(30));
}

#[test]
fn an_inherited_worker_keeps_its_lease_to_the_end_of_the_failover_window() {
    let now = Instant::now();
    let mut table = leading(now, &[(1, WorkerState::Ready)]);
    let gateway: Arc<str> = Arc::from("gw-a");
    // It beats once early in the window, then its next beat is held up past TTL + grace.
    table.record_beat(&gateway, &beat(1, 20), now + Duration::from_secs(1), GRACE);
    assert_eq!(table.lease(1).unwrap().deadline, now + FAILOVER, "not shortened inside the window");
    assert!(table.expired(now + Duration::from_secs(60)).is_empty());
    // Late in the window a beat extends it past the window as usual.
    let late = now + FAILOVER - Duration::from_secs(5);
    table.record_beat(&gateway, &beat(1, 20), late, GRACE);
    assert_eq!(table.lease(1).unwrap().deadline, late + Duration::from_secs(30));
    // After the window, beats set the deadline as they always do.
    let after = now + FAILOVER + Duration::from_secs(60);
    table.record_beat(&gateway, &beat(1, 20), after, GRACE);
    assert_eq!(table.lease(1).unwrap().deadline, after + Duration::from_secs(30));
    assert_eq!(table.expired(after + Duration::from_secs(31)), vec![1]);
}

#[test]
fn plain_beats_queue_nothing_and_state_changes_are_queued_once() {
    let now = Instant::now();
    let mut table = leading(now, &[(1, WorkerState::Ready), (2, WorkerState::Unreachable), (3, WorkerState::Left)]);
    let gateway: Arc<str> = Arc::from("gw");
    for _ in 0..3 {
        table.record_beat(&gateway, &beat(1, 10), now, GRACE);
        table.record_beat(&gateway, &beat(2, 10), now, GRACE);
        table.record_beat(&gateway, &beat(3, 10), now, GRACE);
    }
    let pending = table.take_pending();
    let summary: Vec<(u64, i32)> = pending.iter().map(|t| (t.worker_id, t.to)).collect();
    assert_eq!(summary, vec![(2, WorkerState::Ready as i32), (3, WorkerState::Ready as i32)]);
    assert!(table.take_pending().is_empty());
}

#[test]
fn a_left_report_drops_the_lease_and_queues_left() {
    let now = Instant::now();
    let mut table = leading(now, &[(1, WorkerState::Ready)]);
    let gateway: Arc<str> = Arc::from("gw");
    let left = v1::WorkerBeat { reported_state: WorkerState::Left as i32, ..beat(1, 10) };
    assert!(table.record_beat(&gateway, &left, now, GRACE).is_none());
    assert!(table.lease(1).is_none());
    let pending = table.take_pending();
    assert_eq!(pending[0].to, WorkerState::Left as i32);
    assert!(table.expired(now + FAILOVER * 2).is_empty());
}

#[test]
fn only_the_gateway_a_worker_beats_through_can_report_it_left() {
    let now = Instant::now();
    let mut table = leading(now, &[(1, WorkerState::Ready)]);
    let (home, rogue): (Arc<str>, Arc<str>) = (Arc::from("gw-a"), Arc::from("gw-b"));
    table.record_beat(&home, &beat(1, 10), now, GRACE);
    let left = v1::WorkerBeat { reported_state: WorkerState::Left as i32, ..beat(1, 10) };
    assert!(table.record_beat(&rogue, &left, now, GRACE).is_none());
    assert_eq!(&*table.lease(1).unwrap().gateway_id, "gw-a", "the rogue gateway took the lease");
    assert!(table.take_pending().is_empty(), "a leave from another gateway was queued");
    table.record_beat(&home, &left, now, GRACE);
    assert_eq!(table.take_pending()[0].to, WorkerState::Left as i32);
}

#[test]
fn revoked_and_unknown_workers_are_refused() {
    let now = Instant::now();
    let mut table = leading(now, &[(1, WorkerState::Revoked)]);
    let gateway: Arc<str> = Arc::from("gw");
    let revoked = table.record_beat(&gateway, &beat(1, 10), now, GRACE).unwrap();
    assert_eq!(revoked.state, WorkerState::Revoked as i32);
    assert!(revoked.reason.contains("revoked"), "{}", revoked.reason);
    let unknown = table.record_beat(&gateway, &beat(9, 10), now, GRACE).unwrap();
    assert_eq!(unknown.state, WorkerState::Unspecified as i32);
    assert!(table.lease(1).is_none() && table.lease(9).is_none());
}

#[test]
fn a_beat_that_raced_an_expiry_brings_the_worker_straight_back() {
    let now = Instant::now();
    let mut table = leading(now, &[(1, WorkerState::Ready), (2, WorkerState::Ready)]);
    let late = now + FAILOVER + Duration::from_secs(1);
    let expired = table.expired(late);
    table.queue_expiry(&expired);
    let proposed = table.take_pending();
    // Worker 1 beats while the expiry is being committed; worker 2 stays silent.
    table.record_beat(&Arc::from("gw"), &beat(1, 10), late, GRACE);
    table.applied(&proposed, late, 0);
    assert_eq!(table.state(1), Some(WorkerState::Unreachable as i32));
    let back = table.take_pending();
    assert_eq!(back.len(), 1);
    assert_eq!((back[0].worker_id, back[0].to), (1, WorkerState::Ready as i32));
    assert!(table.expired(late + Duration::from_secs(60)).is_empty(), "an unreachable worker does not expire twice");
}

#[test]
fn refreshing_the_fleet_leases_new_workers_and_drops_gone_ones() {
    let now = Instant::now();
    let mut table = leading(now, &[(1, WorkerState::Ready)]);
    let later = now + Duration::from_secs(5);
    table.refresh_fleet(fleet(&[(1, WorkerState::Revoked), (2, WorkerState::Ready)]), later, Duration::from_secs(20));
    assert!(table.lease(1).is_none());
    assert_eq!(table.lease(2).unwrap().deadline, later + Duration::from_secs(20));
    assert_eq!(table.worker_count(), 1);
}

#[test]
fn gateways_are_live_within_their_lease_and_the_epoch_follows_the_list() {
    let now = Instant::now();
    let mut table = leading(now, &[]);
    let lease = Duration::from_secs(3);
    table.record_gateway("gw-b", "10.0.0.2:3671", now);
    table.record_gateway("gw-a", "10.0.0.1:3671", now + Duration::from_secs(2));
    let both = table.live_gateways(now + Duration::from_secs(3), lease);
    assert_eq!(both.iter().map(|g| g.gateway_id.as_str()).collect::<Vec<_>>(), ["gw-a", "gw-b"]);
    let one = table.live_gateways(now + Duration::from_secs(4), lease);
    assert_eq!(one.len(), 1);
    assert_ne!(gateways_epoch(&both), gateways_epoch(&one));
    assert_eq!(gateways_epoch(&both), gateways_epoch(&table.live_gateways(now + Duration::from_secs(3), lease)));
}

#[test]
fn a_profile_change_is_queued_without_changing_state() {
    let now = Instant::now();
    let mut table = leading(now, &[(1, WorkerState::Draining)]);
    let profile = v1::WorkerProfile { version: "2.0".into(), ..Default::default() };
    table.queue_profile(1, WorkerState::Draining as i32, profile.clone());
    let pending = table.take_pending();
    assert_eq!(pending[0].to, WorkerState::Draining as i32);
    assert_eq!(pending[0].from, vec![WorkerState::Draining as i32]);
    assert_eq!(pending[0].profile, Some(profile));
}

fn beat_with(worker_id: u64, serial: &str) -> v1::WorkerBeat {
    v1::WorkerBeat { cert_serial: serial.into(), ..beat(worker_id, 10) }
}

#[test]
fn a_certificate_that_is_neither_current_nor_previous_is_refused_alone() {
    let now = Instant::now();
    let mut table = leading(now, &[(1, WorkerState::Ready)]);
    table.learn_worker(&record(1, WorkerState::Ready, "0b", "0a"));
    let gateway: Arc<str> = Arc::from("gw");
    let refused = table.record_beat(&gateway, &beat_with(1, "ff"), now, GRACE).expect("a minted serial is refused");
    assert_eq!((refused.worker_id, refused.cert_serial.as_str()), (1, "ff"));
    assert_eq!(refused.state, WorkerState::Unspecified as i32, "the worker itself is not refused");
    assert!(refused.reason.contains("not this worker's current certificate"), "{}", refused.reason);
    // The previous certificate still beats (the worker has not switched yet), without retiring.
    assert!(table.record_beat(&gateway, &beat_with(1, "0a"), now, GRACE).is_none());
    assert!(table.take_pending().is_empty());
    assert_eq!(table.exchange_notices("gw", 0).0, vec![]);
}

#[test]
fn the_first_beat_with_the_renewed_certificate_retires_the_old_one_everywhere() {
    let now = Instant::now();
    let mut table = leading(now, &[(1, WorkerState::Ready)]);
    table.learn_worker(&record(1, WorkerState::Ready, "0b", "0a"));
    table.record_gateway("gw-a", "a:1", now);
    table.record_gateway("gw-b", "b:1", now);
    let gateway: Arc<str> = Arc::from("gw-a");
    assert!(table.record_beat(&gateway, &beat_with(1, "0b"), now, GRACE).is_none());
    // The FSM is told (a retirement keeps the state)...
    let pending = table.take_pending();
    assert_eq!(pending.len(), 1);
    assert_eq!((pending[0].to, pending[0].retire_serial.as_str()), (WorkerState::Ready as i32, "0a"));
    assert_eq!(pending[0].from, vec![WorkerState::Ready as i32]);
    // ...this table refuses the old one at once...
    assert!(table.record_beat(&gateway, &beat_with(1, "0a"), now, GRACE).is_some());
    // ...and every gateway hears of it, until it says it applied it.
    let (notices, through) = table.exchange_notices("gw-b", 0);
    assert_eq!((notices.len(), notices[0].cert_serial.as_str(), through), (1, "0a", 1));
    assert_eq!(table.gateways_behind(1, now, Duration::from_secs(3)), vec!["gw-a", "gw-b"]);
    table.exchange_notices("gw-b", through);
    assert_eq!(table.gateways_behind(1, now, Duration::from_secs(3)), vec!["gw-a"]);
}

#[test]
fn a_retirement_rides_along_with_a_return_from_unreachable() {
    let now = Instant::now();
    let mut table = leading(now, &[(1, WorkerState::Unreachable)]);
    table.learn_worker(&record(1, WorkerState::Unreachable, "0b", "0a"));
    assert!(table.record_beat(&Arc::from("gw"), &beat_with(1, "0b"), now, GRACE).is_none());
    let pending = table.take_pending();
    assert_eq!((pending[0].to, pending[0].retire_serial.as_str()), (WorkerState::Ready as i32, "0a"));
}

#[test]
fn a_revocation_drops_the_lease_and_is_a_notice_for_every_gateway() {
    let now = Instant::now();
    let mut table = leading(now, &[(1, WorkerState::Ready), (2, WorkerState::Ready)]);
    table.record_gateway("gw-a", "a:1", now);
    let seq = table.revoke(1);
    assert!(table.lease(1).is_none());
    assert_eq!(table.state(1), Some(WorkerState::Revoked as i32));
    assert_eq!(table.worker_count(), 1);
    let (notices, through) = table.exchange_notices("gw-a", 0);
    assert_eq!((notices[0].worker_id, notices[0].state, through), (1, WorkerState::Revoked as i32, seq));
    assert!(notices[0].cert_serial.is_empty(), "every certificate of the worker");
    table.exchange_notices("gw-a", seq);
    assert!(table.gateways_behind(seq, now, Duration::from_secs(3)).is_empty());
    // A new term starts a new log: old acknowledgements mean nothing there.
    table.begin_term(8, now, fleet(&[(1, WorkerState::Revoked)]), FAILOVER);
    assert_eq!(table.exchange_notices("gw-a", 0), (vec![], 0));
}

#[test]
fn instances_are_counted_per_certificate_name_among_live_gateways() {
    let now = Instant::now();
    let mut table = leading(now, &[]);
    let lease = Duration::from_secs(3);
    for id in ["gw", "gw/a", "gw/b", "gwx/a", "other"] {
        table.record_gateway(id, "a:1", now);
    }
    table.record_gateway("gw/old", "a:1", now - Duration::from_secs(10));
    assert_eq!(table.other_instances("gw/c", now, lease), 3, "gw, gw/a, gw/b; not gwx/a, other or the silent one");
    assert_eq!(table.other_instances("gw/a", now, lease), 2, "itself does not count");
    assert_eq!(table.other_instances("gwx", now, lease), 1);
}

/// A worker record as the FSM would hold it, with its certificate serials.
fn record(worker_id: u64, state: WorkerState, current: &str, previous: &str) -> v1::WorkerRecord {
    v1::WorkerRecord {
        worker_id,
        state: state as i32,
        cert_serial: current.into(),
        previous_cert_serial: previous.into(),
        ..Default::default()
    }
}
