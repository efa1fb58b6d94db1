//! The authorization table, against real processes: every method of every port
//! (`muster_middleware::authz::RULES`) is called with a certificate of every role, and with
//! none, and is admitted or refused exactly as the table says. A component certificate is no
//! longer a cluster admin.
//!
//! Each call sends one empty message. Whether the handler then succeeds does not matter (most
//! refuse an empty request); what is asserted is whether the authorization layer let the call
//! through. The workers' ports take only worker certificates (or, on the registrar's, none) at
//! the TLS handshake, so there a refused handshake is a refusal too.

use std::time::Duration;

use muster_e2e::fleet::register_one;
use muster_e2e::gateway::Gateway;
use muster_e2e::registrar::Registrar;
use muster_e2e::{Cluster, Options, v1};
use muster_middleware::authz::{self, Port, Rule};
use muster_tls::Role;
use tonic::Code;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// Who calls: a role's certificate, or none.
type Caller = Option<Role>;

const CALLERS: [Caller; 7] = [
    None,
    Some(Role::Operator),
    Some(Role::ControlPlane),
    Some(Role::Registrar),
    Some(Role::Gateway),
    Some(Role::Worker),
    Some(Role::Watcher),
];

/// What the authorization layer said.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Admitted,
    Refused(String),
}

/// Whether `status` is the authorization layer's refusal (and not a handler's answer).
fn is_authz_refusal(status: &tonic::Status) -> bool {
    let message = status.message();
    match status.code() {
        Code::Unauthenticated => message.starts_with(muster_middleware::auth::CERT_REQUIRED),
        Code::PermissionDenied => {
            message.contains("may not call")
                || message.contains("no Muster identity allowed")
                || message.contains("no authorization entry")
        }
        _ => false,
    }
}

/// Calls `path` with one empty message over `tls`.
async fn call(addr: &str, tls: ClientTlsConfig, path: &'static str) -> Verdict {
    let endpoint = Endpoint::from_shared(format!("https://{addr}"))
        .expect("endpoint")
        .tls_config(tls)
        .expect("client TLS")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10));
    let channel = match endpoint.connect().await {
        Ok(channel) => channel,
        Err(err) => return Verdict::Refused(format!("connect: {err:?}")),
    };
    let mut grpc = tonic::client::Grpc::new(channel);
    if let Err(err) = grpc.ready().await {
        return Verdict::Refused(format!("handshake: {err}"));
    }
    // Every gRPC call is a stream of messages on the wire; one message serves every kind.
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let request = tonic::Request::new(tokio_stream::once(()));
    let path = http::uri::PathAndQuery::from_static(path);
    match grpc.streaming(request, path, codec).await {
        Ok(_) => Verdict::Admitted,
        Err(status) if is_authz_refusal(&status) => Verdict::Refused(format!("{status:?}")),
        // A transport error (with TLS 1.3 the server refuses a client certificate after the
        // client has finished its side of the handshake) is a refusal too; a status the server
        // sent has no local source.
        Err(status) if std::error::Error::source(&status).is_some() => Verdict::Refused(format!("{status:?}")),
        Err(_) => Verdict::Admitted,
    }
}

/// Whether `caller` gets past the TLS handshake of `port`.
fn connects(port: Port, caller: Caller) -> bool {
    match port {
        Port::Registrar => matches!(caller, None | Some(Role::Worker)),
        Port::Gateway => caller == Some(Role::Worker),
        _ => caller != Some(Role::Worker),
    }
}

struct Ports {
    raft: String,
    api: String,
    registrar: String,
    gateway: String,
}

