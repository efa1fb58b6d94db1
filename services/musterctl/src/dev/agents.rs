//! The agents' identity directories across runs of a kept data dir. A saved identity is reused
//! (the worker keeps its id and comes back Ready), an expired one is removed so the agent
//! registers afresh, and the learned gateway list is dropped because the gateway may listen on
//! another port this time; the agent relearns it from its first ack. An identity whose worker
//! an operator revoked is removed too: that agent registers as a new worker.

use std::collections::HashSet;

use anyhow::Context;
use muster_worker_agent::identity::Identity;

use super::configs::identity_dir;
use super::dir::DevDir;

/// The agent's learned gateway list, next to its identity.
const GATEWAY_LIST: &str = "gateways.json";
/// An identity this close to its expiry counts as expired: it could not renew in time.
const EXPIRY_MARGIN_SECONDS: i64 = 60;

/// Prepares agents `1..=agents` (`revoked`: the worker ids the cluster has revoked); returns
/// how many must register (and so need a token use).
pub fn prepare(dir: &DevDir, agents: usize, revoked: &HashSet<u64>) -> anyhow::Result<u32> {
    let now = muster_proto::clock::unix_now();
    let mut to_register = 0;
    for n in 1..=agents {
        let identity_dir = identity_dir(dir, n);
        let identity = Identity::load(&identity_dir)
            .with_context(|| format!("agent {n}'s identity in {}", identity_dir.display()))?;
        match identity {
            Some(identity) if revoked.contains(&identity.meta.worker_id) => {
                eprintln!(
                    "musterctl dev: agent {n}'s worker {} was revoked; it registers as a new worker",
                    identity.meta.worker_id
                );
                std::fs::remove_dir_all(&identity_dir)
                    .with_context(|| format!("removing the revoked identity {}", identity_dir.display()))?;
                to_register += 1;
            }
            Some(identity) if identity.meta.cert_expires_at_unix > now + EXPIRY_MARGIN_SECONDS => {
                match std::fs::remove_file(identity_dir.join(GATEWAY_LIST)) {
                    Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                        return Err(err).with_context(|| format!("removing agent {n}'s {GATEWAY_LIST}"));
                    }
                    _ => {}
                }
            }
            Some(identity) => {
                eprintln!(
                    "musterctl dev: agent {n}'s identity (worker {}) has expired; it registers again",
                    identity.meta.worker_id
                );
                std::fs::remove_dir_all(&identity_dir)
                    .with_context(|| format!("removing the expired identity {}", identity_dir.display()))?;
                to_register += 1;
            }
            None => to_register += 1,
        }
    }
    Ok(to_register)
}
