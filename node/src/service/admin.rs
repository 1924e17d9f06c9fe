//! gRPC `AdminService`: the cluster as this node sees it, and the changes
//! an operator makes to it (membership, leadership).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_cluster::{ClusterError, ClusterNode, MemberChange, ReplicaView};
use cairn_proto::v1::admin_service_client::AdminServiceClient;
use cairn_proto::v1::admin_service_server::AdminService;
use cairn_proto::v1::{
    AddNodeRequest, CompactReply, CompactRequest, GroupStatus, MembershipReply, NodeStatus,
    RebalanceFailure, RebalanceReply, RebalanceRequest, RemoveNodeRequest, ReplicaLag, StatusReply,
    StatusRequest, TransferLeaderReply, TransferLeaderRequest,
};
use cairn_storage::{GroupId, META_GROUP, NodeId};
use openraft::{BasicNode, RaftMetrics};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::error::NodeError;
use crate::service::route::{Route, route};

/// How long a reachability probe of a peer may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);

/// Serves admin calls.
pub struct AdminGrpcService {
    node: Arc<ClusterNode>,
}

impl AdminGrpcService {
    pub fn new(node: Arc<ClusterNode>) -> AdminGrpcService {
        AdminGrpcService { node }
    }
}

#[tonic::async_trait]
impl AdminService for AdminGrpcService {
    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusReply>, Status> {
        let topology = self.node.topology();
        let me = self.node.node_id();
        let probes = topology.nodes.iter().map(|(id, addr)| async move {
            let reachable = *id == me
                || tokio::time::timeout(
                    PROBE_TIMEOUT,
                    tokio::net::TcpStream::connect(addr.as_str()),
                )
                .await
                .is_ok_and(|r| r.is_ok());
            NodeStatus {
                id: *id,
                address: addr.clone(),
                reachable,
            }
        });
        let nodes = futures::future::join_all(probes).await;
        let metrics: HashMap<_, _> = self.node.metrics().into_iter().collect();
        // Groups without a replica here: what one of their replicas knows.
        let elsewhere = (0..topology.partitions)
            .chain([META_GROUP])
            .filter(|g| !metrics.contains_key(g))
            .map(|g| async move { (g, self.node.remote_view(g).await) });
        let remote: HashMap<_, _> = futures::future::join_all(elsewhere)
            .await
            .into_iter()
            .filter_map(|(g, view)| Some((g, view?.1)))
            .collect();
        let group = |id: GroupId| {
            let sent = self.node.snapshots_sent(id);
            let mut status = GroupStatus {
                snapshots_sent: sent.count,
                snapshot_bytes_sent: sent.bytes,
                ..group_status(id, topology.replicas(id), metrics.get(&id))
            };
            if let Some(view) = remote.get(&id) {
                from_view(&mut status, view);
            }
            status
        };
        Ok(Response::new(StatusReply {
            node_id: me,
            nodes,
            partitions: (0..topology.partitions).map(group).collect(),
            metadata: Some(group(META_GROUP)),
            partition_count: topology.partitions,
            epoch: topology.epoch,
        }))
    }

    async fn add_node(
        &self,
        request: Request<AddNodeRequest>,
    ) -> Result<Response<MembershipReply>, Status> {
        let request = request.into_inner();
        let change = MemberChange::Add {
            id: request.id,
            address: request.address,
        };
        self.membership(change, request.forwarded).await
    }

    async fn remove_node(
        &self,
        request: Request<RemoveNodeRequest>,
    ) -> Result<Response<MembershipReply>, Status> {
        let request = request.into_inner();
        let change = MemberChange::Remove { id: request.id };
        self.membership(change, request.forwarded).await
    }

    async fn transfer_leader(
        &self,
        request: Request<TransferLeaderRequest>,
    ) -> Result<Response<TransferLeaderReply>, Status> {
        Ok(Response::new(self.transfer(request.into_inner()).await?))
    }

    async fn rebalance(
        &self,
        _request: Request<RebalanceRequest>,
    ) -> Result<Response<RebalanceReply>, Status> {
        let topology = self.node.topology();
        let transfers = (0..topology.partitions).filter_map(|partition| {
            let preferred = *topology.replicas(partition).first()?;
            Some(async move {
                let request = TransferLeaderRequest {
                    partition,
                    node: preferred,
                    forwarded: false,
                };
                (partition, self.transfer(request).await)
            })
        });
        let mut reply = RebalanceReply::default();
        for (partition, outcome) in futures::future::join_all(transfers).await {
            match outcome {
                Ok(moved) if moved.from == moved.to => reply.unchanged += 1,
                Ok(moved) => reply.moved.push(moved),
                Err(e) => reply.failed.push(RebalanceFailure {
                    partition,
                    error: e.message().to_string(),
                }),
            }
        }
        Ok(Response::new(reply))
    }

    async fn compact(
        &self,
        _request: Request<CompactRequest>,
    ) -> Result<Response<CompactReply>, Status> {
        let store = self.node.store().clone();
        let compacted = tokio::task::spawn_blocking(move || store.compact())
            .await
            .map_err(|e| Status::internal(format!("compaction task: {e}")))?
            .map_err(|e| Status::internal(format!("compaction failed: {e}")))?;
        Ok(Response::new(CompactReply {
            node_id: self.node.node_id(),
            sst_bytes_before: compacted.sst_bytes_before,
            sst_bytes_after: compacted.sst_bytes_after,
            sst_bytes_by_family: compacted.sst_bytes_by_family.into_iter().collect(),
        }))
    }
}

