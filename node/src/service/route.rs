//! Where a call for a partition is served: here, when this node leads it, or
//! one hop away at the leader.

use cairn_cluster::{ClusterError, ClusterNode, Partition};
use cairn_storage::GroupId;
use tonic::Status;
use tonic::transport::Channel;

use crate::error::NodeError;

/// The outcome of routing a call.
pub enum Route {
    /// This node leads the partition.
    Local(Partition),
    /// Forward once to the leader (or, without a local replica, to a replica
    /// that knows the leader).
    Forward(Channel),
}

/// Routes a call for `group`. A call that was already forwarded is never
/// forwarded again: it fails as unavailable and the client retries.
pub fn route(node: &ClusterNode, group: GroupId, forwarded: bool) -> Result<Route, Status> {
    let me = node.node_id();
    if let Some(partition) = node.partition(group).filter(|p| p.leader() == Some(me)) {
        return Ok(Route::Local(partition.clone()));
    }
    let leader = node.leader_of(group);
    if forwarded {
        return Err(NodeError::from(ClusterError::NotLeader { group, leader }).into());
    }
    let target = match leader {
        Some((id, addr)) if id != me => addr,
        _ if node.partition(group).is_none() => node
            .topology()
            .replicas(group)
            .iter()
            .filter_map(|id| node.topology().address(*id))
            .next()
            .ok_or_else(|| Status::from(NodeError::from(ClusterError::NoLeader { group })))?
            .to_string(),
        _ => return Err(NodeError::from(ClusterError::NoLeader { group }).into()),
    };
    let channel = node.channels().get(&target).map_err(|e| {
        Status::unavailable(format!("leader of partition {group} at {target}: {e}"))
    })?;
    Ok(Route::Forward(channel))
}
