//! Changing the cluster: membership (`add_node`, `remove_node`) and
//! leadership (`transfer_leader`, `rebalance`). Any server takes these
//! calls and forwards them where they run.

use std::time::{Duration, Instant};

use cairn_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::client::{Client, admin};
use crate::error::Error;
use crate::status::{NodeStatus, Status};

/// A membership change, recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MembershipChanged {
    /// The topology epoch the change recorded.
    pub epoch: u64,
    /// The members of that epoch.
    pub nodes: Vec<NodeStatus>,
    /// Replicas the change moves onto or off nodes (metadata group included).
    pub replicas_moved: u32,
}

/// A partition's leadership, handed over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaderMoved {
    pub partition: u32,
    /// The leader before and after (equal when it led already).
    pub from: u64,
    pub to: u64,
    pub took_ms: u64,
}

/// What a rebalance did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rebalanced {
    /// Partitions whose leadership moved to their preferred replica.
    pub moved: Vec<LeaderMoved>,
    /// Partitions their preferred replica led already.
    pub unchanged: u32,
    /// Partitions that could not move, and why.
    pub failed: Vec<(u32, String)>,
}

/// Whether every group has the replicas topology `epoch` wants, from the
/// statuses of all its members: each group as its leader reports it.
pub fn converged(statuses: &[Status], epoch: u64) -> bool {
    let Some(first) = statuses.first() else {
        return false;
    };
    let groups = (0..first.partition_count).map(Some).chain([None]);
    statuses.iter().all(|s| s.epoch >= epoch)
        && groups.into_iter().all(|group| {
            statuses.iter().any(|s| {
                let g = match group {
                    Some(p) => s.partitions.get(p as usize),
                    None => s.metadata.as_ref(),
                };
                g.is_some_and(|g| {
                    let mut voters = g.voters.clone();
                    let mut replicas = g.replicas.clone();
                    voters.sort_unstable();
                    replicas.sort_unstable();
                    g.leader == Some(s.node_id) && voters == replicas && g.learners.is_empty()
                })
            })
        })
}

impl Client {
    /// Adds node `id`, already running at `address`, to the cluster.
    pub async fn add_node(&self, id: u64, address: &str) -> Result<MembershipChanged, Error> {
        let request = pb::AddNodeRequest {
            id,
            address: address.to_string(),
            forwarded: false,
        };
        let reply = self
            .call(|conn| {
                let request = request.clone();
                async move { admin(conn.channel).add_node(request).await }
            })
            .await?;
        Ok(reply.into())
    }

    /// Removes node `id` from the cluster; its replicas move to the others.
    pub async fn remove_node(&self, id: u64) -> Result<MembershipChanged, Error> {
        let request = pb::RemoveNodeRequest {
            id,
            forwarded: false,
        };
        let reply = self
            .call(|conn| async move { admin(conn.channel).remove_node(request).await })
            .await?;
        Ok(reply.into())
    }

    /// Hands the leadership of `partition` to `node`, one of its voters.
    pub async fn transfer_leader(&self, partition: u32, node: u64) -> Result<LeaderMoved, Error> {
        let request = pb::TransferLeaderRequest {
            partition,
            node,
            forwarded: false,
        };
        let reply = self
            .call(|conn| async move { admin(conn.channel).transfer_leader(request).await })
            .await?;
        Ok(reply.into())
    }

    /// Moves each partition's leadership to its preferred replica.
    pub async fn rebalance(&self) -> Result<Rebalanced, Error> {
        let reply = self
            .call(
                |conn| async move { admin(conn.channel).rebalance(pb::RebalanceRequest {}).await },
            )
            .await?;
        Ok(Rebalanced {
            moved: reply.moved.into_iter().map(LeaderMoved::from).collect(),
            unchanged: reply.unchanged,
            failed: reply
                .failed
                .into_iter()
                .map(|f| (f.partition, f.error))
                .collect(),
        })
    }

    /// Waits until the members that answer follow topology `epoch` (the one
    /// a membership change returned) and every group's leader reports the
    /// replicas the epoch wants, or `timeout` passes. A member that is down
    /// does not hold this up: each group is judged by its leader.
    pub async fn wait_converged(
        &self,
        epoch: u64,
        timeout: Duration,
    ) -> Result<Vec<Status>, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let members = self.status().await?.nodes;
            let mut statuses = Vec::with_capacity(members.len());
            for member in &members {
                if let Ok(client) = Client::connect(&member.address).await
                    && let Ok(status) = client.with_timeout(Duration::from_secs(2)).status().await
                {
                    statuses.push(status);
                }
            }
            if converged(&statuses, epoch) {
                return Ok(statuses);
            }
            if Instant::now() >= deadline {
                return Err(Error::Unavailable(format!(
                    "replicas still moving after {timeout:?}: see `cairn admin status` on each node"
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl From<pb::MembershipReply> for MembershipChanged {
    fn from(r: pb::MembershipReply) -> MembershipChanged {
        MembershipChanged {
            epoch: r.epoch,
            nodes: r.nodes.into_iter().map(NodeStatus::from).collect(),
            replicas_moved: r.replicas_moved,
        }
    }
}

impl From<pb::TransferLeaderReply> for LeaderMoved {
    fn from(r: pb::TransferLeaderReply) -> LeaderMoved {
        LeaderMoved {
            partition: r.partition,
            from: r.from,
            to: r.to,
            took_ms: r.took_ms,
        }
    }
}
