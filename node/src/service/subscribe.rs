//! `Subscribe`: catch-up, then live events, over gRPC server streaming.
//!
//! - **One stream**: read from the requested version on the partition's
//!   leader, then long-poll it there (the leader wakes the poll when its Raft
//!   applies an entry, see [`long_poll`](super::long_poll)).
//! - **All streams**: catch up with [`read_all`](super::read_all) pages (the
//!   merge order) until every partition's log is read to its end, then follow
//!   each partition with its own long poll, delivering its events as they
//!   commit (in order within a partition; partitions interleave as they
//!   commit). Every message carries the checkpoint after it, so the client
//!   resumes anywhere with no gap and no duplicate, and the switch from
//!   catch-up to live continues from exactly the catch-up's checkpoint.
//!
//! Backpressure: messages go through a bounded queue to the gRPC stream, and
//! the live partition followers through another bounded queue; when the
//! subscriber reads slowly, HTTP/2 flow control stops the stream, the queues
//! fill, and reading stops until it catches up. Memory per subscription is
//! bounded by the queue sizes times the chunk size, whatever the lag.
//!
//! Leader changes are absorbed here (reads are retried on the new leader for
//! up to [`GIVE_UP_AFTER`]); when this node stops, the subscription ends with
//! `Unavailable` and the client resumes elsewhere from its last checkpoint.
//! While live and idle, a heartbeat (a message without an event) goes out
//! every [`HEARTBEAT`], so a client can tell a quiet stream from a dead node.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cairn_cluster::ClusterNode;
use cairn_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status};
use tracing::Instrument;

use crate::error::NodeError;
use crate::limits::check_stream_id;
use crate::service::event_store::read_stream;
use crate::service::partition_log::{self, EventFilter};
use crate::service::read_all::{AllRead, ClusterSource, read_page};

/// Messages queued for the gRPC stream of one subscription.
const OUTBOX: usize = 64;
/// Live partition chunks queued for one subscription to all.
const LIVE_CHUNKS: usize = 4;
/// Events per catch-up page or live chunk.
const CHUNK: u32 = 256;
/// How long one long poll waits on the leader.
const LONG_POLL: Duration = Duration::from_secs(3);
/// While live and idle, the longest time without a message.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// A read that keeps failing with `Unavailable` (no leader, leader
/// unreachable) ends the subscription after this long.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

type Reply = Result<pb::SubscribeReply, Status>;

/// Why a subscription stopped.
enum Stop {
    /// The subscriber went away.
    Gone,
    /// It failed; the subscriber is told.
    Failed(Status),
}

impl From<Status> for Stop {
    fn from(status: Status) -> Stop {
        Stop::Failed(status)
    }
}

/// Starts a subscription; its messages arrive on the returned stream.
pub fn subscribe(
    node: Arc<ClusterNode>,
    request: pb::SubscribeRequest,
) -> Result<ReceiverStream<Reply>, Status> {
    let filter = EventFilter::try_from(request.filter.clone()).map_err(NodeError::from)?;
    let (tx, rx) = mpsc::channel(OUTBOX);
    let span = tracing::debug_span!(
        "subscription",
        node_id = node.node_id(),
        stream = request.stream
    );
    if request.stream.is_empty() {
        let read = AllRead::new(
            node.topology().partitions,
            request.from,
            request.from_timestamp_ms,
            CHUNK,
            request.filter,
        )?;
        tokio::spawn(finish(follow_all(node, read, tx.clone()), tx).instrument(span));
    } else {
        check_stream_id(&request.stream).map_err(NodeError::from)?;
        let stream = request.stream;
        let from = request.from_version.max(1);
        tokio::spawn(
            finish(follow_stream(node, stream, from, filter, tx.clone()), tx).instrument(span),
        );
    }
    Ok(ReceiverStream::new(rx))
}

