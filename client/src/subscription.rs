//! [`Subscription`]: catch-up then live events of one stream or of all
//! streams, as a [`Stream`], resumed on another server when the one serving
//! it fails.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use cairn_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::Stream;
use tonic::{Code, Streaming};

use crate::{Checkpoint, Client, Error, EventFilter, RecordedEvent};

/// Events received and not yet taken by the caller; when full, the client
/// stops reading and the server stops sending (backpressure).
const BUFFER: usize = 64;
/// A live server sends at least a heartbeat every few seconds; silence this
/// long means it is gone, and the subscription resumes elsewhere.
const IDLE_TIMEOUT: Duration = Duration::from_secs(15);

/// What to subscribe to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscribeTo {
    /// One stream, from `from_version` on (1 = the start).
    Stream {
        /// The stream id.
        stream: String,
        /// The first version to deliver.
        from_version: u64,
    },
    /// Every stream, after `from` ([`Checkpoint::start`] = the beginning),
    /// skipping events older than `from_timestamp` (ms since the epoch).
    All {
        /// Where to resume.
        from: Checkpoint,
        /// Skip older events.
        from_timestamp: Option<i64>,
    },
}

impl SubscribeTo {
    /// One stream from `from_version` on.
    pub fn stream(stream: impl Into<String>, from_version: u64) -> SubscribeTo {
        SubscribeTo::Stream {
            stream: stream.into(),
            from_version,
        }
    }

    /// Every stream after `from`.
    pub fn all(from: Checkpoint) -> SubscribeTo {
        SubscribeTo::All {
            from,
            from_timestamp: None,
        }
    }
}

/// One event of a subscription. Serializes as the event's JSON plus, for
/// subscriptions to all, a `checkpoint` field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionEvent {
    /// The event.
    #[serde(flatten)]
    pub event: RecordedEvent,
    /// Subscriptions to all: subscribe from here to get what follows this
    /// event. (For a stream, resume from the event's version + 1.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<Checkpoint>,
}

/// A running subscription: a [`Stream`] of events, each exactly once, in
/// order (per stream; per partition for subscriptions to all), first those
/// already written, then new ones as they commit.
///
/// When the server serving it fails (stops, is killed, goes silent for
/// 15 s), the subscription resumes on the next server of the client from the
/// last event delivered, without a gap or a duplicate; it ends with an error
/// only when no server could take it over within the client's timeout, or
/// for a reason retrying cannot fix (e.g. the stream was deleted). Dropping
/// it cancels it.
pub struct Subscription {
    events: mpsc::Receiver<Result<SubscriptionEvent, Error>>,
    task: JoinHandle<()>,
}

