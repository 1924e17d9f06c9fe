//! gRPC `QueryService`: the query bus. A query names a projection; the node
//! asks each partition's leader for its part (one hop) and combines them.
//! Projection status and reset fan out to every node.

use std::sync::Arc;

use cairn_cluster::ClusterNode;
use cairn_proto::v1::query_service_client::QueryServiceClient;
use cairn_proto::v1::query_service_server::QueryService;
use cairn_proto::v1::{
    ProjectionPartitionStatus, ProjectionStatusReply, ProjectionStatusRequest,
    QueryPartitionRequest, QueryReply, QueryRequest, ResetProjectionReply, ResetProjectionRequest,
};
use serde_json::Value;
use tonic::{Request, Response, Status};

use crate::error::NodeError;
use crate::limits::check_json;
use crate::projection::{ProjectionRunner, ProjectionStatus};
use crate::service::route::{Route, route};

/// Serves queries and projection administration.
pub struct QueryGrpcService {
    node: Arc<ClusterNode>,
    projections: ProjectionRunner,
}

impl QueryGrpcService {
    pub fn new(node: Arc<ClusterNode>, projections: ProjectionRunner) -> QueryGrpcService {
        QueryGrpcService { node, projections }
    }

    /// One partition's part of a query, from its leader.
    async fn part(&self, request: QueryPartitionRequest) -> Result<Value, Status> {
        match route(&self.node, request.partition, request.forwarded)? {
            Route::Local(_) => {
                let args = parse_args(&request.args)?;
                Ok(self
                    .projections
                    .query_partition(&request.name, request.partition, &args)
                    .await?)
            }
            Route::Forward { channel, .. } => {
                let forwarded = QueryPartitionRequest {
                    forwarded: true,
                    ..request
                };
                let reply = QueryServiceClient::new(channel)
                    .query_partition(forwarded)
                    .await?
                    .into_inner();
                serde_json::from_slice(&reply.result)
                    .map_err(|e| Status::internal(format!("bad query part: {e}")))
            }
        }
    }

    /// Clients of every other node.
    fn peers(
        &self,
    ) -> Vec<(
        u64,
        Result<QueryServiceClient<tonic::transport::Channel>, Status>,
    )> {
        let me = self.node.node_id();
        self.node
            .topology()
            .nodes
            .iter()
            .filter(|(id, _)| **id != me)
            .map(|(id, addr)| {
                let client = self
                    .node
                    .channels()
                    .get(addr)
                    .map(QueryServiceClient::new)
                    .map_err(|e| Status::unavailable(e.to_string()));
                (*id, client)
            })
            .collect()
    }
}

fn parse_args(args: &[u8]) -> Result<Value, Status> {
    if args.is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    Ok(check_json("query arguments", args).map_err(NodeError::from)?)
}

fn to_wire(s: ProjectionStatus, leader: bool) -> ProjectionPartitionStatus {
    ProjectionPartitionStatus {
        name: s.name,
        partition: s.partition,
        node_id: s.node_id,
        checkpoint: s.checkpoint,
        last_position: s.last_position,
        lag_events: s.lag_events,
        lag_ms: s.lag_ms,
        leader,
    }
}

#[tonic::async_trait]
impl QueryService for QueryGrpcService {
    async fn query(&self, request: Request<QueryRequest>) -> Result<Response<QueryReply>, Status> {
        let request = request.into_inner();
        let projection = self.projections.projection(&request.name)?;
        let args = parse_args(&request.args)?;
        let parts = (0..self.node.topology().partitions).map(|partition| {
            self.part(QueryPartitionRequest {
                name: request.name.clone(),
                partition,
                args: request.args.clone(),
                forwarded: false,
            })
        });
        let parts = futures::future::try_join_all(parts).await?;
        let result = projection.combine(parts, &args).map_err(NodeError::from)?;
        Ok(Response::new(QueryReply {
            result: serde_json::to_vec(&result).expect("JSON serializes").into(),
        }))
    }

    async fn query_partition(
        &self,
        request: Request<QueryPartitionRequest>,
    ) -> Result<Response<QueryReply>, Status> {
        let part = self.part(request.into_inner()).await?;
        Ok(Response::new(QueryReply {
            result: serde_json::to_vec(&part).expect("JSON serializes").into(),
        }))
    }

    async fn projection_status(
        &self,
        request: Request<ProjectionStatusRequest>,
    ) -> Result<Response<ProjectionStatusReply>, Status> {
        let me = self.node.node_id();
        let leads = |group: u32| {
            self.node
                .partition(group)
                .is_some_and(|p| p.leader() == Some(me))
        };
        let mut partitions: Vec<_> = self
            .projections
            .status()
            .await?
            .into_iter()
            .map(|s| {
                let l = leads(s.partition);
                to_wire(s, l)
            })
            .collect();
        if !request.into_inner().forwarded {
            // Every other node's view; an unreachable node is left out.
            let asks = self.peers().into_iter().map(|(_, client)| async move {
                let mut client = client.ok()?;
                client
                    .projection_status(ProjectionStatusRequest { forwarded: true })
                    .await
                    .ok()
            });
            for reply in futures::future::join_all(asks).await.into_iter().flatten() {
                partitions.extend(reply.into_inner().partitions);
            }
        }
        partitions.sort_by(|a, b| {
            (&a.name, a.partition, a.node_id).cmp(&(&b.name, b.partition, b.node_id))
        });
        Ok(Response::new(ProjectionStatusReply { partitions }))
    }

    async fn reset_projection(
        &self,
        request: Request<ResetProjectionRequest>,
    ) -> Result<Response<ResetProjectionReply>, Status> {
        let request = request.into_inner();
        self.projections.reset(&request.name).await?;
        let mut nodes = vec![self.node.node_id()];
        if !request.forwarded {
            for (id, client) in self.peers() {
                let forwarded = ResetProjectionRequest {
                    name: request.name.clone(),
                    forwarded: true,
                };
                client?.reset_projection(forwarded).await?;
                nodes.push(id);
            }
        }
        nodes.sort_unstable();
        Ok(Response::new(ResetProjectionReply { nodes }))
    }
}
