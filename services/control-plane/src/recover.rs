//! `control-plane recover --force-new-cluster`: after a majority of the voters is lost for
//! good, makes a surviving node the only voter of its cluster, keeping its data, so that it
//! elects itself and new nodes can join it.
//!
//! It runs on the stopped survivor and appends one membership entry to its log, in a term past
//! every term the node has seen, holding only this node; the vote is set to this node in that
//! term (not committed, so the node starts as a follower and wins the next election alone).
//! Raft takes the last membership entry of the log as the effective one, committed or not, so
//! the restarted node is a one-voter cluster; its first leader entry commits everything before
//! it.
//!
//! Every entry the survivor holds is kept, including ones it never learnt were committed: a
//! write the lost cluster acknowledged was on a majority, so if it reached the survivor it is
//! there (etcd instead drops the entries past the survivor's commit index, which can lose such
//! a write). Entries that were never acknowledged may be committed too; their clients saw a
//! timeout, whose outcome was unknown anyway. The cluster id, workers, tokens and the worker CA
//! record are the survivor's, so workers' identities stay valid.

use anyhow::Context;
use muster_config::ControlPlaneConfig;
use muster_proto::v1;
use prost::Message;
use redb::ReadableDatabase;

use crate::convert::{
    entry_to_pb, log_id_from_pb, membership_from_pb, stored_membership_from_pb, vote_from_pb, vote_to_pb,
};
use crate::store::db::{FSM_META, META_APPLIED, META_CLUSTER_ID, META_MEMBERSHIP, META_PURGED, META_VOTE, RAFT_META};
use crate::store::db::{decode, io_err};
use crate::store::open_database;
use crate::store::wal::Wal;
use crate::types::{Entry, EntryPayload, LeaderId, LogId, Membership, NodeAddr, Vote};

/// What a recovery did.
#[derive(Debug)]
pub struct Recovered {
    pub cluster_id: String,
    /// This node, now the only voter.
    pub node_id: u64,
    /// The index of the membership entry that makes this node the only voter.
    pub index: u64,
    /// The term of that entry.
    pub term: u64,
    /// The members of the membership it replaces, this node among them or not.
    pub previous_members: Vec<u64>,
}

