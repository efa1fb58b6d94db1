//! The worker lifecycle a scheduler follows, against real processes: a live worker agent is
//! cordoned by id and uncordoned by label selector with `musterctl workers`; each change shows
//! in `workers list`, in `workers get -o json` and as a watch event, and the worker stays Ready
//! throughout (eligibility is not liveness). A worker that has left cannot be cordoned. A
//! drain reaches the agent (its `/status` and metrics), ends when the node runs `worker-agent
//! drained` or when its deadline passes, and undrain makes the worker Ready and eligible. A
//! worker's capacity change reaches its record and watchers, and a steady worker sends its
//! profile once per stream.

use std::sync::Arc;

use muster_client::WorkerWatchItem;
use muster_e2e::agent::Agent;
use muster_e2e::gateway::Gateway;
use muster_e2e::v1;
use muster_e2e::worker_tier::{WAIT, WorkerTier};

/// The next worker event of the watch, skipping listings and progress notes.
async fn next_event(watch: &mut muster_client::WorkerWatch) -> v1::WorkerEvent {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let item = tokio::time::timeout_at(deadline, watch.next()).await.expect("an event in time").expect("the watch");
        match item {
            WorkerWatchItem::Events { mut events, .. } if !events.is_empty() => return events.remove(0),
            _ => {}
        }
    }
}

