//! Known-linearizable and known-broken histories, and a mutation test: random linearizable
//! histories pass, and each fails once a stale read is planted in it.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::history::Command::{Cas, Delete, Put};
use crate::model;
use crate::mutate::plant_stale_read;

const BUDGET: u64 = 1_000_000;

fn op(process: usize, command: Command, invoke: u64, complete: u64, outcome: Outcome) -> Op {
    Op { process, key: "k".into(), command, invoke, complete, outcome }
}

fn read(process: usize, span: (u64, u64), value: Option<Value>) -> Op {
    op(process, Command::Read { lease: false }, span.0, span.1, Outcome::Ok(Reply::Read(value)))
}

fn write(process: usize, command: Command, span: (u64, u64), succeeded: bool, previous: Option<Value>) -> Op {
    op(process, command, span.0, span.1, Outcome::Ok(Reply::Write { succeeded, previous }))
}

fn lost(process: usize, command: Command, invoke: u64) -> Op {
    op(process, command, invoke, invoke + 5, Outcome::Indeterminate)
}

fn verdict(ops: Vec<Op>) -> Verdict {
    check(&History { ops }, BUDGET)
}

#[test]
fn an_empty_history_is_linearizable() {
    assert!(verdict(Vec::new()).is_linearizable());
}

#[test]
fn sequential_writes_and_reads() {
    let ops = vec![
        read(0, (0, 1), None),
        write(0, Put(1), (2, 3), true, None),
        read(1, (4, 5), Some(1)),
        write(1, Delete, (6, 7), true, Some(1)),
        read(0, (8, 9), None),
        write(0, Delete, (10, 11), false, None),
    ];
    assert!(verdict(ops).is_linearizable());
}

#[test]
fn a_read_concurrent_with_a_write_may_see_either_value() {
    for seen in [Some(1), Some(2)] {
        let ops = vec![
            write(0, Put(1), (0, 10), true, None),
            write(0, Put(2), (20, 40), true, Some(1)),
            read(1, (25, 30), seen),
            read(2, (45, 50), Some(2)),
        ];
        assert!(verdict(ops).is_linearizable(), "seen {seen:?}");
    }
}

#[test]
fn a_stale_read_is_caught_and_explained() {
    let ops = vec![
        write(0, Put(1), (0, 10), true, None),
        write(0, Put(2), (20, 30), true, Some(1)),
        read(1, (40, 50), Some(1)),
    ];
    let verdict = verdict(ops);
    assert!(!verdict.is_linearizable());
    let text = verdict.to_string();
    eprintln!("{text}");
    assert!(text.contains("key k"), "{text}");
    assert!(text.contains("read 1"), "{text}");
    assert!(text.contains("put 2"), "{text}");
    assert!(text.contains("before the operation above was invoked"), "{text}");
}

#[test]
fn two_reads_must_agree_on_the_order_of_writes() {
    // Both writes overlap both reads, but the reads cannot see them in opposite orders.
    let ops = vec![
        write(0, Put(1), (0, 100), true, None),
        write(1, Put(2), (0, 100), true, None),
        read(2, (10, 20), Some(1)),
        read(2, (30, 40), Some(2)),
        read(3, (10, 20), Some(2)),
        read(3, (30, 40), Some(1)),
    ];
    assert!(!verdict(ops).is_linearizable());
}

#[test]
fn an_indeterminate_write_may_take_effect_late_or_never() {
    let late = vec![
        write(0, Put(1), (0, 10), true, None),
        lost(0, Put(2), 20),
        read(1, (30, 40), Some(1)),
        read(1, (500, 510), Some(2)),
    ];
    assert!(verdict(late).is_linearizable());
    let never = vec![write(0, Put(1), (0, 10), true, None), lost(0, Put(2), 20), read(1, (500, 510), Some(1))];
    assert!(verdict(never).is_linearizable());
    let then_undone = vec![
        write(0, Put(1), (0, 10), true, None),
        lost(0, Put(2), 20),
        read(1, (30, 40), Some(2)),
        read(1, (50, 60), Some(1)),
    ];
    assert!(!verdict(then_undone).is_linearizable(), "a write cannot be undone once seen");
}

#[test]
fn an_indeterminate_write_cannot_take_effect_before_it_was_invoked() {
    let ops = vec![read(1, (0, 10), Some(7)), lost(0, Put(7), 20)];
    assert!(!verdict(ops).is_linearizable());
}

#[test]
fn failed_operations_are_removed() {
    let ops = vec![op(0, Put(3), 0, 10, Outcome::Fail), read(1, (20, 30), Some(3))];
    assert!(!verdict(ops).is_linearizable());
    let ops = vec![op(0, Put(3), 0, 10, Outcome::Fail), read(1, (20, 30), None)];
    assert!(verdict(ops).is_linearizable());
}