/// Makes the stopped node whose data directory is `config.data_dir` the only voter of its
/// cluster.
pub fn force_new_cluster(config: &ControlPlaneConfig) -> anyhow::Result<Recovered> {
    let (node_id, _) = crate::restore::raft_node(config, "recover")?;
    let dir = &config.data_dir;
    for name in ["raft-meta.redb", "fsm.redb", "raft-log"] {
        anyhow::ensure!(
            dir.join(name).exists(),
            "{} holds no node data ({name} is missing): there is nothing to recover; to rebuild a cluster from a \
             backup use `control-plane restore`",
            dir.display()
        );
    }
    let stopped = "is the node still running? Stop it before recovering";
    let raft_meta = open_database(&dir.join("raft-meta.redb")).context(stopped)?;
    let fsm = open_database(&dir.join("fsm.redb")).context(stopped)?;

    let (vote, purged) = {
        let txn = raft_meta.begin_read().map_err(io_err)?;
        let table = txn.open_table(RAFT_META).map_err(io_err)?;
        let vote = match table.get(META_VOTE).map_err(io_err)? {
            Some(bytes) => Some(vote_from_pb(Some(decode::<v1::Vote>(bytes.value(), "vote")?), "stored vote")?),
            None => None,
        };
        let purged = match table.get(META_PURGED).map_err(io_err)? {
            Some(bytes) => Some(log_id_from_pb(decode(bytes.value(), "purged log id")?, "purged log id")?),
            None => None,
        };
        (vote, purged)
    };
    let (cluster_id, applied, applied_membership) = {
        let txn = fsm.begin_read().map_err(io_err)?;
        let table = txn.open_table(FSM_META).map_err(io_err)?;
        let cluster_id = table
            .get(META_CLUSTER_ID)
            .map_err(io_err)?
            .map(|id| String::from_utf8_lossy(id.value()).into_owned())
            .unwrap_or_default();
        let applied = match table.get(META_APPLIED).map_err(io_err)? {
            Some(bytes) => Some(log_id_from_pb(decode(bytes.value(), "applied log id")?, "applied log id")?),
            None => None,
        };
        let membership = match table.get(META_MEMBERSHIP).map_err(io_err)? {
            Some(bytes) => stored_membership_from_pb(Some(decode(bytes.value(), "membership")?), "membership")?
                .membership()
                .clone(),
            None => Membership::default(),
        };
        (cluster_id, applied, membership)
    };

    let mut wal = Wal::open(&dir.join("raft-log")).context("opening the log")?;
    // Segments may still hold entries at or below the purge point, as when the node opens it.
    if let Some(purged) = purged {
        wal.purge(purged.index)?;
    }
    let (last_entry, log_membership) = last_entry_and_membership(&wal, purged.map_or(0, |p| p.index))?;
    // The last log id: the log's last entry, else what was purged or applied.
    let last = [last_entry, purged, applied].into_iter().flatten().max_by_key(|id| id.index);
    let Some(last) = last else {
        anyhow::bail!("{} holds an empty log: this node never took part in a cluster", dir.display());
    };
    let previous = log_membership.unwrap_or(applied_membership);
    let previous_members: Vec<u64> = previous.nodes().map(|(id, _)| *id).collect();

    let term = vote.map_or(0, |v| v.leader_id.term).max(last.leader_id.term) + 1;
    let own_addr = NodeAddr { raft_addr: config.advertised_raft_addr(), api_addr: config.advertised_api_addr() };
    let alone = Membership::new(vec![[node_id].into()], std::collections::BTreeMap::from([(node_id, own_addr)]))
        .context("a membership of this node alone")?;
    let log_id = LogId::new(LeaderId { term, node_id }, last.index + 1);
    let entry = Entry { log_id, payload: EntryPayload::Membership(alone) };
    if let Some(file) = wal.append_unsynced(&[entry_to_pb(&entry)]).context("appending the membership entry")? {
        file.sync_data()?;
    }

    let vote = Vote::new(term, node_id);
    let mut txn = raft_meta.begin_write().map_err(io_err)?;
    txn.set_durability(redb::Durability::Immediate).map_err(std::io::Error::other)?;
    txn.open_table(RAFT_META)
        .map_err(io_err)?
        .insert(META_VOTE, vote_to_pb(&vote).encode_to_vec().as_slice())
        .map_err(io_err)?;
    txn.commit().map_err(io_err)?;
    Ok(Recovered { cluster_id, node_id, index: log_id.index, term, previous_members })
}

/// The log id of the log's last entry and the last membership in the log, if any; reads the
/// log backwards in chunks until it meets a membership entry or the purge point.
fn last_entry_and_membership(wal: &Wal, purged: u64) -> anyhow::Result<(Option<LogId>, Option<Membership>)> {
    const CHUNK: u64 = 1024;
    let Some(last_index) = wal.last_index().filter(|last| *last > purged) else { return Ok((None, None)) };
    let mut last = None;
    let mut end = last_index;
    loop {
        let start = end.saturating_sub(CHUNK - 1).max(purged + 1);
        for entry in wal.read(start..=end)?.into_iter().rev() {
            let log_id = entry.log_id.map(|id| log_id_from_pb(id, "log entry")).transpose()?;
            if last.is_none() {
                last = log_id;
            }
            if let Some(v1::entry::Payload::Membership(membership)) = entry.payload {
                return Ok((last, Some(membership_from_pb(membership, "log entry")?)));
            }
        }
        if start <= purged + 1 {
            return Ok((last, None));
        }
        end = start - 1;
    }
}
