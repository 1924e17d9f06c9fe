//! Raft calls to one peer over one long-lived `RaftService.Stream`.
//!
//! Replication sends each follower an AppendEntries per entry, and another
//! when the commit index moves. As unary gRPC calls each costs a new HTTP/2
//! stream on both ends (headers encoded and decoded, a task, trailers); on
//! an open stream it costs one data frame, and h2 writes many in one syscall.
//!
//! [`RaftStreams`] is the calling side for one peer: each call gets an id
//! and waits for the answer with that id, which the stream's reader task
//! hands over. When the stream ends, every waiting call fails with the
//! stream's status (openraft retries) and the next call opens a new stream.
//! A peer that does not serve `Stream` (`Unimplemented`: an older binary,
//! during a rolling upgrade) gets unary calls from then on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use cairn_proto::v1::raft_answer::Result as Answered;
use cairn_proto::v1::raft_service_client::RaftServiceClient;
use cairn_proto::v1::{RaftAnswer, RaftCall, RaftFailure, RaftRpc};
use cairn_storage::GroupId;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::transport::{RpcKind, TransportError};

/// What a call's waiter receives: the peer's answer, or the status its
/// stream ended with.
type Waiter = oneshot::Sender<Result<RaftAnswer, Status>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded values stay consistent even if a holder panicked.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The Raft calls to one peer, over one stream at a time.
pub struct RaftStreams {
    channel: Channel,
    open: Mutex<Option<Arc<RaftStream>>>,
    /// The peer answered `Stream` with `Unimplemented`.
    unary_only: AtomicBool,
}

impl RaftStreams {
    /// Calls to the peer behind `channel`.
    pub fn new(channel: Channel) -> RaftStreams {
        RaftStreams {
            channel,
            open: Mutex::new(None),
            unary_only: AtomicBool::new(false),
        }
    }

    /// The channel to the peer, for calls that do not travel on the stream.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Sends one call on the stream and waits for its answer; `None` when
    /// the peer does not serve `Stream`, and the caller should make a unary
    /// call instead (as it will for every later call).
    pub async fn call(
        &self,
        group: GroupId,
        kind: RpcKind,
        payload: Bytes,
    ) -> Option<Result<Vec<u8>, TransportError>> {
        if self.unary_only.load(Ordering::Relaxed) {
            return None;
        }
        let answer = match self.stream().call(group, kind, payload).await {
            Ok(RaftAnswer { result, .. }) => match result {
                Some(Answered::Payload(payload)) => Ok(payload.into()),
                Some(Answered::Failure(RaftFailure {
                    unreachable,
                    message,
                })) => Err(TransportError {
                    unreachable,
                    message,
                }),
                None => Err(TransportError {
                    unreachable: false,
                    message: "a RaftAnswer without a result".into(),
                }),
            },
            Err(status) if status.code() == Code::Unimplemented => {
                self.unary_only.store(true, Ordering::Relaxed);
                return None;
            }
            Err(status) => Err(failure(&status)),
        };
        Some(answer)
    }

    /// The open stream, or a new one.
    fn stream(&self) -> Arc<RaftStream> {
        let mut open = lock(&self.open);
        match open.as_ref() {
            Some(stream) if stream.is_open() => stream.clone(),
            _ => {
                let stream = RaftStream::open(self.client());
                *open = Some(stream.clone());
                stream
            }
        }
    }

    fn client(&self) -> RaftServiceClient<Channel> {
        client(self.channel.clone())
    }
}

/// A `RaftService` client for `channel`, with no limit on message size
/// (AppendEntries and snapshots are as large as the groups make them).
pub(crate) fn client(channel: Channel) -> RaftServiceClient<Channel> {
    RaftServiceClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX)
}

/// What a failed gRPC call or stream means to openraft: a peer that cannot
/// be reached (openraft backs off) or a failed delivery.
pub(crate) fn failure(status: &Status) -> TransportError {
    TransportError {
        unreachable: matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded),
        message: status.message().to_string(),
    }
}

/// The calls sent on one stream and not yet answered.
struct Waiting {
    open: bool,
    calls: HashMap<u64, Waiter>,
}

