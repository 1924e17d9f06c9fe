//! gRPC `ActorService`: `Ask` and `GetState`, served on the leader of the
//! actor's partition (forwarded there once from any other node).

use std::sync::Arc;

use cairn_cluster::ClusterNode;
use cairn_proto::v1::actor_service_client::ActorServiceClient;
use cairn_proto::v1::actor_service_server::ActorService;
use cairn_proto::v1::{AskReply, AskRequest, GetStateReply, GetStateRequest};
use tonic::{Request, Response, Status};

use crate::error::NodeError;
use crate::ids::CommandIds;
use crate::limits::InvalidInput;
use crate::replay::StateAt;
use crate::runtime::ActorRuntime;
use crate::service::route::{Route, route};

/// Serves actor calls.
pub struct ActorGrpcService {
    node: Arc<ClusterNode>,
    runtime: ActorRuntime,
}

impl ActorGrpcService {
    pub fn new(node: Arc<ClusterNode>, runtime: ActorRuntime) -> ActorGrpcService {
        ActorGrpcService { node, runtime }
    }

    fn route_actor(&self, actor_type: &str, id: &str, forwarded: bool) -> Result<Route, Status> {
        let (key, _) = self.runtime.resolve(actor_type, id)?;
        Ok(route(
            &self.node,
            self.node.topology().partition_of(&key.stream()),
            forwarded,
        )?)
    }
}

#[tonic::async_trait]
impl ActorService for ActorGrpcService {
    async fn ask(&self, request: Request<AskRequest>) -> Result<Response<AskReply>, Status> {
        let mut request = request.into_inner();
        match self.route_actor(&request.actor_type, &request.actor_id, request.forwarded)? {
            Route::Local(_) => {
                let outcome = self
                    .runtime
                    .ask(
                        &request.actor_type,
                        &request.actor_id,
                        request.command,
                        CommandIds {
                            command_id: request.command_id,
                            correlation_id: request.correlation_id,
                            causation_id: request.causation_id,
                        },
                    )
                    .await?;
                let reply = serde_json::to_vec(&outcome.reply).expect("JSON values serialize");
                Ok(Response::new(AskReply {
                    reply: reply.into(),
                    version: outcome.version,
                    duplicate: outcome.duplicate,
                }))
            }
            Route::Forward(channel) => {
                request.forwarded = true;
                ActorServiceClient::new(channel).ask(request).await
            }
        }
    }

    async fn get_state(
        &self,
        request: Request<GetStateRequest>,
    ) -> Result<Response<GetStateReply>, Status> {
        let mut request = request.into_inner();
        let at = match (request.at_version, request.at_timestamp_ms) {
            (Some(_), Some(_)) => {
                return Err(NodeError::from(InvalidInput(
                    "give at most one of at_version, at_timestamp_ms".into(),
                ))
                .into());
            }
            (Some(v), None) => StateAt::Version(v),
            (None, Some(t)) => StateAt::Timestamp(t),
            (None, None) => StateAt::Latest,
        };
        match self.route_actor(&request.actor_type, &request.actor_id, request.forwarded)? {
            Route::Local(_) => {
                let (state, version) = self
                    .runtime
                    .state(&request.actor_type, &request.actor_id, at)
                    .await?;
                let state = serde_json::to_vec(&state).expect("JSON values serialize");
                Ok(Response::new(GetStateReply {
                    state: state.into(),
                    version,
                }))
            }
            Route::Forward(channel) => {
                request.forwarded = true;
                ActorServiceClient::new(channel).get_state(request).await
            }
        }
    }
}
