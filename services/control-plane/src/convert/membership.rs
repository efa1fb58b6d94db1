//! Memberships (possibly joint), stored memberships and snapshot metadata.

use std::collections::{BTreeMap, BTreeSet};

use muster_proto::v1;

use super::{ConvertError, opt_log_id_from_pb, opt_log_id_to_pb};
use crate::types::{Membership, NodeAddr, SnapshotMeta, StoredMembership};

pub fn membership_to_pb(membership: &Membership) -> v1::Membership {
    v1::Membership {
        configs: membership
            .get_joint_config()
            .iter()
            .map(|ids| v1::NodeIdSet { node_ids: ids.iter().copied().collect() })
            .collect(),
        nodes: membership
            .nodes()
            .map(|(id, node)| {
                (*id, v1::NodeAddr { raft_addr: node.raft_addr.clone(), api_addr: node.api_addr.clone() })
            })
            .collect(),
    }
}

pub fn membership_from_pb(membership: v1::Membership, message: &'static str) -> Result<Membership, ConvertError> {
    let configs: Vec<BTreeSet<u64>> =
        membership.configs.into_iter().map(|set| set.node_ids.into_iter().collect()).collect();
    let nodes: BTreeMap<u64, NodeAddr> = membership
        .nodes
        .into_iter()
        .map(|(id, node)| (id, NodeAddr { raft_addr: node.raft_addr, api_addr: node.api_addr }))
        .collect();
    Membership::new(configs, nodes).map_err(|err| ConvertError { message, problem: err.to_string() })
}

pub fn stored_membership_to_pb(stored: &StoredMembership) -> v1::StoredMembership {
    v1::StoredMembership {
        log_id: opt_log_id_to_pb(stored.log_id()),
        membership: Some(membership_to_pb(stored.membership())),
    }
}

pub fn stored_membership_from_pb(
    stored: Option<v1::StoredMembership>,
    message: &'static str,
) -> Result<StoredMembership, ConvertError> {
    let Some(stored) = stored else {
        return Ok(StoredMembership::default());
    };
    let log_id = opt_log_id_from_pb(stored.log_id, message)?;
    let membership = match stored.membership {
        Some(m) => membership_from_pb(m, message)?,
        None => Membership::default(),
    };
    Ok(StoredMembership::new(log_id, membership))
}

pub fn snapshot_meta_to_pb(meta: &SnapshotMeta, snapshot_id: &str) -> v1::SnapshotMeta {
    v1::SnapshotMeta {
        last_log_id: opt_log_id_to_pb(&meta.last_log_id),
        last_membership: Some(stored_membership_to_pb(&meta.last_membership)),
        snapshot_id: snapshot_id.to_string(),
    }
}

pub fn snapshot_meta_from_pb(meta: v1::SnapshotMeta) -> Result<SnapshotMeta, ConvertError> {
    Ok(SnapshotMeta {
        last_log_id: opt_log_id_from_pb(meta.last_log_id, "SnapshotMeta")?,
        last_membership: stored_membership_from_pb(meta.last_membership, "SnapshotMeta")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{LeaderId, LogId};

    fn addr(n: u64) -> NodeAddr {
        NodeAddr { raft_addr: format!("10.0.0.{n}:3668"), api_addr: format!("10.0.0.{n}:3669") }
    }

    #[test]
    fn joint_membership_with_learner_round_trips() {
        let configs = vec![BTreeSet::from([1, 2, 3]), BTreeSet::from([2, 3, 4])];
        let nodes = BTreeMap::from([(1, addr(1)), (2, addr(2)), (3, addr(3)), (4, addr(4)), (5, addr(5))]);
        let membership = Membership::new(configs, nodes).unwrap();
        let stored = StoredMembership::new(Some(LogId::new(LeaderId { term: 1, node_id: 1 }, 9)), membership);
        let back = stored_membership_from_pb(Some(stored_membership_to_pb(&stored)), "test").unwrap();
        assert_eq!(back, stored);
        assert_eq!(back.membership().learner_ids().collect::<Vec<_>>(), vec![5]);
    }

    #[test]
    fn voter_without_address_is_rejected() {
        let pb = v1::Membership { configs: vec![v1::NodeIdSet { node_ids: vec![1, 2] }], nodes: Default::default() };
        let err = membership_from_pb(pb, "Membership").unwrap_err();
        assert!(err.to_string().starts_with("malformed Membership"), "{err}");
    }
}
