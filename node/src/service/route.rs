//! Where a call for a partition is served: here, when this node leads it, or
//! one hop away at the leader.

use cairn_cluster::{ClusterError, ClusterNode, Partition};
use cairn_storage::GroupId;
use tonic::transport::Channel;

use crate::error::NodeError;

/// The outcome of routing a call.
pub enum Route {
    /// This node leads the partition.
    Local(Partition),
    /// Forward once to the leader (or, without a local replica, to a replica
    /// that knows the leader), at `address`.
    Forward { channel: Channel, address: String },
}

/// Routes a call for `group`. A call that was already forwarded is never
/// forwarded again: it fails as unavailable and the caller retries.
pub fn route(node: &ClusterNode, group: GroupId, forwarded: bool) -> Result<Route, NodeError> {
    let me = node.node_id();
    if let Some(partition) = node.partition(group).filter(|p| p.leader() == Some(me)) {
        return Ok(Route::Local(partition));
    }
    let leader = node.leader_of(group);
    if forwarded {
        return Err(ClusterError::NotLeader { group, leader }.into());
    }
    let (target, address) = match leader {
        Some((id, addr)) if id != me => (id, addr),
        _ if node.partition(group).is_none() => node
            .topology()
            .replicas(group)
            .iter()
            .find_map(|id| Some((*id, node.topology().address(*id)?.to_string())))
            .ok_or(ClusterError::NoLeader { group })?,
        _ => return Err(ClusterError::NoLeader { group }.into()),
    };
    let channel = node
        .channels()
        .get(&address)
        .map_err(|e| ClusterError::Transport {
            node: target,
            message: format!("leader of partition {group} at {address}: {e}"),
        })?;
    Ok(Route::Forward { channel, address })
}
