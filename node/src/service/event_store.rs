//! gRPC `EventStoreService`: append, read, info, delete and retention
//! metadata on raw streams,
//! served on the leader of the stream's partition; reads of all streams and
//! subscriptions, gathered from every partition's leader (see
//! [`read_all`](super::read_all), [`subscribe`](super::subscribe)).

use std::sync::Arc;

use bytes::Bytes;
use cairn_client::call_stream::{Answers, Appends};
use cairn_cluster::{ClusterNode, Partition};
use cairn_proto::v1 as pb;
use cairn_proto::v1::event_store_service_client::EventStoreServiceClient;
use cairn_proto::v1::event_store_service_server::EventStoreService;
use cairn_proto::v1::{
    AppendEnvelope, AppendOutcome, AppendReply, AppendRequest, DeleteReply, DeleteRequest,
    InfoRequest, ReadAllReply, ReadAllRequest, ReadPartitionReply, ReadPartitionRequest, ReadReply,
    ReadRequest, SetStreamMetadataReply, SetStreamMetadataRequest, StreamInfo, SubscribeReply,
    SubscribeRequest,
};
use cairn_storage::{Command, CommandResult, GroupId, NodeId, StreamAppend};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use crate::error::NodeError;
use crate::limits::check_stream_id;
use crate::registry::Registry;
use crate::service::call_stream::{self, AppendForwarder};
use crate::service::long_poll::read_waiting;
use crate::service::partition_log::{self, wait_of};
use crate::service::route::{Route, route};
use crate::service::{convert, read_all, subscribe};

/// Events returned by one read when the caller sets no limit.
const DEFAULT_READ_LIMIT: usize = 1000;
/// Most events returned by one read.
const MAX_READ_LIMIT: usize = 10_000;
/// How long a forwarded read may take beyond its long poll.
const FORWARD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves the event store API.
#[derive(Clone)]
pub struct EventStoreGrpcService {
    node: Arc<ClusterNode>,
    /// Actor types (an actor's stream is protected from retention) and the
    /// upcasters applied to every event handed to a client (not to
    /// node-to-node reads, which the receiving node upcasts itself).
    registry: Arc<Registry>,
    /// Appends forwarded to leaders, over one stream per leader.
    forwarder: Arc<AppendForwarder>,
    /// Ends the `AppendStream`s being served (the node stops serving).
    streams_end: CancellationToken,
}

impl EventStoreGrpcService {
    /// Serves the event store of `node`; open `AppendStream`s end when
    /// `streams_end` is cancelled.
    pub fn new(
        node: Arc<ClusterNode>,
        registry: Arc<Registry>,
        streams_end: CancellationToken,
    ) -> EventStoreGrpcService {
        EventStoreGrpcService {
            node,
            registry,
            forwarder: Arc::default(),
            streams_end,
        }
    }

    /// One append: run here on the leader, or forwarded to it.
    async fn append_one(&self, mut request: AppendRequest) -> Result<AppendReply, Status> {
        let (group, route) = self.route_stream(&request.stream, request.forwarded)?;
        match route {
            Route::Local(partition) => {
                let append = StreamAppend {
                    events: convert::new_events(request.events).map_err(NodeError::from)?,
                    expected: convert::expected_version(request.expected),
                    stream: request.stream,
                };
                let outcome = partition.append(append).await.map_err(NodeError::from)?;
                Ok(convert::append_reply(outcome, group))
            }
            Route::Forward { channel, address } => {
                // Validate here too, so bad input never travels.
                convert::new_events(request.events.clone()).map_err(NodeError::from)?;
                request.forwarded = true;
                self.forwarder.call(&address, channel, request).await
            }
        }
    }

