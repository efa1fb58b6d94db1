//! The Muster side of the watch benchmark: a 3-node worker-tier cluster with mTLS (the
//! release binaries, started by the e2e harness) and a registrar; watchers with a `watcher`
//! certificate spread over every node; KV puts through the operator's client to the leader,
//! and workers registering through the registrar.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use muster_e2e::registrar::Registrar;
use muster_e2e::{Cluster, ControlPlaneClient, HeartbeatPolicy, Options, v1};
use muster_proto::v1::raft_client_service_client::RaftClientServiceClient;
use muster_proto::v1::worker_admin_service_client::WorkerAdminServiceClient;
use muster_proto::v1::worker_registration_service_client::WorkerRegistrationServiceClient;
use muster_tls::Role;
use tokio::sync::watch;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use super::load::{Shared, Tally, Writer, parse_payload, payload, read_until_stopped};
use super::{KEY_PREFIX, Rig, RowKind, Side, WatchArgs};
use crate::procs::children_named;

/// The executables the e2e harness starts, looked up in `muster_e2e::binaries::bin_dir()`.
pub const BINARIES: [&str; 2] = ["control-plane", "registrar"];

/// The running cluster and what the rows need of it.
pub struct MusterSide {
    cluster: Cluster,
    registrar: Registrar,
    ca_pem: String,
    watcher_tls: ClientTlsConfig,
    value_bytes: usize,
}

impl MusterSide {
    pub async fn start(args: &WatchArgs) -> anyhow::Result<Self> {
        eprintln!("muster: starting 3 worker-tier nodes and a registrar (mTLS)");
        let options = Options {
            raft_timing: ["100ms", "250ms", "500ms"],
            snapshot_after_logs: 100_000,
            heartbeat: Some(HeartbeatPolicy { max_ttl: "30s", ..HeartbeatPolicy::fast() }),
            log_level: "warn",
            ..Options::tls()
        };
        let cluster = Cluster::start(3, options).await;
        let registrar = Registrar::start_unthrottled(&cluster);
        let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
        let pki = cluster.pki().context("a TLS cluster")?;
        let ca_pem = pki.ca_pem();
        let watcher_tls = pki.component_tls(Role::Watcher, "bench-watcher");
        eprintln!("muster: ready; leader node {leader}");
        Ok(Self { cluster, registrar, ca_pem, watcher_tls, value_bytes: args.value_bytes })
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        self.cluster.check_processes()?;
        anyhow::ensure!(!self.registrar.exited(), "the registrar exited: {}", self.registrar.log());
        Ok(())
    }

    /// A registrar client over one TLS connection (the registrar's chain ends at the cluster CA).
    async fn registrar_channel(&self) -> anyhow::Result<Channel> {
        let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca_pem)).domain_name("localhost");
        Ok(Endpoint::from_shared(format!("https://{}", self.registrar.addr))?.tls_config(tls)?.connect().await?)
    }
}

/// A KV put of the row's payload through a leader-following client.
pub struct KvPut {
    client: ControlPlaneClient,
    value_bytes: usize,
}

impl Writer for KvPut {
    async fn write(&self, seq: u64, sent: u64) -> anyhow::Result<()> {
        let result = self.client.put(&format!("{KEY_PREFIX}{seq:012}"), payload(seq, sent, self.value_bytes)).await?;
        anyhow::ensure!(result.succeeded, "put {seq} not applied: {result:?}");
        Ok(())
    }
}

/// A worker registering, its name carrying the payload (`bench-SEQ-SENT`).
pub struct Registration {
    channel: Channel,
    token: String,
}

fn worker_name(seq: u64, sent: u64) -> String {
    format!("bench-{seq}-{sent}")
}

fn parse_worker_name(name: &str) -> Option<(u64, u64)> {
    let (seq, sent) = name.strip_prefix("bench-")?.split_once('-')?;
    Some((seq.parse().ok()?, sent.parse().ok()?))
}

impl Writer for Registration {
    async fn write(&self, seq: u64, sent: u64) -> anyhow::Result<()> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let request = v1::RegisterRequest {
            token: self.token.clone(),
            csr_pem: muster_worker_agent::register::csr_pem(&key)?,
            profile: Some(v1::WorkerProfile { hostname: worker_name(seq, sent), ..Default::default() }),
            ..Default::default()
        };
        WorkerRegistrationServiceClient::new(self.channel.clone()).register(request).await?;
        Ok(())
    }
}

