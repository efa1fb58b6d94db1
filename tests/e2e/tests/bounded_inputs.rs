//! The bounded-input attack, replayed: oversize profiles and labels are refused at registration,
//! relabelling and token creation with `INVALID_ARGUMENT` naming the limit; twenty registered
//! workers flooding a gateway with oversize status reports are each refused yet keep their
//! leases, while the other workers stay Ready, the gateway stays ready, its batches keep
//! succeeding and no worker expires; lists page; and `musterctl` copes with a 70,000-character
//! value and pages `workers list`.

use std::ffi::OsString;
use std::time::{Duration, Instant};

use anyhow::ensure;
use muster_e2e::fleet::{BeatPlan, Fleet, SimIdentity, gateway_tls, register_all};
use muster_e2e::gateway::Gateway;
use muster_e2e::grpc_stream::BidiStream;
use muster_e2e::registrar::Registrar;
use muster_e2e::{Cluster, HeartbeatPolicy, Options, eventually_msg, v1};
use muster_proto::v1::worker_registration_service_client::WorkerRegistrationServiceClient;
use tonic::Code;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

const WAIT: Duration = Duration::from_secs(60);
const ATTACKERS: usize = 20;
const BYSTANDERS: usize = 3;
const REPORT_STATUS: &str = "/muster.v1.HeartbeatService/ReportStatus";

fn ca_pem(cluster: &Cluster) -> String {
    cluster.pki().expect("a TLS cluster").ca_pem()
}

async fn token(cluster: &Cluster, uses: u32) -> String {
    let request = v1::CreateTokenRequest { ttl_seconds: 600, uses, ..Default::default() };
    cluster.client().create_token(request).await.expect("token").token
}

fn labels(count: usize, value_bytes: usize) -> std::collections::HashMap<String, String> {
    (0..count).map(|i| (format!("k{i}"), "v".repeat(value_bytes))).collect()
}

/// Waits until something accepts connections at `addr` (a process just spawned).
async fn wait_listening(addr: &str) {
    eventually_msg(format!("{addr} accepts connections"), WAIT, || async {
        tokio::net::TcpStream::connect(addr).await?;
        Ok(())
    })
    .await;
}

fn assert_refused<T: std::fmt::Debug>(result: Result<T, tonic::Status>, limit: &str) {
    let status = result.expect_err("an oversize input is refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains(limit), "the refusal names {limit}: {}", status.message());
}

/// A Register call straight to the registrar with `profile` (a fresh key each time).
async fn register_with(
    registrar: &str,
    ca: &str,
    token: &str,
    profile: v1::WorkerProfile,
) -> Result<u64, tonic::Status> {
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)).domain_name("localhost");
    let channel = Endpoint::from_shared(format!("https://{registrar}")).unwrap().tls_config(tls).unwrap();
    let channel = channel.connect().await.expect("connecting to the registrar");
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let request = v1::RegisterRequest {
        token: token.to_string(),
        csr_pem: muster_worker_agent::register::csr_pem(&key).unwrap(),
        profile: Some(profile),
        ..Default::default()
    };
    let response = WorkerRegistrationServiceClient::new(channel).register(request).await?;
    Ok(response.into_inner().worker_id)
}

/// One report on a new stream as `identity`; the gateway's answer (an ack or a refusal).
async fn report_once(
    gateway: &str,
    tls: std::sync::Arc<rustls::ClientConfig>,
    report: &v1::StatusReport,
) -> Result<v1::StatusAck, tonic::Status> {
    let mut stream =
        BidiStream::<v1::StatusReport, v1::StatusAck>::open(gateway, tls, REPORT_STATUS, Duration::from_secs(10))
            .await?;
    stream.send(report)?;
    match tokio::time::timeout(Duration::from_secs(10), stream.message()).await {
        Ok(Ok(Some(ack))) => Ok(ack),
        Ok(Ok(None)) => Err(tonic::Status::unknown("the stream ended without an answer")),
        Ok(Err(status)) => Err(status),
        Err(_) => Err(tonic::Status::deadline_exceeded("no answer within 10 s")),
    }
}

/// A full report: attacker `index` alternates the two kinds of oversize report.
fn oversize_report(index: usize) -> v1::StatusReport {
    let labels = if index.is_multiple_of(2) {
        labels(12, 20 * 1024) // 240 KiB: over the decoding limit
    } else {
        labels(65, 8) // small, but over max_labels
    };
    let profile = v1::WorkerProfile { hostname: format!("attacker-{index}"), labels, ..Default::default() };
    v1::StatusReport {
        sequence: 1,
        state: v1::WorkerState::Ready as i32,
        full: true,
        profile: Some(profile),
        ..Default::default()
    }
}