impl Stream for Subscription {
    type Item = Result<SubscriptionEvent, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.events.poll_recv(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

/// Where a subscription stands: what to ask for when it is (re)opened.
#[derive(Debug, Clone)]
pub(crate) struct Position {
    to: SubscribeTo,
    filter: EventFilter,
}

impl Position {
    pub(crate) fn new(to: SubscribeTo, filter: EventFilter) -> Position {
        Position { to, filter }
    }

    /// The request that continues right after what was delivered.
    pub(crate) fn request(&self) -> pb::SubscribeRequest {
        let filter = Some(pb::EventFilter::from(&self.filter));
        match &self.to {
            SubscribeTo::Stream {
                stream,
                from_version,
            } => pb::SubscribeRequest {
                stream: stream.clone(),
                from_version: *from_version,
                filter,
                ..Default::default()
            },
            SubscribeTo::All {
                from,
                from_timestamp,
            } => pb::SubscribeRequest {
                from: Some(pb::Checkpoint::from(from)),
                from_timestamp_ms: *from_timestamp,
                filter,
                ..Default::default()
            },
        }
    }

    /// Moves past `message`; returns its event, if it carries one.
    fn advance(&mut self, message: pb::SubscribeReply) -> Result<Option<SubscriptionEvent>, Error> {
        let checkpoint = message.checkpoint.map(Checkpoint::from);
        match &mut self.to {
            SubscribeTo::Stream { from_version, .. } => {
                if let Some(event) = &message.event {
                    *from_version = (*from_version).max(event.version + 1);
                }
            }
            SubscribeTo::All { from, .. } => {
                if let Some(checkpoint) = &checkpoint {
                    *from = checkpoint.clone();
                }
            }
        }
        let Some(event) = message.event else {
            return Ok(None);
        };
        let checkpoint = match self.to {
            SubscribeTo::All { .. } => checkpoint,
            SubscribeTo::Stream { .. } => None,
        };
        Ok(Some(SubscriptionEvent {
            event: RecordedEvent::try_from(event)?,
            checkpoint,
        }))
    }
}

impl Subscription {
    /// Delivers what `stream` (already opened at `position`) sends, resuming
    /// on another server when it fails.
    pub(crate) fn start(
        client: Client,
        position: Position,
        stream: Streaming<pb::SubscribeReply>,
    ) -> Subscription {
        let (tx, rx) = mpsc::channel(BUFFER);
        let task = tokio::spawn(deliver(client, position, stream, tx));
        Subscription { events: rx, task }
    }
}

async fn deliver(
    client: Client,
    mut position: Position,
    mut stream: Streaming<pb::SubscribeReply>,
    tx: mpsc::Sender<Result<SubscriptionEvent, Error>>,
) {
    loop {
        let why = loop {
            let message = match tokio::time::timeout(IDLE_TIMEOUT, stream.message()).await {
                Ok(Ok(Some(message))) => message,
                Ok(Ok(None)) => break "the server ended the subscription".to_string(),
                Ok(Err(status)) if resumable(&status) => break status.message().to_string(),
                Ok(Err(status)) => {
                    let _ = tx.send(Err(Error::from(status))).await;
                    return;
                }
                Err(_) => break format!("no message from the server for {IDLE_TIMEOUT:?}"),
            };
            match position.advance(message) {
                Ok(Some(event)) => {
                    if tx.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        };
        tracing::debug!(%why, "subscription interrupted, resuming on another server");
        client.prefer_next_server();
        stream = match client.open_subscription(&position).await {
            Ok(stream) => stream,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
    }
}

/// Whether a subscription that failed with `status` may be resumed
/// elsewhere: anything but a refusal of the request itself.
fn resumable(status: &tonic::Status) -> bool {
    !matches!(
        status.code(),
        Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::NotFound
            | Code::OutOfRange
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::Unimplemented
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn event(version: u64, position: u64) -> pb::RecordedEvent {
        pb::RecordedEvent {
            id: format!("e{version}"),
            stream: "s".into(),
            r#type: "T".into(),
            version,
            position,
            ..Default::default()
        }
    }

    #[test]
    fn a_stream_position_moves_past_each_event() {
        let mut position = Position::new(SubscribeTo::stream("s", 1), EventFilter::all());
        let delivered = position
            .advance(pb::SubscribeReply {
                event: Some(event(3, 9)),
                ..Default::default()
            })
            .unwrap()
            .unwrap();
        assert_eq!(delivered.event.version, 3);
        assert_eq!(delivered.checkpoint, None);
        assert_eq!(position.request().from_version, 4);
        // A heartbeat moves nothing.
        assert!(position.advance(Default::default()).unwrap().is_none());
        assert_eq!(position.request().from_version, 4);
    }

    #[test]
    fn an_all_position_follows_checkpoints_also_without_events() {
        let mut position = Position::new(SubscribeTo::all(Checkpoint::start()), EventFilter::all());
        let cp = |positions: Vec<u64>| Some(pb::Checkpoint { positions });
        let delivered = position
            .advance(pb::SubscribeReply {
                event: Some(event(1, 5)),
                checkpoint: cp(vec![5, 0]),
                caught_up: false,
            })
            .unwrap()
            .unwrap();
        assert_eq!(delivered.checkpoint.unwrap().to_string(), "p0:5");
        let progress = pb::SubscribeReply {
            checkpoint: cp(vec![5, 8]),
            ..Default::default()
        };
        assert!(position.advance(progress).unwrap().is_none());
        assert_eq!(position.request().from.unwrap().positions, vec![5, 8]);
    }

    #[test]
    fn refusals_are_not_resumed() {
        assert!(resumable(&tonic::Status::unavailable("x")));
        assert!(resumable(&tonic::Status::unknown("connection reset")));
        assert!(!resumable(&tonic::Status::failed_precondition("deleted")));
        assert!(!resumable(&tonic::Status::invalid_argument("bad")));
    }
}
