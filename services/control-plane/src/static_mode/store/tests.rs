use muster_proto::v1;
use muster_proto::v1::command::Op;

use super::*;

fn open(dir: &tempfile::TempDir, name: &str) -> StaticStore {
    StaticStore::open(&dir.path().join(name)).unwrap()
}

fn put(key: &str, value: &str) -> Op {
    Op::Put(v1::KvPut { key: key.into(), value: value.as_bytes().to_vec() })
}

fn value(store: &StaticStore, key: &str) -> Option<String> {
    store.get(key).unwrap().map(|kv| String::from_utf8(kv.value).unwrap())
}

#[test]
fn replicas_converge_whatever_order_the_writes_arrive_in() {
    let dir = tempfile::tempdir().unwrap();
    let (leader_a, leader_b) = (open(&dir, "a"), open(&dir, "b"));
    // Two leaders of different epochs write the same keys (a partition under the seed's rules).
    let (_, a1) = leader_a.write(&put("k", "from-1"), 3, 1).unwrap();
    let (_, a2) = leader_a.write(&Op::Delete(v1::KvDelete { key: "gone".into() }), 3, 1).unwrap();
    assert!(a2.is_none(), "deleting a missing key changes nothing");
    let (_, b1) = leader_b.write(&put("k", "from-2"), 4, 2).unwrap();
    let (_, b2) = leader_b.write(&put("only-b", "x"), 4, 2).unwrap();
    let all = [a1.unwrap(), b1.unwrap(), b2.unwrap()];

    let forward = open(&dir, "forward");
    forward.merge(all.to_vec()).unwrap();
    let backward = open(&dir, "backward");
    for entry in all.iter().rev() {
        backward.merge(vec![entry.clone()]).unwrap();
        backward.merge(vec![entry.clone()]).unwrap(); // twice: merging is idempotent
    }
    for store in [&forward, &backward] {
        assert_eq!(value(store, "k").as_deref(), Some("from-2"), "the higher epoch wins");
        assert_eq!(value(store, "only-b").as_deref(), Some("x"));
        assert_eq!(store.newest_term().unwrap(), (4, 2), "merging raises the newest term");
    }
    let tag = forward.get("k").unwrap().unwrap().written_by.unwrap();
    assert_eq!((tag.epoch, tag.leader_id, tag.sequence), (4, 2, 1));
}

#[test]
fn a_delete_is_a_tombstone_an_older_put_cannot_undo() {
    let dir = tempfile::tempdir().unwrap();
    let leader = open(&dir, "leader");
    let (_, created) = leader.write(&put("k", "v"), 1, 1).unwrap();
    let (deleted, tombstone) = leader.write(&Op::Delete(v1::KvDelete { key: "k".into() }), 1, 1).unwrap();
    assert!(deleted.succeeded);
    assert_eq!(deleted.previous.unwrap().value, b"v");
    let replica = open(&dir, "replica");
    replica.merge(vec![tombstone.unwrap()]).unwrap();
    replica.merge(vec![created.unwrap()]).unwrap();
    assert_eq!(value(&replica, "k"), None);
    assert_eq!(replica.list("", 0).unwrap(), (vec![], false), "tombstones are not listed");
}

#[test]
fn compare_and_swap_compares_with_this_replica() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, "s");
    let cas = |expected: &str, absent: bool, new: &str| {
        Op::Cas(v1::KvCompareAndSwap {
            key: "k".into(),
            expected: expected.into(),
            expect_absent: absent,
            new_value: new.into(),
            expected_mod_revision: None,
        })
    };
    assert!(store.write(&cas("", true, "a"), 1, 1).unwrap().0.succeeded);
    let (refused, nothing) = store.write(&cas("", true, "b"), 1, 1).unwrap();
    assert!(!refused.succeeded && nothing.is_none());
    assert!(store.write(&cas("a", false, "b"), 1, 1).unwrap().0.succeeded);
    assert_eq!(value(&store, "k").as_deref(), Some("b"));
}

#[test]
fn the_change_feed_pages_and_moves_a_rewritten_key_to_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, "s");
    for key in ["a", "b", "c"] {
        store.write(&put(key, "1"), 1, 1).unwrap();
    }
    store.write(&put("a", "2"), 1, 1).unwrap();
    assert_eq!(store.revision(), 4);
    let (first, more) = store.changes_after(0, 2, usize::MAX).unwrap();
    assert_eq!(first.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(), ["b", "c"]);
    assert!(more);
    let (rest, more) = store.changes_after(first[1].revision, 2, usize::MAX).unwrap();
    assert_eq!(rest.iter().map(|e| (e.key.as_str(), e.revision)).collect::<Vec<_>>(), [("a", 4)]);
    assert!(!more);
    let (one, more) = store.changes_after(0, 10, 1).unwrap();
    assert_eq!((one.len(), more), (1, true), "a byte budget smaller than an entry still yields one");
}

#[test]
fn incarnation_revision_and_epoch_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, "s");
    let incarnation = store.incarnation();
    assert_eq!(store.begin_epoch(1).unwrap(), 1);
    store.observe_term(7, 3).unwrap();
    store.observe_term(7, 2).unwrap();
    store.observe_term(5, 9).unwrap();
    assert_eq!(store.newest_term().unwrap(), (7, 3));
    store.write(&put("k", "v"), 7, 3).unwrap();
    drop(store);
    let store = open(&dir, "s");
    assert_eq!(store.incarnation(), incarnation);
    assert_eq!(store.revision(), 1);
    assert_eq!(store.newest_term().unwrap(), (7, 3));
    assert_eq!(store.begin_epoch(1).unwrap(), 8, "a new epoch starts above every one seen");
    assert_eq!(store.newest_term().unwrap(), (8, 1));
    assert_ne!(open(&dir, "other").incarnation(), incarnation, "a fresh store is a new incarnation");
}
