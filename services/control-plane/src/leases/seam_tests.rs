//! Leases against the leadership seam alone: a fake that leads or follows as told, over a real
//! state machine store, shows that nothing here needs openraft.

use std::sync::Mutex;

use muster_config::ControlPlaneConfig;
use tonic::Code;

use super::*;
use crate::leadership::{Confirmation, Standing};
use crate::store::{FsmReader, open_database};

struct FakeLeadership {
    standing: Mutex<Standing>,
    reader: FsmReader,
    _dir: tempfile::TempDir,
}

impl FakeLeadership {
    fn new(leading: bool, term: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let reader = FsmReader::new(open_database(&dir.path().join("fsm.redb")).unwrap());
        Self {
            standing: Mutex::new(Standing { term, leader: leading.then_some(1), leading, applied_index: 0 }),
            reader,
            _dir: dir,
        }
    }

    fn set(&self, leading: bool, term: u64) {
        *self.standing.lock().unwrap() = Standing { term, leader: leading.then_some(1), leading, applied_index: 0 };
    }
}

impl Leadership for FakeLeadership {
    type Applied = FsmReader;

    fn id(&self) -> u64 {
        1
    }

    fn standing(&self) -> Standing {
        *self.standing.lock().unwrap()
    }

    async fn confirm(&self, _how: Confirmation) -> Result<(), ApiError> {
        if self.standing().leading { Ok(()) } else { Err(self.not_leader()) }
    }

    async fn propose_command(&self, _command: v1::Command) -> Result<v1::CommandResult, ApiError> {
        Err(ApiError::Unavailable("this fake proposes nothing".into()))
    }

    fn applied(&self) -> &FsmReader {
        &self.reader
    }

    fn not_leader(&self) -> ApiError {
        ApiError::not_leader(None)
    }

    fn membership(&self) -> v1::ClusterMembership {
        v1::ClusterMembership { node_id: 1, leader_id: self.standing().leader.unwrap_or(0), ..Default::default() }
    }
}

fn batch(gateway: &str) -> v1::ReportLivenessRequest {
    v1::ReportLivenessRequest {
        gateway_id: gateway.into(),
        gateway_addr: format!("{gateway}:3671"),
        ..Default::default()
    }
}

#[test]
fn a_follower_refuses_batches_and_shows_no_leases() {
    let leases = Leases::new(&ControlPlaneConfig::default());
    let follower = FakeLeadership::new(false, 3);
    let err = leases.report(&follower, batch("gw-1")).unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(leases.list_gateways(&follower).is_err());
    assert!(leases.views(&follower, [1, 2]).is_empty());
}

#[test]
fn a_leader_takes_batches_and_a_new_term_starts_a_new_table() {
    let leases = Leases::new(&ControlPlaneConfig::default());
    let node = FakeLeadership::new(true, 3);
    let answer = leases.report(&node, batch("gw-1")).unwrap();
    assert_eq!((answer.leader_term, answer.gateways.len()), (3, 1));
    assert_eq!(leases.list_gateways(&node).unwrap().gateways.len(), 1);

    // Deposed and elected again in a later term: the gateways it knew are forgotten.
    node.set(true, 5);
    let answer = leases.report(&node, batch("gw-2")).unwrap();
    assert_eq!(answer.leader_term, 5);
    let names: Vec<_> = answer.gateways.iter().map(|g| g.gateway_id.as_str()).collect();
    assert_eq!(names, ["gw-2"]);
}