impl AdminGrpcService {
    /// `None` when this node leads the metadata group (a change runs here),
    /// else the channel to its leader. A forwarded call is not forwarded again.
    fn at_metadata_leader(&self, forwarded: bool) -> Result<Option<Channel>, NodeError> {
        let me = self.node.node_id();
        let topology = self.node.topology();
        let leader = self.node.leader_of(META_GROUP);
        let target = match &leader {
            Some((id, _)) if *id == me => return Ok(None),
            _ if forwarded => {
                return Err(ClusterError::NotLeader {
                    group: META_GROUP,
                    leader,
                }
                .into());
            }
            Some((id, address)) => (*id, address.clone()),
            None => topology
                .meta_replicas
                .iter()
                .find(|id| **id != me)
                .and_then(|id| Some((*id, topology.address(*id)?.to_string())))
                .ok_or(ClusterError::NoLeader { group: META_GROUP })?,
        };
        let channel = self
            .node
            .channels()
            .get(&target.1)
            .map_err(|e| ClusterError::Transport {
                node: target.0,
                message: format!("metadata leader at {}: {e}", target.1),
            })?;
        Ok(Some(channel))
    }

    /// A membership change, made here on the metadata group's leader or
    /// forwarded to it once.
    async fn membership(
        &self,
        change: MemberChange,
        forwarded: bool,
    ) -> Result<Response<MembershipReply>, Status> {
        if let Some(channel) = self.at_metadata_leader(forwarded)? {
            let mut leader = AdminServiceClient::new(channel);
            return match change {
                MemberChange::Add { id, address } => {
                    let request = AddNodeRequest {
                        id,
                        address,
                        forwarded: true,
                    };
                    leader.add_node(request).await
                }
                MemberChange::Remove { id } => {
                    leader
                        .remove_node(RemoveNodeRequest {
                            id,
                            forwarded: true,
                        })
                        .await
                }
            };
        }
        let before = self.node.topology();
        let after = self
            .node
            .change_members(change)
            .await
            .map_err(NodeError::from)?;
        Ok(Response::new(MembershipReply {
            epoch: after.epoch,
            nodes: after
                .nodes
                .iter()
                .map(|(id, address)| NodeStatus {
                    id: *id,
                    address: address.clone(),
                    reachable: true,
                })
                .collect(),
            replicas_moved: after.replicas_moved_from(&before),
        }))
    }

    /// A leader transfer, here on the partition's leader or forwarded to it.
    async fn transfer(
        &self,
        request: TransferLeaderRequest,
    ) -> Result<TransferLeaderReply, Status> {
        let partitions = self.node.topology().partitions;
        if request.partition >= partitions {
            return Err(Status::invalid_argument(format!(
                "partition {} does not exist: partitions are 0..{partitions}",
                request.partition
            )));
        }
        match route(&self.node, request.partition, request.forwarded)? {
            Route::Local(_) => {
                let started = Instant::now();
                self.node
                    .transfer_leader(request.partition, request.node)
                    .await
                    .map_err(NodeError::from)?;
                Ok(TransferLeaderReply {
                    partition: request.partition,
                    from: self.node.node_id(),
                    to: request.node,
                    took_ms: started.elapsed().as_millis() as u64,
                })
            }
            Route::Forward { channel, .. } => {
                let forwarded = TransferLeaderRequest {
                    forwarded: true,
                    ..request
                };
                Ok(AdminServiceClient::new(channel)
                    .transfer_leader(forwarded)
                    .await?
                    .into_inner())
            }
        }
    }
}

/// What another node's replica of a group knows: leader, term, members.
fn from_view(status: &mut GroupStatus, view: &ReplicaView) {
    let membership = view.membership.membership();
    status.voters = membership.voter_ids().collect();
    status.learners = membership.learner_ids().collect();
    status.leader = view.leader;
    status.term = view.term;
}

/// A group's status from this node's replica, if it has one.
fn group_status(
    id: GroupId,
    replicas: &[NodeId],
    metrics: Option<&RaftMetrics<NodeId, BasicNode>>,
) -> GroupStatus {
    let mut status = GroupStatus {
        id,
        replicas: replicas.to_vec(),
        ..Default::default()
    };
    let Some(m) = metrics else { return status };
    let membership = m.membership_config.membership();
    status.voters = membership.voter_ids().collect();
    status.learners = membership.learner_ids().collect();
    status.leader = m.current_leader;
    status.term = m.current_term;
    status.last_log_index = m.last_log_index.unwrap_or(0);
    status.applied_index = m.last_applied.map(|l| l.index).unwrap_or(0);
    status.purged_index = m.purged.map(|l| l.index).unwrap_or(0);
    status.committed_index = status.applied_index;
    if let Some(replication) = &m.replication {
        // On the leader: what each member has matched, and the commit point
        // (the highest index a majority of the voters holds).
        let matched_by = |r: &NodeId| match replication.get(r) {
            Some(Some(log_id)) => log_id.index,
            Some(None) => 0,
            None if *r == m.id => status.last_log_index,
            None => 0,
        };
        status.lag = status
            .voters
            .iter()
            .chain(&status.learners)
            .map(|r| ReplicaLag {
                node_id: *r,
                entries_behind: status.last_log_index.saturating_sub(matched_by(r)),
            })
            .collect();
        let mut matched: Vec<u64> = status.voters.iter().map(matched_by).collect();
        matched.sort_unstable_by(|a, b| b.cmp(a));
        if let Some(majority) = matched.get(status.voters.len() / 2) {
            status.committed_index = status.committed_index.max(*majority);
        }
    }
    status
}
