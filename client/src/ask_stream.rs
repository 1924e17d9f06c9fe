//! Many asks over one `ActorService.AskStream` call per connection.
//!
//! A unary gRPC call costs a new HTTP/2 stream on both ends (headers encoded
//! and decoded, a task, trailers); a message on an open stream costs one
//! data frame. HTTP/2 and gRPC were ~65% of the CPU of the `ask` benchmark,
//! so both the client and a node forwarding asks to a partition's leader
//! send asks this way.
//!
//! [`AskStreams`] belongs to one connection: each ask gets an id and waits
//! for the outcome with that id, which the stream's reader task hands over.
//! When the stream ends or fails, every waiting ask fails with the stream's
//! status (callers retry; asks carry a command id, so a retry never applies
//! a command twice) and the next ask opens a new stream. A server that does
//! not know `AskStream` (`Unimplemented`) gets unary `Ask` calls from then on.
//! [`outcome`] is the answering side's half of the encoding.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use cairn_proto::v1::actor_service_client::ActorServiceClient;
use cairn_proto::v1::ask_outcome::Result as Outcome;
use cairn_proto::v1::{AskEnvelope, AskOutcome, AskReply, AskRequest, CallError};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::metadata::{KeyAndValueRef, MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::Channel;
use tonic::{Code, Status};

type Waiter = oneshot::Sender<Result<AskReply, Status>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded values stay consistent even if a holder panicked.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The asks of one connection, over one stream at a time.
pub struct AskStreams {
    channel: Channel,
    max_message_bytes: usize,
    open: Mutex<Option<Arc<AskStream>>>,
    /// The server answered `AskStream` with `Unimplemented`.
    unary_only: AtomicBool,
}

impl AskStreams {
    /// Asks over `channel`, with messages of up to `max_message_bytes`.
    pub fn new(channel: Channel, max_message_bytes: usize) -> AskStreams {
        AskStreams {
            channel,
            max_message_bytes,
            open: Mutex::new(None),
            unary_only: AtomicBool::new(false),
        }
    }

    /// Sends `request` and waits for its outcome.
    pub async fn ask(&self, request: AskRequest) -> Result<AskReply, Status> {
        if self.unary_only.load(Ordering::Relaxed) {
            return self.unary(request).await;
        }
        match self.stream().ask(request.clone()).await {
            Err(status) if status.code() == Code::Unimplemented && is_ours(&status) => {
                self.unary_only.store(true, Ordering::Relaxed);
                self.unary(request).await
            }
            done => done,
        }
    }

    async fn unary(&self, request: AskRequest) -> Result<AskReply, Status> {
        self.client()
            .ask(request)
            .await
            .map(tonic::Response::into_inner)
    }

    fn client(&self) -> ActorServiceClient<Channel> {
        ActorServiceClient::new(self.channel.clone())
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes)
    }

    /// The open stream, or a new one.
    fn stream(&self) -> Arc<AskStream> {
        let mut open = lock(&self.open);
        match open.as_ref() {
            Some(stream) if stream.is_open() => stream.clone(),
            _ => {
                let stream = AskStream::open(self.client());
                *open = Some(stream.clone());
                stream
            }
        }
    }
}

/// Marks the status the stream's own call ended with, as opposed to an
/// `Unimplemented` an ask itself came back with from the leader.
const STREAM_CALL_FAILED: &str = "cairn-ask-stream";

fn is_ours(status: &Status) -> bool {
    status.metadata().get(STREAM_CALL_FAILED).is_some()
}

/// The asks sent on one stream and not yet answered.
struct Waiting {
    open: bool,
    calls: HashMap<u64, Waiter>,
}

/// One `AskStream` call.
struct AskStream {
    requests: mpsc::UnboundedSender<AskEnvelope>,
    waiting: Mutex<Waiting>,
    next_id: AtomicU64,
}

impl AskStream {
    /// Starts the call; its reader task runs until the stream ends.
    fn open(client: ActorServiceClient<Channel>) -> Arc<AskStream> {
        let (requests, outgoing) = mpsc::unbounded_channel();
        let stream = Arc::new(AskStream {
            requests,
            waiting: Mutex::new(Waiting {
                open: true,
                calls: HashMap::new(),
            }),
            next_id: AtomicU64::new(0),
        });
        tokio::spawn(read_outcomes(client, outgoing, stream.clone()));
        stream
    }

