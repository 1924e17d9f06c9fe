//! The command bus: commands addressed by actor type and id, delivered to
//! the actor on its partition's leader wherever that is, for code that
//! embeds Cairn (event handlers, services in the same process).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_cluster::ClusterNode;
use cairn_proto::v1::AskRequest;
use cairn_storage::RecordedEvent;
use serde::Serialize;

use crate::error::NodeError;
use crate::ids::CommandIds;
use crate::limits::InvalidInput;
use crate::runtime::{ActorRuntime, AskOutcome};
use crate::service::call_stream::AskForwarder;
use crate::service::route::{Route, route};

/// How long [`CommandBus::send`] keeps retrying while a partition has no
/// reachable leader, by default.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// A command for one actor, with the ids its events will carry.
#[derive(Clone, Debug)]
pub struct ActorCommand {
    pub actor_type: String,
    pub actor_id: String,
    /// The command as JSON, e.g. `{"type":"DEPOSIT","amount":5}`.
    pub body: Bytes,
    pub ids: CommandIds,
}

impl ActorCommand {
    /// `command` (serialized as JSON) for actor `(actor_type, actor_id)`.
    pub fn new(
        actor_type: impl Into<String>,
        actor_id: impl Into<String>,
        command: &impl Serialize,
    ) -> Result<ActorCommand, InvalidInput> {
        let body = serde_json::to_vec(command)
            .map_err(|e| InvalidInput(format!("the command does not serialize as JSON: {e}")))?;
        Ok(ActorCommand {
            actor_type: actor_type.into(),
            actor_id: actor_id.into(),
            body: body.into(),
            ids: CommandIds::default(),
        })
    }

    /// Gives the command an id: sending it again with the same id never
    /// applies it twice.
    pub fn with_command_id(mut self, id: impl Into<String>) -> ActorCommand {
        self.ids.command_id = id.into();
        self
    }

    /// Tags the events the command produces with `id` as correlation id.
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> ActorCommand {
        self.ids.correlation_id = id.into();
        self
    }

    /// Marks the command as a reaction to `event`: its events carry the
    /// event's id as causation id and the event's correlation id.
    pub fn caused_by(mut self, event: &RecordedEvent) -> ActorCommand {
        self.ids.causation_id.clone_from(&event.id);
        self.ids.correlation_id = if event.correlation_id.is_empty() {
            event.id.clone()
        } else {
            event.correlation_id.clone()
        };
        self
    }
}

/// Sends commands to actors by type and id from inside a node. Cheap to clone.
#[derive(Clone)]
pub struct CommandBus {
    node: Arc<ClusterNode>,
    runtime: ActorRuntime,
    /// The node's streams of forwarded asks, shared with `ActorService`.
    forwarder: Arc<AskForwarder>,
    timeout: Duration,
}

impl CommandBus {
    pub(crate) fn new(
        node: Arc<ClusterNode>,
        runtime: ActorRuntime,
        forwarder: Arc<AskForwarder>,
    ) -> CommandBus {
        CommandBus {
            node,
            runtime,
            forwarder,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same bus, retrying for at most `timeout` instead of 10 s.
    pub fn with_timeout(mut self, timeout: Duration) -> CommandBus {
        self.timeout = timeout;
        self
    }

    /// Runs `command` on its actor, here if this node leads the actor's
    /// partition, else on the leader (one hop, over the node's stream of
    /// forwarded asks to it), and returns the reply
    /// once the events are committed. While the partition changes leaders the
    /// command is sent again, with the same command id, so it is applied at
    /// most once.
    pub async fn send(&self, mut command: ActorCommand) -> Result<AskOutcome, NodeError> {
        if command.ids.command_id.is_empty() {
            command.ids.command_id = uuid::Uuid::now_v7().to_string();
        }
        let deadline = Instant::now() + self.timeout;
        let mut backoff = FIRST_BACKOFF;
        loop {
            match self.send_once(&command).await {
                Err(e) if e.is_retryable() && Instant::now() + backoff < deadline => {
                    tracing::debug!("command bus: {e}; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                done => return done,
            }
        }
    }

    async fn send_once(&self, command: &ActorCommand) -> Result<AskOutcome, NodeError> {
        let (key, _) = self
            .runtime
            .resolve(&command.actor_type, &command.actor_id)?;
        let group = self.node.topology().partition_of(&key.stream());
        match route(&self.node, group, false)? {
            Route::Local(_) => {
                self.runtime
                    .ask(
                        &command.actor_type,
                        &command.actor_id,
                        command.body.clone(),
                        command.ids.clone(),
                    )
                    .await
            }
            Route::Forward { channel, address } => {
                let request = AskRequest {
                    actor_type: command.actor_type.clone(),
                    actor_id: command.actor_id.clone(),
                    command: command.body.clone(),
                    correlation_id: command.ids.correlation_id.clone(),
                    forwarded: true,
                    command_id: command.ids.command_id.clone(),
                    causation_id: command.ids.causation_id.clone(),
                };
                let reply = self
                    .forwarder
                    .call(&address, channel, request)
                    .await
                    .map_err(NodeError::Remote)?;
                let value = serde_json::from_slice(&reply.reply).map_err(|e| {
                    NodeError::Remote(tonic::Status::internal(format!(
                        "the leader's reply is not JSON: {e}"
                    )))
                })?;
                Ok(AskOutcome {
                    reply: value,
                    version: reply.version,
                    duplicate: reply.duplicate,
                })
            }
        }
    }
}
