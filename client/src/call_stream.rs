//! Many calls of one kind over one long-lived gRPC stream per connection:
//! asks over `ActorService.AskStream`, appends over
//! `EventStoreService.AppendStream`.
//!
//! A unary gRPC call costs a new HTTP/2 stream on both ends (headers encoded
//! and decoded, a task, trailers); a message on an open stream costs one
//! data frame. HTTP/2 and gRPC were ~65% of the CPU of the `ask` benchmark,
//! so both the client and a node forwarding calls to a partition's leader
//! send asks and appends this way.
//!
//! [`CallStreams`] belongs to one connection: each call gets an id and waits
//! for the outcome with that id, which the stream's reader task hands over.
//! When the stream ends or fails, every waiting call fails with the stream's
//! status (callers retry: asks carry a command id and appends event ids, so
//! a retry never applies anything twice) and the next call opens a new
//! stream. A server that does not know the stream call (`Unimplemented`)
//! gets unary calls from then on, and so does a call over
//! [`MAX_STREAMED_BYTES`]. [`outcome`] is the answering side's half
//! of the encoding.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use cairn_proto::v1 as pb;
use cairn_proto::v1::actor_service_client::ActorServiceClient;
use cairn_proto::v1::event_store_service_client::EventStoreServiceClient;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::metadata::{KeyAndValueRef, MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

/// A kind of call that travels over a stream: its unary form, its stream
/// call, and how its messages wrap a request and an outcome.
pub trait StreamedCall: Send + Sync + 'static {
    type Request: prost::Message + Clone + Send + 'static;
    type Reply: Send + 'static;
    /// A request with the id its sender chose.
    type Envelope: Send + 'static;
    /// The reply or error answering the envelope with the same id.
    type Outcome: Send + 'static;

    /// The unary call, for servers that do not know the stream call.
    fn unary(
        channel: Channel,
        max_message_bytes: usize,
        request: Self::Request,
    ) -> impl Future<Output = Result<Self::Reply, Status>> + Send;

    /// Opens the stream call, sending what `requests` yields.
    fn open(
        channel: Channel,
        max_message_bytes: usize,
        requests: UnboundedReceiverStream<Self::Envelope>,
    ) -> impl Future<Output = Result<Streaming<Self::Outcome>, Status>> + Send;

    fn envelope(id: u64, request: Self::Request) -> Self::Envelope;
    /// The id and request an envelope carries.
    fn open_envelope(envelope: Self::Envelope) -> (u64, Option<Self::Request>);
    fn outcome(id: u64, result: CallResult<Self::Reply>) -> Self::Outcome;
    /// The id and result an outcome carries.
    fn open_outcome(outcome: Self::Outcome) -> (u64, Option<CallResult<Self::Reply>>);
}

/// What answers one call on the wire: its reply, or the error a unary call
/// would have ended with.
pub enum CallResult<R> {
    Reply(R),
    Error(pb::CallError),
}

/// Implements [`StreamedCall`] for `$kind` from the generated messages
/// (`$outcome_result` is the module of the outcome's `oneof`), and the
/// client's unary and stream methods.
macro_rules! streamed_call {
    ($kind:ident, $client:ident, $unary:ident, $stream:ident,
     $request:ident, $reply:ident, $envelope:ident, $outcome:ident, $outcome_result:ident) => {
        impl StreamedCall for $kind {
            type Request = pb::$request;
            type Reply = pb::$reply;
            type Envelope = pb::$envelope;
            type Outcome = pb::$outcome;

            async fn unary(
                channel: Channel,
                max_message_bytes: usize,
                request: pb::$request,
            ) -> Result<pb::$reply, Status> {
                $client(channel, max_message_bytes)
                    .$unary(request)
                    .await
                    .map(tonic::Response::into_inner)
            }

            async fn open(
                channel: Channel,
                max_message_bytes: usize,
                requests: UnboundedReceiverStream<pb::$envelope>,
            ) -> Result<Streaming<pb::$outcome>, Status> {
                $client(channel, max_message_bytes)
                    .$stream(requests)
                    .await
                    .map(tonic::Response::into_inner)
            }

            fn envelope(id: u64, request: pb::$request) -> pb::$envelope {
                pb::$envelope {
                    id,
                    request: Some(request),
                }
            }

            fn open_envelope(envelope: pb::$envelope) -> (u64, Option<pb::$request>) {
                (envelope.id, envelope.request)
            }

            fn outcome(id: u64, result: CallResult<pb::$reply>) -> pb::$outcome {
                use pb::$outcome_result::Result as R;
                let result = match result {
                    CallResult::Reply(reply) => R::Reply(reply),
                    CallResult::Error(error) => R::Error(error),
                };
                pb::$outcome {
                    id,
                    result: Some(result),
                }
            }

            fn open_outcome(outcome: pb::$outcome) -> (u64, Option<CallResult<pb::$reply>>) {
                use pb::$outcome_result::Result as R;
                let result = outcome.result.map(|result| match result {
                    R::Reply(reply) => CallResult::Reply(reply),
                    R::Error(error) => CallResult::Error(error),
                });
                (outcome.id, result)
            }
        }
    };
}