    fn is_open(&self) -> bool {
        lock(&self.waiting).open
    }

    async fn ask(&self, request: AskRequest) -> Result<AskReply, Status> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut waiting = lock(&self.waiting);
            if !waiting.open {
                return Err(closed());
            }
            waiting.calls.insert(id, tx);
        }
        // Forgets the ask if this future is dropped before its outcome.
        let _forget = Forget { stream: self, id };
        let envelope = AskEnvelope {
            id,
            request: Some(request),
        };
        if self.requests.send(envelope).is_err() {
            return Err(closed());
        }
        rx.await.unwrap_or_else(|_| Err(closed()))
    }

    /// Hands an outcome to the ask waiting for it (if it still waits).
    fn answer(&self, outcome: AskOutcome) {
        if let Some(waiter) = lock(&self.waiting).calls.remove(&outcome.id) {
            let _ = waiter.send(result_of(outcome.result));
        }
    }

    /// The stream ended: fails every waiting ask with `status`.
    fn close(&self, status: &Status) {
        let mut waiting = lock(&self.waiting);
        waiting.open = false;
        for (_, waiter) in waiting.calls.drain() {
            let _ = waiter.send(Err(status.clone()));
        }
    }
}

struct Forget<'a> {
    stream: &'a AskStream,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(&self.stream.waiting).calls.remove(&self.id);
    }
}

/// Makes the call and hands each outcome to its ask until the stream ends;
/// then fails the asks still waiting with the status it ended with (a
/// transport failure keeps its cause, for the caller's retry decision).
async fn read_outcomes(
    mut client: ActorServiceClient<Channel>,
    outgoing: mpsc::UnboundedReceiver<AskEnvelope>,
    stream: Arc<AskStream>,
) {
    let mut ended = match client
        .ask_stream(UnboundedReceiverStream::new(outgoing))
        .await
    {
        Err(status) => status,
        Ok(response) => {
            let mut outcomes = response.into_inner();
            loop {
                match outcomes.message().await {
                    Ok(Some(outcome)) => stream.answer(outcome),
                    Ok(None) => break closed(),
                    Err(status) => break status,
                }
            }
        }
    };
    tracing::debug!(message = ended.message(), "ask stream ended");
    ended
        .metadata_mut()
        .insert(STREAM_CALL_FAILED, MetadataValue::from_static("ended"));
    stream.close(&ended);
}

fn closed() -> Status {
    let mut status = Status::unavailable("the stream of asks closed");
    status
        .metadata_mut()
        .insert(STREAM_CALL_FAILED, MetadataValue::from_static("closed"));
    status
}

/// The answering side: the message that answers ask `id` with `result`
/// (an error travels as its code, message and ASCII metadata).
pub fn outcome(id: u64, result: Result<AskReply, Status>) -> AskOutcome {
    let result = match result {
        Ok(reply) => Outcome::Reply(reply),
        Err(status) => Outcome::Error(CallError {
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
        }),
    };
    AskOutcome {
        id,
        result: Some(result),
    }
}

/// The asking side: what an [`outcome`] says, as a unary call would have.
fn result_of(result: Option<Outcome>) -> Result<AskReply, Status> {
    match result {
        Some(Outcome::Reply(reply)) => Ok(reply),
        Some(Outcome::Error(error)) => {
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
        None => Err(Status::internal("an AskOutcome without a result")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_outcome_reads_back_as_the_reply_or_status_it_carries() {
        let mut status = Status::failed_precondition("insufficient funds");
        status.metadata_mut().insert(
            "cairn-error",
            MetadataValue::from_static("command-rejected"),
        );
        let back = result_of(outcome(7, Err(status)).result).unwrap_err();
        assert_eq!(back.code(), Code::FailedPrecondition);
        assert_eq!(back.message(), "insufficient funds");
        assert_eq!(
            back.metadata().get("cairn-error").unwrap(),
            "command-rejected"
        );
        assert!(!is_ours(&back));

        let reply = AskReply {
            reply: b"{}".to_vec().into(),
            version: 3,
            duplicate: false,
        };
        let answered = outcome(8, Ok(reply.clone()));
        assert_eq!(answered.id, 8);
        assert_eq!(result_of(answered.result).unwrap(), reply);
    }
}
