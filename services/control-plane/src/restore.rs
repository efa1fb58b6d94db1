//! `control-plane restore`: prepares a node's empty data directory so that it starts as a
//! member of a new cluster holding a backup's state (`musterctl snapshot save`).
//!
//! Every initial member of the new cluster runs it with the same backup and the same
//! `cluster.peers`, which become the membership. The state machine is loaded from the backup's
//! snapshot and marked applied up to the backup's revision, the snapshot is kept as this node's
//! current one (so later joiners can be sent it), and the log is marked purged up to that
//! revision: the node starts initialized, its log continuing after the backup, and the members
//! elect a leader as after any restart. The cluster id, tokens, worker records and the worker CA
//! record come from the backup, so workers' certificates stay valid.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::Context;
use muster_config::{ClusterMode, ControlPlaneConfig, WorkerTierRole};
use muster_proto::backup::Backup;
use prost::Message;

use crate::convert::{log_id_to_pb, snapshot_meta_to_pb, stored_membership_to_pb, vote_to_pb};
use crate::store::db::{
    FSM_META, META_APPLIED, META_MEMBERSHIP, META_PURGED, META_SNAPSHOT, META_VOTE, RAFT_META, io_err,
};
use crate::store::{SnapshotFile, open_database, read_snapshot_records};
use crate::types::{LeaderId, LogId, Membership, NodeAddr, SnapshotMeta, StoredMembership, Vote};

/// What a restore prepared.
#[derive(Debug)]
pub struct Restored {
    pub cluster_id: String,
    pub revision: u64,
    pub members: Vec<u64>,
}

/// The files of a node's data directory; a restore refuses a directory holding any of them.
const NODE_FILES: [&str; 4] = ["raft-log", "raft-meta.redb", "fsm.redb", "snapshots"];

/// This node's Raft id and the configured initial peers, for the offline commands (`restore`,
/// `recover`) that rewrite a Raft node's data directory.
pub(crate) fn raft_node<'a>(
    config: &'a ControlPlaneConfig,
    command: &str,
) -> anyhow::Result<(u64, &'a [muster_config::RaftPeer])> {
    match &config.cluster {
        ClusterMode::Raft { node_id, peers }
        | ClusterMode::WorkerTier { role: WorkerTierRole::Server, node_id: Some(node_id), peers, .. } => {
            Ok((*node_id, peers))
        }
        other => anyhow::bail!(
            "{command} works on a Raft control-plane node (mode raft, or worker-tier with role server); this config \
             runs mode {}",
            other.name()
        ),
    }
}

/// The initial members from the configuration (this node among them).
fn members(config: &ControlPlaneConfig) -> anyhow::Result<BTreeMap<u64, NodeAddr>> {
    let (node_id, peers) = raft_node(config, "restore")?;
    anyhow::ensure!(
        config.join.is_empty(),
        "restore prepares the initial members (cluster.peers); a node with `join` set joins the restored cluster \
         after it has started instead"
    );
    let members: BTreeMap<u64, NodeAddr> = peers
        .iter()
        .map(|peer| (peer.id, NodeAddr { raft_addr: peer.raft_addr.clone(), api_addr: peer.api_addr.clone() }))
        .collect();
    anyhow::ensure!(members.contains_key(&node_id), "cluster.peers does not list this node ({node_id})");
    Ok(members)
}

/// Prepares `config.data_dir` from the backup file `backup_file`.
pub fn restore(config: &ControlPlaneConfig, backup_file: &Path) -> anyhow::Result<Restored> {
    let bytes = std::fs::read(backup_file).with_context(|| format!("reading {}", backup_file.display()))?;
    let backup = Backup::parse(&bytes).with_context(|| format!("{} is refused", backup_file.display()))?;
    let header = &backup.header;
    anyhow::ensure!(
        header.snapshot_format == crate::store::SNAPSHOT_FORMAT,
        "the backup holds a snapshot of format {}, this release reads {}",
        header.snapshot_format,
        crate::store::SNAPSHOT_FORMAT
    );
    anyhow::ensure!(header.revision > 0, "the backup holds no applied entry (revision 0)");
    let members = members(config)?;
    let dir = &config.data_dir;
    for name in NODE_FILES {
        anyhow::ensure!(
            !dir.join(name).exists(),
            "{} already holds a node's data ({name}); restore into an empty data directory",
            dir.display()
        );
    }
    crate::data_dir::create_private_dir(dir)?;

    let log_id = LogId::new(LeaderId { term: header.term, node_id: header.node_id }, header.revision);
    let voters: BTreeSet<u64> = members.keys().copied().collect();
    let membership = Membership::new(vec![voters], members.clone()).context("the membership from cluster.peers")?;
    let meta =
        SnapshotMeta { last_log_id: Some(log_id), last_membership: StoredMembership::new(Some(log_id), membership) };

    // The snapshot, as this node's current one.
    let snapshots = dir.join("snapshots");
    crate::data_dir::create_private_dir(&snapshots)?;
    let id = format!("{}-{}-{}-restored", header.term, header.node_id, header.revision);
    let file = SnapshotFile::in_dir(&snapshots, &id);
    {
        use std::io::Write;
        let mut out = crate::data_dir::private_file().write(true).create_new(true).open(&file.path)?;
        out.write_all(backup.snapshot)?;
        out.sync_all()?;
    }
    let records = read_snapshot_records(&file.path)?;

    // The state machine, applied up to the backup's revision, with the new membership.
    let fsm = open_database(&dir.join("fsm.redb"))?;
    let mut txn = fsm.begin_write().map_err(io_err)?;
    txn.set_durability(redb::Durability::Immediate).map_err(std::io::Error::other)?;
    crate::store::snapshot::load_records(&txn, records)?;
    crate::store::history::restart_at(&txn, header.revision)?;
    {
        let mut table = txn.open_table(FSM_META).map_err(io_err)?;
        table.insert(META_APPLIED, log_id_to_pb(&log_id).encode_to_vec().as_slice()).map_err(io_err)?;
        let stored = stored_membership_to_pb(&meta.last_membership).encode_to_vec();
        table.insert(META_MEMBERSHIP, stored.as_slice()).map_err(io_err)?;
        table.insert(META_SNAPSHOT, snapshot_meta_to_pb(&meta, &file.id).encode_to_vec().as_slice()).map_err(io_err)?;
    }
    txn.commit().map_err(io_err)?;

    // The log: nothing in it, purged up to the snapshot; and the vote of the leader that wrote
    // the last entry, so the first election of the new cluster is in a later term (a leader
    // elected in that same term with a lower id would rank below the entry's own leader).
    let raft_meta = open_database(&dir.join("raft-meta.redb"))?;
    let txn = raft_meta.begin_write().map_err(io_err)?;
    {
        let mut table = txn.open_table(RAFT_META).map_err(io_err)?;
        table.insert(META_PURGED, log_id_to_pb(&log_id).encode_to_vec().as_slice()).map_err(io_err)?;
        let vote = Vote::new_committed(header.term, header.node_id);
        table.insert(META_VOTE, vote_to_pb(&vote).encode_to_vec().as_slice()).map_err(io_err)?;
    }
    txn.commit().map_err(io_err)?;
    Ok(Restored {
        cluster_id: header.cluster_id.clone(),
        revision: header.revision,
        members: members.into_keys().collect(),
    })
}
