//! gRPC `ActorService`: `Ask`, `AskStream` and `GetState`, served on the
//! leader of the actor's partition (forwarded there once from any other
//! node; asks over one stream per leader, see [`super::call_stream`]).

use std::sync::Arc;

use cairn_client::call_stream::{Answers, Asks};
use cairn_cluster::ClusterNode;
use cairn_proto::v1::actor_service_client::ActorServiceClient;
use cairn_proto::v1::actor_service_server::ActorService;
use cairn_proto::v1::{
    AskEnvelope, AskOutcome, AskReply, AskRequest, GetStateReply, GetStateRequest,
};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::error::NodeError;
use crate::ids::CommandIds;
use crate::limits::InvalidInput;
use crate::replay::StateAt;
use crate::runtime::ActorRuntime;
use crate::service::call_stream::{self, AskForwarder};
use crate::service::route::{Route, route};

/// Serves actor calls.
#[derive(Clone)]
pub struct ActorGrpcService {
    node: Arc<ClusterNode>,
    runtime: ActorRuntime,
    forwarder: Arc<AskForwarder>,
    /// Ends the `AskStream`s being served (the node stops serving).
    streams_end: CancellationToken,
}

impl ActorGrpcService {
    /// Serves calls with `runtime`, forwarding asks through `forwarder`
    /// (one per node, shared with the command bus); open `AskStream`s end
    /// when `streams_end` is cancelled.
    pub fn new(
        node: Arc<ClusterNode>,
        runtime: ActorRuntime,
        forwarder: Arc<AskForwarder>,
        streams_end: CancellationToken,
    ) -> ActorGrpcService {
        ActorGrpcService {
            node,
            runtime,
            forwarder,
            streams_end,
        }
    }

    /// One ask: run here on the leader, or forwarded to it.
    async fn ask_one(&self, mut request: AskRequest) -> Result<AskReply, Status> {
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
                Ok(AskReply {
                    reply: reply.into(),
                    version: outcome.version,
                    duplicate: outcome.duplicate,
                })
            }
            Route::Forward { channel, address } => {
                request.forwarded = true;
                self.forwarder.call(&address, channel, request).await
            }
        }
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
        self.ask_one(request.into_inner()).await.map(Response::new)
    }

    type AskStreamStream = Answers<AskOutcome>;

    async fn ask_stream(
        &self,
        request: Request<Streaming<AskEnvelope>>,
    ) -> Result<Response<Self::AskStreamStream>, Status> {
        let service = self.clone();
        Ok(Response::new(call_stream::serve::<Asks, _, _>(
            request.into_inner(),
            self.streams_end.clone(),
            move |ask| {
                let service = service.clone();
                async move { service.ask_one(ask).await }
            },
        )))
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
            Route::Forward { channel, .. } => {
                request.forwarded = true;
                ActorServiceClient::new(channel).get_state(request).await
            }
        }
    }
}
