//! Certificate renewal as docs/operations.md ("Certificates") tells a compose user to do it:
//! the table's compose line, run as written, while the workers beat. It re-issues every
//! certificate in the shared `pki` volume; each control-plane node, the registrar and every
//! gateway must then serve the new certificate without restarting: a new serial on its TLS
//! port, `muster_tls_reloads_total` up, `muster_tls_cert_expires_at_seconds` showing the expiry
//! it now serves (never earlier than before), and the container neither restarted nor
//! recreated. No worker leaves Ready meanwhile, and a write through a new operator connection
//! succeeds after.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use muster_e2e::compose::{ComposeStack, compose_program, repo_root, run};
use muster_e2e::eventually_msg;
use muster_e2e::probe::{cert_expiries, metric_value, metrics_body};
use muster_tls::{ClientTls, Role, ServerCheck};
use rustls::pki_types::ServerName;

use super::fleet::workers;
use super::fleet_watch::while_every_worker_ready;

/// The longest a deployable may take to load changed files: `tls.reload_interval` (10 s by
/// default) several times over, for a loaded 2-core machine.
const RELOAD_WAIT: Duration = Duration::from_secs(60);

/// One container that serves a certificate from the `pki` volume.
struct Deployable {
    service: &'static str,
    container: String,
    role: Role,
    tls_port: u16,
    admin_port: u16,
}

/// What a deployable shows of its certificate, and of its container's life.
#[derive(Debug, PartialEq)]
struct Seen {
    serial: String,
    not_after: i64,
    metric_expiry: i64,
    reloads: f64,
    started: String,
}

/// The compose line of the renewal table in docs/operations.md, as written there.
fn documented_renewal() -> String {
    let docs = std::fs::read_to_string(repo_root().join("docs/operations.md")).expect("docs/operations.md");
    let row = docs
        .lines()
        .find(|line| line.starts_with("| Docker Compose |"))
        .expect("docs/operations.md has a Docker Compose row in its renewal table");
    let command = row.split('`').nth(1).expect("the compose row names a command in backticks");
    assert!(command.starts_with("docker compose run --rm pki tls renew"), "unexpected renewal command: {command}");
    command.to_owned()
}

async fn deployables(stack: &ComposeStack) -> Vec<Deployable> {
    let services = [
        ("control-plane-1", Role::ControlPlane, 3669, 3680),
        ("control-plane-2", Role::ControlPlane, 3669, 3680),
        ("control-plane-3", Role::ControlPlane, 3669, 3680),
        ("registrar", Role::Registrar, 3670, 3681),
        ("heartbeat-gateway", Role::Gateway, 3671, 3682),
    ];
    let mut found = Vec::new();
    for (service, role, tls_port, admin_port) in services {
        for container in stack.containers(service).await {
            found.push(Deployable { service, container, role, tls_port, admin_port });
        }
    }
    found
}

/// The serial (hex) and expiry of the certificate served on `addr`, checked against the CA
/// and the role; a fresh client each time, so no resumed session hides the certificate.
async fn served_certificate(addr: SocketAddr, role: Role, ca_pem: &[u8]) -> anyhow::Result<(String, i64)> {
    let tls = ClientTls::new(ca_pem, None, ServerCheck::Role(role))?;
    let connector = tokio_rustls::TlsConnector::from(tls.rustls_config());
    let handshake = async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        anyhow::Ok(connector.connect(ServerName::from(addr.ip()), tcp).await?)
    };
    let stream = tokio::time::timeout(Duration::from_secs(5), handshake)
        .await
        .with_context(|| format!("TLS handshake with {addr} timed out"))?
        .with_context(|| format!("TLS handshake with {addr}"))?;
    let der = stream.get_ref().1.peer_certificates().and_then(|chain| chain.first()).context("no certificate")?;
    let (_, cert) = x509_parser::parse_x509_certificate(der).context("parsing the served certificate")?;
    Ok((cert.raw_serial_as_string(), cert.validity().not_after.timestamp()))
}

