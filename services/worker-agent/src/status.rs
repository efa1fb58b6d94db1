//! What the agent shows on its admin listener: `/readyz` is ready only while the lease the
//! last ack granted has not run out (a worker whose heartbeats stopped is not ready, whatever
//! its process is doing), `/metrics` counts heartbeats, failures and renewals, and `/status`
//! is this worker as the node's software needs it (its id, lease and drain) in JSON.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::drain::DrainView;
use crate::identity::Identity;

/// The lease as the last ack set it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lease {
    /// Last ack + TTL + grace; `None` before the first ack.
    pub deadline: Option<Instant>,
    pub ttl: Duration,
    /// The gateway holding the stream, while one does.
    pub gateway_id: Option<String>,
}

pub struct AgentStatus {
    pub identity: watch::Receiver<Arc<Identity>>,
    pub lease: watch::Sender<Lease>,
    pub heartbeats: AtomicU64,
    pub heartbeat_failures: AtomicU64,
    pub renewals: AtomicU64,
    /// The drain the last ack carried, and the node's `drained` marker.
    pub drain: DrainView,
}

impl AgentStatus {
    /// `identity_dir` holds the node's `drained` marker.
    pub fn new(identity: watch::Receiver<Arc<Identity>>, identity_dir: &std::path::Path) -> Self {
        Self {
            drain: DrainView::new(identity_dir),
            identity,
            lease: watch::Sender::new(Lease::default()),
            heartbeats: AtomicU64::new(0),
            heartbeat_failures: AtomicU64::new(0),
            renewals: AtomicU64::new(0),
        }
    }

    /// Time left before the lease deadline; `None` without a lease or once it has passed.
    pub fn until_deadline(&self) -> Option<Duration> {
        let deadline = self.lease.borrow().deadline?;
        deadline.checked_duration_since(Instant::now()).filter(|left| !left.is_zero())
    }

    /// Logs an error each time a lease deadline passes without a newer ack; runs until the
    /// status is dropped.
    pub async fn watch_deadline(self: Arc<Self>) {
        let mut lease = self.lease.subscribe();
        loop {
            let deadline = lease.borrow_and_update().deadline;
            let Some(deadline) = deadline else {
                if lease.changed().await.is_err() {
                    return;
                }
                continue;
            };
            tokio::select! {
                changed = lease.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::error!(
                        "the heartbeat lease ran out without an ack from any gateway: the control plane will mark \
                         this worker unreachable; still retrying"
                    );
                    if lease.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

impl muster_admin::AdminSource for AgentStatus {
    fn is_ready(&self) -> bool {
        self.until_deadline().is_some()
    }

    fn not_ready_reason(&self) -> String {
        match self.lease.borrow().deadline {
            None => "no heartbeat acknowledged yet".to_string(),
            Some(deadline) => format!("the heartbeat lease ran out {:?} ago", deadline.elapsed()),
        }
    }

    fn render_metrics(&self) -> String {
        use muster_admin::metrics::label;
        use muster_admin::{counter, gauge};
        let mut out = String::new();
        let identity = self.identity.borrow().clone();
        let labels = label("cluster_id", &identity.meta.cluster_id);
        gauge(&mut out, "muster_worker_id", "This worker's id.", &labels, identity.meta.worker_id);
        let expires = u64::try_from(identity.meta.cert_expires_at_unix).unwrap_or(0);
        gauge(&mut out, "muster_worker_cert_expires_at", "Unix time the certificate expires.", &labels, expires);
        let counters = [
            ("muster_worker_heartbeats_total", "Heartbeats acknowledged.", &self.heartbeats),
            (
                "muster_worker_heartbeat_failures_total",
                "Heartbeat streams that failed (connect, refused, no ack).",
                &self.heartbeat_failures,
            ),
            ("muster_worker_renewals_total", "Certificates renewed.", &self.renewals),
        ];
        for (name, help, value) in counters {
            counter(&mut out, name, help, "", value.load(Ordering::Relaxed));
        }
        let drain = self.drain.current();
        let eligible = u64::from(self.drain.eligible());
        gauge(&mut out, "muster_worker_eligible", "0 while this worker is cordoned or draining.", "", eligible);
        let draining = u64::from(drain.is_some());
        gauge(&mut out, "muster_worker_draining", "1 while an operator drains this worker.", "", draining);
        let stage = label("stage", self.drain.stage());
        gauge(
            &mut out,
            "muster_worker_drain_info",
            "The drain's stage (none, draining, drained, deadline-passed).",
            &stage,
            1,
        );
        let deadline = drain.map_or(0, |drain| u64::try_from(drain.deadline_unix).unwrap_or(0));
        gauge(&mut out, "muster_worker_drain_deadline", "Unix time the drain must end by (0: none).", "", deadline);
        let lease = self.lease.borrow().clone();
        gauge(&mut out, "muster_worker_ttl_seconds", "The TTL of the last ack.", "", lease.ttl.as_secs_f64());
        if let Some(gateway) = &lease.gateway_id {
            let labels = label("gateway_id", gateway);
            gauge(&mut out, "muster_worker_gateway_info", "The gateway this worker beats to.", &labels, 1);
        }
        out
    }

    fn render_status(&self) -> Option<String> {
        let identity = self.identity.borrow().clone();
        let lease = self.lease.borrow().clone();
        let drain = self.drain.current().map(|drain| {
            serde_json::json!({
                "stage": self.drain.stage(),
                "started_at_unix": drain.started_at_unix,
                "deadline_unix": drain.deadline_unix,
                "ended_at_unix": drain.ended_at_unix,
            })
        });
        let status = serde_json::json!({
            "worker_id": identity.meta.worker_id,
            "cluster_id": identity.meta.cluster_id,
            "cert_expires_at_unix": identity.meta.cert_expires_at_unix,
            "ready": self.until_deadline().is_some(),
            "gateway": lease.gateway_id,
            "ttl_seconds": lease.ttl.as_secs_f64(),
            "eligible": self.drain.eligible(),
            "draining": drain.is_some(),
            "drain": drain,
        });
        Some(format!("{status:#}\n"))
    }
}