    /// Before retention is set on an actor's stream that has no actor
    /// snapshot yet, records a version-0 snapshot (the initial state): the
    /// state machine never purges above an actor's newest snapshot, so this
    /// keeps every event the actor's rebuild needs.
    async fn protect_actor_stream(
        &self,
        partition: &Partition,
        stream: &str,
    ) -> Result<(), NodeError> {
        let Some(actor) = stream
            .split_once('-')
            .and_then(|(actor_type, _)| self.registry.get(actor_type))
            .map(|registered| registered.actor.clone())
        else {
            return Ok(());
        };
        let name = stream.to_string();
        let snapshot = partition
            .read(move |reader, group| reader.actor_snapshot(group, &name, u64::MAX))
            .await?;
        if snapshot.is_none() {
            let initial = Bytes::from(actor.encode_state(&actor.initial_state()));
            partition
                .save_actor_snapshot(stream.to_string(), 0, initial)
                .await?;
        }
        Ok(())
    }

    /// Brings events to the newest shape of their types; a forwarded call is
    /// answered in stored form (the node that received the client's call upcasts).
    fn upcast(&self, events: &mut [pb::RecordedEvent], forwarded: bool) -> Result<(), Status> {
        if forwarded {
            return Ok(());
        }
        Ok(convert::upcast_all(events, self.registry.upcasters()).map_err(NodeError::from)?)
    }

    /// Validates the stream id and routes the call to its partition's leader.
    fn route_stream(&self, stream: &str, forwarded: bool) -> Result<(GroupId, Route), Status> {
        check_stream_id(stream).map_err(NodeError::from)?;
        let group = self.node.topology().partition_of(stream);
        Ok((group, route(&self.node, group, forwarded)?))
    }
}