/// Reads one KV watch until `stop`, tallying every event.
async fn kv_watcher(channel: Channel, mut tally: Tally, shared: Arc<Shared>, stop: watch::Receiver<bool>) -> Tally {
    let request = v1::WatchRequest { key: KEY_PREFIX.to_string(), prefix: true, ..Default::default() };
    match RaftClientServiceClient::new(channel).watch(request).await {
        Ok(response) => {
            read_until_stopped(response.into_inner(), &shared, stop, "Watch", |message| {
                if message.created {
                    shared.ready.fetch_add(1, Ordering::Relaxed);
                }
                let writes = message.events.iter().filter_map(|event| parse_payload(&event.kv.as_ref()?.value));
                tally.message_carrying(message.events.len(), writes);
                Ok(())
            })
            .await;
        }
        Err(status) => shared.fail(format!("Watch: {status}")),
    }
    tally
}

/// Reads one worker watch until `stop`: the (empty) listing, `synced`, then every event;
/// a registration's latency is taken from its REGISTERED event.
async fn worker_watcher(channel: Channel, mut tally: Tally, shared: Arc<Shared>, stop: watch::Receiver<bool>) -> Tally {
    let registered = v1::WorkerEventType::Registered as i32;
    match WorkerAdminServiceClient::new(channel).watch_workers(v1::WatchWorkersRequest::default()).await {
        Ok(response) => {
            read_until_stopped(response.into_inner(), &shared, stop, "WatchWorkers", |message| {
                if message.synced {
                    shared.ready.fetch_add(1, Ordering::Relaxed);
                }
                let registrations = message.events.iter().filter(|event| event.r#type == registered);
                let writes = registrations.filter_map(|event| parse_worker_name(&event.worker.as_ref()?.name));
                tally.message_carrying(message.events.len(), writes);
                Ok(())
            })
            .await;
        }
        Err(status) => shared.fail(format!("WatchWorkers: {status}")),
    }
    tally
}

impl Side for MusterSide {
    type Writer = WriterKind;

    fn name(&self) -> &'static str {
        "muster"
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        MusterSide::check_alive(self)
    }

    fn server_pids(&self) -> Vec<u32> {
        let mut pids = children_named("control-plane");
        pids.extend(children_named("registrar"));
        pids
    }

    fn open_watchers(&mut self, rig: &Rig, kind: RowKind) -> anyhow::Result<Vec<tokio::task::JoinHandle<Tally>>> {
        let ids = self.cluster.ids();
        let mut watchers = Vec::with_capacity(rig.watchers);
        let channels: Vec<Channel> = (0..rig.connections)
            .map(|i| {
                let node = ids[i % ids.len()];
                muster_e2e::cluster::channel(&self.cluster.addrs(node).api, Some(self.watcher_tls.clone()))
            })
            .collect();
        for i in 0..rig.watchers {
            let channel = channels[i % channels.len()].clone();
            let (tally, shared, stop) = (rig.tally(), rig.shared.clone(), rig.stop.clone());
            watchers.push(match kind {
                RowKind::Kv => tokio::spawn(kv_watcher(channel, tally, shared, stop)),
                RowKind::Workers => tokio::spawn(worker_watcher(channel, tally, shared, stop)),
            });
        }
        Ok(watchers)
    }

    async fn writers(&mut self, kind: RowKind, writes: usize) -> anyhow::Result<Vec<WriterKind>> {
        match kind {
            RowKind::Kv => Ok((0..8)
                .map(|_| WriterKind::Kv(KvPut { client: self.cluster.client(), value_bytes: self.value_bytes }))
                .collect()),
            RowKind::Workers => {
                let uses = u32::try_from(writes + 1).context("too many registrations")?;
                let request = v1::CreateTokenRequest { ttl_seconds: 3600, uses, ..Default::default() };
                let token = self.cluster.client().create_token(request).await?.token;
                let mut writers = Vec::new();
                for _ in 0..4 {
                    writers.push(WriterKind::Register(Registration {
                        channel: self.registrar_channel().await?,
                        token: token.clone(),
                    }));
                }
                Ok(writers)
            }
        }
    }
}

/// Either writer, so one row type serves both Muster rows.
pub enum WriterKind {
    Kv(KvPut),
    Register(Registration),
}

impl Writer for WriterKind {
    async fn write(&self, seq: u64, sent: u64) -> anyhow::Result<()> {
        match self {
            WriterKind::Kv(put) => put.write(seq, sent).await,
            WriterKind::Register(registration) => registration.write(seq, sent).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_name_carries_its_payload() {
        assert_eq!(parse_worker_name(&worker_name(42, 1_234_567)), Some((42, 1_234_567)));
        assert_eq!(parse_worker_name("sim-3"), None);
        assert_eq!(parse_worker_name("bench-x-1"), None);
    }
}
