//! Many calls of one kind over one long-lived gRPC stream per connection:
//! the client's asks (`ActorService.AskStream`) and appends
//! (`EventStoreService.AppendStream`), and the Raft calls between nodes
//! (`RaftService.Stream`).
//!
//! A unary gRPC call costs a new HTTP/2 stream on both ends (headers encoded
//! and decoded, a task, trailers); a message on an open stream costs one
//! data frame, and h2 writes many in one syscall. HTTP/2 and gRPC were ~65%
//! of the CPU of the `ask` benchmark. Both directions are read through
//! [`Coalesced`], so that the messages of calls that finish (or start)
//! together go out in one write rather than one write each.
//!
//! [`CallStreams`] belongs to one connection: each call gets an id and waits
//! for the outcome with that id, which the stream's reader task hands over.
//! When the stream ends or breaks, every waiting call fails (as
//! unavailable once the stream was open: its outcome is unknown, and the
//! caller retries) and the next call opens a new stream. A server that does
//! not know the stream call (`Unimplemented`: an older binary) gets unary
//! calls from then on, and so does a call over [`MAX_STREAMED_BYTES`].
//! [`outcome`] is the answering side's half of the encoding,
//! [`read_outcome`] the asking side's.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use cairn_proto::v1 as pb;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::metadata::{KeyAndValueRef, MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

mod coalesce;
pub use coalesce::{Answers, Coalesced, Requests};

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
        requests: Requests<Self::Envelope>,
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
        let refused = status.code() == Code::Unimplemented && is_stream_failure(status);
        if refused {
            self.streaming.store(false, Ordering::Relaxed);
            self.unary_only.store(true, Ordering::Relaxed);
        }
        refused
    }

    /// Sends `request` as a unary call of its own.
    pub async fn unary(&self, request: C::Request) -> Result<C::Reply, Status> {
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

/// Whether `status` is what a stream call itself ended with (the stream
/// closed, broke, or was refused), as opposed to a call's own outcome.
pub fn is_stream_failure(status: &Status) -> bool {
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
        let (id, result) = read_outcome::<C>(outcome);
        if let Some(waiter) = lock(&self.waiting).calls.remove(&id) {
            let _ = waiter.send(result);
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
    let requests = Coalesced::new(UnboundedReceiverStream::new(outgoing));
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

/// The asking side: the id an outcome answers, and what it says, as a
/// unary call would have.
pub fn read_outcome<C: StreamedCall>(outcome: C::Outcome) -> (u64, Result<C::Reply, Status>) {
    let (id, result) = C::open_outcome(outcome);
    (id, result_of(result))
}

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
