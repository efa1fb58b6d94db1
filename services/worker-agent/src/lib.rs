//! Muster's worker agent, the seed's worker role: it turns a one-time bootstrap token into a
//! persistent mTLS identity (reused across restarts, never re-registering while valid), keeps
//! its lease with heartbeats to a gateway, renews its certificate well before it expires, and
//! reports a graceful leave on shutdown.
//!
//! - [`config`]: the seed's worker-tier worker fields; [`identity`]: the identity on disk;
//! - [`pin`]: trusting the registrar by the CA pin in the token; [`register`]: first contact;
//! - [`profile`]: what the worker reports about itself;
//! - [`gateways`]: the gateway list and the rendezvous ranking; [`tls`]: dialling gateways
//!   and registrars with the identity; [`stream`]: one `ReportStatus` stream;
//!   [`heartbeat`]: keeping the lease; [`backoff`]: retry pacing;
//! - [`renew`]: certificate renewal; [`status`]: `/readyz` and `/metrics`.

pub mod backoff;
pub mod config;
pub mod drain;
pub mod ending;
pub mod gateways;
pub mod heartbeat;
pub mod identity;
pub mod pin;
pub mod profile;
pub mod register;
pub mod renew;
pub mod status;
pub mod stream;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
pub use config::AgentConfig;
use config::WorkerSettings;
use gateways::{GatewayBook, GatewayList};
use identity::Identity;
use status::AgentStatus;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The agent stopped because its worker was revoked: no gateway or registrar will take it
/// again. The message names the way out; a supervisor can tell this end from a failure.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Revoked {
    pub worker_id: u64,
    pub message: String,
}

impl Revoked {
    /// The revocation behind `err`, if that is why the agent stopped.
    pub fn find(err: &anyhow::Error) -> Option<&Revoked> {
        err.chain().find_map(|cause| cause.downcast_ref::<Revoked>())
    }
}

/// What the agent starts with.
#[derive(Debug)]
pub struct Start {
    pub identity: Identity,
    pub gateways: GatewayList,
    pub grace: Duration,
}

/// The identity to run with: the saved one if valid, else a fresh registration (saved, with
/// the gateway list that came with it).
pub async fn obtain_identity(
    settings: &WorkerSettings,
    profile: &muster_proto::v1::WorkerProfile,
) -> anyhow::Result<Start> {
    let dir = &settings.identity_dir;
    let expired = match Identity::load(dir)? {
        None => None,
        Some(identity) => match identity.check_not_expired(dir, muster_proto::clock::unix_now()) {
            Ok(()) => {
                tracing::info!(
                    worker_id = identity.meta.worker_id,
                    cluster_id = %identity.meta.cluster_id,
                    dir = %dir.display(),
                    "reusing the saved identity; no token needed"
                );
                return Ok(Start {
                    identity,
                    gateways: GatewayList::load(dir)?,
                    grace: muster_config::DEFAULT_HEARTBEAT_GRACE,
                });
            }
            // Without a token to register again with, the error names the way out.
            Err(err) if settings.token_file.is_none() => return Err(err),
            Err(_) => {
                tracing::error!(
                    worker_id = identity.meta.worker_id,
                    expired_at_unix = identity.meta.cert_expires_at_unix,
                    dir = %dir.display(),
                    "THIS WORKER'S IDENTITY EXPIRED: the node was off longer than its certificate lifetime. \
                     Registering again with the token in token_file; the new worker records that it replaces the \
                     old one"
                );
                Some(identity)
            }
        },
    };
    let token_file = settings.token_file.as_ref().with_context(|| {
        format!(
            "no identity in {} and no cluster.token_file to register with; create a token with \
             `musterctl token create --out FILE` and set token_file",
            dir.display()
        )
    })?;
    let registered = register::register(&settings.servers, token_file, profile.clone(), expired.as_ref())
        .await
        .with_context(|| match &expired {
            Some(old) => format!("registering again after worker {}'s identity expired", old.meta.worker_id),
            None => "registering".to_string(),
        })?;
    if let Some(old) = &expired {
        tracing::warn!(
            worker_id = registered.identity.meta.worker_id,
            replaces = old.meta.worker_id,
            "registered again: this node is now worker {}, which replaces worker {}",
            registered.identity.meta.worker_id,
            old.meta.worker_id
        );
    }
    // The gateways first: a complete identity always has the list it came with next to it.
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    registered.gateways.save(dir)?;
    registered.identity.save(dir)?;
    tracing::info!(
        worker_id = registered.identity.meta.worker_id,
        cluster_id = %registered.identity.meta.cluster_id,
        gateways = registered.gateways.gateways.len(),
        dir = %dir.display(),
        "registered; identity saved"
    );
    Ok(Start { identity: registered.identity, gateways: registered.gateways, grace: registered.grace })
}

/// Obtains the identity, then heartbeats and renews until `shutdown` resolves (reporting
/// LEFT) or something fatal happens (revoked, expired: an error naming the way out).
pub async fn run(
    config: AgentConfig,
    admin: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let settings = config.validate()?;
    let profile_source = profile::ProfileSource {
        hostname: settings.hostname.clone(),
        labels: settings.labels.clone(),
        capacity_file: config.capacity_file.clone(),
    };
    let profile = profile_source.measure()?;
    let start = obtain_identity(&settings, &profile).await?;
    let worker_id = start.identity.meta.worker_id;
    let (identity, identity_rx) = watch::channel(Arc::new(start.identity));
    let status = Arc::new(AgentStatus::new(identity_rx.clone(), &settings.identity_dir));
    let (stop_admin, admin_stopped) = watch::channel(false);
    let admin_task =
        tokio::spawn(muster_admin::serve(admin, status.clone(), config.admin_limits.clone(), admin_stopped));
    let watchdog = tokio::spawn(status.clone().watch_deadline());

    let (stop, stopped) = watch::channel(false);
    let beats = heartbeat::Heartbeats {
        worker_id,
        identity: identity_rx,
        book: GatewayBook::new(settings.identity_dir.clone(), start.gateways, &settings.gateways),
        profile: profile::Profile::new(profile, profile_source, config.profile_refresh),
        status: status.clone(),
        grace: start.grace,
    };
    let mut beats = tokio::spawn(beats.run(stopped.clone()));
    let renewal = renew::Renewal { servers: settings.servers, identity_dir: settings.identity_dir, identity, status };
    let mut renewal = tokio::spawn(renewal.run(stopped));

    tokio::pin!(shutdown);
    let result = tokio::select! {
        _ = &mut shutdown => {
            stop.send_replace(true);
            // Bounded: the heartbeat task gives the LEFT report LEAVE_TIMEOUT at most.
            let grace = heartbeat::LEAVE_TIMEOUT + Duration::from_secs(1);
            match tokio::time::timeout(grace, &mut beats).await {
                Ok(joined) => flatten(joined),
                Err(_) => Ok(()),
            }
        }
        joined = &mut beats => flatten(joined),
        joined = &mut renewal => flatten(joined),
    };
    stop.send_replace(true);
    for task in [beats, renewal] {
        task.abort();
    }
    watchdog.abort();
    stop_admin.send_replace(true);
    let _ = admin_task.await;
    result
}

fn flatten(joined: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Result<()> {
    joined.context("an agent task panicked")?
}
