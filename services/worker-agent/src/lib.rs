//! Muster's worker agent, the seed's worker role: it turns a one-time bootstrap token into a
//! persistent mTLS identity (reused across restarts, never re-registering while valid).
//!
//! - [`config`]: the seed's worker-tier worker fields; [`identity`]: the identity on disk;
//! - [`pin`]: trusting the registrar by the CA pin in the token; [`register`]: first contact;
//! - [`profile`]: what the worker reports about itself.
//!
//! Heartbeats to the gateways come next; today the agent registers (or reuses its identity),
//! reports ready on its admin listener and waits for shutdown.

pub mod config;
pub mod identity;
pub mod pin;
pub mod profile;
pub mod register;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
pub use config::AgentConfig;
use identity::Identity;
use tokio::net::TcpListener;

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// The identity to run with: the saved one if valid, else a fresh registration (saved).
pub async fn obtain_identity(config: &AgentConfig) -> anyhow::Result<Identity> {
    let settings = config.validate()?;
    if let Some(identity) = Identity::load(&settings.identity_dir)? {
        identity.check_not_expired(&settings.identity_dir, unix_now())?;
        tracing::info!(
            worker_id = identity.meta.worker_id,
            cluster_id = %identity.meta.cluster_id,
            dir = %settings.identity_dir.display(),
            "reusing the saved identity; no token needed"
        );
        return Ok(identity);
    }
    let token_file = settings.token_file.as_ref().with_context(|| {
        format!(
            "no identity in {} and no cluster.token_file to register with; create a token with \
             `musterctl token create --out FILE` and set token_file",
            settings.identity_dir.display()
        )
    })?;
    let identity = register::register(&settings.servers, token_file, profile::local(&settings.labels)).await?;
    identity.save(&settings.identity_dir)?;
    tracing::info!(
        worker_id = identity.meta.worker_id,
        cluster_id = %identity.meta.cluster_id,
        dir = %settings.identity_dir.display(),
        "registered; identity saved"
    );
    Ok(identity)
}

struct AgentStatus {
    identity: Identity,
}

impl muster_admin::AdminSource for AgentStatus {
    fn is_ready(&self) -> bool {
        true
    }

    fn render_metrics(&self) -> String {
        let mut out = String::new();
        let labels = format!("cluster_id=\"{}\"", self.identity.meta.cluster_id);
        muster_admin::gauge(&mut out, "muster_worker_id", "This worker's id.", &labels, self.identity.meta.worker_id);
        let expires = u64::try_from(self.identity.meta.cert_expires_at_unix).unwrap_or(0);
        muster_admin::gauge(
            &mut out,
            "muster_worker_cert_expires_at",
            "Unix time the certificate expires.",
            &labels,
            expires,
        );
        out
    }
}

/// Obtains the identity, then serves the admin listener until `shutdown` resolves.
pub async fn run(
    config: AgentConfig,
    admin: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let identity = obtain_identity(&config).await?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let admin_task = tokio::spawn(muster_admin::serve(admin, Arc::new(AgentStatus { identity }), stopped));
    shutdown.await;
    stop.send_replace(true);
    let _ = admin_task.await;
    Ok(())
}
