//! Reading one partition's log from a position, with an optional filter and
//! long poll: the building block of `ReadAll` and of subscriptions to all
//! streams. A read runs on the partition's leader (linearizable), here when
//! this node leads it, otherwise one forwarded `ReadPartition` call away.

use std::sync::Arc;
use std::time::Duration;

use cairn_cluster::ClusterNode;
use cairn_proto::v1 as pb;
use cairn_storage::{GroupId, Reader, RecordedEvent};
use tonic::Status;

use crate::error::NodeError;
use crate::limits::{InvalidInput, MAX_STREAM_ID_BYTES};
use crate::service::convert;
use crate::service::event_store::client;
use crate::service::long_poll::read_waiting;
use crate::service::route::{Route, route};

/// Events looked at by one partition read when the caller sets no limit.
pub const DEFAULT_SCAN: u32 = 512;
/// Most events looked at by one partition read.
pub const MAX_SCAN: u32 = 4096;
/// A partition read stops adding events once their payloads reach this size.
pub const MAX_CHUNK_BYTES: usize = 4 << 20;
/// Longest long poll a caller may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(30);
/// How long a forwarded read may take beyond its long poll.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// Events read from RocksDB at a time while scanning.
const SCAN_BATCH: usize = 128;
/// Most event types or stream prefixes in one filter.
const MAX_FILTER_ENTRIES: usize = 64;

/// Which events a read of all streams delivers: those whose type is one of
/// `types` and whose stream starts with one of `prefixes` (an empty list
/// matches everything).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventFilter {
    types: Vec<String>,
    prefixes: Vec<String>,
}

impl EventFilter {
    /// Whether `event` passes the filter.
    pub fn matches(&self, event: &RecordedEvent) -> bool {
        (self.types.is_empty() || self.types.contains(&event.event_type))
            && (self.prefixes.is_empty()
                || self.prefixes.iter().any(|p| event.stream.starts_with(p)))
    }

    /// Whether an event of `event_type` passes the type part of the filter.
    pub fn matches_type(&self, event_type: &str) -> bool {
        self.types.is_empty() || self.types.iter().any(|t| t == event_type)
    }
}

impl TryFrom<Option<pb::EventFilter>> for EventFilter {
    type Error = InvalidInput;

    /// Refuses more than 64 types or prefixes, and entries longer than a stream id.
    fn try_from(filter: Option<pb::EventFilter>) -> Result<EventFilter, InvalidInput> {
        let filter = filter.unwrap_or_default();
        for (what, list) in [
            ("event types", &filter.types),
            ("stream prefixes", &filter.stream_prefixes),
        ] {
            if list.len() > MAX_FILTER_ENTRIES {
                return Err(InvalidInput(format!(
                    "{} {what} in the filter; the limit is {MAX_FILTER_ENTRIES}",
                    list.len()
                )));
            }
            if let Some(long) = list.iter().find(|s| s.len() > MAX_STREAM_ID_BYTES) {
                return Err(InvalidInput(format!(
                    "filter entry `{}...` is longer than {MAX_STREAM_ID_BYTES} bytes",
                    long.chars().take(16).collect::<String>()
                )));
            }
        }
        Ok(EventFilter {
            types: filter.types,
            prefixes: filter.stream_prefixes,
        })
    }
}

/// Checks a partition read's arguments; returns the partition's id.
pub fn check_request(
    node: &ClusterNode,
    request: &pb::ReadPartitionRequest,
) -> Result<GroupId, NodeError> {
    let partitions = node.topology().partitions;
    if request.partition >= partitions {
        return Err(InvalidInput(format!(
            "partition {} does not exist; partitions are 0 to {}",
            request.partition,
            partitions - 1
        ))
        .into());
    }
    EventFilter::try_from(request.filter.clone())?;
    Ok(request.partition)
}

/// Reads a partition's log on the partition's leader: here when this node
/// leads it, otherwise forwarded once. A call that was itself forwarded
/// (`request.forwarded`) is never forwarded again.
pub async fn read_partition(
    node: &Arc<ClusterNode>,
    mut request: pb::ReadPartitionRequest,
) -> Result<pb::ReadPartitionReply, Status> {
    let group = check_request(node, &request)?;
    match route(node, group, request.forwarded)? {
        Route::Local(partition) => Ok(read_local(&partition, node.node_id(), request).await?),
        Route::Forward { channel, .. } => {
            request.forwarded = true;
            let deadline = wait_of(request.wait_ms) + FORWARD_TIMEOUT;
            match tokio::time::timeout(deadline, client(channel).read_partition(request)).await {
                Ok(reply) => reply.map(tonic::Response::into_inner),
                Err(_) => Err(Status::unavailable(format!(
                    "the leader of partition {group} did not answer within {deadline:?}"
                ))),
            }
        }
    }
}

/// The long poll a request asks for, capped at [`MAX_WAIT`].
pub fn wait_of(wait_ms: u32) -> Duration {
    Duration::from_millis(u64::from(wait_ms)).min(MAX_WAIT)
}

