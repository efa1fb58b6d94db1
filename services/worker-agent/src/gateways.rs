//! Which heartbeat gateway this worker talks to. The live list arrives with the Register
//! response and with any ack whose epoch differs from the one the worker holds; it is kept in
//! `gateways.json` in the identity dir so a restarted agent knows where to go. Gateways are
//! ranked by rendezvous hashing on the worker id: each worker ranks every gateway by a stable
//! hash of (worker id, gateway id), so adding or removing one gateway moves only the ~1/G of
//! workers for which that gateway is (or was) the top choice, and failover goes down the same
//! ranking. When the learned list is empty, the `gateways` of the agent config stand in.

use std::path::{Path, PathBuf};

use anyhow::Context;
use muster_proto::v1;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const FILE: &str = "gateways.json";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gateway {
    pub id: String,
    pub addr: String,
}

/// The live gateways as of `epoch` (0: not known from an ack yet).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayList {
    pub epoch: u64,
    pub gateways: Vec<Gateway>,
}

impl GatewayList {
    pub fn from_endpoints(epoch: u64, endpoints: &[v1::GatewayEndpoint]) -> Self {
        let gateways = endpoints.iter().map(|e| Gateway { id: e.gateway_id.clone(), addr: e.addr.clone() }).collect();
        Self { epoch, gateways }
    }

    /// Written atomically next to the identity.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let json = serde_json::to_vec_pretty(self)?;
        muster_tls::write_atomic(&dir.join(FILE), &json, 0o644)?;
        Ok(())
    }

    /// The saved list; empty when there is none.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join(FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display())),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
        }
    }
}

/// Rendezvous score of `gateway_id` for `worker_id`: the first 8 bytes of a SHA-256, the same
/// on every machine and every run.
pub fn score(worker_id: u64, gateway_id: &str) -> u64 {
    let mut hash = Sha256::new();
    hash.update(b"muster-rendezvous-v1\0");
    hash.update(worker_id.to_be_bytes());
    hash.update(gateway_id.as_bytes());
    let digest = hash.finalize();
    u64::from_be_bytes(digest[..8].try_into().unwrap_or_default())
}

/// `gateways` best first for `worker_id` (ties, which need a hash collision, by id).
pub fn rank(worker_id: u64, gateways: &[Gateway]) -> Vec<Gateway> {
    let mut ranked: Vec<(u64, &Gateway)> = gateways.iter().map(|g| (score(worker_id, &g.id), g)).collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.id.cmp(&b.1.id)));
    ranked.dedup_by(|a, b| a.1.id == b.1.id);
    ranked.into_iter().map(|(_, g)| g.clone()).collect()
}

/// The learned list (persisted in `dir`) and the configured fallback.
#[derive(Debug)]
pub struct GatewayBook {
    dir: PathBuf,
    learned: GatewayList,
    configured: Vec<Gateway>,
}

impl GatewayBook {
    /// `configured` are addresses; each stands for a gateway whose id is its address.
    pub fn new(dir: PathBuf, learned: GatewayList, configured: &[String]) -> Self {
        let configured = configured.iter().map(|addr| Gateway { id: addr.clone(), addr: addr.clone() }).collect();
        Self { dir, learned, configured }
    }

    pub fn epoch(&self) -> u64 {
        self.learned.epoch
    }

    /// Every known gateway, best first for `worker_id`.
    pub fn ranked(&self, worker_id: u64) -> Vec<Gateway> {
        let list = if self.learned.gateways.is_empty() { &self.configured } else { &self.learned.gateways };
        rank(worker_id, list)
    }

    /// Re-reads the saved list (another task, such as renewal, may have written a newer one).
    pub fn reload(&mut self) {
        match GatewayList::load(&self.dir) {
            Ok(list) if list.epoch != self.learned.epoch && !list.gateways.is_empty() => self.learned = list,
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %format!("{err:#}"), "could not read the saved gateway list"),
        }
    }

    /// Takes the list an ack carried, if it is news; true when it changed. A list that cannot
    /// be saved is still used (a restart would then start from the older one).
    pub fn learn(&mut self, epoch: u64, endpoints: &[v1::GatewayEndpoint]) -> bool {
        if endpoints.is_empty() || epoch == self.learned.epoch {
            return false;
        }
        let list = GatewayList::from_endpoints(epoch, endpoints);
        if let Err(err) = list.save(&self.dir) {
            tracing::warn!(error = %format!("{err:#}"), "could not save the gateway list");
        }
        tracing::info!(epoch, gateways = list.gateways.len(), "learned the live gateway list");
        self.learned = list;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateways(n: usize) -> Vec<Gateway> {
        (0..n).map(|i| Gateway { id: format!("gw-{i}"), addr: format!("10.0.0.{i}:3671") }).collect()
    }

    #[test]
    fn the_ranking_is_stable_and_independent_of_list_order() {
        let list = gateways(5);
        let mut reversed = list.clone();
        reversed.reverse();
        for worker in 1..50 {
            let ranked = rank(worker, &list);
            assert_eq!(ranked.len(), 5);
            assert_eq!(ranked, rank(worker, &reversed), "worker {worker}");
        }
        // A fixed hash: the same answer on every machine and build.
        assert_eq!(score(1, "gw-0"), score(1, "gw-0"));
        assert_ne!(score(1, "gw-0"), score(2, "gw-0"));
        let tops: std::collections::HashSet<String> = (1..200).map(|w| rank(w, &list)[0].id.clone()).collect();
        assert_eq!(tops.len(), 5, "every gateway is someone's first choice");
    }

    #[test]
    fn adding_a_gateway_moves_about_one_in_g_workers_and_only_to_it() {
        let (before, after) = (gateways(4), gateways(5));
        let mut moved = 0;
        for worker in 1..=1000u64 {
            let (old, new) = (&rank(worker, &before)[0], &rank(worker, &after)[0]);
            if old != new {
                moved += 1;
                assert_eq!(new.id, "gw-4", "worker {worker} moved to an old gateway");
            }
        }
        // Expect 1000/5 = 200; allow generous statistical slack.
        assert!((130..=270).contains(&moved), "{moved} of 1000 workers moved");
        // Removing a gateway moves only its own workers, to their second choice.
        for worker in 1..=1000u64 {
            let full = rank(worker, &after);
            let without: Vec<Gateway> = after.iter().filter(|g| g.id != "gw-2").cloned().collect();
            let expected = if full[0].id == "gw-2" { &full[1] } else { &full[0] };
            assert_eq!(&rank(worker, &without)[0], expected);
        }
    }

    #[test]
    fn the_learned_list_is_persisted_and_the_configured_one_is_a_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let mut book = GatewayBook::new(dir.path().into(), GatewayList::default(), &["127.0.0.1:9".to_string()]);
        assert_eq!(book.ranked(1), vec![Gateway { id: "127.0.0.1:9".into(), addr: "127.0.0.1:9".into() }]);
        let endpoints = vec![v1::GatewayEndpoint { gateway_id: "a".into(), addr: "10.0.0.1:3671".into() }];
        assert!(!book.learn(7, &[]), "an ack without a list changes nothing");
        assert!(book.learn(7, &endpoints));
        assert!(!book.learn(7, &endpoints), "same epoch, nothing new");
        assert_eq!(book.ranked(1)[0].id, "a");
        assert_eq!(GatewayList::load(dir.path()).unwrap(), GatewayList::from_endpoints(7, &endpoints));
        assert_eq!(GatewayList::load(&dir.path().join("missing")).unwrap(), GatewayList::default());
    }
}