/// Asks over `ActorService.AskStream`.
pub struct Asks;

streamed_call!(
    Asks,
    actor_client,
    ask,
    ask_stream,
    AskRequest,
    AskReply,
    AskEnvelope,
    AskOutcome,
    ask_outcome
);

/// Appends over `EventStoreService.AppendStream`.
pub struct Appends;

streamed_call!(
    Appends,
    event_store_client,
    append,
    append_stream,
    AppendRequest,
    AppendReply,
    AppendEnvelope,
    AppendOutcome,
    append_outcome
);

fn actor_client(channel: Channel, max_message_bytes: usize) -> ActorServiceClient<Channel> {
    ActorServiceClient::new(channel)
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes)
}

fn event_store_client(
    channel: Channel,
    max_message_bytes: usize,
) -> EventStoreServiceClient<Channel> {
    EventStoreServiceClient::new(channel)
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes)
}

/// Calls bigger than this (encoded) get a unary call of their own rather
/// than travel on the shared stream, where HTTP/2 sends them in order
/// within one stream's flow-control window: a big batch of events would
/// hold back every small call queued behind it.
pub const MAX_STREAMED_BYTES: usize = 256 * 1024;

type Waiter<R> = oneshot::Sender<Result<R, Status>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded values stay consistent even if a holder panicked.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The calls of kind `C` on one connection, over one stream at a time.
pub struct CallStreams<C: StreamedCall> {
    channel: Channel,
    max_message_bytes: usize,
    open: Mutex<Option<Arc<CallStream<C>>>>,
    /// The server answered the stream call with `Unimplemented`.
    unary_only: AtomicBool,
    /// The server took a stream call: no copy of a call is kept for a
    /// unary retry.
    streaming: Arc<AtomicBool>,
}

