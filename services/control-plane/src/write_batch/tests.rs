use std::sync::Mutex;

use tokio::sync::Notify;

use super::*;

/// Applies puts: each result's index is the entry it went in; holds its first write until
/// released, so the writes behind it queue.
struct FakeLog {
    entries: Mutex<Vec<v1::Command>>,
    /// The task that proposed each entry.
    proposed_by: Mutex<Vec<Option<tokio::task::Id>>>,
    /// What `writable_format` answers.
    format: u32,
    release: Notify,
    fail: bool,
}

impl FakeLog {
    fn new(format: u32, fail: bool) -> Arc<Self> {
        Arc::new(Self {
            entries: Mutex::default(),
            proposed_by: Mutex::default(),
            format,
            release: Notify::new(),
            fail,
        })
    }

    fn entries(&self) -> Vec<v1::Command> {
        self.entries.lock().unwrap().clone()
    }
}

fn key_of(command: &v1::Command) -> String {
    match &command.op {
        Some(v1::command::Op::Put(put)) => put.key.clone(),
        other => panic!("not a put: {other:?}"),
    }
}

impl Proposer for FakeLog {
    async fn propose_command(&self, command: v1::Command) -> Result<v1::CommandResult, ApiError> {
        self.proposed_by.lock().unwrap().push(tokio::task::try_id());
        let index = {
            let mut entries = self.entries.lock().unwrap();
            entries.push(command.clone());
            entries.len() as u64
        };
        if index == 1 {
            self.release.notified().await;
        }
        if self.fail {
            return Err(ApiError::Unavailable("no quorum".into()));
        }
        let result = |command: &v1::Command| v1::CommandResult { index, error: key_of(command), ..Default::default() };
        Ok(match &command.op {
            Some(v1::command::Op::Batch(batch)) => {
                v1::CommandResult { index, results: batch.commands.iter().map(result).collect(), ..Default::default() }
            }
            _ => result(&command),
        })
    }

    fn writable_format(&self) -> u32 {
        self.format
    }
}

fn put(key: &str) -> v1::command::Op {
    v1::command::Op::Put(v1::KvPut { key: key.into(), value: vec![] })
}

/// Waits (with a deadline) until `done` holds.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::task::yield_now().await;
    }
}

/// With one write slot: proposes `a`, then `count` more while `a` is held; returns every
/// answer.
async fn storm(log: &Arc<FakeLog>, count: usize) -> Vec<Result<v1::CommandResult, Status>> {
    let batcher = WriteBatcher::with_slots(log.clone(), 1);
    let first = tokio::spawn({
        let batcher = batcher.clone();
        async move { batcher.propose(put("a")).await }
    });
    until("the first write never started", || !log.entries().is_empty()).await;
    let rest: Vec<_> = (0..count)
        .map(|n| {
            let batcher = batcher.clone();
            tokio::spawn(async move { batcher.propose(put(&format!("k{n}"))).await })
        })
        .collect();
    until("the commands never queued", || batcher.queue.capacity() == QUEUE - count).await;
    log.release.notify_one();
    let mut answers = vec![first.await.unwrap()];
    for task in rest {
        answers.push(task.await.unwrap());
    }
    answers
}

#[tokio::test]
async fn commands_queued_behind_a_write_share_one_entry_and_each_gets_its_own_result() {
    let log = FakeLog::new(BATCH_FORMAT, false);
    let answers = storm(&log, 100).await;
    let entries = log.entries();
    assert_eq!(entries.len(), 2, "the lone first write, then one batch: {entries:?}");
    assert!(matches!(entries[0].op, Some(v1::command::Op::Put(_))), "a lone command is written as itself");
    let Some(v1::command::Op::Batch(batch)) = &entries[1].op else { panic!("{:?}", entries[1]) };
    assert_eq!(batch.commands.len(), 100);
    assert_eq!(answers[0].as_ref().unwrap().error, "a");
    for (n, answer) in answers[1..].iter().enumerate() {
        let answer = answer.as_ref().unwrap();
        assert_eq!((answer.index, answer.error.as_str()), (2, format!("k{n}").as_str()), "its own result");
    }
}

