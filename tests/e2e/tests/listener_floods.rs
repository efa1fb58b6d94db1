//! Connection floods against real processes: connections that never finish TLS, that finish
//! TLS but never send the HTTP/2 preface, and idle admin connections are closed after their
//! deadlines (the server's open descriptors come back to their baseline while the flood still
//! holds its sockets), the servers keep answering meanwhile and do not restart; one IP over
//! its cap is refused while another loopback address connects; and a server out of
//! descriptors backs off quietly instead of spinning, then serves again.

use std::future::Future;
use std::time::Duration;

use muster_e2e::flood::{self, count_lines, cpu_ticks, fd_count};
use muster_e2e::probe::admin_get;
use muster_e2e::registrar::Registrar;
use muster_e2e::{Cluster, Options, cluster::channel, eventually_msg};
use tokio::io::AsyncReadExt;
use tonic::transport::{Certificate, ClientTlsConfig};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// Connections per flood.
const FLOOD: usize = 300;
/// Descriptors a server may hold above its baseline once a flood has been closed.
const SLACK: usize = 25;
const WAIT: Duration = Duration::from_secs(30);

/// Short deadlines so floods clear in seconds.
const CP_LIMITS: &str = "\n[limits.listener]\ntls_handshake_timeout = \"2s\"\npreface_timeout = \"2s\"\n\
                         \n[limits.admin]\nheader_read_timeout = \"1s\"\n";
const REGISTRAR_LIMITS: &str = "\n[listener_limits]\ntls_handshake_timeout = \"2s\"\npreface_timeout = \"2s\"\n";

fn cluster_options() -> Options {
    Options { extra_toml: CP_LIMITS.to_string(), ..Options::tls() }
}

async fn control_plane_answers(cluster: &Cluster) -> anyhow::Result<()> {
    let client = cluster.client_for(1);
    tokio::time::timeout(Duration::from_secs(5), client.metadata()).await??;
    Ok(())
}

async fn registrar_answers(cluster: &Cluster, registrar: &Registrar) -> anyhow::Result<()> {
    let ca = cluster.pki().expect("a TLS cluster").ca_pem();
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    let mut health = HealthClient::new(channel(&registrar.addr, Some(tls)));
    tokio::time::timeout(Duration::from_secs(5), health.check(HealthCheckRequest { service: String::new() })).await??;
    Ok(())
}