impl<C: StreamedCall> CallStreams<C> {
    /// Calls over `channel`, with messages of up to `max_message_bytes`.
    pub fn new(channel: Channel, max_message_bytes: usize) -> CallStreams<C> {
        CallStreams {
            channel,
            max_message_bytes,
            open: Mutex::new(None),
            unary_only: AtomicBool::new(false),
            streaming: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Sends `request` and waits for its outcome.
    pub async fn call(&self, request: C::Request) -> Result<C::Reply, Status> {
        let big = prost::Message::encoded_len(&request) > MAX_STREAMED_BYTES;
        if big || self.unary_only.load(Ordering::Relaxed) {
            return self.unary(request).await;
        }
        if self.streaming.load(Ordering::Relaxed) {
            // The common case: sent without a copy (an append's events
            // would be copied for nothing).
            return match self.stream().call(request).await {
                // The server was replaced by one without stream calls: the
                // caller retries, as a unary call.
                Err(status) if self.refused(&status) => Err(Status::unavailable(
                    "the server stopped taking stream calls",
                )),
                done => done,
            };
        }
        match self.stream().call(request.clone()).await {
            Err(status) if self.refused(&status) => self.unary(request).await,
            done => done,
        }
    }

    /// Whether `status` is the server refusing the stream call itself
    /// (`Unimplemented`: an older server); unary calls follow if so.
    fn refused(&self, status: &Status) -> bool {
        let refused = status.code() == Code::Unimplemented && is_ours(status);
        if refused {
            self.streaming.store(false, Ordering::Relaxed);
            self.unary_only.store(true, Ordering::Relaxed);
        }
        refused
    }

    async fn unary(&self, request: C::Request) -> Result<C::Reply, Status> {
        C::unary(self.channel.clone(), self.max_message_bytes, request).await
    }

    /// The open stream, or a new one.
    fn stream(&self) -> Arc<CallStream<C>> {
        let mut open = lock(&self.open);
        match open.as_ref() {
            Some(stream) if stream.is_open() => stream.clone(),
            _ => {
                let stream = CallStream::open(
                    self.channel.clone(),
                    self.max_message_bytes,
                    self.streaming.clone(),
                );
                *open = Some(stream.clone());
                stream
            }
        }
    }
}

/// Marks the status the stream's own call ended with, as opposed to an
/// `Unimplemented` a call itself came back with from the leader.
const STREAM_CALL_FAILED: &str = "cairn-call-stream";

fn is_ours(status: &Status) -> bool {
    status.metadata().get(STREAM_CALL_FAILED).is_some()
}

/// The calls sent on one stream and not yet answered.
struct Waiting<R> {
    open: bool,
    calls: HashMap<u64, Waiter<R>>,
}

/// One stream call.
struct CallStream<C: StreamedCall> {
    requests: mpsc::UnboundedSender<C::Envelope>,
    waiting: Mutex<Waiting<C::Reply>>,
    next_id: AtomicU64,
}

impl<C: StreamedCall> CallStream<C> {
    /// Starts the call; its reader task runs until the stream ends, and
    /// sets `streaming` once the server took the call.
    fn open(
        channel: Channel,
        max_message_bytes: usize,
        streaming: Arc<AtomicBool>,
    ) -> Arc<CallStream<C>> {
        let (requests, outgoing) = mpsc::unbounded_channel();
        let stream = Arc::new(CallStream {
            requests,
            waiting: Mutex::new(Waiting {
                open: true,
                calls: HashMap::new(),
            }),
            next_id: AtomicU64::new(0),
        });
        tokio::spawn(read_outcomes(
            channel,
            max_message_bytes,
            outgoing,
            stream.clone(),
            streaming,
        ));
        stream
    }

    fn is_open(&self) -> bool {
        lock(&self.waiting).open
    }

    async fn call(&self, request: C::Request) -> Result<C::Reply, Status> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut waiting = lock(&self.waiting);
            if !waiting.open {
                return Err(closed());
            }
            waiting.calls.insert(id, tx);
        }
        // Forgets the call if this future is dropped before its outcome.
        let _forget = Forget { stream: self, id };
        if self.requests.send(C::envelope(id, request)).is_err() {
            return Err(closed());
        }
        rx.await.unwrap_or_else(|_| Err(closed()))
    }

