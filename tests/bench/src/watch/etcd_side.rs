//! The etcd side of the watch benchmark: a local 3-node etcd serving clients over TLS with
//! client certificates (as Muster's watchers use mTLS), watchers spread over every member, each
//! its own `Watch` stream on a prefix, and puts to the leader.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt as _;
use tokio::sync::watch;
use tonic::transport::Channel;

use super::load::{Shared, Tally, Writer, parse_payload, payload, read_until_stopped};
use super::{KEY_PREFIX, Rig, RowKind, Side, WatchArgs};
use crate::etcd::{EtcdCluster, EtcdTls};
use crate::etcd_rpc::{self, EtcdKv, WATCH, WatchCreateRequest, WatchRequest, WatchResponse, prefix_range_end};

/// The running cluster.
pub struct EtcdSide {
    cluster: EtcdCluster,
    tls: EtcdTls,
    value_bytes: usize,
    /// The CA directory the members' certificate files live in (removed when dropped).
    _pki: muster_e2e::pki::Pki,
}

impl EtcdSide {
    pub async fn start(args: &WatchArgs, root: &Path) -> anyhow::Result<Self> {
        let pki = muster_e2e::pki::Pki::new();
        let tls = EtcdTls::from_test_pki(&pki);
        eprintln!("etcd: starting 3 members (client TLS with client certificates)");
        let mut cluster = EtcdCluster::start(&args.etcd_bin, root, Some(&tls))?;
        cluster.wait_ready(Duration::from_secs(60)).await?;
        eprintln!("etcd: ready; leader at {}", cluster.endpoints[0]);
        Ok(Self { cluster, tls, value_bytes: args.value_bytes, _pki: pki })
    }

    pub fn stop(&mut self) {
        self.cluster.procs.kill_all();
    }
}

/// A put of the row's payload to the leader.
pub struct EtcdPut {
    client: EtcdKv,
    value_bytes: usize,
}

impl Writer for EtcdPut {
    async fn write(&self, seq: u64, sent: u64) -> anyhow::Result<()> {
        let key = format!("{KEY_PREFIX}{seq:012}").into_bytes();
        self.client.put_raw(key, payload(seq, sent, self.value_bytes)).await?;
        Ok(())
    }
}

/// Reads one prefix watch until `stop`, tallying every event. The request stream stays open
/// (etcd ends the watches of a stream whose sending side closes).
async fn watcher(channel: Channel, mut tally: Tally, shared: Arc<Shared>, stop: watch::Receiver<bool>) -> Tally {
    let create = WatchCreateRequest {
        key: KEY_PREFIX.as_bytes().to_vec(),
        range_end: prefix_range_end(KEY_PREFIX.as_bytes()),
        ..Default::default()
    };
    let requests =
        futures::stream::iter([WatchRequest { create_request: Some(create) }]).chain(futures::stream::pending());
    let mut grpc = tonic::client::Grpc::new(channel);
    let codec = tonic_prost::ProstCodec::<WatchRequest, WatchResponse>::default();
    let opened = async {
        grpc.ready().await.map_err(|err| tonic::Status::unavailable(err.to_string()))?;
        grpc.streaming(tonic::Request::new(requests), http::uri::PathAndQuery::from_static(WATCH), codec).await
    };
    match opened.await {
        Ok(response) => {
            read_until_stopped(response.into_inner(), &shared, stop, "Watch", |message| {
                if message.created {
                    shared.ready.fetch_add(1, Ordering::Relaxed);
                }
                if message.canceled {
                    return Err(format!("etcd canceled the watch: {}", message.cancel_reason));
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

impl Side for EtcdSide {
    type Writer = EtcdPut;

    fn name(&self) -> &'static str {
        "etcd"
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        self.cluster.procs.check_alive()
    }

    fn server_pids(&self) -> Vec<u32> {
        self.cluster.procs.pids()
    }

    fn open_watchers(&mut self, rig: &Rig, kind: RowKind) -> anyhow::Result<Vec<tokio::task::JoinHandle<Tally>>> {
        anyhow::ensure!(kind == RowKind::Kv, "etcd has no worker watch");
        let endpoints = &self.cluster.endpoints;
        let channels = (0..rig.connections)
            .map(|i| Ok(etcd_rpc::endpoint(&endpoints[i % endpoints.len()], Some(&self.tls.client))?.connect_lazy()))
            .collect::<anyhow::Result<Vec<Channel>>>()?;
        Ok((0..rig.watchers)
            .map(|i| {
                let channel = channels[i % channels.len()].clone();
                tokio::spawn(watcher(channel, rig.tally(), rig.shared.clone(), rig.stop.clone()))
            })
            .collect())
    }

    async fn writers(&mut self, kind: RowKind, _writes: usize) -> anyhow::Result<Vec<EtcdPut>> {
        anyhow::ensure!(kind == RowKind::Kv, "etcd has no workers to register");
        let leader = self.cluster.endpoints.first().context("no etcd endpoints")?;
        (0..8)
            .map(|_| {
                Ok(EtcdPut { client: EtcdKv::with_tls(leader, Some(&self.tls.client))?, value_bytes: self.value_bytes })
            })
            .collect()
    }
}
