//! Keeping the lease: one `ReportStatus` stream at a time to this worker's first-choice
//! gateway. The first report of every stream is full (state READY, profile, the gateway-list
//! epoch held); after each ack the agent waits the ack's TTL (already stretched when the
//! gateway was throttled) and reports again. The lease then runs to that report + TTL +
//! grace. On any failure the agent goes down the rendezvous ranking to the next gateway, with
//! jittered backoff that never sleeps past the lease deadline minus a margin. A renewed
//! certificate is taken into use at once: the stream is replaced by one with the new identity
//! (the cluster retires the old certificate when it sees the new one). A refusal no gateway
//! would answer differently (revoked, unknown worker, a certificate the cluster no longer
//! accepts) ends the agent. On shutdown the last report says LEFT.

use std::sync::Arc;
use std::time::Duration;

use muster_proto::v1;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::backoff::{Backoff, before_deadline};
use crate::ending::Ending;
use crate::gateways::{Gateway, GatewayBook};
use crate::identity::Identity;
use crate::profile::Profile;
use crate::status::{AgentStatus, Lease};
use crate::stream::{ReportStream, StreamError};
use crate::tls;

const BACKOFF_INITIAL: Duration = Duration::from_millis(200);
const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// Cap on connecting (TCP + TLS + stream) and on waiting for an ack; both are cut shorter
/// when the lease deadline is nearer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Floor of those cuts: a gateway gets at least this long to answer.
const MIN_WAIT: Duration = Duration::from_millis(500);
/// How long shutdown waits for the LEFT report to be acknowledged.
pub const LEAVE_TIMEOUT: Duration = Duration::from_secs(2);
/// A TTL below this in an ack is taken as this (a broken gateway must not make us spin).
const MIN_TTL: Duration = Duration::from_millis(100);

pub struct Heartbeats {
    pub worker_id: u64,
    pub identity: watch::Receiver<Arc<Identity>>,
    pub book: GatewayBook,
    /// Measured again while running; sent on each stream's first report and when it changed.
    pub profile: Profile,
    pub status: Arc<AgentStatus>,
    /// The grace until the first ack says otherwise (from Register, or the seed's default).
    pub grace: Duration,
}

/// How a stream ended.
enum End {
    /// Shutdown, handled on the stream (LEFT sent).
    Left,
    /// Shutdown before a stream was up.
    Stopped,
    /// The gateway list changed and another gateway is now this worker's first choice.
    Moved,
    /// The certificate was renewed: reconnect with the new one.
    Renewed,
    Failed {
        error: StreamError,
        acked: bool,
    },
    Fatal(anyhow::Error),
}