#[tokio::test]
async fn a_batch_never_grows_past_its_bytes_and_what_would_overflow_it_goes_next() {
    let log = FakeLog::new(BATCH_FORMAT, false);
    let batcher = WriteBatcher::with_slots(log.clone(), 1);
    let propose = |key: &str, value_bytes: usize| {
        let (batcher, key) = (batcher.clone(), key.to_string());
        tokio::spawn(async move {
            batcher.propose(v1::command::Op::Put(v1::KvPut { key, value: vec![7; value_bytes] })).await
        })
    };
    let first = propose("a", 0);
    until("the first write never started", || !log.entries().is_empty()).await;
    // Queued in this order behind the held write: two that do not fit one batch together.
    let mut rest = Vec::new();
    for (n, (key, value_bytes)) in
        [("big1", MAX_BYTES * 3 / 5), ("big2", MAX_BYTES * 3 / 5), ("s", 0)].into_iter().enumerate()
    {
        rest.push(propose(key, value_bytes));
        until("the command never queued", || batcher.queue.capacity() == QUEUE - n - 1).await;
    }
    log.release.notify_one();
    assert!(first.await.unwrap().is_ok());
    for task in rest {
        assert!(task.await.unwrap().is_ok());
    }
    let entries: Vec<Vec<String>> = log
        .entries()
        .iter()
        .map(|entry| match &entry.op {
            Some(v1::command::Op::Batch(batch)) => batch.commands.iter().map(key_of).collect(),
            _ => vec![key_of(entry)],
        })
        .collect();
    assert_eq!(entries, [vec!["a"], vec!["big1"], vec!["big2", "s"]], "in order, no batch past its bytes");
    assert!(log.entries().iter().all(|entry| entry.encoded_len() <= MAX_BYTES + 64));
}

#[tokio::test]
async fn a_batch_is_capped_in_commands() {
    let log = FakeLog::new(BATCH_FORMAT, false);
    let answers = storm(&log, MAX_COMMANDS + 10).await;
    assert!(answers.iter().all(Result::is_ok));
    let sizes: Vec<usize> = log
        .entries()
        .iter()
        .map(|entry| match &entry.op {
            Some(v1::command::Op::Batch(batch)) => batch.commands.len(),
            _ => 1,
        })
        .collect();
    assert_eq!(sizes, [1, MAX_COMMANDS, 10]);
}

#[tokio::test]
async fn until_every_member_reads_batches_each_command_has_its_own_entry() {
    let log = FakeLog::new(UNANNOUNCED_FORMAT, false);
    let answers = storm(&log, 20).await;
    assert!(answers.iter().all(Result::is_ok));
    let entries = log.entries();
    assert_eq!(entries.len(), 21);
    assert!(entries.iter().all(|entry| matches!(entry.op, Some(v1::command::Op::Put(_)))));
}

#[tokio::test]
async fn a_failed_batch_fails_every_command_in_it_with_the_reason() {
    let log = FakeLog::new(BATCH_FORMAT, true);
    let answers = storm(&log, 5).await;
    for answer in answers {
        let status = answer.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(status.message().contains("no quorum"), "{status:?}");
    }
}

#[tokio::test]
async fn a_lone_write_on_an_idle_batcher_is_proposed_by_its_caller() {
    let log = FakeLog::new(BATCH_FORMAT, false);
    let batcher = WriteBatcher::with_slots(log.clone(), 3);
    // The first write is held by the log; the batching task holds another slot, one is free.
    let first = tokio::spawn({
        let batcher = batcher.clone();
        async move { batcher.propose(put("a")).await }
    });
    until("the first write never started", || !log.entries().is_empty()).await;
    assert_eq!(log.proposed_by.lock().unwrap()[0], Some(first.id()), "proposed in the caller's own task");
    // A write in flight: the next one queues (a slot is free, but it might share an entry), and
    // the batching task writes it.
    let second = tokio::spawn({
        let batcher = batcher.clone();
        async move { batcher.propose(put("b")).await }
    });
    until("the second write never reached the log", || log.entries().len() == 2).await;
    log.release.notify_one();
    assert_eq!(first.await.unwrap().unwrap().error, "a");
    let second_id = second.id();
    assert_eq!(second.await.unwrap().unwrap().error, "b");
    let proposed_by = log.proposed_by.lock().unwrap().clone();
    assert_eq!(proposed_by.len(), 2);
    assert_ne!(proposed_by[1], Some(second_id), "the queued write went through the batcher");
}