/// Holds `flood` open while checking that `pid` accepted it, keeps answering (`answers`),
/// and closes it by itself: its descriptors return to `baseline`.
async fn closed_on_time<T, F, Fut>(what: &str, pid: u32, baseline: usize, flood: Vec<T>, answers: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    assert!(flood.len() >= FLOOD * 9 / 10, "{what}: only {} of {FLOOD} flood connections opened", flood.len());
    let held = fd_count(pid);
    assert!(held <= baseline + FLOOD + SLACK, "{what}: {held} descriptors (baseline {baseline})");
    eventually_msg(format!("{what}: the server answers during the flood"), WAIT, &answers).await;
    eventually_msg(format!("{what}: descriptors back near the baseline of {baseline}"), WAIT, || async {
        let now = fd_count(pid);
        anyhow::ensure!(now <= baseline + SLACK, "{now} open");
        Ok(())
    })
    .await;
    eventually_msg(format!("{what}: the server answers after the flood"), WAIT, &answers).await;
    drop(flood);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_that_never_finish_tls_or_never_start_http2_are_closed_on_time() {
    let cluster = Cluster::start(1, cluster_options()).await;
    let registrar = Registrar::start_with(&cluster, REGISTRAR_LIMITS);
    eventually_msg("the registrar serves", WAIT, || registrar_answers(&cluster, &registrar)).await;
    let connector = flood::tls_connector(&cluster.pki().expect("a TLS cluster").ca_pem());
    let (cp_pid, registrar_pid) = (cluster.pid(1), registrar.pid().expect("registrar running"));
    let api = cluster.addrs(1).api.clone();

    let baseline = fd_count(cp_pid);
    let stalled = flood::silent_tcp(&api, FLOOD).await;
    closed_on_time("control plane, no TLS", cp_pid, baseline, stalled, || control_plane_answers(&cluster)).await;
    let silent = flood::silent_tls(&api, FLOOD, &connector).await;
    closed_on_time("control plane, no preface", cp_pid, baseline, silent, || control_plane_answers(&cluster)).await;

    let baseline = fd_count(registrar_pid);
    let answers = || registrar_answers(&cluster, &registrar);
    let stalled = flood::silent_tcp(&registrar.addr, FLOOD).await;
    closed_on_time("registrar, no TLS", registrar_pid, baseline, stalled, answers).await;
    let silent = flood::silent_tls(&registrar.addr, FLOOD, &connector).await;
    closed_on_time("registrar, no preface", registrar_pid, baseline, silent, answers).await;

    cluster.check_processes().expect("the control plane did not exit");
    assert_eq!(cluster.pid(1), cp_pid, "the control plane was not restarted");
    assert_eq!(registrar.pid(), Some(registrar_pid), "the registrar did not exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_admin_connections_are_closed_while_healthz_answers() {
    let cluster = Cluster::start(1, cluster_options()).await;
    let (pid, admin) = (cluster.pid(1), cluster.addrs(1).admin.clone());
    let baseline = fd_count(pid);
    let idle = flood::silent_tcp(&admin, FLOOD).await;
    let healthz = || async {
        let response = admin_get(&admin, "/healthz").await?;
        anyhow::ensure!(response.starts_with("HTTP/1.1 200"), "{response}");
        Ok(())
    };
    closed_on_time("admin, no headers", pid, baseline, idle, healthz).await;
    cluster.check_processes().expect("the control plane did not exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_ip_over_its_cap_is_refused_while_another_connects() {
    const CAP: usize = 20;
    const FLOODER: [u8; 4] = [127, 0, 0, 3];
    let cluster = Cluster::start(1, Options::tls()).await;
    let limits = format!("\n[listener_limits]\nmax_connections_per_ip = {CAP}\ntls_handshake_timeout = \"60s\"\n");
    let registrar = Registrar::start_with(&cluster, &limits);
    eventually_msg("the registrar serves", WAIT, || registrar_answers(&cluster, &registrar)).await;
    let pid = registrar.pid().expect("registrar running");
    let baseline = fd_count(pid);
    // From 127.0.0.3, so the health checks' connections (from 127.0.0.1) share no cap with it.
    let mut held = Vec::new();
    for _ in 0..CAP {
        held.push(flood::connect_from(FLOODER, &registrar.addr).await.expect("connect under the cap"));
    }
    // The baseline may include the health check's connection, closed since.
    eventually_msg("the registrar holds the connections", WAIT, || async {
        anyhow::ensure!(fd_count(pid) + 2 >= baseline + CAP, "{} open", fd_count(pid));
        Ok(())
    })
    .await;

    let mut over = flood::connect_from(FLOODER, &registrar.addr).await.expect("connect");
    let started = std::time::Instant::now();
    let read = tokio::time::timeout(WAIT, over.read(&mut [0; 16])).await.expect("connection over the cap closed");
    assert!(matches!(read, Ok(0) | Err(_)), "the server sent data to a refused connection: {read:?}");
    assert!(started.elapsed() < Duration::from_secs(20), "closed only by a deadline: {:?}", started.elapsed());

    let connector = flood::tls_connector(&cluster.pki().expect("a TLS cluster").ca_pem());
    let other = flood::connect_from([127, 0, 0, 2], &registrar.addr).await.expect("connect from 127.0.0.2");
    flood::tls_handshake(&connector, other).await.expect("127.0.0.2 is served while 127.0.0.3 is at its cap");
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_the_server_backs_off_quietly_and_recovers() {
    const NOFILE: usize = 128;
    const WINDOW: Duration = Duration::from_secs(5);
    let cluster = Cluster::start(1, cluster_options()).await;
    let pid = cluster.pid(1);
    let status = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--nofile={NOFILE}:{NOFILE}")])
        .status()
        .expect("running prlimit");
    assert!(status.success(), "prlimit failed: {status}");
    assert!(fd_count(pid) < NOFILE / 2, "{} descriptors open before the flood", fd_count(pid));
    let log_before = count_lines(&cluster.log_text(1), "Too many open files");
    let cpu_before = cpu_ticks(pid);

    let api = cluster.addrs(1).api.clone();
    let flood = flood::silent_tcp(&api, NOFILE * 3).await;
    eventually_msg("the server runs out of descriptors", WAIT, || async {
        anyhow::ensure!(fd_count(pid) >= NOFILE - 2, "{} open", fd_count(pid));
        Ok(())
    })
    .await;
    // The measurement window: how much the server logs and burns while it cannot accept.
    tokio::time::sleep(WINDOW).await;
    let logged = count_lines(&cluster.log_text(1), "Too many open files") - log_before;
    let cpu = cpu_ticks(pid) - cpu_before;
    eprintln!("out of descriptors for {WINDOW:?}: {logged} log lines, {cpu} CPU ticks");
    drop(flood);
    assert!(logged >= 1, "the flood never exhausted the descriptors; log tail:\n{}", cluster.log_tail(1, 20));
    assert!(logged < 50, "{logged} 'Too many open files' lines; log tail:\n{}", cluster.log_tail(1, 20));
    // 100 ticks are one CPU second; a spinning accept loop burns about one per tick.
    let window_ticks = WINDOW.as_secs() * 100;
    assert!(cpu < window_ticks * 3 / 10, "{cpu} CPU ticks in a {WINDOW:?} flood");

    eventually_msg("the server serves again after the flood", WAIT, || control_plane_answers(&cluster)).await;
    cluster.check_processes().expect("the control plane did not exit");
    assert_eq!(cluster.pid(1), pid);
}
