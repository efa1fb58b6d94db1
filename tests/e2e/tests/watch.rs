//! Watches against real processes: a fleet seen registering and dying through `WatchWorkers`;
//! a KV watch that loses its node to `kill -9` under full write load and resumes elsewhere with
//! no gap and no repeat; a resume point older than the history (OUT_OF_RANGE, then a relist);
//! a consumer that never reads, ended for lag while a hundred others keep up; and a
//! linearizable watch on a follower that gets no entries, which never starts below the leader's
//! commit index (while a plain watch there starts from what the follower has).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use muster_client::{KvWatchItem, WorkerWatchItem};
use muster_e2e::fleet::{BeatPlan, Fleet, register_all};
use muster_e2e::gateway::Gateway;
use muster_e2e::netns::NamespaceNetwork;
use muster_e2e::probe::{admin_get, metric_value};
use muster_e2e::registrar::Registrar;
use muster_e2e::{Cluster, HeartbeatPolicy, Options, ReadConsistency, eventually_msg, v1};
use muster_middleware::{WatchEnd, watch_end};
use tokio::task::JoinSet;

const WAIT: Duration = Duration::from_secs(60);

type WorkerEvents = Arc<Mutex<Vec<(u64, v1::WorkerEvent)>>>;

/// Collects every worker event a watch delivers, in order.
fn collect_worker_events(mut watch: muster_client::WorkerWatch, events: WorkerEvents) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match watch.next().await {
                Ok(WorkerWatchItem::Events { revision, events: batch }) => {
                    events.lock().unwrap().extend(batch.into_iter().map(|event| (revision, event)));
                }
                Ok(_) => {}
                Err(err) => panic!("the worker watch failed: {err}"),
            }
        }
    })
}