/// Reads this node's replica of a partition it leads: confirms leadership,
/// then scans; with a long poll, waits for new entries while nothing is there.
async fn read_local(
    partition: &cairn_cluster::Partition,
    me: cairn_storage::NodeId,
    request: pb::ReadPartitionRequest,
) -> Result<pb::ReadPartitionReply, NodeError> {
    let filter = Arc::new(EventFilter::try_from(request.filter)?);
    let limit = match request.limit {
        0 => DEFAULT_SCAN,
        n => n.min(MAX_SCAN),
    } as usize;
    let from = request.from_position.max(1);
    let from_ts = request.from_timestamp_ms;
    let reply = read_waiting(
        partition,
        me,
        wait_of(request.wait_ms),
        |reply: &pb::ReadPartitionReply| reply.scanned_to >= from,
        move |reader, group| scan(reader, group, from, from_ts, limit, &filter),
    )
    .await?;
    Ok(reply)
}

/// Scans the partition log from `from` (after skipping events older than
/// `from_ts`): at most `limit` events, fewer once the matching ones reach
/// [`MAX_CHUNK_BYTES`].
fn scan(
    reader: &Reader,
    group: GroupId,
    from: u64,
    from_ts: Option<i64>,
    limit: usize,
    filter: &EventFilter,
) -> Result<pb::ReadPartitionReply, cairn_storage::Error> {
    // Read the last position first: the scan below sees at least up to it.
    let last = reader.last_position(group)?;
    let mut next = from.max(1);
    if let Some(ts) = from_ts {
        next = next.max(first_at_or_after(reader, group, ts, next, last)?);
    }
    let mut reply = pb::ReadPartitionReply {
        scanned_to: next - 1,
        ..Default::default()
    };
    let (mut scanned, mut bytes) = (0, 0);
    loop {
        let want = (limit - scanned).min(SCAN_BATCH);
        let batch = reader.read_partition_log(group, next, want)?;
        let got = batch.len();
        for event in batch {
            scanned += 1;
            next = event.position + 1;
            reply.scanned_to = event.position;
            reply.scanned_to_timestamp_ms = event.timestamp_ms;
            if filter.matches(&event) {
                bytes += event.data.len() + event.metadata.len() + event.stream.len() + 64;
                reply.events.push(convert::recorded_event(event, group));
            }
        }
        if got < want {
            // Nothing more in the log: everything up to `last` was seen
            // (positions may be missing where events were purged).
            reply.end = true;
            reply.scanned_to = reply.scanned_to.max(last);
            return Ok(reply);
        }
        if scanned >= limit || bytes >= MAX_CHUNK_BYTES {
            return Ok(reply);
        }
    }
}

/// The first position at or after `from` whose event is at least `ts` old
/// (`last + 1` if none): a binary search, as timestamps never decrease along
/// a partition's log.
fn first_at_or_after(
    reader: &Reader,
    group: GroupId,
    ts: i64,
    from: u64,
    last: u64,
) -> Result<u64, cairn_storage::Error> {
    let (mut lo, mut hi) = (from, last.saturating_add(1).max(from));
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match reader.read_partition_log(group, mid, 1)?.first() {
            Some(e) if e.timestamp_ms < ts && e.position < hi => lo = e.position + 1,
            _ => hi = mid,
        }
    }
    Ok(lo)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn event(stream: &str, event_type: &str) -> RecordedEvent {
        RecordedEvent {
            id: "e".into(),
            stream: stream.into(),
            event_type: event_type.into(),
            data: Bytes::new(),
            metadata: Bytes::new(),
            correlation_id: String::new(),
            causation_id: String::new(),
            timestamp_ms: 1,
            version: 1,
            position: 1,
        }
    }

    #[test]
    fn filters_by_type_and_prefix() {
        let filter = |types: &[&str], prefixes: &[&str]| {
            EventFilter::try_from(Some(pb::EventFilter {
                types: types.iter().map(|s| s.to_string()).collect(),
                stream_prefixes: prefixes.iter().map(|s| s.to_string()).collect(),
            }))
            .unwrap()
        };
        let e = event("user-alice", "USER_CREATED");
        assert!(filter(&[], &[]).matches(&e));
        assert!(filter(&["X", "USER_CREATED"], &[]).matches(&e));
        assert!(!filter(&["X"], &[]).matches(&e));
        assert!(filter(&[], &["account-", "user-"]).matches(&e));
        assert!(!filter(&[], &["account-"]).matches(&e));
        assert!(!filter(&["USER_CREATED"], &["account-"]).matches(&e));
        assert!(filter(&["USER_CREATED"], &["user-a"]).matches(&e));
    }

    #[test]
    fn refuses_oversized_filters() {
        let many = pb::EventFilter {
            types: vec!["T".into(); 65],
            stream_prefixes: vec![],
        };
        let err = EventFilter::try_from(Some(many)).unwrap_err();
        assert!(err.0.contains("65 event types"), "{}", err.0);
        let long = pb::EventFilter {
            types: vec![],
            stream_prefixes: vec!["x".repeat(300)],
        };
        assert!(EventFilter::try_from(Some(long)).is_err());
    }
}
