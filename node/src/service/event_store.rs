//! gRPC `EventStoreService`: append, read, info and delete on raw streams,
//! served on the leader of the stream's partition.

use std::sync::Arc;

use cairn_cluster::ClusterNode;
use cairn_proto::v1::event_store_service_client::EventStoreServiceClient;
use cairn_proto::v1::event_store_service_server::EventStoreService;
use cairn_proto::v1::{
    AppendReply, AppendRequest, DeleteReply, DeleteRequest, InfoRequest, ReadReply, ReadRequest,
    StreamInfo,
};
use cairn_storage::{GroupId, StreamAppend};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::error::NodeError;
use crate::limits::check_stream_id;
use crate::service::convert;
use crate::service::route::{Route, route};

/// Events returned by one read when the caller sets no limit.
const DEFAULT_READ_LIMIT: usize = 1000;
/// Most events returned by one read.
const MAX_READ_LIMIT: usize = 10_000;

/// Serves the event store API.
pub struct EventStoreGrpcService {
    node: Arc<ClusterNode>,
}

impl EventStoreGrpcService {
    pub fn new(node: Arc<ClusterNode>) -> EventStoreGrpcService {
        EventStoreGrpcService { node }
    }

    /// Validates the stream id and routes the call to its partition's leader.
    fn route_stream(&self, stream: &str, forwarded: bool) -> Result<(GroupId, Route), Status> {
        check_stream_id(stream).map_err(NodeError::from)?;
        let group = self.node.topology().partition_of(stream);
        Ok((group, route(&self.node, group, forwarded)?))
    }
}

fn client(channel: Channel) -> EventStoreServiceClient<Channel> {
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
        let mut request = request.into_inner();
        let (group, route) = self.route_stream(&request.stream, request.forwarded)?;
        match route {
            Route::Local(partition) => {
                let append = StreamAppend {
                    events: convert::new_events(request.events).map_err(NodeError::from)?,
                    expected: convert::expected_version(request.expected),
                    stream: request.stream,
                };
                let outcome = partition.append(append).await.map_err(NodeError::from)?;
                Ok(Response::new(convert::append_reply(outcome, group)))
            }
            Route::Forward(channel) => {
                // Validate here too, so bad input never travels.
                convert::new_events(request.events.clone()).map_err(NodeError::from)?;
                request.forwarded = true;
                client(channel).append(request).await
            }
        }
    }

    async fn read(&self, request: Request<ReadRequest>) -> Result<Response<ReadReply>, Status> {
        let mut request = request.into_inner();
        let (group, route) = self.route_stream(&request.stream, request.forwarded)?;
        match route {
            Route::Local(partition) => {
                let limit = match request.limit as usize {
                    0 => DEFAULT_READ_LIMIT,
                    n => n.min(MAX_READ_LIMIT),
                };
                let stream = request.stream.clone();
                let from = request.from_version.max(1);
                let (events, info) = partition
                    .read(move |reader, group| {
                        let events = reader.read_stream(group, &stream, from, limit)?;
                        Ok((events, reader.stream_info(group, &stream)?))
                    })
                    .await
                    .map_err(NodeError::from)?;
                Ok(Response::new(ReadReply {
                    events: events
                        .into_iter()
                        .map(|e| convert::recorded_event(e, group))
                        .collect(),
                    stream_version: info.map(|i| i.version).unwrap_or(0),
                }))
            }
            Route::Forward(channel) => {
                request.forwarded = true;
                client(channel).read(request).await
            }
        }
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
            Route::Forward(channel) => {
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
            Route::Forward(channel) => {
                request.forwarded = true;
                client(channel).delete(request).await
            }
        }
    }
}