/// One `RaftService.Stream` call.
struct RaftStream {
    calls: mpsc::UnboundedSender<RaftCall>,
    waiting: Mutex<Waiting>,
    next_id: AtomicU64,
}

impl RaftStream {
    /// Starts the call; its reader task runs until the stream ends.
    fn open(client: RaftServiceClient<Channel>) -> Arc<RaftStream> {
        let (calls, outgoing) = mpsc::unbounded_channel();
        let stream = Arc::new(RaftStream {
            calls,
            waiting: Mutex::new(Waiting {
                open: true,
                calls: HashMap::new(),
            }),
            next_id: AtomicU64::new(0),
        });
        tokio::spawn(read_answers(client, outgoing, stream.clone()));
        stream
    }

    fn is_open(&self) -> bool {
        lock(&self.waiting).open
    }

    async fn call(
        &self,
        group: GroupId,
        kind: RpcKind,
        payload: Bytes,
    ) -> Result<RaftAnswer, Status> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut waiting = lock(&self.waiting);
            if !waiting.open {
                return Err(closed());
            }
            waiting.calls.insert(id, tx);
        }
        // Forgets the call if this future is dropped (its deadline passed).
        let _forget = Forget { stream: self, id };
        let call = RaftCall {
            id,
            group,
            rpc: rpc_of(kind) as i32,
            payload,
        };
        if self.calls.send(call).is_err() {
            return Err(closed());
        }
        rx.await.unwrap_or_else(|_| Err(closed()))
    }

    /// Hands an answer to the call waiting for it (if it still waits).
    fn answer(&self, answer: RaftAnswer) {
        if let Some(waiter) = lock(&self.waiting).calls.remove(&answer.id) {
            let _ = waiter.send(Ok(answer));
        }
    }

    /// The stream ended: fails every waiting call with `status`.
    fn close(&self, status: &Status) {
        let mut waiting = lock(&self.waiting);
        waiting.open = false;
        for (_, waiter) in waiting.calls.drain() {
            let _ = waiter.send(Err(status.clone()));
        }
    }
}

struct Forget<'a> {
    stream: &'a RaftStream,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(&self.stream.waiting).calls.remove(&self.id);
    }
}

/// Makes the call and hands each answer to its caller until the stream
/// ends; then fails the calls still waiting with the status it ended with.
async fn read_answers(
    mut client: RaftServiceClient<Channel>,
    outgoing: mpsc::UnboundedReceiver<RaftCall>,
    stream: Arc<RaftStream>,
) {
    let ended = match client.stream(UnboundedReceiverStream::new(outgoing)).await {
        Err(status) => status,
        Ok(response) => {
            let mut answers = response.into_inner();
            loop {
                match answers.message().await {
                    Ok(Some(answer)) => stream.answer(answer),
                    Ok(None) => break closed(),
                    Err(status) => break status,
                }
            }
        }
    };
    tracing::debug!(message = ended.message(), "raft stream ended");
    stream.close(&ended);
}

fn closed() -> Status {
    Status::unavailable("the stream of raft calls closed")
}

/// The wire name of an RPC kind.
fn rpc_of(kind: RpcKind) -> RaftRpc {
    match kind {
        RpcKind::AppendEntries => RaftRpc::AppendEntries,
        RpcKind::Vote => RaftRpc::Vote,
        RpcKind::InstallSnapshot => RaftRpc::InstallSnapshot,
        RpcKind::Applied => RaftRpc::Applied,
    }
}

/// The RPC kind a wire name stands for.
pub(crate) fn kind_of(rpc: RaftRpc) -> RpcKind {
    match rpc {
        RaftRpc::AppendEntries => RpcKind::AppendEntries,
        RaftRpc::Vote => RpcKind::Vote,
        RaftRpc::InstallSnapshot => RpcKind::InstallSnapshot,
        RaftRpc::Applied => RpcKind::Applied,
    }
}

/// The answer to call `id`: the encoded response, or why there is none.
pub(crate) fn answer(id: u64, result: Result<Vec<u8>, TransportError>) -> RaftAnswer {
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
