//! The query bus as a client sees it: queries by projection name, and the
//! projections' status and reset.

use cairn_proto::v1 as pb;
use cairn_proto::v1::query_service_client::QueryServiceClient;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tonic::transport::Channel;

use crate::client::Client;
use crate::error::Error;

/// Where one projection stands on one partition of one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectionStatus {
    pub name: String,
    pub partition: u32,
    pub node_id: u64,
    /// Last partition-log position folded into the read model.
    pub checkpoint: u64,
    pub last_position: u64,
    /// Events not yet folded.
    pub lag_events: u64,
    /// Age of the oldest event not yet folded (0 when caught up).
    pub lag_ms: i64,
    /// Whether the node leads the partition (its read model answers queries).
    pub leader: bool,
}

impl From<pb::ProjectionPartitionStatus> for ProjectionStatus {
    fn from(s: pb::ProjectionPartitionStatus) -> ProjectionStatus {
        ProjectionStatus {
            name: s.name,
            partition: s.partition,
            node_id: s.node_id,
            checkpoint: s.checkpoint,
            last_position: s.last_position,
            lag_events: s.lag_events,
            lag_ms: s.lag_ms,
            leader: s.leader,
        }
    }
}

fn query_service(channel: Channel) -> QueryServiceClient<Channel> {
    QueryServiceClient::new(channel)
}

impl Client {
    /// Asks projection `name` (e.g. `user-analytics`) with `args` (a JSON
    /// object, `{}` for none). The answer reflects every write acknowledged
    /// before the call.
    pub async fn query(&self, name: &str, args: &Value) -> Result<Value, Error> {
        let request = pb::QueryRequest {
            name: name.to_string(),
            args: serde_json::to_vec(args)
                .expect("JSON values serialize")
                .into(),
        };
        let reply = self
            .call(|conn| {
                let request = request.clone();
                async move { query_service(conn.channel).query(request).await }
            })
            .await?;
        serde_json::from_slice(&reply.result)
            .map_err(|e| Error::Other(format!("query result is not JSON: {e}")))
    }

    /// Every projection's checkpoint and lag, per partition and node.
    pub async fn projection_status(&self) -> Result<Vec<ProjectionStatus>, Error> {
        let reply = self
            .call(|conn| async move {
                query_service(conn.channel)
                    .projection_status(pb::ProjectionStatusRequest { forwarded: false })
                    .await
            })
            .await?;
        Ok(reply
            .partitions
            .into_iter()
            .map(ProjectionStatus::from)
            .collect())
    }

    /// Rebuilds projection `name` from the start of every partition log on
    /// every node; returns the nodes that were reset.
    pub async fn reset_projection(&self, name: &str) -> Result<Vec<u64>, Error> {
        let request = pb::ResetProjectionRequest {
            name: name.to_string(),
            forwarded: false,
        };
        let reply = self
            .call(|conn| {
                let request = request.clone();
                async move { query_service(conn.channel).reset_projection(request).await }
            })
            .await?;
        Ok(reply.nodes)
    }
}