impl Heartbeats {
    /// Beats until `stop` turns true (then reports LEFT and returns `Ok`), or until a fatal
    /// refusal (`Err`, naming the way out).
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
        let mut backoff = Backoff::new(BACKOFF_INITIAL, BACKOFF_CAP);
        // Failures since the last healthy stream: how far down the ranking to go.
        let mut skip = 0usize;
        loop {
            let mut ranked = self.book.ranked(self.worker_id);
            if ranked.is_empty() {
                // A renewal may have saved a list since.
                self.book.reload();
                ranked = self.book.ranked(self.worker_id);
            }
            let Some(gateway) = ranked.get(skip % ranked.len().max(1)).cloned() else {
                let wait = backoff.next_pause();
                tracing::error!(
                    worker_id = self.worker_id,
                    retry_in = ?wait,
                    "no heartbeat gateway is known: the Register response listed none and the agent config has no \
                     `gateways`; this worker cannot keep a lease until its next renewal brings the list. Set \
                     `gateways = [\"host:port\"]` in the agent config"
                );
                if stopped_during(wait, &mut stop).await {
                    return Ok(());
                }
                continue;
            };
            match self.stream(&gateway, &mut stop).await {
                End::Left => return Ok(()),
                End::Stopped => {
                    self.leave_without_stream().await;
                    return Ok(());
                }
                End::Fatal(err) => return Err(err),
                End::Moved | End::Renewed => {
                    skip = 0;
                    backoff.reset();
                }
                End::Failed { error, acked } => {
                    self.status.heartbeat_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.status.lease.send_modify(|lease| lease.gateway_id = None);
                    if acked {
                        backoff.reset();
                    }
                    skip += 1;
                    let next = &ranked[skip % ranked.len()];
                    let wait = before_deadline(backoff.next_pause(), self.status.until_deadline(), self.margin());
                    tracing::warn!(
                        gateway = %gateway.id,
                        addr = %gateway.addr,
                        error = %error,
                        next = %next.id,
                        retry_in = ?wait,
                        lease_left = ?self.status.until_deadline(),
                        "heartbeat stream failed; failing over"
                    );
                    if stopped_during(wait, &mut stop).await {
                        self.leave_without_stream().await;
                        return Ok(());
                    }
                }
            }
        }
    }

    /// One stream to `gateway`, beating until it fails, the first choice moves, or shutdown.
    async fn stream(&mut self, gateway: &Gateway, stop: &mut watch::Receiver<bool>) -> End {
        // This stream uses the identity as it is now; a renewal from here on replaces it.
        self.identity.mark_unchanged();
        let tls = match self.tls() {
            Ok(tls) => tls,
            Err(err) => return End::Fatal(err),
        };
        let connect = self.budget(CONNECT_TIMEOUT);
        let first = self.report(v1::WorkerState::Ready, true);
        let mut sent_at = Instant::now();
        let open = tokio::time::timeout(connect, ReportStream::open(&gateway.addr, tls, connect, first));
        let mut stream = tokio::select! {
            opened = open => match opened {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => return self.failed(error, false),
                Err(_) => return self.failed(StreamError::NoAck(connect), false),
            },
            () = stop_requested(stop) => return End::Stopped,
        };
        let mut acked = false;
        loop {
            let wait = self.budget(ACK_TIMEOUT);
            let sequence = stream.sequence();
            let ack = tokio::select! {
                ack = stream.ack(sequence, wait) => ack,
                () = stop_requested(stop) => return self.leave(&mut stream).await,
            };
            let ack = match ack {
                Ok(ack) => ack,
                Err(error) => return self.failed(error, acked),
            };
            acked = true;
            let (ttl, list_changed) = self.on_ack(gateway, &ack, sent_at);
            let current = if ack.gateway_id.is_empty() { gateway.id.as_str() } else { ack.gateway_id.as_str() };
            if list_changed && let Some(top) = self.book.ranked(self.worker_id).first().filter(|top| top.id != current)
            {
                tracing::info!(from = %current, to = %top.id, addr = %top.addr, "the gateway list changed; moving");
                return End::Moved;
            }
            // The next report is due one TTL after this one was sent, not after its ack came
            // back: the lease runs from when the gateway received the report, so a slow ack
            // (a gateway busy with a reconnect storm) must not push the next beat past grace.
            tokio::select! {
                _ = tokio::time::sleep_until(sent_at + ttl) => {}
                Ok(()) = self.identity.changed() => {
                    tracing::info!(gateway = %current, "the certificate was renewed; reconnecting with it");
                    return End::Renewed;
                }
                () = stop_requested(stop) => return self.leave(&mut stream).await,
            }
            sent_at = Instant::now();
            if let Err(error) = stream.send(self.report(v1::WorkerState::Ready, false)).await {
                return self.failed(error, acked);
            }
        }
    }

    /// Records an ack: the lease (dated from when its report was sent: the safe side), the
    /// metrics, and any new gateway list. Returns the TTL and whether the list changed.
    fn on_ack(&mut self, gateway: &Gateway, ack: &v1::StatusAck, sent_at: Instant) -> (Duration, bool) {
        let ttl = Duration::from_millis(ack.ttl_ms.into()).max(MIN_TTL);
        self.grace = Duration::from_millis(ack.grace_ms.into());
        if ack.throttled {
            tracing::debug!(ttl = ?ttl, "the gateway is throttled; it stretched the TTL");
        }
        let gateway_id = if ack.gateway_id.is_empty() { gateway.id.clone() } else { ack.gateway_id.clone() };
        self.status.heartbeats.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.status.drain.on_ack(ack.drain, ack.ineligible);
        self.status.lease.send_replace(Lease {
            deadline: Some(sent_at + ttl + self.grace),
            ttl,
            gateway_id: Some(gateway_id),
        });
        (ttl, self.book.learn(ack.gateways_epoch, &ack.gateways))
    }

    fn failed(&self, error: StreamError, acked: bool) -> End {
        if !error.is_fatal() {
            return End::Failed { error, acked };
        }
        let id = self.worker_id;
        let dir = "the identity dir (cluster.identity_dir)";
        let ending = match &error {
            StreamError::Status(status) => Ending::of(status, |code| match code {
                tonic::Code::Unauthenticated => Some(Ending::CertificateNotCurrent),
                tonic::Code::PermissionDenied => Some(Ending::Revoked),
                _ => None,
            }),
            _ => None,
        };
        End::Fatal(match ending {
            Some(Ending::CertificateNotCurrent) => anyhow::anyhow!(
                "the cluster no longer accepts this worker's certificate ({error}); it was replaced by a renewal \
                 this agent did not keep, or was never issued by this cluster. Delete {dir} and register with a \
                 fresh bootstrap token"
            ),
            Some(Ending::Revoked) => anyhow::Error::new(crate::Revoked {
                worker_id: id,
                message: format!(
                    "worker {id} was revoked ({error}); it can never heartbeat again. To bring this node back, \
                     delete {dir} and register it as a new worker with a fresh bootstrap token"
                ),
            }),
            Some(Ending::UnknownWorker) | None => anyhow::anyhow!(
                "the cluster does not know worker {id} ({error}); was this identity made for another cluster? \
                 Delete {dir} and register with a fresh bootstrap token"
            ),
        })
    }

    /// Reports LEFT on `stream` and waits a bounded time for its ack.
    async fn leave(&mut self, stream: &mut ReportStream) -> End {
        let report = self.report(v1::WorkerState::Left, false);
        let attempt = async {
            let sequence = stream.send(report).await?;
            stream.ack(sequence, LEAVE_TIMEOUT).await
        };
        log_leave(tokio::time::timeout(LEAVE_TIMEOUT, attempt).await);
        End::Left
    }

    /// Shutdown between streams: one bounded try to report LEFT to the first choice.
    async fn leave_without_stream(&mut self) {
        let Some(gateway) = self.book.ranked(self.worker_id).into_iter().next() else { return };
        let report = self.report(v1::WorkerState::Left, true);
        let attempt = async {
            let tls = self.tls().map_err(StreamError::Connect)?;
            let mut stream = ReportStream::open(&gateway.addr, tls, LEAVE_TIMEOUT, report).await?;
            stream.ack(1, LEAVE_TIMEOUT).await
        };
        log_leave(tokio::time::timeout(LEAVE_TIMEOUT, attempt).await);
    }

    fn report(&mut self, state: v1::WorkerState, full: bool) -> v1::StatusReport {
        let profile = match state {
            // A leaving worker's profile is of no use to anyone.
            v1::WorkerState::Left => full.then(|| self.profile.current().clone()),
            _ => self.profile.for_report(full),
        };
        v1::StatusReport {
            sequence: 0,
            state: state as i32,
            full,
            profile,
            gateways_epoch: self.book.epoch(),
            drained: self.status.drain.report_drained(),
        }
    }

    /// TLS with the current identity (a renewed one is picked up by the next stream).
    fn tls(&self) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        let identity = self.identity.borrow().clone();
        tls::gateway_tls(&identity).map_err(|err| err.context("the saved identity cannot be used for TLS"))
    }

    /// How long before the deadline the next attempt must start.
    fn margin(&self) -> Duration {
        (self.grace / 4).clamp(Duration::from_millis(100), Duration::from_secs(2))
    }

    /// `limit`, cut to leave the margin before the lease deadline (at least [`MIN_WAIT`]).
    fn budget(&self, limit: Duration) -> Duration {
        before_deadline(limit, self.status.until_deadline(), self.margin()).max(MIN_WAIT)
    }
}

fn log_leave(result: Result<Result<v1::StatusAck, StreamError>, tokio::time::error::Elapsed>) {
    match result {
        Ok(Ok(ack)) => tracing::info!(gateway = %ack.gateway_id, "reported the graceful leave"),
        Ok(Err(error)) => tracing::warn!(%error, "could not report the graceful leave; the lease will expire instead"),
        Err(_) => tracing::warn!(
            timeout = ?LEAVE_TIMEOUT,
            "the graceful leave was not acknowledged in time; the lease will expire instead"
        ),
    }
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stop_requested(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Waits `wait`; true if `stop` turned true first.
pub(crate) async fn stopped_during(wait: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    let stopped = tokio::select! {
        _ = tokio::time::sleep(wait) => false,
        () = stop_requested(stop) => true,
    };
    stopped || *stop.borrow()
}
