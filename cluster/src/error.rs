//! The cluster crate's error type.

use std::sync::Arc;

use cairn_storage::{GroupId, NodeId, Rejection};

/// Why a cluster operation failed, in terms a caller can act on.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ClusterError {
    /// This node does not lead the group; `leader` is the one it knows of, if any.
    #[error("node is not the leader of group {group}{}", leader_hint(.leader))]
    NotLeader {
        group: GroupId,
        leader: Option<(NodeId, String)>,
    },
    /// No leader is known for the group right now (election in progress or no quorum).
    #[error("no leader for group {group} right now; retry shortly")]
    NoLeader { group: GroupId },
    /// This node does not hold a replica of the group.
    #[error("this node holds no replica of group {group}")]
    NotReplica { group: GroupId },
    /// The state machine refused the command; nothing was written.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// A storage failure.
    #[error("storage: {0}")]
    Storage(Arc<cairn_storage::Error>),
    /// The node is shutting down.
    #[error("node is shutting down")]
    ShuttingDown,
    /// Talking to a peer failed.
    #[error("peer {node}: {message}")]
    Transport { node: NodeId, message: String },
    /// The data directory belongs to another node or cluster.
    #[error("{0}")]
    Identity(String),
    /// A membership change or leader transfer that cannot be done as asked;
    /// the message says why and what to do instead.
    #[error("{0}")]
    Refused(String),
    /// Anything else Raft reported.
    #[error("raft: {0}")]
    Raft(String),
}

fn leader_hint(leader: &Option<(NodeId, String)>) -> String {
    match leader {
        Some((id, addr)) => format!("; leader is node {id} at {addr}"),
        None => String::new(),
    }
}

impl From<cairn_storage::Error> for ClusterError {
    fn from(e: cairn_storage::Error) -> ClusterError {
        ClusterError::Storage(Arc::new(e))
    }
}
