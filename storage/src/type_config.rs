//! The openraft type configuration every Cairn Raft group uses.

use crate::command::{Command, CommandResult};
use crate::snapshot_bytes::SnapshotBytes;

/// A node's id in the cluster.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// Raft types of Cairn's groups: entries carry a [`Command`], applying one
    /// yields a [`CommandResult`]; snapshots are
    /// [`SnapshotBytes`], serialized when first read.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = SnapshotBytes,
        AsyncRuntime = openraft::TokioRuntime,
);
