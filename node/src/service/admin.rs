//! gRPC `AdminService`: the cluster as this node sees it.

use std::sync::Arc;
use std::time::Duration;

use cairn_cluster::ClusterNode;
use cairn_proto::v1::admin_service_server::AdminService;
use cairn_proto::v1::{
    CompactReply, CompactRequest, GroupStatus, NodeStatus, ReplicaLag, StatusReply, StatusRequest,
};
use cairn_storage::{GroupId, META_GROUP, NodeId};
use openraft::{BasicNode, RaftMetrics};
use tonic::{Request, Response, Status};

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
        let topology = self.node.topology().clone();
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
        let metrics: std::collections::HashMap<_, _> = self.node.metrics().into_iter().collect();
        let group = |id: GroupId| GroupStatus {
            snapshots_sent: self.node.snapshots_sent(id),
            ..group_status(id, topology.replicas(id), metrics.get(&id))
        };
        Ok(Response::new(StatusReply {
            node_id: me,
            nodes,
            partitions: (0..topology.partitions).map(group).collect(),
            metadata: Some(group(META_GROUP)),
            partition_count: topology.partitions,
        }))
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
    status.leader = m.current_leader;
    status.term = m.current_term;
    status.last_log_index = m.last_log_index.unwrap_or(0);
    status.applied_index = m.last_applied.map(|l| l.index).unwrap_or(0);
    status.purged_index = m.purged.map(|l| l.index).unwrap_or(0);
    status.committed_index = status.applied_index;
    if let Some(replication) = &m.replication {
        // On the leader: what each replica has matched, and the commit point
        // (the highest index a majority holds).
        let mut matched: Vec<u64> = replicas
            .iter()
            .map(|r| match replication.get(r) {
                Some(Some(log_id)) => log_id.index,
                Some(None) => 0,
                None if *r == m.id => status.last_log_index,
                None => 0,
            })
            .collect();
        status.lag = replicas
            .iter()
            .zip(&matched)
            .map(|(r, idx)| ReplicaLag {
                node_id: *r,
                entries_behind: status.last_log_index.saturating_sub(*idx),
            })
            .collect();
        matched.sort_unstable_by(|a, b| b.cmp(a));
        if let Some(majority) = matched.get(replicas.len() / 2) {
            status.committed_index = status.committed_index.max(*majority);
        }
    }
    status
}