/// A client for forwarding event-store calls to a peer.
pub(crate) fn client(channel: Channel) -> EventStoreServiceClient<Channel> {
    EventStoreServiceClient::new(channel)
        .max_decoding_message_size(crate::limits::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(crate::limits::MAX_MESSAGE_BYTES)
}

#[tonic::async_trait]
impl EventStoreService for EventStoreGrpcService {
    async fn append(
        &self,
        request: Request<AppendRequest>,
    ) -> Result<Response<AppendReply>, Status> {
        self.append_one(request.into_inner())
            .await
            .map(Response::new)
    }

    type AppendStreamStream = Answers<AppendOutcome>;

    async fn append_stream(
        &self,
        request: Request<Streaming<AppendEnvelope>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        let service = self.clone();
        Ok(Response::new(call_stream::serve::<Appends, _, _>(
            request.into_inner(),
            self.streams_end.clone(),
            move |append| {
                let service = service.clone();
                async move { service.append_one(append).await }
            },
        )))
    }

    async fn read(&self, request: Request<ReadRequest>) -> Result<Response<ReadReply>, Status> {
        let request = request.into_inner();
        check_stream_id(&request.stream).map_err(NodeError::from)?;
        let forwarded = request.forwarded;
        let mut reply = read_stream(&self.node, request).await?;
        self.upcast(&mut reply.events, forwarded)?;
        Ok(Response::new(reply))
    }

    async fn info(&self, request: Request<InfoRequest>) -> Result<Response<StreamInfo>, Status> {
        let mut request = request.into_inner();
        let (group, route) = self.route_stream(&request.stream, request.forwarded)?;
        match route {
            Route::Local(partition) => {
                let stream = request.stream.clone();
                let info = partition
                    .read(move |reader, group| reader.stream_info(group, &stream))
                    .await
                    .map_err(NodeError::from)?;
                Ok(Response::new(convert::stream_info(
                    request.stream,
                    info,
                    group,
                )))
            }
            Route::Forward { channel, .. } => {
                request.forwarded = true;
                client(channel).info(request).await
            }
        }
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteReply>, Status> {
        let mut request = request.into_inner();
        let (_, route) = self.route_stream(&request.stream, request.forwarded)?;
        match route {
            Route::Local(partition) => {
                let expected = convert::expected_version(request.expected);
                let version = partition
                    .delete(request.stream, expected, request.hard)
                    .await
                    .map_err(NodeError::from)?;
                Ok(Response::new(DeleteReply { version }))
            }
            Route::Forward { channel, .. } => {
                request.forwarded = true;
                client(channel).delete(request).await
            }
        }
    }

    async fn set_stream_metadata(
        &self,
        request: Request<SetStreamMetadataRequest>,
    ) -> Result<Response<SetStreamMetadataReply>, Status> {
        let mut request = request.into_inner();
        let (group, route) = self.route_stream(&request.stream, request.forwarded)?;
        match route {
            Route::Local(partition) => {
                self.protect_actor_stream(&partition, &request.stream)
                    .await?;
                // This node leads the partition: its clock is the leader's,
                // the "now" every replica purges `max-age` against.
                let command = Command::SetStreamMetadata {
                    stream: request.stream,
                    max_count: request.max_count,
                    max_age_ms: request.max_age_ms,
                    timestamp_ms: cairn_cluster::now_ms(),
                };
                let version = match partition.write(command).await.map_err(NodeError::from)? {
                    CommandResult::StreamMetadataSet(result) => result.map_err(NodeError::from)?,
                    other => {
                        return Err(Status::internal(format!(
                            "partition {group} answered a metadata change with {other:?}"
                        )));
                    }
                };
                Ok(Response::new(SetStreamMetadataReply { version }))
            }
            Route::Forward { channel, .. } => {
                request.forwarded = true;
                client(channel).set_stream_metadata(request).await
            }
        }
    }

    async fn read_all(
        &self,
        request: Request<ReadAllRequest>,
    ) -> Result<Response<ReadAllReply>, Status> {
        let mut reply = read_all::read_all(&self.node, request.into_inner()).await?;
        self.upcast(&mut reply.events, false)?;
        Ok(Response::new(reply))
    }

    async fn read_partition(
        &self,
        request: Request<ReadPartitionRequest>,
    ) -> Result<Response<ReadPartitionReply>, Status> {
        partition_log::read_partition(&self.node, request.into_inner())
            .await
            .map(Response::new)
    }

    type SubscribeStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<SubscribeReply, Status>> + Send>>;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        use futures::StreamExt;
        let upcasters = self.registry.upcasters().clone();
        let replies = subscribe::subscribe(self.node.clone(), request.into_inner())?;
        let upcast = replies.map(move |reply| {
            let mut reply = reply?;
            if let Some(event) = reply.event.as_mut() {
                convert::upcast_all(std::slice::from_mut(event), &upcasters)
                    .map_err(NodeError::from)?;
            }
            Ok(reply)
        });
        Ok(Response::new(Box::pin(upcast)))
    }
}

/// Reads a stream on its partition's leader: here when this node leads it,
/// otherwise forwarded once (never again when `request.forwarded`). With
/// `wait_ms`, a read that finds nothing waits that long for events to commit.
pub(crate) async fn read_stream(
    node: &Arc<ClusterNode>,
    mut request: ReadRequest,
) -> Result<ReadReply, Status> {
    let group = node.topology().partition_of(&request.stream);
    match route(node, group, request.forwarded)? {
        Route::Local(partition) => {
            Ok(read_stream_local(&partition, node.node_id(), group, request).await?)
        }
        Route::Forward { channel, .. } => {
            request.forwarded = true;
            let deadline = wait_of(request.wait_ms) + FORWARD_TIMEOUT;
            match tokio::time::timeout(deadline, client(channel).read(request)).await {
                Ok(reply) => reply.map(Response::into_inner),
                Err(_) => Err(Status::unavailable(format!(
                    "the leader of partition {group} did not answer within {deadline:?}"
                ))),
            }
        }
    }
}

async fn read_stream_local(
    partition: &cairn_cluster::Partition,
    me: NodeId,
    group: GroupId,
    request: ReadRequest,
) -> Result<ReadReply, NodeError> {
    let limit = match request.limit as usize {
        0 => DEFAULT_READ_LIMIT,
        n => n.min(MAX_READ_LIMIT),
    };
    let stream = Arc::new(request.stream);
    let from = request.from_version.max(1);
    let (events, info) = read_waiting(
        partition,
        me,
        wait_of(request.wait_ms),
        |(events, _): &(Vec<_>, _)| !events.is_empty(),
        move |reader, group| {
            let events = reader.read_stream(group, &stream, from, limit)?;
            Ok((events, reader.stream_info(group, &stream)?))
        },
    )
    .await?;
    Ok(ReadReply {
        events: events
            .into_iter()
            .map(|e| convert::recorded_event(e, group))
            .collect(),
        stream_version: info.map(|i| i.version).unwrap_or(0),
    })
}
