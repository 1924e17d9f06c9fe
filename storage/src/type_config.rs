//! The openraft type configuration every Cairn Raft group uses.

use std::io::Cursor;

use crate::command::{Command, CommandResult};

/// A node's id in the cluster.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// Raft types of Cairn's groups: entries carry a [`Command`], applying one
    /// yields a [`CommandResult`]; snapshots are byte buffers.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);