async fn last_beats(cluster: &Cluster, ids: &[u64]) -> anyhow::Result<Vec<i64>> {
    let listed = cluster.client().list_workers_with_leases(v1::ListWorkersRequest::default()).await?;
    ids.iter()
        .map(|id| {
            let worker = listed.workers.iter().find(|w| w.worker_id == *id);
            let state = worker.map_or(0, |w| w.state);
            ensure!(state == v1::WorkerState::Ready as i32, "worker {id} is {state}");
            let lease = listed.leases.get(id).ok_or_else(|| anyhow::anyhow!("worker {id} has no lease"))?;
            Ok(lease.last_beat_unix_ms)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn oversize_inputs_are_refused_and_a_report_flood_costs_no_lease() {
    // Short leases, so the flood lasts several of them (TTL 2 s + grace 3 s).
    let policy = HeartbeatPolicy { min_ttl: "2s", grace: "3s", ..HeartbeatPolicy::fast() };
    let options = Options { heartbeat: Some(policy), ..Options::tls() };
    let cluster = Cluster::start(1, options).await;
    let registrar = Registrar::start_unthrottled(&cluster);
    wait_listening(&registrar.addr).await;
    let gateway = Gateway::start_with(&cluster, "gw-1", "batch_interval = \"100ms\"\nmin_report_interval = \"0s\"\n");
    gateway.wait_ready().await;
    let ca = ca_pem(&cluster);
    let client = cluster.client();

    // Registration, tokens and relabelling refuse oversize labels and profiles by name.
    let one_use = token(&cluster, 1).await;
    let big = v1::WorkerProfile { hostname: "big".into(), labels: labels(65, 1), ..Default::default() };
    assert_refused(register_with(&registrar.addr, &ca, &one_use, big).await, "max_labels");
    let long_value = v1::WorkerProfile { hostname: "big".into(), labels: labels(1, 300), ..Default::default() };
    assert_refused(register_with(&registrar.addr, &ca, &one_use, long_value).await, "max_label_value_bytes");
    let no_host = v1::WorkerProfile::default();
    assert_refused(register_with(&registrar.addr, &ca, &one_use, no_host).await, "max_hostname_bytes");
    let fine = v1::WorkerProfile { hostname: "fine".into(), labels: labels(3, 10), ..Default::default() };
    let fine_id = register_with(&registrar.addr, &ca, &one_use, fine).await.expect("the refusals spent no token use");
    let oversize_token = v1::CreateTokenRequest { labels: labels(1, 1_000), ..Default::default() };
    let refused = client.create_token(oversize_token).await.map_err(|err| err.status().cloned().expect("a status"));
    assert_refused(refused, "max_label_value_bytes");
    let long_description = v1::CreateTokenRequest { description: "d".repeat(2_000), ..Default::default() };
    let refused = client.create_token(long_description).await.map_err(|err| err.status().cloned().expect("a status"));
    assert_refused(refused, "max_description_bytes");
    let relabel = v1::LabelChange { set: labels(70, 1), remove: Vec::new() };
    let refused = client.label_worker(fine_id, relabel).await.map_err(|err| err.status().cloned().expect("a status"));
    assert_refused(refused, "max_labels");

    // Bystanders beat all along; attackers beat once properly, then flood oversize reports.
    let request =
        v1::CreateTokenRequest { ttl_seconds: 600, uses: (ATTACKERS + BYSTANDERS) as u32, ..Default::default() };
    let shared = client.create_token(request).await.expect("token").token;
    let identities = register_all(&registrar.addr, &ca, &shared, ATTACKERS + BYSTANDERS, 8).await.expect("register");
    let (bystanders, attackers): (&[SimIdentity], &[SimIdentity]) = identities.split_at(BYSTANDERS);
    let _fleet = Fleet::start(bystanders, &ca, BeatPlan { fixed_interval: None }).expect("bystander fleet");
    let attacker_ids: Vec<u64> = attackers.iter().map(|a| a.worker_id).collect();
    let bystander_ids: Vec<u64> = bystanders.iter().map(|b| b.worker_id).collect();
    let tls: Vec<_> = attackers.iter().map(|a| gateway_tls(a, &ca).expect("attacker tls")).collect();
    for (index, tls) in tls.iter().enumerate() {
        let good = v1::StatusReport {
            sequence: 1,
            state: v1::WorkerState::Ready as i32,
            full: true,
            profile: Some(v1::WorkerProfile { hostname: format!("attacker-{index}"), ..Default::default() }),
            ..Default::default()
        };
        report_once(&gateway.addr, tls.clone(), &good).await.expect("a good report is acked");
    }
    let every: Vec<u64> = attacker_ids.iter().chain(&bystander_ids).copied().collect();
    let before = eventually_msg("every worker Ready with a lease", WAIT, || last_beats(&cluster, &every)).await;
    let failures_before = gateway.metric("muster_gateway_batch_failures_total").await.expect("metric");

    // The flood: every attacker, again and again for well over TTL + grace.
    let flood_until = Instant::now() + Duration::from_secs(12);
    let mut rounds = 0;
    while Instant::now() < flood_until {
        for (index, tls) in tls.iter().enumerate() {
            let answer = report_once(&gateway.addr, tls.clone(), &oversize_report(index)).await;
            let limit = if index.is_multiple_of(2) { "max_status_report_bytes" } else { "max_labels" };
            assert_refused(answer, limit);
        }
        rounds += 1;
        gateway.readyz().await.expect("the gateway stays ready during the flood");
    }
    assert!(rounds >= 2, "the flood ran {rounds} rounds");

    // Nobody lost a lease: the refused reports counted as beats, and everyone is still Ready.
    eventually_msg("the refused reports still count as beats", WAIT, || async {
        let after = last_beats(&cluster, &every).await?;
        for ((id, then), now) in every.iter().zip(&before).zip(&after) {
            ensure!(now > then, "worker {id}: last beat {now} not after {then}");
        }
        Ok(())
    })
    .await;
    let filter = v1::ListWorkersRequest { state: v1::WorkerState::Unreachable as i32, ..Default::default() };
    let expired: Vec<u64> = client.list_workers(filter).await.expect("list").iter().map(|w| w.worker_id).collect();
    // Only the worker registered above and never started may have expired.
    assert!(expired.iter().all(|id| *id == fine_id), "no beating worker expired: {expired:?}");
    let failures_after = gateway.metric("muster_gateway_batch_failures_total").await.expect("metric");
    assert_eq!(failures_after, failures_before, "every liveness batch succeeded");
    let refused = gateway.metric("muster_gateway_reports_refused_total").await.expect("metric");
    assert!(refused >= (ATTACKERS * rounds) as f64, "{refused} refusals counted");
    let log = cluster.log_tail(1, 2_000);
    assert!(!log.contains("MASS SILENCE"), "no mass-silence episode:\n{log}");

    // The stored profiles are the good ones: nothing oversize reached Raft.
    for id in &attacker_ids {
        let worker = client.worker_action(muster_e2e::WorkerAction::Get, *id).await.expect("get");
        assert!(worker.profile.unwrap_or_default().labels.is_empty(), "worker {id} kept its good profile");
    }
}

/// `musterctl --tls files --endpoints <node 1> ARGS`; returns (success, stdout, stderr).
async fn musterctl(cluster: &Cluster, args: &[&str]) -> (bool, String, String) {
    let files = cluster.pki().expect("pki").operator();
    let mut all: Vec<OsString> = ["--timeout", "20s", "--endpoints", &cluster.addrs(1).api].map(OsString::from).into();
    for (flag, file) in [("--ca", &files.ca), ("--cert", &files.cert), ("--key", &files.key)] {
        all.extend([OsString::from(flag), file.into()]);
    }
    all.extend(args.iter().map(OsString::from));
    muster_e2e::process::run_musterctl(all, Duration::from_secs(60)).await
}

#[tokio::test(flavor = "multi_thread")]
async fn lists_page_and_musterctl_copes_with_huge_values() {
    const WORKERS: usize = 60;
    const TOKENS: usize = 1_010;
    let cluster = Cluster::start(1, Options::tls()).await;
    let registrar = Registrar::start_unthrottled(&cluster);
    wait_listening(&registrar.addr).await;
    let client = cluster.client();
    let shared = token(&cluster, WORKERS as u32).await;
    register_all(&registrar.addr, &ca_pem(&cluster), &shared, WORKERS, 8).await.expect("register");

    // Pages of 7, in id order, cover every worker once; a bad token is refused by name.
    let mut seen = Vec::new();
    let mut request = v1::ListWorkersRequest { page_size: 7, ..Default::default() };
    loop {
        let page = client.list_workers_page(request.clone()).await.expect("a page");
        assert!(page.workers.len() <= 7);
        seen.extend(page.workers.iter().map(|w| w.worker_id));
        if page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
    }
    assert_eq!(seen.len(), WORKERS);
    assert!(seen.windows(2).all(|pair| pair[0] < pair[1]), "id order: {seen:?}");
    assert_eq!(client.list_workers(v1::ListWorkersRequest::default()).await.expect("all").len(), WORKERS);
    let bad = v1::ListWorkersRequest { page_token: "not a token!".into(), ..Default::default() };
    let refused = client.list_workers_page(bad).await.map_err(|err| err.status().cloned().expect("a status"));
    assert_refused(refused, "page_token");

    // Page sizes are clamped: more tokens than the largest page, fetched whole by the client.
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in 0..10 {
        let client = cluster.client();
        tasks.spawn(async move {
            for _ in 0..TOKENS.div_ceil(10) {
                let request = v1::CreateTokenRequest { ttl_seconds: 600, uses: 1, ..Default::default() };
                client.create_token(request).await?;
            }
            anyhow::Ok(chunk)
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("task").expect("creating tokens");
    }
    let request = v1::ListTokensRequest { page_size: 100_000, ..Default::default() };
    let first = client.list_tokens_page(request).await.expect("a page");
    assert_eq!(first.tokens.len(), 1_000, "clamped to the largest page");
    assert!(!first.next_page_token.is_empty());
    let all = client.list_tokens(false).await.expect("every token");
    assert!(all.len() >= TOKENS, "{} tokens", all.len());

    let (ok, stdout, stderr) = musterctl(&cluster, &["workers", "list"]).await;
    assert!(ok, "workers list: {stderr}");
    assert_eq!(stdout.lines().count(), WORKERS + 1, "a header and every worker:\n{stdout}");
    let (ok, stdout, stderr) = musterctl(&cluster, &["token", "list"]).await;
    assert!(ok && stdout.lines().count() > TOKENS, "token list: {stderr}");

    // A 70,000-character value, newlines and wide characters: tables stay whole, JSON has it all.
    let huge = "x".repeat(70_000);
    client.put("huge", huge.as_str()).await.expect("put");
    client.put("odd", "line one\nline two\t\u{1b}[31m界").await.expect("put");
    let (ok, stdout, stderr) = musterctl(&cluster, &["kv", "list"]).await;
    assert!(ok, "kv list must not fail: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stdout.lines().count(), 3, "one line per key:\n{stdout}");
    assert!(stdout.contains('…') && stdout.lines().all(|line| line.len() < 400), "{stdout}");
    let (ok, stdout, stderr) = musterctl(&cluster, &["kv", "list", "-o", "json"]).await;
    assert!(ok && stdout.contains(&huge), "the JSON has the whole value: {stderr}");
}

/// Values of 1.5 MiB, more of them than fit one 4 MiB peer message: a follower that was down
/// while they were written catches up on all of them (replication sends as many entries as
/// fit half a message, however many are missing).
#[tokio::test(flavor = "multi_thread")]
async fn a_follower_catches_up_on_more_large_values_than_fit_one_message() {
    const VALUE_BYTES: usize = 1536 * 1024;
    const VALUES: u8 = 4;
    let mut cluster = Cluster::start(3, Options::default()).await;
    let leader = cluster.wait_for_leader(WAIT).await;
    let lagging = cluster.ids().into_iter().find(|id| *id != leader).expect("a follower");
    cluster.kill(lagging);
    let client = cluster.client();
    for n in 0..VALUES {
        let put = client.put(&format!("large/{n}"), vec![n; VALUE_BYTES]).await;
        assert!(put.expect("a large put on the remaining majority").succeeded);
    }
    cluster.restart(lagging);
    let follower = cluster.client_for(lagging);
    eventually_msg("the restarted follower applies every large value", WAIT, || {
        let follower = &follower;
        async move {
            for n in 0..VALUES {
                let stored = follower.get(&format!("large/{n}"), v1::ReadConsistency::Stale).await?;
                ensure!(stored.is_some_and(|kv| kv.value == vec![n; VALUE_BYTES]), "large/{n} not there yet");
            }
            Ok(())
        }
    })
    .await;
}
