//! Raft calls to one peer over one long-lived `RaftService.Stream`, with
//! `cairn-call-stream`'s [`CallStreams`] (as the client's asks and appends).
//!
//! Replication sends each follower an AppendEntries per entry, and another
//! when the commit index moves. As unary gRPC calls each costs a new HTTP/2
//! stream on both ends (headers encoded and decoded, a task, trailers); on
//! an open stream it costs one data frame, and h2 writes many in one syscall.
//!
//! A call in flight on a stream that breaks fails as unavailable (openraft
//! backs off and retries); a peer that does not serve `Stream`
//! (`Unimplemented`: an older binary, during a rolling upgrade) gets unary
//! calls from then on, and so does a call over [`MAX_STREAMED_BYTES`].

use bytes::Bytes;
use cairn_call_stream::{CallResult, CallStreams, Requests, StreamedCall};
use cairn_proto::v1::raft_answer::Result as Answered;
use cairn_proto::v1::raft_service_client::RaftServiceClient;
use cairn_proto::v1::{CallError, RaftAnswer, RaftCall, RaftFailure, RaftMessage, RaftRpc};
use cairn_storage::GroupId;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

pub use cairn_call_stream::MAX_STREAMED_BYTES;

use crate::transport::{RpcKind, TransportError};

/// Raft calls as a [`StreamedCall`]: a [`RaftCall`] answered by the payload
/// of a [`RaftAnswer`], or by its failure.
pub struct RaftCalls;

impl StreamedCall for RaftCalls {
    type Request = RaftCall;
    type Reply = Bytes;
    type Envelope = RaftCall;
    type Outcome = RaftAnswer;

    async fn unary(
        channel: Channel,
        max_message_bytes: usize,
        request: RaftCall,
    ) -> Result<Bytes, Status> {
        let mut client = client(channel, max_message_bytes);
        let RaftCall {
            group,
            rpc,
            payload,
            ..
        } = request;
        let message = RaftMessage { group, payload };
        let reply = match RaftRpc::try_from(rpc) {
            Ok(RaftRpc::AppendEntries) => client.append_entries(message).await,
            Ok(RaftRpc::Vote) => client.vote(message).await,
            Ok(RaftRpc::InstallSnapshot) => client.install_snapshot(message).await,
            Ok(RaftRpc::Applied) => client.applied(message).await,
            Ok(RaftRpc::Campaign) => client.campaign(message).await,
            Ok(RaftRpc::Topology) => client.topology(message).await,
            Ok(RaftRpc::Membership) => client.membership(message).await,
            Err(_) => return Err(Status::invalid_argument(format!("unknown raft rpc {rpc}"))),
        };
        reply.map(|reply| reply.into_inner().payload)
    }

    async fn open(
        channel: Channel,
        max_message_bytes: usize,
        requests: Requests<RaftCall>,
    ) -> Result<Streaming<RaftAnswer>, Status> {
        client(channel, max_message_bytes)
            .stream(requests)
            .await
            .map(tonic::Response::into_inner)
    }

    fn envelope(id: u64, request: RaftCall) -> RaftCall {
        RaftCall { id, ..request }
    }

    fn open_envelope(envelope: RaftCall) -> (u64, Option<RaftCall>) {
        (envelope.id, Some(envelope))
    }

    fn outcome(id: u64, result: CallResult<Bytes>) -> RaftAnswer {
        answer(
            id,
            match result {
                CallResult::Reply(payload) => Ok(payload),
                CallResult::Error(error) => Err(TransportError {
                    unreachable: unreachable(Code::from_i32(error.code)),
                    message: error.message,
                }),
            },
        )
    }

    fn open_outcome(outcome: RaftAnswer) -> (u64, Option<CallResult<Bytes>>) {
        let result = outcome.result.map(|result| match result {
            Answered::Payload(payload) => CallResult::Reply(payload),
            Answered::Failure(RaftFailure {
                unreachable,
                message,
            }) => CallResult::Error(CallError {
                code: if unreachable {
                    Code::Unavailable
                } else {
                    Code::Unknown
                } as i32,
                message,
                metadata: Default::default(),
            }),
        });
        (outcome.id, result)
    }
}

/// A `RaftService` client for `channel`; Raft messages are as large as the
/// groups make them, so callers pass no limit.
fn client(channel: Channel, max_message_bytes: usize) -> RaftServiceClient<Channel> {
    RaftServiceClient::new(channel)
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes)
}

/// The Raft calls to one peer, over one stream at a time.
pub struct RaftStreams {
    calls: CallStreams<RaftCalls>,
}

impl RaftStreams {
    /// Calls to the peer behind `channel`.
    pub fn new(channel: Channel) -> RaftStreams {
        RaftStreams {
            calls: CallStreams::new(channel, usize::MAX),
        }
    }

    /// Sends one call and waits for its answer: on the stream, unless it
    /// is too big, the peer has none, or it is an InstallSnapshot (whose
    /// chunks would hold back every group's heartbeats on the stream).
    pub async fn call(
        &self,
        group: GroupId,
        kind: RpcKind,
        payload: Bytes,
    ) -> Result<Vec<u8>, TransportError> {
        let request = RaftCall {
            id: 0,
            group,
            rpc: rpc_of(kind) as i32,
            payload,
        };
        let answered = if kind == RpcKind::InstallSnapshot {
            self.calls.unary(request).await
        } else {
            self.calls.call(request).await
        };
        answered.map(Vec::from).map_err(|status| failure(&status))
    }
}

/// Whether a call that failed with `code` failed to reach its peer.
fn unreachable(code: Code) -> bool {
    matches!(code, Code::Unavailable | Code::DeadlineExceeded)
}

/// What a failed gRPC call or stream means to openraft: a peer that cannot
/// be reached (openraft backs off) or a failed delivery.
fn failure(status: &Status) -> TransportError {
    TransportError {
        unreachable: unreachable(status.code()),
        message: status.message().to_string(),
    }
}

/// The wire name of an RPC kind.
fn rpc_of(kind: RpcKind) -> RaftRpc {
    match kind {
        RpcKind::AppendEntries => RaftRpc::AppendEntries,
        RpcKind::Vote => RaftRpc::Vote,
        RpcKind::InstallSnapshot => RaftRpc::InstallSnapshot,
        RpcKind::Applied => RaftRpc::Applied,
        RpcKind::Campaign => RaftRpc::Campaign,
        RpcKind::Topology => RaftRpc::Topology,
        RpcKind::Membership => RaftRpc::Membership,
    }
}

/// The RPC kind a wire name stands for.
pub(crate) fn kind_of(rpc: RaftRpc) -> RpcKind {
    match rpc {
        RaftRpc::AppendEntries => RpcKind::AppendEntries,
        RaftRpc::Vote => RpcKind::Vote,
        RaftRpc::InstallSnapshot => RpcKind::InstallSnapshot,
        RaftRpc::Applied => RpcKind::Applied,
        RaftRpc::Campaign => RpcKind::Campaign,
        RaftRpc::Topology => RpcKind::Topology,
        RaftRpc::Membership => RpcKind::Membership,
    }
}

/// The answer to call `id`: the encoded response, or why there is none.
pub(crate) fn answer(id: u64, result: Result<impl Into<Bytes>, TransportError>) -> RaftAnswer {
    let result = match result {
        Ok(payload) => Answered::Payload(payload.into()),
        Err(TransportError {
            unreachable,
            message,
        }) => Answered::Failure(RaftFailure {
            unreachable,
            message,
        }),
    };
    RaftAnswer {
        id,
        result: Some(result),
    }
}