async fn seen(stack: &ComposeStack, deployable: &Deployable, ca_pem: &[u8]) -> anyhow::Result<Seen> {
    let ip = stack.ip(&deployable.container).await?;
    let (serial, not_after) =
        served_certificate(SocketAddr::new(ip, deployable.tls_port), deployable.role, ca_pem).await?;
    let body = metrics_body(&format!("{ip}:{}", deployable.admin_port)).await?;
    let role = deployable.role.as_str();
    let metric_expiry = cert_expiries(&body, role)
        .first()
        .map(|(_, expiry)| *expiry)
        .with_context(|| format!("no muster_tls_cert_expires_at_seconds{{role=\"{role}\"}} series"))?;
    let reloads = metric_value(&body, "muster_tls_reloads_total").context("no muster_tls_reloads_total")?;
    let started = stack.inspect(&deployable.container, "{{.State.StartedAt}} restarts={{.RestartCount}}").await?;
    Ok(Seen { serial, not_after, metric_expiry, reloads, started })
}

/// The compose renewal while the fleet beats: every deployable serves the renewed certificate
/// from its files, nothing restarts, no worker is marked down, and writes go on.
pub async fn compose_renewal_reloads_without_restart(stack: &ComposeStack) {
    let ca_pem = std::fs::read(stack.tls_dir().join("ca.pem")).expect("the CA compose-up.sh copied out");
    let deployables = deployables(stack).await;
    assert!(deployables.len() >= 5, "3 nodes, a registrar and a gateway expected: {}", deployables.len());
    let mut before = Vec::new();
    for deployable in &deployables {
        let what = format!("{} ({}) before the renewal", deployable.service, deployable.container);
        before.push(eventually_msg(what, Duration::from_secs(30), || seen(stack, deployable, &ca_pem)).await);
    }
    let count = workers(stack).await.expect("workers").len();

    let renewed = while_every_worker_ready(stack, count, async {
        let line = documented_renewal();
        let shell_line = line.replacen("docker compose", &compose_program().join(" "), 1);
        let outcome = run(stack.bash(&shell_line), Duration::from_secs(120)).await.unwrap_or_else(|e| panic!("{e:#}"));
        assert!(outcome.ok, "the documented renewal failed:\n  {line}\nrun as:\n  {shell_line}\n{}", outcome.text());
        eprintln!("{line}:\n{}", outcome.stdout.trim_end());
        let mut after = Vec::new();
        for (deployable, old) in deployables.iter().zip(&before) {
            let what = format!("{} ({}) serving the renewed certificate", deployable.service, deployable.container);
            after.push(
                eventually_msg(what, RELOAD_WAIT, || async {
                    let now = seen(stack, deployable, &ca_pem).await?;
                    ensure!(now.serial != old.serial, "still serves serial {}", old.serial);
                    ensure!(now.reloads > old.reloads, "muster_tls_reloads_total still {}", now.reloads);
                    ensure!(now.metric_expiry == now.not_after, "the metric shows {} for {now:?}", now.metric_expiry);
                    Ok(now)
                })
                .await,
            );
        }
        after
    })
    .await;

    for ((deployable, old), new) in deployables.iter().zip(&before).zip(&renewed) {
        let name = format!("{} ({})", deployable.service, deployable.container);
        assert_eq!(new.started, old.started, "{name} restarted to pick up its certificate");
        // Later: compose's `pki` gives the CA ten years and the certificates one, so a renewal
        // (minutes after `tls init`) moves the expiry on.
        assert!(
            new.not_after > old.not_after,
            "{name}'s renewed certificate does not expire later: {old:?} -> {new:?}"
        );
        eprintln!(
            "{name}: serial {} -> {}, expiry {} -> {}, reloads {} -> {}",
            old.serial, new.serial, old.not_after, new.not_after, old.reloads, new.reloads
        );
    }
    let put = stack.musterctl_ok(&["kv", "put", "compose/after-renewal", "written"]).await;
    put.unwrap_or_else(|e| panic!("a write after the renewal: {e:#}"));
}