fn of_type(events: &[(u64, v1::WorkerEvent)], kind: v1::WorkerEventType) -> Vec<u64> {
    events
        .iter()
        .filter(|(_, event)| event.r#type == kind as i32)
        .map(|(_, event)| event.worker.as_ref().map_or(0, |w| w.worker_id))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watcher_sees_every_worker_register_and_exactly_the_killed_ones_go_unreachable() {
    let options = Options { heartbeat: Some(HeartbeatPolicy::fast()), ..Options::tls() };
    let cluster = Cluster::start(1, options).await;
    let registrar = Registrar::start_unthrottled(&cluster);
    let gateway = Gateway::start_with(&cluster, "gw-1", "batch_interval = \"100ms\"\n");
    gateway.wait_ready().await;
    let client = Arc::new(cluster.client());

    // Started before the fleet: an empty listing, then changes.
    let mut watch = client.watch_workers(v1::WatchWorkersRequest::default());
    match watch.next().await.expect("the listing") {
        WorkerWatchItem::Listed { workers, .. } => assert!(workers.is_empty(), "no workers yet: {workers:?}"),
        other => panic!("a watch without since_revision lists first, got {other:?}"),
    }
    let events: WorkerEvents = Arc::default();
    let collector = collect_worker_events(watch, events.clone());

    let token = client
        .create_token(v1::CreateTokenRequest { ttl_seconds: 600, uses: 200, ..Default::default() })
        .await
        .expect("a token")
        .token;
    let pki = cluster.pki().expect("pki");
    let identities = register_all(&registrar.addr, &pki.ca_pem(), &token, 200, 16).await.expect("200 workers");
    let ids: HashSet<u64> = identities.iter().map(|identity| identity.worker_id).collect();
    let plan = BeatPlan { fixed_interval: None };
    let _survivors = Fleet::start(&identities[20..], &pki.ca_pem(), plan.clone()).expect("180 workers");
    let mut doomed = Fleet::start(&identities[..20], &pki.ca_pem(), plan).expect("20 workers");
    let doomed_ids: HashSet<u64> = identities[..20].iter().map(|identity| identity.worker_id).collect();

    eventually_msg("the watch saw 200 workers registered, Ready", WAIT, || {
        let events = events.clone();
        let ids = ids.clone();
        async move {
            let events = events.lock().unwrap();
            let registered: HashSet<u64> = of_type(&events, v1::WorkerEventType::Registered).into_iter().collect();
            anyhow::ensure!(registered == ids, "{} of 200 registered", registered.len());
            let ready = events
                .iter()
                .filter(|(_, e)| e.r#type == v1::WorkerEventType::Registered as i32)
                .all(|(_, e)| e.worker.as_ref().is_some_and(|w| w.state == v1::WorkerState::Ready as i32));
            anyhow::ensure!(ready, "a registered worker was not Ready");
            Ok(())
        }
    })
    .await;
    eventually_msg("every doomed worker has its TTL", WAIT, || async {
        let ttls = doomed.stats.last_ttl_ms.lock().unwrap().clone();
        anyhow::ensure!(ttls.iter().all(|ttl| *ttl > 0), "some have not beaten yet");
        Ok(())
    })
    .await;
    // A simulated worker's first report carries its profile, named by its index in its fleet;
    // the 180 survivors (indices 0..180 for workers registered as sim-20..sim-199) report a
    // hostname that differs from their registration, which the leader records: one
    // profile-changed event each, before the kill.
    eventually_msg("the watch saw the survivors' reported profiles", WAIT, || {
        let events = events.clone();
        async move {
            let events = events.lock().unwrap();
            let profiled: HashSet<u64> = of_type(&events, v1::WorkerEventType::ProfileChanged).into_iter().collect();
            anyhow::ensure!(profiled.len() == 180, "{} of 180 profiles", profiled.len());
            Ok(())
        }
    })
    .await;
    let seen_before_kill = events.lock().unwrap().len();
    let ttl = Duration::from_millis(u64::from(*doomed.stats.last_ttl_ms.lock().unwrap().iter().max().unwrap()));
    let limit = ttl + Duration::from_secs(2 + 2);

    doomed.stop();
    let killed_at = Instant::now();
    eventually_msg("the watch saw 20 workers go unreachable", limit + Duration::from_secs(5), || {
        let events = events.clone();
        async move {
            let events = events.lock().unwrap();
            let unreachable = of_type(&events[seen_before_kill..], v1::WorkerEventType::Unreachable);
            anyhow::ensure!(unreachable.len() >= 20, "{} unreachable so far", unreachable.len());
            Ok(())
        }
    })
    .await;
    let took = killed_at.elapsed();
    assert!(took <= limit, "the last unreachable event came {took:?} after the kill; TTL + grace + 2 s is {limit:?}");

    // Nothing else: a few more seconds of the surviving fleet beating brings no other change.
    tokio::time::sleep(Duration::from_secs(3)).await;
    collector.abort();
    let events = events.lock().unwrap();
    let after_kill = &events[seen_before_kill..];
    let unreachable = of_type(after_kill, v1::WorkerEventType::Unreachable);
    assert_eq!(unreachable.len(), 20, "exactly one event per killed worker: {unreachable:?}");
    assert_eq!(unreachable.into_iter().collect::<HashSet<_>>(), doomed_ids, "the killed workers, and only they");
    assert_eq!(after_kill.len(), 20, "no other change after the kill: {after_kill:?}");
    let revisions: Vec<u64> = events.iter().map(|(revision, _)| *revision).collect();
    assert!(revisions.windows(2).all(|pair| pair[0] <= pair[1]), "events arrive in revision order");
}

/// Puts on `w/<writer>/<n>` as fast as one client goes, recording (key, revision) of each
/// acknowledged write, until `stop`.
async fn write_until(
    client: muster_client::ControlPlaneClient,
    writer: usize,
    stop: Arc<AtomicBool>,
) -> Vec<(String, u64)> {
    let mut acknowledged = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("w/{writer}/{n}");
        if let Ok(result) = client.put(&key, n.to_string()).await {
            acknowledged.push((key, result.index));
        }
        n += 1;
    }
    acknowledged
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_resumes_on_another_node_after_kill_9_with_no_gap_and_no_repeat() {
    let mut cluster = Cluster::start(3, Options::tls()).await;
    let leader = cluster.wait_for_leader(WAIT).await;
    // The watch starts on a follower, so the kill does not also stop the writes for an election.
    let serving = cluster.ids().into_iter().find(|id| *id != leader).expect("a follower");
    let mut endpoints = vec![cluster.addrs(serving).api.clone()];
    endpoints.extend(cluster.ids().into_iter().filter(|id| *id != serving).map(|id| cluster.addrs(id).api.clone()));
    let client = Arc::new(cluster.client_with(endpoints, cluster.operator_client_tls()));
    let mut watch = client.watch_kv(v1::WatchRequest { key: "w/".into(), prefix: true, ..Default::default() });
    // The first message (created) says where the watch starts.
    let start = match watch.next().await.expect("created") {
        KvWatchItem::Progress { revision } => revision,
        other => panic!("a new watch first says where it starts, got {other:?}"),
    };

    // Every event delivered with its revision, and the revision of each delivery (one per
    // revision: concurrent writes may share an entry, so one revision may hold several events).
    let delivered: Arc<Mutex<Vec<(u64, v1::KvEvent)>>> = Arc::default();
    let deliveries: Arc<Mutex<Vec<u64>>> = Arc::default();
    // How far the watch has delivered (events or progress).
    let position = Arc::new(std::sync::atomic::AtomicU64::new(start));
    let reader = {
        let (delivered, deliveries, position) = (delivered.clone(), deliveries.clone(), position.clone());
        tokio::spawn(async move {
            loop {
                match watch.next().await.expect("the watch resumes, never fails") {
                    KvWatchItem::Events { revision, events } => {
                        delivered.lock().unwrap().extend(events.into_iter().map(|event| (revision, event)));
                        deliveries.lock().unwrap().push(revision);
                        position.store(revision, Ordering::Relaxed);
                    }
                    KvWatchItem::Progress { revision } => position.store(revision, Ordering::Relaxed),
                }
            }
        })
    };

    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = JoinSet::new();
    for writer in 0..4 {
        writers.spawn(write_until(cluster.client(), writer, stop.clone()));
    }
    eventually_msg("the watch delivers writes", WAIT, || {
        let delivered = delivered.clone();
        async move {
            anyhow::ensure!(delivered.lock().unwrap().len() >= 200, "not yet");
            Ok(())
        }
    })
    .await;
    cluster.kill(serving);
    let before_kill = delivered.lock().unwrap().len();
    eventually_msg("the watch delivers again after the kill", WAIT, || {
        let delivered = delivered.clone();
        async move {
            anyhow::ensure!(delivered.lock().unwrap().len() >= before_kill + 500, "not yet");
            Ok(())
        }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut acknowledged = Vec::new();
    while let Some(written) = writers.join_next().await {
        acknowledged.extend(written.expect("a writer"));
    }

    // The committed state at a revision, and the watch caught up to it.
    let list = client.read(list_request("w/")).await.expect("a final list");
    let at = list.applied_index;
    eventually_msg(format!("the watch reaches revision {at}"), WAIT, || {
        let position = position.load(Ordering::Relaxed);
        async move {
            anyhow::ensure!(position >= at, "at {position}");
            Ok(())
        }
    })
    .await;
    reader.abort();
    let delivered = delivered.lock().unwrap();

    // In order, each revision once.
    let deliveries = deliveries.lock().unwrap();
    assert!(deliveries.windows(2).all(|pair| pair[0] < pair[1]), "a revision repeated or out of order");
    assert!(deliveries.first().is_some_and(|first| *first > start));
    // No gap: every acknowledged write was delivered, at its revision, once.
    let mut by_write: HashMap<(u64, &str), usize> = HashMap::new();
    for (revision, event) in delivered.iter() {
        *by_write.entry((*revision, event.kv.as_ref().map_or("", |kv| kv.key.as_str()))).or_default() += 1;
    }
    for (key, revision) in &acknowledged {
        let times = by_write.get(&(*revision, key.as_str())).copied().unwrap_or_default();
        assert_eq!(times, 1, "{key} at {revision} delivered {times} times");
    }
    // And what was delivered up to the list's revision is the listed state.
    let mut replayed = BTreeMap::new();
    for (revision, event) in delivered.iter().filter(|(revision, _)| *revision <= at) {
        let kv = event.kv.clone().unwrap_or_default();
        if event.r#type == v1::KvEventType::Put as i32 {
            replayed.insert(kv.key, (kv.value, *revision));
        } else {
            replayed.remove(&kv.key);
        }
    }
    let listed: BTreeMap<String, (Vec<u8>, u64)> = match list.result {
        Some(v1::client_response::Result::List(list)) => {
            list.items.into_iter().map(|kv| (kv.key, (kv.value, kv.mod_revision))).collect()
        }
        other => panic!("a list, got {other:?}"),
    };
    assert_eq!(replayed.len(), listed.len(), "the replayed watch and the list hold different keys");
    assert!(replayed == listed, "the replayed watch differs from the list at revision {at}");
    assert!(acknowledged.len() >= 700, "the writers ran ({} acknowledged)", acknowledged.len());
}

fn list_request(prefix: &str) -> v1::ClientReadRequest {
    v1::ClientReadRequest {
        consistency: ReadConsistency::Linearizable as i32,
        query: Some(v1::client_read_request::Query::List(v1::KvList { prefix: prefix.into(), limit: 0 })),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resume_point_older_than_the_history_is_out_of_range_and_the_worker_watch_lists_again() {
    let options = Options { extra_toml: "[watch]\nhistory_max_revisions = 5\n".into(), ..Options::tls() };
    let cluster = Cluster::start(1, options).await;
    let client = Arc::new(cluster.client());
    for n in 0..20 {
        client.put(&format!("k/{n}"), "v").await.expect("a put");
    }

    let mut raw = v1::raft_client_service_client::RaftClientServiceClient::new(cluster.api_channel(1));
    let request = v1::WatchRequest { key: "k/".into(), prefix: true, since_revision: Some(1), ..Default::default() };
    let status = raw.watch(request).await.expect_err("revision 1 is long gone");
    let (end, oldest) = watch_end(&status).expect("a watch end with its revision");
    assert_eq!(end, WatchEnd::Compacted, "{status:?}");
    assert!(oldest > 10, "the history keeps 5 revisions: oldest {oldest}");
    assert!(status.message().contains(&format!("after revision {oldest}")), "{status:?}");
    // From the oldest revision named, the watch works.
    let request =
        v1::WatchRequest { key: "k/".into(), prefix: true, since_revision: Some(oldest), ..Default::default() };
    let mut stream = raw.watch(request).await.expect("a watch from the oldest revision").into_inner();
    let created = stream.message().await.expect("a message").expect("created");
    assert!(created.created && created.revision == oldest, "{created:?}");
    let first = stream.message().await.expect("a message").expect("events");
    assert!(first.revision > oldest && !first.events.is_empty(), "{first:?}");

    // A worker watch that asks for too old a revision lists again, then follows changes.
    let mut watch = client.watch_workers(v1::WatchWorkersRequest { since_revision: Some(1), ..Default::default() });
    match watch.next().await.expect("a relist") {
        WorkerWatchItem::Listed { revision, .. } => assert!(revision >= oldest, "listed at {revision}"),
        other => panic!("an OUT_OF_RANGE resume lists again, got {other:?}"),
    }
    assert_eq!(watch.reopened(), 1, "one relist");
    let pki = cluster.pki().expect("pki");
    let mut registry =
        v1::worker_registry_service_client::WorkerRegistryServiceClient::new(muster_e2e::cluster::channel(
            &cluster.addrs(1).api,
            Some(pki.component_tls(muster_tls::Role::Registrar, "reg-1")),
        ));
    let token = client
        .create_token(v1::CreateTokenRequest { ttl_seconds: 600, uses: 1, ..Default::default() })
        .await
        .expect("a token")
        .token;
    let registered = registry
        .register_worker(v1::RegisterWorkerRequest {
            token,
            profile: Some(v1::WorkerProfile { hostname: "watched".into(), ..Default::default() }),
            ..Default::default()
        })
        .await
        .expect("a worker")
        .into_inner()
        .worker
        .expect("the record");
    loop {
        match tokio::time::timeout(WAIT, watch.next()).await.expect("an event").expect("the watch") {
            WorkerWatchItem::Events { events, .. } => {
                assert_eq!(events[0].r#type, v1::WorkerEventType::Registered as i32);
                assert_eq!(events[0].worker.as_ref().map(|w| w.worker_id), Some(registered.worker_id));
                break;
            }
            WorkerWatchItem::Progress { .. } => {}
            other => panic!("no second listing: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_consumer_that_never_reads_is_ended_for_lag_while_a_hundred_others_get_every_event() {
    let options = Options { extra_toml: "[watch]\nslow_consumer_timeout = \"1s\"\n".into(), ..Options::tls() };
    let cluster = Cluster::start(1, options).await;
    let client = Arc::new(cluster.client());
    const WRITES: usize = 400;

    // The stalled consumer, on its own connection with small HTTP/2 windows (so the transport
    // soon holds all it will take): it opens the watch and never reads.
    let pki = cluster.pki().expect("pki");
    let stalled_channel = tonic::transport::Endpoint::from_shared(format!("https://{}", cluster.addrs(1).api))
        .expect("an endpoint")
        .tls_config(pki.operator_tls().domain_name("localhost"))
        .expect("TLS")
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect_lazy();
    let mut stalled_client = v1::raft_client_service_client::RaftClientServiceClient::new(stalled_channel);
    let request = v1::WatchRequest { key: "big/".into(), prefix: true, ..Default::default() };
    let mut stalled = stalled_client.watch(request).await.expect("a watch").into_inner();

    // A hundred readers of the same prefix from the revision before the writes (four groups
    // over the client's one connection); the writes start once every watch is open.
    let before = client.read(list_request("big/")).await.expect("a read").applied_index;
    let mut readers = JoinSet::new();
    for connection in 0..4 {
        for _ in 0..25 {
            let since_revision = Some(before);
            let mut watch = client.watch_kv(v1::WatchRequest {
                key: "big/".into(),
                prefix: true,
                since_revision,
                ..Default::default()
            });
            readers.spawn(async move {
                let mut seen = 0;
                while seen < WRITES {
                    match watch.next().await.expect("a reader's watch") {
                        KvWatchItem::Events { events, .. } => seen += events.len(),
                        KvWatchItem::Progress { .. } => {}
                    }
                }
                (connection, seen, watch.reopened())
            });
        }
    }
    let admin = cluster.addrs(1).admin.clone();
    eventually_msg("101 watches are open", WAIT, || {
        let admin = admin.clone();
        async move {
            let metrics = admin_get(&admin, "/metrics").await?;
            let open = metric_value(&metrics, "muster_watchers").unwrap_or(0.0);
            anyhow::ensure!(open >= 101.0, "{open} open");
            Ok(())
        }
    })
    .await;
    let rss_before = rss_kib(cluster.pid(1));
    let value = vec![b'x'; 16 * 1024];
    for n in 0..WRITES {
        client.put(&format!("big/{n}"), value.clone()).await.expect("a put");
    }
    let finished = tokio::time::timeout(WAIT, async {
        let mut finished = Vec::new();
        while let Some(reader) = readers.join_next().await {
            finished.push(reader.expect("a reader"));
        }
        finished
    })
    .await
    .expect("every reader got every event in time");
    assert_eq!(finished.len(), 100);
    for (connection, seen, reopened) in finished {
        assert_eq!(seen, WRITES, "a reader on connection {connection} missed or repeated events");
        assert_eq!(reopened, 0, "a reader that keeps up is never ended");
    }
    eventually_msg("the stalled watch is ended for lag", WAIT, || {
        let admin = admin.clone();
        async move {
            let metrics = admin_get(&admin, "/metrics").await?;
            let ended = metric_value(&metrics, "muster_watchers_ended_lagging_total").unwrap_or(0.0);
            anyhow::ensure!(ended >= 1.0, "{ended} ended");
            Ok(())
        }
    })
    .await;
    let grown = rss_kib(cluster.pid(1)).saturating_sub(rss_before);
    assert!(grown < 256 * 1024, "the node grew {grown} KiB serving 101 watches of 6 MiB of writes");

    // When it reads at last: what the transport still held, then the end with its resume point.
    let mut last_whole = 0;
    let status = tokio::time::timeout(WAIT, async {
        loop {
            match stalled.message().await {
                Ok(Some(message)) => {
                    if !message.fragment {
                        last_whole = message.revision;
                    }
                }
                Ok(None) => panic!("the stalled watch ended without saying why"),
                Err(status) => break status,
            }
        }
    })
    .await
    .expect("the stalled watch ends");
    assert_eq!(watch_end(&status), Some((WatchEnd::Lagging, last_whole)), "{status:?}");
    assert!(status.message().contains("fell behind"), "{status:?}");
    cluster.check_processes().expect("no process restarted");
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the node's status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_listing_in_pages_while_workers_churn_is_the_state_at_its_first_revision() {
    const WORKERS: usize = 20_000;
    let cluster = Cluster::start(1, Options::tls()).await;
    let client = Arc::new(cluster.client());
    let pki = cluster.pki().expect("pki");
    let registry = v1::worker_registry_service_client::WorkerRegistryServiceClient::new(muster_e2e::cluster::channel(
        &cluster.addrs(1).api,
        Some(pki.component_tls(muster_tls::Role::Registrar, "reg-1")),
    ));
    let token = client
        .create_token(v1::CreateTokenRequest { ttl_seconds: 600, uses: WORKERS as u32 + 1_000, ..Default::default() })
        .await
        .expect("a token")
        .token;
    let register = move |n: usize| {
        let (mut registry, token) = (registry.clone(), token.clone());
        async move {
            let profile = Some(v1::WorkerProfile { hostname: format!("listed-{n}"), ..Default::default() });
            registry
                .register_worker(v1::RegisterWorkerRequest { token, profile, ..Default::default() })
                .await
                .expect("a worker")
        }
    };
    let mut registering = JoinSet::new();
    for lane in 0..64 {
        let register = register.clone();
        registering.spawn(async move {
            for n in (lane..WORKERS).step_by(64) {
                register(n).await;
            }
        });
    }
    while let Some(done) = registering.join_next().await {
        done.expect("a registering lane");
    }

    // The first page fixes the listing's revision; then the fleet churns (relabels and new
    // workers) before the remaining pages are read.
    let mut admin = v1::worker_admin_service_client::WorkerAdminServiceClient::new(cluster.api_channel(1));
    let first = admin
        .list_workers(v1::ListWorkersRequest { page_size: 500, ..Default::default() })
        .await
        .expect("the first page")
        .into_inner();
    let at = first.revision;
    let mut churned_after = Vec::new();
    for worker_id in (1..=WORKERS as u64).step_by(97) {
        let change = v1::LabelChange { set: [("churn".to_string(), "yes".to_string())].into(), remove: Vec::new() };
        let relabelled = client.label_worker_call(worker_id, change).await.expect("a relabel");
        churned_after.push(relabelled.worker.expect("a record").revision);
    }
    for n in 0..50 {
        register(WORKERS + n).await;
    }
    assert!(churned_after.iter().all(|revision| *revision > at), "the churn came after the listing's revision");

    let mut listed = first.workers;
    let mut token = first.next_page_token;
    let mut pages = 1;
    while !token.is_empty() {
        let page = admin
            .list_workers(v1::ListWorkersRequest { page_size: 500, page_token: token, ..Default::default() })
            .await
            .expect("a page")
            .into_inner();
        assert_eq!(page.revision, at, "every page is served at the first page's revision");
        listed.extend(page.workers);
        token = page.next_page_token;
        pages += 1;
    }
    assert!(pages >= WORKERS / 500, "{pages} pages");
    let ids: Vec<u64> = listed.iter().map(|w| w.worker_id).collect();
    assert_eq!(ids, (1..=WORKERS as u64).collect::<Vec<_>>(), "every worker registered by then, once, in order");
    assert!(listed.iter().all(|w| w.revision <= at && !w.labels.contains_key("churn")), "a page showed a later change");

    // A page token of a listing the node no longer holds is refused, naming what to do.
    let stale =
        muster_e2e::v1::ListWorkersRequest { page_token: "AAAAAAAAAAEAAAAAAAAAAQ".into(), ..Default::default() };
    let status = admin.list_workers(stale).await.expect_err("an unknown listing");
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("list again from the first page"), "{status:?}");
    // The client pages for the caller and sees the churn now.
    let now = client.list_workers(v1::ListWorkersRequest::default()).await.expect("a listing");
    assert_eq!(now.len(), WORKERS + 50);
    assert_eq!(now.iter().filter(|w| w.labels.contains_key("churn")).count(), churned_after.len());
}

/// A `musterctl ... watch` child whose output lines the test reads as they come.
struct WatchCommand {
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl WatchCommand {
    fn start(cluster: &Cluster, args: &[&str]) -> Self {
        let endpoints: Vec<String> = cluster.ids().into_iter().map(|id| cluster.addrs(id).api.clone()).collect();
        let mut command = tokio::process::Command::new(muster_e2e::binaries::musterctl());
        command.args(["--insecure", "--endpoints", &endpoints.join(",")]).args(args);
        muster_e2e::process::without_muster_env(&mut command);
        command.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::inherit()).kill_on_drop(true);
        let mut child = command.spawn().expect("musterctl starts");
        let stdout = child.stdout.take().expect("its stdout");
        Self { child, lines: tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout)) }
    }

    async fn next_line(&mut self) -> String {
        tokio::time::timeout(WAIT, self.lines.next_line())
            .await
            .expect("a line in time")
            .expect("readable output")
            .expect("a line before the end")
    }

    /// Ctrl-C: the command stops cleanly.
    async fn interrupt(mut self) {
        let pid = self.child.id().expect("running").to_string();
        let sent = std::process::Command::new("kill").args(["-INT", &pid]).status().expect("kill runs");
        assert!(sent.success());
        let status = tokio::time::timeout(WAIT, self.child.wait()).await.expect("it stops").expect("its status");
        assert!(status.success(), "Ctrl-C ends a watch with status 0, got {status}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn musterctl_watch_prints_one_line_per_change_and_stops_cleanly_on_ctrl_c() {
    let cluster = Cluster::start(1, Options::default()).await;
    let client = cluster.client();

    let mut kv = WatchCommand::start(&cluster, &["kv", "watch", "app/"]);
    assert_eq!(kv.next_line().await, "REVISION  EVENT  KEY  VALUE");
    let mut kv_json = WatchCommand::start(&cluster, &["-o", "json", "kv", "watch", "app/"]);
    let mut workers = WatchCommand::start(&cluster, &["workers", "watch"]);
    assert_eq!(workers.next_line().await, "REVISION  EVENT  ID  NAME  STATE  LABELS");
    let synced = workers.next_line().await;
    assert!(synced.ends_with("  synced"), "an empty listing, then synced: {synced}");
    // Both watches run (the first line of a watch comes once it is open on the node).
    eventually_msg("both KV watches are open", WAIT, || async {
        let metrics = admin_get(&cluster.addrs(1).admin, "/metrics").await?;
        let open = metrics.lines().find(|line| line.starts_with("muster_watchers{") && line.contains("kind=\"kv\""));
        anyhow::ensure!(open.is_some_and(|line| line.ends_with(" 2")), "{open:?}");
        Ok(())
    })
    .await;

    let put = client.put("app/a", "one").await.expect("a put");
    client.put("other", "ignored").await.expect("a put");
    let deleted = client.delete("app/a").await.expect("a delete");
    assert_eq!(kv.next_line().await, format!("{}  put  app/a  one", put.index));
    assert_eq!(kv.next_line().await, format!("{}  delete  app/a  ", deleted.index).trim_end());
    let first: serde_json::Value = serde_json::from_str(&kv_json.next_line().await).expect("a JSON line");
    assert_eq!(first["event"], "put");
    assert_eq!(first["key"], "app/a");
    assert_eq!(first["revision"], put.index);
    kv.interrupt().await;
    kv_json.interrupt().await;
    workers.interrupt().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_caps_and_bad_requests_are_refused_by_name() {
    let options = Options { extra_toml: "[watch]\nmax_watchers_per_connection = 2\n".into(), ..Options::tls() };
    let cluster = Cluster::start(1, options).await;
    let mut raw = v1::raft_client_service_client::RaftClientServiceClient::new(cluster.api_channel(1));
    let watch = |key: &str, prefix: bool| v1::WatchRequest { key: key.into(), prefix, ..Default::default() };

    let status = raw.watch(watch("", false)).await.expect_err("no key and no prefix");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("key is empty"), "{status:?}");
    let status = raw.watch(watch(&"k".repeat(5_000), true)).await.expect_err("an oversize key");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("the limit is 4096"), "{status:?}");

    // Two watches on one connection, then the cap; a watch given back frees its place.
    let first = raw.watch(watch("a/", true)).await.expect("a first watch").into_inner();
    let _second = raw.watch(watch("b/", true)).await.expect("a second watch").into_inner();
    let status = raw.watch(watch("c/", true)).await.expect_err("a third watch on the connection");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("watch.max_watchers_per_connection"), "{status:?}");
    drop(first);
    eventually_msg("a dropped watch frees its place", WAIT, || {
        let mut raw = raw.clone();
        async move { Ok(raw.watch(watch("c/", true)).await?.into_inner()) }
    })
    .await;
    // Another connection has its own places.
    let mut other = v1::raft_client_service_client::RaftClientServiceClient::new(muster_e2e::cluster::channel(
        &cluster.addrs(1).api,
        cluster.operator_tls(),
    ));
    other.watch(watch("d/", true)).await.expect("a watch on another connection");
    cluster.check_processes().expect("no process restarted");
}

/// The largest values a write may hold, each replacing another as large, reach a `prev_kv`
/// watch whole: an event carrying the new value and the replaced one fits one message.
#[tokio::test(flavor = "multi_thread")]
async fn a_prev_kv_watch_carries_the_largest_writes_and_the_values_they_replaced() {
    const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
    let options = Options { max_message_bytes: Some(MAX_MESSAGE_BYTES), ..Options::tls() };
    let cluster = Cluster::start(1, options).await;
    let mut raw = v1::raft_client_service_client::RaftClientServiceClient::new(cluster.api_channel(1));
    let request = v1::WatchRequest { key: "big".into(), prev_kv: true, ..Default::default() };
    let mut stream = raw.watch(request).await.expect("a prev_kv watch").into_inner();
    let created = stream.message().await.expect("the created message").expect("a message");
    assert!(created.created, "the first message says where the watch starts: {created:?}");

    // The largest value the write limit admits with this key (a few bytes of command framing).
    let largest = MAX_MESSAGE_BYTES / 2 - MAX_MESSAGE_BYTES / 32 - 1024;
    let client = cluster.client();
    for fill in [b'a', b'b', b'c'] {
        client.put("big", vec![fill; largest]).await.expect("a value inside the write limit");
    }
    let mut events = Vec::new();
    while events.len() < 3 {
        let message = tokio::time::timeout(WAIT, stream.message())
            .await
            .expect("the watch delivers within the deadline")
            .expect("the watch stream stays open (every event fits a message)")
            .expect("the watch does not end");
        events.extend(message.events);
    }
    let value = |kv: &Option<v1::KeyValue>| kv.as_ref().map(|kv| (kv.value.len(), kv.value.first().copied()));
    let seen: Vec<_> = events.iter().map(|event| (value(&event.kv), value(&event.prev_kv))).collect();
    assert_eq!(
        seen,
        [
            (Some((largest, Some(b'a'))), None),
            (Some((largest, Some(b'b'))), Some((largest, Some(b'a')))),
            (Some((largest, Some(b'c'))), Some((largest, Some(b'b')))),
        ],
        "each put whole, with the whole value it replaced"
    );
    cluster.check_processes().expect("no process restarted");
}

/// Drops every packet the other nodes send to node `id`'s Raft port, in its namespace's input
/// chain next to the harness's own cuts (so `heal` flushes it too): no entry and no heartbeat
/// reaches it. Everything else still flows: the test's calls to its API, and its own
/// connections out (pre-votes to the peers' Raft ports, forwards and the linearizable
/// catch-up read to the leader's API), whose answers come from other ports.
fn cut_raft_traffic_into(cluster: &mut Cluster, id: u64) {
    let port = cluster.addrs(id).raft.rsplit_once(':').expect("host:port").1.to_owned();
    let others: Vec<u64> = cluster.ids().into_iter().filter(|other| *other != id).collect();
    let network = cluster.network();
    for other in others {
        let rule = format!("add rule inet muster input ip saddr {} tcp dport {port} drop", network.ip(other));
        let output = std::process::Command::new("ip")
            .args(["netns", "exec", &network.namespace(id), "nft"])
            .args(rule.split(' '))
            .output()
            .expect("ip netns exec nft runs");
        assert!(output.status.success(), "nft {rule}: {}", String::from_utf8_lossy(&output.stderr));
    }
}

/// Node `id`'s applied index, from its `/metrics`.
async fn applied_index(cluster: &Cluster, id: u64) -> anyhow::Result<u64> {
    let metrics = admin_get(&cluster.addrs(id).admin, "/metrics").await?;
    let applied = metric_value(&metrics, "muster_raft_applied_index")
        .ok_or_else(|| anyhow::anyhow!("node {id} reports no muster_raft_applied_index"))?;
    Ok(applied as u64)
}

/// Reads `stream` until it has sent everything up to `revision`: the (revision, key) of each
/// event on the way.
async fn kv_events_through(stream: &mut tonic::Streaming<v1::WatchResponse>, revision: u64) -> Vec<(u64, String)> {
    let mut seen = Vec::new();
    tokio::time::timeout(WAIT, async {
        loop {
            let message = stream.message().await.expect("the watch runs").expect("the watch stays open");
            seen.extend(
                message
                    .events
                    .iter()
                    .map(|event| (event.revision, event.kv.as_ref().map(|kv| kv.key.clone()).unwrap_or_default())),
            );
            if !message.fragment && message.revision >= revision {
                break;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the watch reached revision {revision} in time (seen so far: {seen:?})"));
    seen
}

/// The catch-up window of a follower's linearizable start (`CATCH_UP_TIMEOUT` in the
/// control plane's `node.rs`): how long it waits to apply up to the leader's revision.
const CATCH_UP_WINDOW: Duration = Duration::from_secs(5);

/// Asks `follower` for a linearizable watch on `lin/`: the stream and its first message (which
/// must say `created`), or the follower's refusal after its catch-up window, which must be
/// exactly that (UNAVAILABLE, naming a leader's revision at or after `written`). Panics on
/// anything else.
async fn open_linearizable(
    mut raw: v1::raft_client_service_client::RaftClientServiceClient<tonic::transport::Channel>,
    follower: u64,
    written: u64,
) -> Result<(tonic::Streaming<v1::WatchResponse>, v1::WatchResponse), tonic::Status> {
    let request = v1::WatchRequest { key: "lin/".into(), prefix: true, linearizable: true, ..Default::default() };
    let answer = tokio::time::timeout(WAIT, raw.watch(request))
        .await
        .unwrap_or_else(|_| panic!("node {follower} held a linearizable watch for {WAIT:?} without answering"));
    match answer {
        Ok(stream) => {
            let mut stream = stream.into_inner();
            let first = tokio::time::timeout(WAIT, stream.message())
                .await
                .expect("the first message of the linearizable watch in time")
                .expect("the linearizable watch runs")
                .expect("its first message");
            assert!(first.created && first.node_id == follower, "a watch first says where it starts: {first:?}");
            Ok((stream, first))
        }
        Err(status) => {
            let prefix = format!("node {follower} did not apply up to the leader's revision ");
            let target: Option<u64> =
                status.message().strip_prefix(&prefix).and_then(|rest| rest.split(' ').next()?.parse().ok());
            assert!(
                status.code() == tonic::Code::Unavailable && target.is_some_and(|target| target >= written),
                "a linearizable watch is refused only for a catch-up that ran out, naming the leader's \
                 revision (at or after W at {written}): {status:?}"
            );
            Err(status)
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_linearizable_watch_on_a_lagging_follower_never_starts_below_the_leaders_commit_index() {
    assert!(NamespaceNetwork::available(), "this test needs root and the ip and nft commands (iproute2, nftables)");
    let mut cluster = Cluster::start(3, Options { isolated_network: true, ..Options::tls() }).await;
    let leader = cluster.wait_for_leader(WAIT).await;
    let follower = cluster.ids().into_iter().find(|id| *id != leader).expect("a follower");
    let majority: Vec<String> =
        cluster.ids().into_iter().filter(|id| *id != follower).map(|id| cluster.addrs(id).api.clone()).collect();
    let client = cluster.client_with(majority, cluster.operator_client_tls());
    let before = client.put("lin/before", "seen by every node").await.expect("a put").index;
    eventually_msg(format!("node {follower} applies revision {before}"), WAIT, || async {
        let applied = applied_index(&cluster, follower).await?;
        anyhow::ensure!(applied >= before, "at {applied}");
        Ok(())
    })
    .await;

    // The follower gets no more entries; the leader and the third node commit W without it.
    cut_raft_traffic_into(&mut cluster, follower);
    let written =
        client.put("lin/written", "while the follower gets nothing").await.expect("the majority writes").index;
    let raw = v1::raft_client_service_client::RaftClientServiceClient::new(cluster.api_channel(follower));

    // The control: a plain watch starts from what the follower has, which is before W. This is
    // what makes the assertions below mean something: the follower really is behind.
    let request = v1::WatchRequest { key: "lin/".into(), prefix: true, ..Default::default() };
    let mut plain = raw.clone().watch(request).await.expect("a plain watch on the follower").into_inner();
    let plain_start = tokio::time::timeout(WAIT, plain.message())
        .await
        .expect("the plain watch answers in time")
        .expect("the plain watch runs")
        .expect("its first message");
    assert!(
        plain_start.created && plain_start.node_id == follower,
        "a plain watch first says where it starts: {plain_start:?}"
    );
    assert!(
        (before..written).contains(&plain_start.revision),
        "node {follower} gets no entries, so a plain watch there starts at or after {before} and before W at \
         {written}: {plain_start:?}"
    );

    // Linearizable, while no entry can reach the follower: it asks the leader (whose API it
    // still reaches) for its commit index, waits its catch-up window to apply that far, and
    // then refuses, rather than start below it.
    let asked = Instant::now();
    if let Ok((_, first)) = open_linearizable(raw.clone(), follower, written).await {
        panic!("node {follower}, which cannot get W at {written}, started a linearizable watch: {first:?}");
    }
    let waited = asked.elapsed();
    assert!(waited >= CATCH_UP_WINDOW - Duration::from_secs(1), "refused after {waited:?}, before its catch-up window");
    let applied = applied_index(&cluster, follower).await.expect("the follower's applied index");
    assert!(applied < written, "node {follower} is still behind W at {written} (at {applied})");

    // Linearizable again, asked while the follower is still behind, and healed while it waits:
    // it starts once the follower has applied the leader's revision, so at or after W. (Entries
    // reach the follower again within about 1.5 s of the heal, well inside its window; should
    // they take longer on a loaded machine, the refusal is checked and a new watch asked.)
    let pending = tokio::spawn(open_linearizable(raw.clone(), follower, written));
    cluster.network().heal().expect("healing");
    let opened = tokio::time::timeout(WAIT, pending).await.expect("the linearizable watch answers").expect("its task");
    let (mut linear, linear_start) = match opened {
        Ok(opened) => opened,
        Err(refusal) => {
            eprintln!("the linearizable watch asked before the heal ran out of catch-up time ({refusal:?}); again");
            eventually_msg(format!("a linearizable watch starts on node {follower} after the heal"), WAIT, || {
                let raw = raw.clone();
                async move { open_linearizable(raw, follower, written).await.map_err(anyhow::Error::from) }
            })
            .await
        }
    };
    assert!(linear_start.revision >= written, "the linearizable watch starts below W at {written}: {linear_start:?}");

    // Both then follow the same writes: the plain watch, which started before W, delivers it;
    // the linearizable one, which started after it, delivers only what came later.
    let later = client.put("lin/later", "after healing").await.expect("a put").index;
    let plain_events = kv_events_through(&mut plain, later).await;
    assert_eq!(
        plain_events,
        vec![(written, "lin/written".to_owned()), (later, "lin/later".to_owned())],
        "the plain watch, from {}",
        plain_start.revision
    );
    let linear_events = kv_events_through(&mut linear, later).await;
    assert_eq!(linear_events, vec![(later, "lin/later".to_owned())], "the linearizable watch, from {linear_start:?}");
    cluster.check_processes().expect("no process exited");
}
