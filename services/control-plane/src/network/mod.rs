//! Outbound Raft RPCs: openraft's network traits over tonic, one lazily connected channel
//! per peer, mTLS unless the node runs `--insecure`.

mod peer;
mod snapshot_push;

pub use peer::{PeerChannels, PeerClient};
pub use snapshot_push::{SnapshotSender, chunk_snapshot};
