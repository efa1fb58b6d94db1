//! Which command format the leader may write: the newest one every member applies. Each
//! peer says its own in every AppendEntries answer (`command_format`), heartbeats included,
//! so a leader learns it within a heartbeat of taking office and again after each upgrade.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::types::NodeId;

/// What a member not heard from yet, or a release before peers said their format (which
/// answers 0), is taken to apply: the format before batches. The upgrade rule allows only
/// adjacent releases side by side, so that is the oldest a member can run.
pub const UNANNOUNCED_FORMAT: u32 = 2;

/// The command format each peer last said it applies.
#[derive(Clone, Debug, Default)]
pub struct PeerFormats(Arc<Mutex<HashMap<NodeId, u32>>>);

impl PeerFormats {
    /// `peer` answered an AppendEntries saying it applies up to `format` (0: it did not say).
    pub fn heard(&self, peer: NodeId, format: u32) {
        let format = if format == 0 { UNANNOUNCED_FORMAT } else { format };
        self.0.lock().unwrap_or_else(PoisonError::into_inner).insert(peer, format);
    }

    /// The newest format every one of `members` applies: `own` for this node, what each
    /// other member last said, and [`UNANNOUNCED_FORMAT`] for one not heard from yet.
    pub fn writable(&self, this_node: NodeId, own: u32, members: impl IntoIterator<Item = NodeId>) -> u32 {
        let formats = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        members
            .into_iter()
            .filter(|member| *member != this_node)
            .map(|member| formats.get(&member).copied().unwrap_or(UNANNOUNCED_FORMAT))
            .fold(own, u32::min)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writable_format_is_the_oldest_any_member_applies() {
        let formats = PeerFormats::default();
        assert_eq!(formats.writable(1, 3, [1]), 3, "a single node writes its own");
        assert_eq!(formats.writable(1, 3, [1, 2, 3]), 2, "members not heard from are taken to be a release behind");
        formats.heard(2, 3);
        assert_eq!(formats.writable(1, 3, [1, 2, 3]), 2);
        formats.heard(3, 3);
        assert_eq!(formats.writable(1, 3, [1, 2, 3]), 3, "every member applies 3");
        formats.heard(3, 0);
        assert_eq!(formats.writable(1, 3, [1, 2, 3]), 2, "a node restarted on the older release, which says nothing");
        formats.heard(3, 4);
        assert_eq!(formats.writable(1, 3, [1, 2, 3]), 3, "never more than this node's own");
        assert_eq!(formats.writable(1, 3, [1, 2, 3, 4]), 2, "a learner counts too: it applies the same log");
    }
}