impl Ports {
    fn of(&self, port: Port) -> &str {
        match port {
            Port::ControlPlaneRaft => &self.raft,
            Port::ControlPlaneApi => &self.api,
            Port::Registrar => &self.registrar,
            Port::Gateway => &self.gateway,
            Port::Every => unreachable!("a listener, not a method's home"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_method_of_every_port_admits_exactly_the_roles_in_the_table() {
    let cluster = Cluster::start(1, Options::tls()).await;
    let pki = cluster.pki().expect("a TLS cluster");
    let registrar = Registrar::start(&cluster);
    let gateway = Gateway::start(&cluster);
    gateway.wait_ready().await;
    let ca_pem = pki.ca_pem();
    let worker = register_one(&cluster, &registrar).await;

    let anonymous = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca_pem)).domain_name("localhost");
    let tls_of = |caller: Caller| -> ClientTlsConfig {
        match caller {
            None => anonymous.clone(),
            Some(Role::Operator) => pki.operator_tls(),
            Some(Role::ControlPlane) => pki.node_tls(1),
            Some(Role::Worker) => anonymous.clone().identity(Identity::from_pem(&worker.chain_pem, &worker.key_pem)),
            Some(role) => pki.component_tls(role, &format!("matrix-{role}")),
        }
        .domain_name("localhost")
    };
    let addrs = cluster.addrs(1);
    let ports = Ports {
        raft: addrs.raft.clone(),
        api: addrs.api.clone(),
        registrar: registrar.addr.clone(),
        gateway: gateway.addr.clone(),
    };

    let mut wrong = Vec::new();
    let mut checked = 0;
    for port in [Port::ControlPlaneRaft, Port::ControlPlaneApi, Port::Registrar, Port::Gateway] {
        let rules: Vec<&Rule> = authz::rules_of(port).collect();
        assert!(rules.iter().any(|rule| rule.port == port), "{port:?} has no methods in the table");
        for rule in rules {
            for caller in CALLERS {
                let expected = connects(port, caller) && authz::allows(rule, caller);
                let verdict = call(ports.of(port), tls_of(caller), rule.path).await;
                checked += 1;
                if (verdict == Verdict::Admitted) != expected {
                    let caller = caller.map_or("no certificate".to_string(), |role| role.to_string());
                    wrong.push(format!(
                        "{port:?} {} as {caller}: expected admitted={expected}, got {verdict:?}",
                        rule.path
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{} of {checked} calls disagree with the table:\n{}", wrong.len(), wrong.join("\n"));
    cluster.check_processes().expect("no process restarted");
    gateway.readyz().await.expect("the gateway still serves");
}

/// A stolen gateway certificate cannot announce another gateway into the list every worker
/// receives, nor bloat that list with oversize ids or addresses or more than 64 instances.
#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_certificate_announces_only_its_own_gateway() {
    use muster_e2e::v1::liveness_service_client::LivenessServiceClient;

    let cluster = Cluster::start(1, Options::tls()).await;
    let pki = cluster.pki().expect("a TLS cluster");
    let tls = pki.component_tls(Role::Gateway, "gw-a").domain_name("localhost");
    let mut liveness = LivenessServiceClient::new(muster_e2e::cluster::channel(&cluster.addrs(1).api, Some(tls)));
    let report = |id: &str, addr: &str| v1::ReportLivenessRequest {
        gateway_id: id.to_string(),
        gateway_addr: addr.to_string(),
        ..Default::default()
    };

    for (id, addr) in [
        ("evil-gw", "10.9.9.9:3671"),
        ("gw-b/1", "10.9.9.9:3671"),
        (&format!("gw-a/{}", "x".repeat(200)), "127.0.0.1:1"),
        ("gw-a/1", &format!("{}:1", "h".repeat(300))),
    ] {
        let status = liveness.report_liveness(report(id, addr)).await.expect_err("a foreign or oversize announcement");
        assert!(
            matches!(status.code(), Code::PermissionDenied | Code::InvalidArgument),
            "{id:.20}… @ {addr:.20}…: {status:?}"
        );
    }
    let own = liveness.report_liveness(report("gw-a/1", "127.0.0.1:1")).await.expect("its own name").into_inner();
    let ids: Vec<_> = own.gateways.iter().map(|g| g.gateway_id.as_str()).collect();
    assert_eq!(ids, ["gw-a/1"], "only the gateway's own announcement is listed");

    // Nor can it flood the list with instances of its own name: 64 live ones at most.
    for instance in 2..=64 {
        liveness.report_liveness(report(&format!("gw-a/{instance}"), "127.0.0.1:1")).await.expect("an instance");
    }
    let status = liveness.report_liveness(report("gw-a/65", "127.0.0.1:1")).await.expect_err("a 65th instance");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("at most 64 live instances"), "{status:?}");
    liveness.report_liveness(report("gw-a/1", "127.0.0.1:1")).await.expect("a live instance keeps reporting");
    cluster.check_processes().expect("no process restarted");
}
