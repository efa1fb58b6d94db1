//! One client used from many tasks at once: every acknowledged write must be applied. (The
//! server deduplicates by the highest sequence applied per client, so the client must not let
//! a later sequence overtake an earlier one.)

use futures::StreamExt;
use muster_e2e::kv::{expect_all, key, value_of};
use muster_e2e::{Cluster, Options, ReadConsistency};

const KEYS: usize = 100;

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_writes_through_one_client_all_apply() {
    let cluster = Cluster::start(3, Options::default()).await;
    let client = cluster.client();
    let results: Vec<_> = futures::stream::iter(0..KEYS)
        .map(|i| {
            let client = &client;
            async move {
                let key = key("concurrent", i);
                (key.clone(), client.put(&key, value_of(&key)).await)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for (key, result) in results {
        let result = result.unwrap_or_else(|err| panic!("put {key}: {err}"));
        assert!(result.succeeded && !result.deduplicated, "put {key} was not applied: {result:?}");
    }
    expect_all(&client, "concurrent", 0..KEYS, ReadConsistency::Linearizable).await.expect("every acknowledged key");
}

/// Writes from many clients at once share log entries (the leader batches what queues while
/// earlier writes are in flight): each write still gets its own answer, is stored at the
/// revision its answer names, and a write sent twice with one client id and sequence (a
/// retry arriving while the first is still queued) applies once.
#[tokio::test(flavor = "multi_thread")]
async fn writes_queued_together_share_entries_and_each_keeps_its_own_answer() {
    const CLIENTS: usize = 32;
    const WRITES: usize = 10;
    let cluster = Cluster::start(3, Options::default()).await;
    let clients: Vec<_> = (0..CLIENTS).map(|_| cluster.client()).collect();
    let writes = futures::future::join_all(clients.iter().enumerate().map(|(c, client)| async move {
        let mut answers = Vec::new();
        for w in 0..WRITES {
            let key = key(&format!("batched-{c:02}"), w);
            let answer = client.put(&key, value_of(&key)).await.unwrap_or_else(|err| panic!("put {key}: {err}"));
            assert!(answer.succeeded && !answer.deduplicated, "put {key}: {answer:?}");
            answers.push((key, answer.index));
        }
        answers
    }))
    .await;
    let reader = cluster.client();
    let mut revisions = std::collections::BTreeSet::new();
    for (key, index) in writes.into_iter().flatten() {
        let stored = reader.get(&key, ReadConsistency::Linearizable).await.unwrap().expect("an acknowledged key");
        assert_eq!(stored.value, value_of(&key));
        assert_eq!((stored.mod_revision, stored.create_revision, stored.version), (index, index, 1), "{key}");
        revisions.insert(index);
    }
    assert!(
        revisions.len() < CLIENTS * WRITES,
        "{} writes from {CLIENTS} clients at once took {} entries: none were batched",
        CLIENTS * WRITES,
        revisions.len()
    );

    // The same request twice at once: one applies, the other is answered as its retry.
    let request = muster_proto::v1::ClientWriteRequest {
        client_id: 0x5eed,
        sequence: 1,
        op: Some(muster_proto::v1::client_write_request::Op::Put(muster_proto::v1::KvPut {
            key: "batched-retry".into(),
            value: b"once".to_vec(),
        })),
    };
    let (first, second) = tokio::join!(reader.write_raw(request.clone()), reader.write_raw(request.clone()));
    let result = |response: muster_proto::v1::ClientResponse| match response.result {
        Some(muster_proto::v1::client_response::Result::Write(result)) => result,
        other => panic!("not a write result: {other:?}"),
    };
    let (first, second) = (result(first.unwrap()), result(second.unwrap()));
    assert_eq!(first.index, second.index, "both answers name the one write");
    assert!(first.deduplicated != second.deduplicated, "exactly one is the retry: {first:?} {second:?}");
    let stored = reader.get("batched-retry", ReadConsistency::Linearizable).await.unwrap().unwrap();
    assert_eq!((stored.version, stored.mod_revision), (1, first.index));
}