/// Runs a subscription to its end and tells the subscriber why it failed.
async fn finish(subscription: impl Future<Output = Stop>, tx: mpsc::Sender<Reply>) {
    match subscription.await {
        Stop::Gone => tracing::debug!("subscriber left"),
        Stop::Failed(status) => {
            tracing::debug!(code = ?status.code(), message = status.message(), "subscription ended");
            let _ = tx.send(Err(status)).await;
        }
    }
}

/// Sends one message; waits while the subscriber is behind (backpressure).
async fn send(tx: &mpsc::Sender<Reply>, reply: pb::SubscribeReply) -> Result<(), Stop> {
    tx.send(Ok(reply)).await.map_err(|_| Stop::Gone)
}

fn checkpoint(positions: &[u64]) -> Option<pb::Checkpoint> {
    Some(pb::Checkpoint {
        positions: positions.to_vec(),
    })
}

/// Whether this node has stopped its Raft groups (it is shutting down).
fn stopping(node: &ClusterNode) -> bool {
    node.metrics().is_empty()
}

/// Runs `op` until it succeeds, retrying `Unavailable` (leader changes) with
/// backoff for up to [`GIVE_UP_AFTER`]; gives up at once when the node is
/// stopping or the subscriber (`out`'s receiver) has gone.
async fn retrying<T, R, F, Fut>(node: &ClusterNode, out: &mpsc::Sender<R>, op: F) -> Result<T, Stop>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let started = Instant::now();
    let mut backoff = FIRST_BACKOFF;
    loop {
        let status = tokio::select! {
            result = op() => match result {
                Ok(value) => return Ok(value),
                Err(status) => status,
            },
            () = out.closed() => return Err(Stop::Gone),
        };
        if status.code() != Code::Unavailable {
            return Err(Stop::Failed(status));
        }
        if stopping(node) {
            return Err(Stop::Failed(Status::unavailable(
                "the node serving the subscription is shutting down; resume on another node",
            )));
        }
        if started.elapsed() >= GIVE_UP_AFTER {
            return Err(Stop::Failed(status));
        }
        tracing::debug!(message = status.message(), "read failed, retrying");
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = out.closed() => return Err(Stop::Gone),
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One stream from `from` on: pages until its end, then long polls.
async fn follow_stream(
    node: Arc<ClusterNode>,
    stream: String,
    mut next: u64,
    filter: EventFilter,
    tx: mpsc::Sender<Reply>,
) -> Stop {
    let mut live = false;
    loop {
        let request = pb::ReadRequest {
            stream: stream.clone(),
            from_version: next,
            limit: CHUNK,
            forwarded: false,
            wait_ms: if live {
                LONG_POLL.as_millis() as u32
            } else {
                0
            },
        };
        let reply = match retrying(&node, &tx, || read_stream(&node, request.clone())).await {
            Ok(reply) => reply,
            Err(stop) => return stop,
        };
        let idle = reply.events.is_empty();
        for event in reply.events {
            next = next.max(event.version + 1);
            if filter.matches_type(&event.r#type) {
                let message = pb::SubscribeReply {
                    event: Some(event),
                    ..Default::default()
                };
                if let Err(stop) = send(&tx, message).await {
                    return stop;
                }
            }
        }
        let message = if !live && next > reply.stream_version {
            live = true;
            Some(pb::SubscribeReply {
                caught_up: true,
                ..Default::default()
            })
        } else {
            // A long poll that found nothing: a heartbeat.
            (live && idle).then(pb::SubscribeReply::default)
        };
        if let Some(message) = message
            && let Err(stop) = send(&tx, message).await
        {
            return stop;
        }
    }
}

/// Every stream from `read.from` on: merged catch-up pages, then one live
/// follower per partition.
async fn follow_all(node: Arc<ClusterNode>, mut read: AllRead, tx: mpsc::Sender<Reply>) -> Stop {
    match catch_up(&node, &mut read, &tx).await {
        Ok(()) => {}
        Err(stop) => return stop,
    }
    let (chunks_tx, mut chunks) = mpsc::channel(LIVE_CHUNKS);
    let mut followers = JoinSet::new();
    for (partition, from) in read.from.iter().enumerate() {
        followers.spawn(
            follow_partition(
                node.clone(),
                partition as u32,
                *from,
                read.clone(),
                chunks_tx.clone(),
            )
            .in_current_span(),
        );
    }
    drop(chunks_tx);
    let mut positions = read.from;
    let mut quiet_since = Instant::now();
    loop {
        let chunk = tokio::select! {
            chunk = chunks.recv() => chunk,
            () = tokio::time::sleep_until(quiet_since + HEARTBEAT) => {
                let heartbeat = pb::SubscribeReply {
                    checkpoint: checkpoint(&positions),
                    ..Default::default()
                };
                if let Err(stop) = send(&tx, heartbeat).await {
                    return stop;
                }
                quiet_since = Instant::now();
                continue;
            }
            () = tx.closed() => return Stop::Gone,
        };
        let (partition, reply) = match chunk {
            Some(Ok(chunk)) => chunk,
            Some(Err(stop)) => return stop,
            None => return Stop::Failed(Status::internal("every partition follower stopped")),
        };
        let p = partition as usize;
        let delivered = !reply.events.is_empty();
        for event in reply.events {
            positions[p] = positions[p].max(event.position);
            let message = pb::SubscribeReply {
                event: Some(event),
                checkpoint: checkpoint(&positions),
                caught_up: false,
            };
            if let Err(stop) = send(&tx, message).await {
                return stop;
            }
        }
        if reply.scanned_to > positions[p] {
            positions[p] = reply.scanned_to;
            if !delivered {
                // Only filtered-out events: tell the subscriber how far it got.
                let progress = pb::SubscribeReply {
                    checkpoint: checkpoint(&positions),
                    ..Default::default()
                };
                if let Err(stop) = send(&tx, progress).await {
                    return stop;
                }
            }
        }
        quiet_since = Instant::now();
    }
}

/// Sends merged pages until a page reaches the end of every partition's log;
/// leaves `read.from` at the checkpoint the live phase starts from.
async fn catch_up(
    node: &Arc<ClusterNode>,
    read: &mut AllRead,
    tx: &mpsc::Sender<Reply>,
) -> Result<(), Stop> {
    let source = ClusterSource::new(node.clone());
    loop {
        let page = retrying(node, tx, || read_page(&source, read)).await?;
        let mut positions = read.from.clone();
        for event in page.events {
            let p = event.partition as usize;
            positions[p] = positions[p].max(event.position);
            let message = pb::SubscribeReply {
                event: Some(event),
                checkpoint: checkpoint(&positions),
                caught_up: false,
            };
            send(tx, message).await?;
        }
        read.from = page.checkpoint;
        if page.end {
            let caught_up = pb::SubscribeReply {
                event: None,
                checkpoint: checkpoint(&read.from),
                caught_up: true,
            };
            return send(tx, caught_up).await;
        }
        if positions != read.from {
            let progress = pb::SubscribeReply {
                checkpoint: checkpoint(&read.from),
                ..Default::default()
            };
            send(tx, progress).await?;
        }
    }
}

type Chunk = Result<(u32, pb::ReadPartitionReply), Stop>;

/// Follows one partition's log from after `from`, long-polling its leader;
/// hands every chunk that moves forward to `out` (waiting while it is full).
async fn follow_partition(
    node: Arc<ClusterNode>,
    partition: u32,
    mut from: u64,
    read: AllRead,
    out: mpsc::Sender<Chunk>,
) {
    loop {
        let request = pb::ReadPartitionRequest {
            partition,
            from_position: from + 1,
            from_timestamp_ms: read.from_ts,
            limit: CHUNK,
            filter: Some(read.filter.clone()),
            wait_ms: LONG_POLL.as_millis() as u32,
            forwarded: false,
        };
        let fetch = || partition_log::read_partition(&node, request.clone());
        match retrying(&node, &out, fetch).await {
            Ok(reply) if reply.scanned_to > from => {
                from = reply.scanned_to;
                if out.send(Ok((partition, reply))).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(stop) => {
                let _ = out.send(Err(stop)).await;
                return;
            }
        }
    }
}