fn describe(item: &WorkerWatchItem) -> String {
    match item {
        WorkerWatchItem::Listed { revision, workers } => format!("listed {} at {revision}", workers.len()),
        WorkerWatchItem::Events { revision, events } => format!("{} events at {revision}", events.len()),
        WorkerWatchItem::Progress { revision } => format!("progress {revision}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_live_worker_is_cordoned_and_uncordoned_and_stays_ready() {
    let tier = WorkerTier::start("", "").await;
    let mut agent = tier.agent(1).await;
    agent.cluster_toml = "labels = { pool = \"batch\" }\n".into();
    agent.start();
    let id = agent.wait_beating(WAIT).await;
    let id_text = id.to_string();

    let client = Arc::new(tier.cluster.client());
    let mut watch = client.watch_workers(v1::WatchWorkersRequest::default());
    // Opened (the listing came) before anything changes.
    let listed = tokio::time::timeout(WAIT, watch.next()).await.expect("a listing in time").expect("the watch");
    assert!(matches!(&listed, WorkerWatchItem::Listed { workers, .. } if workers.len() == 1), "{}", describe(&listed));

    let (ok, stdout, stderr) = tier.musterctl(&["workers", "cordon", &id_text]).await;
    assert!(ok && stdout.contains("ready,cordoned"), "cordon: {stdout}\n{stderr}");
    let event = next_event(&mut watch).await;
    assert_eq!(event.r#type, v1::WorkerEventType::Cordoned as i32, "{event:?}");
    let (ok, stdout, _) = tier.musterctl(&["workers", "list"]).await;
    assert!(ok && stdout.contains("ready,cordoned"), "list: {stdout}");
    let (ok, stdout, _) = tier.musterctl(&["-o", "json", "workers", "get", &id_text]).await;
    let got: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert!(ok && got[0]["eligible"] == false && got[0]["state"] == "ready", "get: {got}");
    wait_agent_eligible(&agent, false).await;

    let (ok, stdout, stderr) = tier.musterctl(&["workers", "uncordon", "--label", "pool=batch"]).await;
    assert!(ok && stdout.contains(&id_text) && !stdout.contains("cordoned"), "uncordon: {stdout}\n{stderr}");
    let event = next_event(&mut watch).await;
    assert_eq!(event.r#type, v1::WorkerEventType::Uncordoned as i32, "{event:?}");
    wait_agent_eligible(&agent, true).await;
    let (ok, stdout, stderr) = tier.musterctl(&["workers", "cordon"]).await;
    assert!(!ok && stderr.contains("--label"), "neither an id nor a selector: {stdout}\n{stderr}");

    // A worker that has left takes no work either way.
    let status = agent.terminate().await;
    assert!(status.success(), "the agent leaves cleanly: {status}");
    let event = next_event(&mut watch).await;
    assert_eq!(event.r#type, v1::WorkerEventType::Left as i32, "{event:?}");
    let (ok, _, stderr) = tier.musterctl(&["workers", "cordon", &id_text]).await;
    assert!(!ok && stderr.contains("takes no work either way"), "cordoning a worker that left: {stderr}");
}

/// Waits until the agent's `/status` has `drain.stage` = `stage` (`none`: no drain).
async fn wait_agent_stage(agent: &Agent, stage: &str) -> serde_json::Value {
    muster_e2e::eventually_msg(format!("the agent's /status to show drain stage {stage}"), WAIT, || async {
        let status = agent.status().await?;
        let shown = status["drain"]["stage"].as_str().unwrap_or("none");
        anyhow::ensure!(shown == stage, "{status}");
        Ok(status)
    })
    .await
}

/// Waits until the agent's `/status` says `eligible` is `eligible`.
async fn wait_agent_eligible(agent: &Agent, eligible: bool) {
    muster_e2e::eventually_msg(format!("the agent's /status to show eligible = {eligible}"), WAIT, || async {
        let status = agent.status().await?;
        anyhow::ensure!(status["eligible"] == eligible, "{status}");
        Ok(())
    })
    .await;
}

/// `workers get -o json` of `id`: the worker object.
async fn get_json(tier: &WorkerTier, id: &str) -> serde_json::Value {
    let (ok, stdout, stderr) = tier.musterctl(&["-o", "json", "workers", "get", id]).await;
    assert!(ok, "get: {stdout}\n{stderr}");
    let got: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    got[0].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drain_reaches_the_agent_ends_by_report_or_deadline_and_is_lifted() {
    let tier = WorkerTier::start("", "").await;
    let (agent, id) = tier.beating_agent().await;
    let id_text = id.to_string();
    let status = agent.status().await.expect("/status");
    assert_eq!((status["worker_id"].as_u64(), &status["draining"]), (Some(id), &serde_json::json!(false)));

    let client = Arc::new(tier.cluster.client());
    let mut watch = client.watch_workers(v1::WatchWorkersRequest::default());
    let listed = tokio::time::timeout(WAIT, watch.next()).await.expect("a listing in time").expect("the watch");
    assert!(matches!(&listed, WorkerWatchItem::Listed { .. }), "{}", describe(&listed));

    // Drain with a deadline the node beats: the agent is told, the node reports drained.
    let (ok, stdout, stderr) = tier.musterctl(&["workers", "drain", &id_text, "--deadline", "10m"]).await;
    assert!(ok && stdout.contains("draining"), "drain: {stdout}\n{stderr}");
    let event = next_event(&mut watch).await;
    assert_eq!(event.r#type, v1::WorkerEventType::Draining as i32, "{event:?}");
    let drain = event.worker.as_ref().and_then(|w| w.drain).expect("the drain is recorded");
    assert!(drain.deadline_unix >= drain.started_at_unix + 599, "{drain:?}");
    let status = wait_agent_stage(&agent, "draining").await;
    assert_eq!(status["drain"]["deadline_unix"].as_i64(), Some(drain.deadline_unix), "{status}");
    let metrics = agent.metrics().await.expect("metrics");
    assert!(metrics.contains("muster_worker_draining 1"), "{metrics}");
    let got = get_json(&tier, &id_text).await;
    assert!(got["state"] == "draining" && got["eligible"] == false && got["drain"]["outcome"] == "draining", "{got}");

    let (ok, stdout, stderr) = agent.mark_drained().await;
    assert!(ok && stdout.contains("marked drained"), "worker-agent drained: {stdout}\n{stderr}");
    let event = next_event(&mut watch).await;
    assert_eq!(event.r#type, v1::WorkerEventType::Drained as i32, "{event:?}");
    wait_agent_stage(&agent, "drained").await;
    let (ok, stdout, _) = tier.musterctl(&["workers", "list"]).await;
    assert!(ok && stdout.contains("drained"), "list: {stdout}");
    let got = get_json(&tier, &id_text).await;
    assert!(got["drain"]["outcome"] == "drained" && got["drain"]["ended_at"] != "-", "{got}");

    let (ok, stdout, stderr) = tier.musterctl(&["workers", "undrain", &id_text]).await;
    assert!(ok && stdout.contains("ready") && !stdout.contains("drain"), "undrain: {stdout}\n{stderr}");
    let event = next_event(&mut watch).await;
    assert_eq!(event.r#type, v1::WorkerEventType::Ready as i32, "{event:?}");
    let status = wait_agent_stage(&agent, "none").await;
    assert_eq!(status["draining"], false, "{status}");
    assert!(!agent.identity_dir().join("drained").exists(), "the marker of the ended drain is gone");
    let got = get_json(&tier, &id_text).await;
    assert!(got["state"] == "ready" && got["eligible"] == true && got["drain"].is_null(), "{got}");
    let (ok, _, stderr) = tier.musterctl(&["workers", "undrain", &id_text]).await;
    assert!(!ok && stderr.contains("not draining"), "undrain of a ready worker: {stderr}");

    // Drain with a deadline the node misses: recorded as passed; the worker stays live.
    let (ok, stdout, stderr) = tier.musterctl(&["workers", "drain", &id_text, "--deadline", "2s"]).await;
    assert!(ok, "drain: {stdout}\n{stderr}");
    let event = next_event(&mut watch).await;
    assert_eq!(event.r#type, v1::WorkerEventType::Draining as i32, "{event:?}");
    let event = next_event(&mut watch).await;
    assert_eq!(event.r#type, v1::WorkerEventType::DrainDeadlinePassed as i32, "{event:?}");
    let worker = event.worker.expect("the record");
    let drain = worker.drain.expect("the drain");
    assert!(drain.ended_at_unix >= drain.deadline_unix, "{drain:?}");
    assert_eq!(worker.state, v1::WorkerState::Draining as i32, "a passed deadline does not make it unreachable");
    wait_agent_stage(&agent, "deadline-passed").await;
    let got = get_json(&tier, &id_text).await;
    assert_eq!(got["drain"]["outcome"], "deadline-passed", "{got}");
    let (ok, stdout, _) = tier.musterctl(&["workers", "list"]).await;
    assert!(ok && stdout.contains("deadline-passed"), "list: {stdout}");
    let (ok, _, stderr) = tier.musterctl(&["workers", "drain", &id_text, "--deadline", "400d"]).await;
    assert!(!ok && stderr.contains("at most"), "a deadline over a year: {stderr}");

    let (ok, _, stderr) = tier.musterctl(&["workers", "undrain", &id_text]).await;
    assert!(ok, "undrain: {stderr}");
    let event = next_event(&mut watch).await;
    assert_eq!(event.r#type, v1::WorkerEventType::Ready as i32, "{event:?}");
    agent.wait_beating(WAIT).await;
}

/// The gateway's count of profiles forwarded to the leader.
async fn profiles_forwarded(gateway: &Gateway) -> u64 {
    let body = muster_e2e::probe::metrics_body(&gateway.admin).await.expect("gateway metrics");
    let line = body.lines().find(|l| l.starts_with("muster_gateway_profiles_forwarded_total")).expect("the counter");
    line.rsplit(' ').next().and_then(|v| v.parse().ok()).expect("a number")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_capacity_change_reaches_the_record_once_and_a_steady_profile_is_sent_once() {
    let tier = WorkerTier::start("", "").await;
    let capacity = tempfile::tempdir().expect("temp dir");
    let capacity_file = capacity.path().join("capacity.toml");
    std::fs::write(&capacity_file, "gpus = 1\n").expect("capacity file");
    let mut agent = tier.agent(1).await;
    agent.top_toml = format!("capacity_file = {:?}\nprofile_refresh = \"1s\"", capacity_file.display().to_string());
    agent.start();
    let id = agent.wait_beating(WAIT).await;
    let id_text = id.to_string();
    let got = get_json(&tier, &id_text).await;
    assert_eq!(got["capacity"]["gpus"], 1, "{got}");

    // Steady: beat after beat (each re-measures the profile), one profile on the stream.
    let beats = |metrics: &str| -> u64 {
        let line = metrics.lines().find(|l| l.starts_with("muster_worker_heartbeats_total")).unwrap_or("x 0");
        line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0)
    };
    let first = beats(&agent.metrics().await.expect("agent metrics"));
    muster_e2e::eventually_msg("five more beats", WAIT, || async {
        let now = beats(&agent.metrics().await?);
        anyhow::ensure!(now >= first + 5, "{now} beats");
        Ok(())
    })
    .await;
    assert_eq!(profiles_forwarded(&tier.gateway).await, 1, "a steady worker sends its profile once per stream");

    let client = Arc::new(tier.cluster.client());
    let mut watch = client.watch_workers(v1::WatchWorkersRequest::default());
    let listed = tokio::time::timeout(WAIT, watch.next()).await.expect("a listing in time").expect("the watch");
    assert!(matches!(&listed, WorkerWatchItem::Listed { .. }), "{}", describe(&listed));
    std::fs::write(&capacity_file, "gpus = 2\n").expect("capacity file");
    let event = next_event(&mut watch).await;
    assert_eq!(event.r#type, v1::WorkerEventType::ProfileChanged as i32, "{event:?}");
    let profile = event.worker.and_then(|w| w.profile).expect("the profile");
    assert_eq!(profile.capacity.get("gpus"), Some(&2));
    let got = get_json(&tier, &id_text).await;
    assert_eq!(got["capacity"]["gpus"], 2, "{got}");
    assert_eq!(profiles_forwarded(&tier.gateway).await, 2, "the change, once");
    assert_eq!(got["state"], "ready");
}
