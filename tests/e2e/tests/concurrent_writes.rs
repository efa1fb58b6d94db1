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