    /// Hands an outcome to the call waiting for it (if it still waits).
    fn answer(&self, outcome: C::Outcome) {
        let (id, result) = C::open_outcome(outcome);
        if let Some(waiter) = lock(&self.waiting).calls.remove(&id) {
            let _ = waiter.send(result_of(result));
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

struct Forget<'a, C: StreamedCall> {
    stream: &'a CallStream<C>,
    id: u64,
}

impl<C: StreamedCall> Drop for Forget<'_, C> {
    fn drop(&mut self) {
        lock(&self.stream.waiting).calls.remove(&self.id);
    }
}

/// Makes the call and hands each outcome to its caller until the stream
/// ends; then fails the calls still waiting: with the status the call was
/// refused with (a failed connection keeps its cause, for the caller's
/// retry decision; `Unimplemented` from an older server), or, once the
/// stream was open, as unavailable.
async fn read_outcomes<C: StreamedCall>(
    channel: Channel,
    max_message_bytes: usize,
    outgoing: mpsc::UnboundedReceiver<C::Envelope>,
    stream: Arc<CallStream<C>>,
    streaming: Arc<AtomicBool>,
) {
    let requests = UnboundedReceiverStream::new(outgoing);
    let mut ended = match C::open(channel, max_message_bytes, requests).await {
        Err(status) => status,
        Ok(mut outcomes) => {
            streaming.store(true, Ordering::Relaxed);
            loop {
                match outcomes.message().await {
                    Ok(Some(outcome)) => stream.answer(outcome),
                    Ok(None) => break closed(),
                    Err(status) => break broken(&status),
                }
            }
        }
    };
    tracing::debug!(message = ended.message(), "call stream ended");
    ended
        .metadata_mut()
        .insert(STREAM_CALL_FAILED, MetadataValue::from_static("ended"));
    stream.close(&ended);
}

/// What the calls in flight on a stream that broke get. Their outcome is
/// unknown, as for a unary call whose connection dropped, whatever the
/// stream ended with: a killed server's connection reads as `Unknown: h2
/// protocol error`, which no caller would retry. Unavailable, they are
/// retried, which is safe: asks carry a command id and appends event ids,
/// so a retry applies nothing twice.
fn broken(status: &Status) -> Status {
    Status::unavailable(format!(
        "the stream of calls broke before the outcome came: {}",
        status.message()
    ))
}

fn closed() -> Status {
    let mut status = Status::unavailable("the stream of calls closed");
    status
        .metadata_mut()
        .insert(STREAM_CALL_FAILED, MetadataValue::from_static("closed"));
    status
}

/// The answering side: the message that answers call `id` with `result`
/// (an error travels as its code, message and ASCII metadata).
pub fn outcome<C: StreamedCall>(id: u64, result: Result<C::Reply, Status>) -> C::Outcome {
    let result = match result {
        Ok(reply) => CallResult::Reply(reply),
        Err(status) => CallResult::Error(call_error(&status)),
    };
    C::outcome(id, result)
}

fn call_error(status: &Status) -> pb::CallError {
    pb::CallError {
        code: status.code() as i32,
        message: status.message().to_string(),
        metadata: status
            .metadata()
            .iter()
            .filter_map(|entry| match entry {
                KeyAndValueRef::Ascii(key, value) => {
                    Some((key.to_string(), value.to_str().ok()?.to_string()))
                }
                KeyAndValueRef::Binary(..) => None,
            })
            .collect(),
    }
}

/// The asking side: what an outcome says, as a unary call would have.
fn result_of<R>(result: Option<CallResult<R>>) -> Result<R, Status> {
    match result {
        Some(CallResult::Reply(reply)) => Ok(reply),
        Some(CallResult::Error(error)) => {
            let mut metadata = MetadataMap::new();
            for (key, value) in &error.metadata {
                if let (Ok(key), Ok(value)) = (
                    MetadataKey::from_bytes(key.as_bytes()),
                    MetadataValue::try_from(value.as_str()),
                ) {
                    metadata.insert(key, value);
                }
            }
            Err(Status::with_metadata(
                Code::from_i32(error.code),
                error.message,
                metadata,
            ))
        }
        None => Err(Status::internal("an outcome without a result")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn back<C: StreamedCall>(outcome: C::Outcome) -> (u64, Result<C::Reply, Status>) {
        let (id, result) = C::open_outcome(outcome);
        (id, result_of(result))
    }

    #[test]
    fn an_outcome_reads_back_as_the_reply_or_status_it_carries() {
        let mut status = Status::failed_precondition("insufficient funds");
        status.metadata_mut().insert(
            "cairn-error",
            MetadataValue::from_static("command-rejected"),
        );
        let (id, result) = back::<Asks>(outcome::<Asks>(7, Err(status)));
        assert_eq!(id, 7);
        let status = result.unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(status.message(), "insufficient funds");
        assert_eq!(
            status.metadata().get("cairn-error").unwrap(),
            "command-rejected"
        );
        assert!(!is_ours(&status));

        let reply = pb::AskReply {
            reply: b"{}".to_vec().into(),
            version: 3,
            duplicate: false,
        };
        let (id, result) = back::<Asks>(outcome::<Asks>(8, Ok(reply.clone())));
        assert_eq!(id, 8);
        assert_eq!(result.unwrap(), reply);
    }

    #[test]
    fn an_append_outcome_reads_back_the_same_way() {
        let conflict = Status::failed_precondition("wrong expected version: stream is at 3");
        let (id, result) = back::<Appends>(outcome::<Appends>(1, Err(conflict)));
        assert_eq!(id, 1);
        let status = result.unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(status.message(), "wrong expected version: stream is at 3");

        let reply = pb::AppendReply {
            first_version: 4,
            last_version: 5,
            partition: 2,
            ..Default::default()
        };
        let (id, result) = back::<Appends>(outcome::<Appends>(2, Ok(reply)));
        assert_eq!(id, 2);
        assert_eq!(result.unwrap(), reply);
        assert!(result_of::<pb::AppendReply>(None).is_err());
    }
}