#[test]
fn compare_and_swap_answers_must_match_the_state() {
    let chain = vec![
        write(0, Cas { expected: None, new: 1 }, (0, 10), true, None),
        write(1, Cas { expected: Some(1), new: 2 }, (20, 30), true, Some(1)),
        write(0, Cas { expected: Some(1), new: 3 }, (40, 50), false, Some(2)),
        read(1, (60, 70), Some(2)),
    ];
    assert!(verdict(chain).is_linearizable());
    // Two CAS from the same expected value cannot both succeed.
    let double = vec![
        write(0, Put(1), (0, 10), true, None),
        write(1, Cas { expected: Some(1), new: 2 }, (20, 30), true, Some(1)),
        write(2, Cas { expected: Some(1), new: 3 }, (20, 30), true, Some(1)),
    ];
    assert!(!verdict(double).is_linearizable());
    // A failed CAS that reports a value the key never held then.
    let wrong_previous =
        vec![write(0, Put(1), (0, 10), true, None), write(1, Cas { expected: Some(9), new: 2 }, (20, 30), false, None)];
    assert!(!verdict(wrong_previous).is_linearizable());
    // An indeterminate CAS may have swapped, which a later read shows.
    let maybe = vec![
        write(0, Put(1), (0, 10), true, None),
        lost(1, Cas { expected: Some(1), new: 2 }, 20),
        read(2, (40, 50), Some(2)),
    ];
    assert!(verdict(maybe).is_linearizable());
}

#[test]
fn keys_are_checked_apart() {
    let mut ops = vec![write(0, Put(1), (0, 10), true, None), read(1, (20, 30), Some(1))];
    let mut other = read(1, (20, 30), Some(1));
    other.key = "other".into();
    ops.push(other);
    let verdict = verdict(ops);
    assert_eq!(verdict.violations.len(), 1);
    assert_eq!(verdict.violations[0].key, "other");
}

/// A random linearizable history: `processes` clients each issue `per_process` operations;
/// each takes effect at a random point inside its interval (in that order the register's
/// answers are computed), and some writes lose their answer (some of those never apply).
fn random_history(seed: u64, processes: usize, per_process: usize) -> History {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut next_value = 1;
    struct Planned {
        op: Op,
        at: Option<u64>,
    }
    let mut planned = Vec::new();
    for process in 0..processes {
        let mut now = rng.random_range(0..20);
        for _ in 0..per_process {
            let command = match rng.random_range(0..10) {
                0..=3 => Command::Read { lease: rng.random_bool(0.2) },
                4..=5 => Put(next_value),
                6 => Delete,
                _ => Cas {
                    expected: (rng.random_bool(0.7)).then(|| rng.random_range(1..next_value.max(2))),
                    new: next_value,
                },
            };
            next_value += 1;
            let invoke = now;
            let at = invoke + rng.random_range(1..30);
            let complete = at + rng.random_range(1..30);
            let lose = command.is_write() && rng.random_bool(0.05);
            let outcome = if lose { Outcome::Indeterminate } else { Outcome::Fail };
            let at = (!lose || rng.random_bool(0.5)).then_some(at);
            planned.push(Planned { op: Op { process, key: "k".into(), command, invoke, complete, outcome }, at });
            now = complete + rng.random_range(0..10);
        }
    }
    let mut order: Vec<usize> = (0..planned.len()).filter(|&i| planned[i].at.is_some()).collect();
    order.sort_by_key(|&i| planned[i].at);
    let mut state: model::State = None;
    for i in order {
        let op = &mut planned[i].op;
        let reply = match op.command {
            Command::Read { .. } => Reply::Read(state),
            Put(_) => Reply::Write { succeeded: true, previous: state },
            Delete => Reply::Write { succeeded: state.is_some(), previous: state },
            Cas { expected, .. } => Reply::Write { succeeded: state == expected, previous: state },
        };
        state = model::step(state, &op.command, &Outcome::Indeterminate).expect("an unanswered write always applies");
        if op.outcome != Outcome::Indeterminate {
            op.outcome = Outcome::Ok(reply);
        }
    }
    History { ops: planned.into_iter().map(|p| p.op).collect() }
}

#[test]
fn random_linearizable_histories_pass() {
    for seed in 0..200 {
        let history = random_history(seed, 4, 30);
        let verdict = check(&history, BUDGET);
        assert!(verdict.is_linearizable(), "seed {seed}: {verdict}");
    }
}

#[test]
fn a_planted_stale_read_is_always_rejected() {
    let mut planted_count = 0;
    for seed in 0..200 {
        let history = random_history(seed, 4, 30);
        let Some(planted) = plant_stale_read(&history) else { continue };
        planted_count += 1;
        let verdict = check(&planted.history, BUDGET);
        assert!(!verdict.is_linearizable(), "seed {seed}: planted read of {} not caught", planted.stale_value);
        assert_eq!(verdict.violations[0].key, planted.key);
    }
    assert!(planted_count > 150, "only {planted_count} histories allowed a planted stale read");
}
