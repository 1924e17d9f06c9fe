//! Asks forwarded to a partition's leader travel over one long-lived
//! `AskStream` per leader instead of one gRPC call each.
//!
//! A unary call costs a new HTTP/2 stream on both nodes (headers encoded and
//! decoded, a task, trailers); a message on an open stream costs one data
//! frame. Through one node, two of every three asks are forwarded, and the
//! HTTP/2 and gRPC layers were ~65% of the CPU of the `ask` benchmark.
//!
//! [`AskForwarder`] keeps one [`AskStream`] per leader address: each ask gets
//! an id, waits for the outcome with that id, and the stream's reader task
//! hands outcomes to their waiters. When the stream ends or fails, every
//! waiting ask fails as `unavailable` (the client retries it; asks carry a
//! command id, so a retry never applies a command twice) and the next ask
//! opens a new stream. [`serve`] is the leader's side.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use cairn_proto::v1::actor_service_client::ActorServiceClient;
use cairn_proto::v1::ask_outcome::Result as Outcome;
use cairn_proto::v1::{AskEnvelope, AskOutcome, AskReply, AskRequest, CallError};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::{ReceiverStream, UnboundedReceiverStream};
use tokio_util::sync::CancellationToken;
use tonic::metadata::{KeyAndValueRef, MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

use crate::limits::MAX_MESSAGE_BYTES;

/// Outcomes a leader buffers per stream before it waits for the forwarding
/// node to read them.
const OUTCOMES_BUFFERED: usize = 1024;

type Waiter = oneshot::Sender<Result<AskReply, Status>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded maps stay consistent even if a holder panicked.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One [`AskStream`] per leader address, opened on first use and again after
/// one ends.
#[derive(Default)]
pub struct AskForwarder {
    streams: Mutex<HashMap<String, Arc<AskStream>>>,
}

impl AskForwarder {
    /// Sends `request` (already marked forwarded) to the node at `address`
    /// over its stream and waits for the outcome.
    pub async fn ask(
        &self,
        address: &str,
        channel: Channel,
        request: AskRequest,
    ) -> Result<AskReply, Status> {
        let stream = {
            let mut streams = lock(&self.streams);
            match streams.get(address) {
                Some(stream) if stream.is_open() => stream.clone(),
                _ => {
                    let stream = AskStream::open(channel);
                    streams.insert(address.to_string(), stream.clone());
                    stream
                }
            }
        };
        stream.ask(request).await
    }
}

/// The asks sent on one stream and not yet answered.
struct Waiting {
    open: bool,
    calls: HashMap<u64, Waiter>,
}

/// One open `AskStream` call to a leader.
struct AskStream {
    requests: mpsc::UnboundedSender<AskEnvelope>,
    waiting: Mutex<Waiting>,
    next_id: AtomicU64,
}

impl AskStream {
    /// Starts the call; its reader task runs until the stream ends.
    fn open(channel: Channel) -> Arc<AskStream> {
        let (requests, outgoing) = mpsc::unbounded_channel();
        let stream = Arc::new(AskStream {
            requests,
            waiting: Mutex::new(Waiting {
                open: true,
                calls: HashMap::new(),
            }),
            next_id: AtomicU64::new(0),
        });
        tokio::spawn(read_outcomes(channel, outgoing, stream.clone()));
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
        // Forgets the call if this future is dropped before its outcome.
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
            let _ = waiter.send(from_outcome(outcome.result));
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

/// Makes the call and hands each outcome to its ask until the stream ends.
async fn read_outcomes(
    channel: Channel,
    outgoing: mpsc::UnboundedReceiver<AskEnvelope>,
    stream: Arc<AskStream>,
) {
    let mut client = ActorServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let ended = match client
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
    tracing::debug!(message = ended.message(), "ask stream to the leader ended");
    stream.close(&Status::unavailable(format!(
        "the stream of forwarded asks ended: {}",
        ended.message()
    )));
}

fn closed() -> Status {
    Status::unavailable("the stream of forwarded asks to the leader closed")
}

/// The leader's side of an `AskStream`: runs each incoming ask with `ask`,
/// concurrently, and streams back the outcomes as they finish, until the
/// sender closes the stream or `stop` (this node shuts down).
pub fn serve<F, Fut>(
    mut incoming: Streaming<AskEnvelope>,
    stop: CancellationToken,
    ask: F,
) -> ReceiverStream<Result<AskOutcome, Status>>
where
    F: Fn(AskRequest) -> Fut + Send + 'static,
    Fut: Future<Output = Result<AskReply, Status>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(OUTCOMES_BUFFERED);
    tokio::spawn(async move {
        loop {
            let envelope = tokio::select! {
                next = incoming.message() => match next {
                    Ok(Some(envelope)) => envelope,
                    Ok(None) | Err(_) => return,
                },
                _ = tx.closed() => return,
                _ = stop.cancelled() => return,
            };
            let id = envelope.id;
            let call = envelope
                .request
                .map(&ask)
                .ok_or_else(|| Status::invalid_argument("an AskEnvelope without a request"));
            let tx = tx.clone();
            tokio::spawn(async move {
                let result = match call {
                    Ok(call) => call.await,
                    Err(status) => Err(status),
                };
                let _ = tx.send(Ok(to_outcome(id, result))).await;
            });
        }
    });
    ReceiverStream::new(rx)
}

fn to_outcome(id: u64, result: Result<AskReply, Status>) -> AskOutcome {
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

fn from_outcome(result: Option<Outcome>) -> Result<AskReply, Status> {
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
    fn an_error_outcome_is_the_status_the_leader_returned() {
        let mut status = Status::failed_precondition("rejected: not enough funds");
        status.metadata_mut().insert(
            "cairn-error",
            MetadataValue::from_static("command-rejected"),
        );
        let back = from_outcome(to_outcome(7, Err(status)).result).unwrap_err();
        assert_eq!(back.code(), Code::FailedPrecondition);
        assert_eq!(back.message(), "rejected: not enough funds");
        assert_eq!(
            back.metadata().get("cairn-error").unwrap(),
            "command-rejected"
        );

        let reply = AskReply {
            reply: b"{}".to_vec().into(),
            version: 3,
            duplicate: false,
        };
        let outcome = to_outcome(8, Ok(reply.clone()));
        assert_eq!(outcome.id, 8);
        assert_eq!(from_outcome(outcome.result).unwrap(), reply);
    }
}
