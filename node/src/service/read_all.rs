//! `ReadAll`: every event of every stream in one deterministic order,
//! `(timestamp, partition, position)`, resumable from a checkpoint.
//!
//! The node that receives the call reads each partition's log on that
//! partition's leader ([`partition_log::read_partition`]) and merges them.
//! Within a partition, timestamps never decrease and positions increase, so
//! the merge is a k-way merge of sorted runs: an event is emitted only once
//! no partition can still hold an unread event that sorts before it (every
//! partition not read to its end has been read past it). Partitions are read
//! in chunks, refilled on demand, so a page reads about what it returns.
//!
//! A checkpoint holds, per partition, the last position delivered or passed
//! over by the filter; resuming from it continues every partition's log right
//! after, on any node (positions are replicated state), so no event is
//! repeated or skipped across leader changes and restarts. Events appended
//! while pages are being read can sort before events already returned (their
//! timestamp is older than the newest one delivered): they come in the next
//! page, still exactly once; with no writes in between, any two reads give
//! the same order.
//!
//! Events of deleted streams stay in the partition logs, so read-all shows
//! them, as EventStoreDB's `$all` does until a scavenge, until they are
//! purged from disk.

use std::cmp::Ordering;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;

use cairn_cluster::ClusterNode;
use cairn_proto::v1 as pb;
use tonic::Status;

use crate::error::NodeError;
use crate::limits::InvalidInput;
use crate::service::partition_log::{self, EventFilter, MAX_SCAN};

/// Events returned by one `ReadAll` when the caller sets no limit.
pub const DEFAULT_LIMIT: usize = 1000;
/// Most events returned by one `ReadAll`.
pub const MAX_LIMIT: usize = 10_000;
/// A page stops growing once its events' payloads reach this size.
const MAX_PAGE_BYTES: usize = 16 << 20;
/// Most positions one `ReadAll` looks at (a selective filter may need many);
/// past it the page ends early with `end = false`.
const MAX_SCANNED_PER_PAGE: u64 = 200_000;
/// Fewest events a partition is asked for at a time.
const MIN_CHUNK: u32 = 32;

/// Serves `ReadAll`: validates the request and reads one page.
pub async fn read_all(
    node: &Arc<ClusterNode>,
    request: pb::ReadAllRequest,
) -> Result<pb::ReadAllReply, Status> {
    let read = AllRead::new(
        node.topology().partitions,
        request.from,
        request.from_timestamp_ms,
        request.limit,
        request.filter,
    )?;
    let page = read_page(&ClusterSource::new(node.clone()), &read).await?;
    Ok(pb::ReadAllReply {
        events: page.events,
        checkpoint: Some(pb::Checkpoint {
            positions: page.checkpoint,
        }),
        end: page.end,
    })
}

/// Reads one partition's log for the merge.
pub trait PartitionSource: Send + Sync {
    /// Reads per `request` (`wait_ms` is 0) on the partition's leader.
    fn fetch(
        &self,
        request: pb::ReadPartitionRequest,
    ) -> impl Future<Output = Result<pb::ReadPartitionReply, Status>> + Send;
}

/// Partitions read on their leaders across the cluster.
pub struct ClusterSource {
    node: Arc<ClusterNode>,
}

impl ClusterSource {
    pub fn new(node: Arc<ClusterNode>) -> ClusterSource {
        ClusterSource { node }
    }
}

impl PartitionSource for ClusterSource {
    fn fetch(
        &self,
        request: pb::ReadPartitionRequest,
    ) -> impl Future<Output = Result<pb::ReadPartitionReply, Status>> + Send {
        partition_log::read_partition(&self.node, request)
    }
}

/// A validated read of all streams.
#[derive(Clone, Debug)]
pub struct AllRead {
    /// Per partition, the last position already delivered (0 = none).
    pub from: Vec<u64>,
    pub from_ts: Option<i64>,
    pub limit: usize,
    pub filter: pb::EventFilter,
}

impl AllRead {
    /// Checks a request against the cluster's `partitions`; `limit` 0 means
    /// [`DEFAULT_LIMIT`], and more than [`MAX_LIMIT`] is capped.
    pub fn new(
        partitions: u32,
        from: Option<pb::Checkpoint>,
        from_ts: Option<i64>,
        limit: u32,
        filter: Option<pb::EventFilter>,
    ) -> Result<AllRead, NodeError> {
        let mut positions = from.map(|c| c.positions).unwrap_or_default();
        if positions.len() > partitions as usize {
            return Err(InvalidInput(format!(
                "the checkpoint names {} partitions but the cluster has {partitions}; \
                 it comes from another cluster",
                positions.len()
            ))
            .into());
        }
        positions.resize(partitions as usize, 0);
        EventFilter::try_from(filter.clone())?;
        Ok(AllRead {
            from: positions,
            from_ts,
            limit: match limit as usize {
                0 => DEFAULT_LIMIT,
                n => n.min(MAX_LIMIT),
            },
            filter: filter.unwrap_or_default(),
        })
    }
}

/// One page of a read of all streams.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Page {
    /// In `(timestamp, partition, position)` order.
    pub events: Vec<pb::RecordedEvent>,
    /// Per partition, the last position delivered or passed over.
    pub checkpoint: Vec<u64>,
    /// Every partition was read to its end (as of its last read).
    pub end: bool,
}

/// The merge order of events.
type Key = (i64, u32, u64);

fn key(e: &pb::RecordedEvent) -> Key {
    (e.timestamp_ms, e.partition, e.position)
}

/// One partition's part of the merge.
struct Cursor {
    partition: u32,
    /// Fetched events that passed the filter and are not emitted yet.
    buffer: VecDeque<pb::RecordedEvent>,
    /// Every position up to this one has been fetched.
    scanned_to: u64,
    /// The timestamp at `scanned_to`: unread events sort after
    /// `(frontier_ts, partition, scanned_to)`.
    frontier_ts: i64,
    /// The last fetch reached the end of the log.
    end: bool,
    /// Events to ask for next time.
    chunk: u32,
}

impl Cursor {
    fn request(&self, read: &AllRead) -> pb::ReadPartitionRequest {
        pb::ReadPartitionRequest {
            partition: self.partition,
            from_position: self.scanned_to + 1,
            from_timestamp_ms: read.from_ts,
            limit: self.chunk,
            filter: Some(read.filter.clone()),
            wait_ms: 0,
            forwarded: false,
        }
    }

    /// Takes in a fetched chunk; returns how many positions it advanced.
    fn absorb(&mut self, reply: pb::ReadPartitionReply) -> u64 {
        let before = self.scanned_to;
        self.buffer.extend(
            reply
                .events
                .into_iter()
                .filter(|e| e.position > before && e.partition == self.partition),
        );
        if reply.scanned_to > before {
            self.scanned_to = reply.scanned_to;
            self.frontier_ts = reply.scanned_to_timestamp_ms;
        }
        self.end = reply.end;
        self.chunk = (self.chunk * 2).min(MAX_SCAN);
        self.scanned_to - before
    }

    /// The least key an event this cursor has not fetched can have, unless
    /// its log was read to the end.
    fn frontier(&self) -> Option<Key> {
        (!self.end && self.buffer.is_empty()).then_some((
            self.frontier_ts,
            self.partition,
            self.scanned_to,
        ))
    }

    fn checkpoint(&self) -> u64 {
        match self.buffer.front() {
            Some(e) => e.position - 1,
            None => self.scanned_to,
        }
    }
}

/// Reads one page: the first `read.limit` events (fewer when the page
/// reaches [`MAX_PAGE_BYTES`] or [`MAX_SCANNED_PER_PAGE`]) after
/// `read.from`, in merge order.
pub async fn read_page<S: PartitionSource>(source: &S, read: &AllRead) -> Result<Page, Status> {
    let partitions = read.from.len();
    let first_chunk = u32::try_from(read.limit.div_ceil(partitions.max(1)) * 2)
        .unwrap_or(MAX_SCAN)
        .clamp(MIN_CHUNK, MAX_SCAN);
    let mut cursors: Vec<Cursor> = read
        .from
        .iter()
        .enumerate()
        .map(|(p, from)| Cursor {
            partition: p as u32,
            buffer: VecDeque::new(),
            scanned_to: *from,
            frontier_ts: i64::MIN,
            end: false,
            chunk: first_chunk,
        })
        .collect();
    let mut scanned = refill(source, read, &mut cursors, (0..partitions).collect()).await?;
    let (mut events, mut bytes) = (Vec::new(), 0);
    while events.len() < read.limit && bytes < MAX_PAGE_BYTES {
        let head = cursors
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.buffer.front().map(|e| (key(e), i)))
            .min_by(|a, b| a.0.cmp(&b.0));
        // Cursors that may still hold an unread event sorting before `head`.
        let blocking: Vec<usize> = cursors
            .iter()
            .enumerate()
            .filter(|(_, c)| {
                c.frontier()
                    .is_some_and(|f| head.is_none_or(|(h, _)| f.cmp(&h) == Ordering::Less))
            })
            .map(|(i, _)| i)
            .collect();
        if blocking.is_empty() {
            let Some((_, i)) = head else { break };
            let event = cursors[i].buffer.pop_front().expect("the head is buffered");
            bytes += event.data.len() + event.metadata.len() + event.stream.len() + 64;
            events.push(event);
            continue;
        }
        if scanned >= MAX_SCANNED_PER_PAGE {
            break;
        }
        scanned += refill(source, read, &mut cursors, blocking).await?;
    }
    Ok(Page {
        events,
        checkpoint: cursors.iter().map(Cursor::checkpoint).collect(),
        end: cursors.iter().all(|c| c.end && c.buffer.is_empty()),
    })
}

/// Fetches the next chunk of the cursors at `which`, concurrently.
async fn refill<S: PartitionSource>(
    source: &S,
    read: &AllRead,
    cursors: &mut [Cursor],
    which: Vec<usize>,
) -> Result<u64, Status> {
    let fetches = which
        .iter()
        .map(|i| source.fetch(cursors[*i].request(read)));
    let replies = futures::future::join_all(fetches).await;
    let mut scanned = 0;
    for (i, reply) in which.into_iter().zip(replies) {
        scanned += cursors[i].absorb(reply?);
    }
    Ok(scanned)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Mutex;

    /// Partition logs in memory, read the way a leader reads them.
    struct Logs {
        logs: Vec<Vec<pb::RecordedEvent>>,
        fetches: Mutex<usize>,
    }

    impl Logs {
        /// `spec[p]` lists the timestamps of partition p's events, in order;
        /// streams are `s<p>-<i % 3>`, types alternate `A`, `B`.
        fn new(spec: &[&[i64]]) -> Logs {
            let logs = spec
                .iter()
                .enumerate()
                .map(|(p, timestamps)| {
                    timestamps
                        .iter()
                        .enumerate()
                        .map(|(i, ts)| pb::RecordedEvent {
                            id: format!("{p}/{}", i + 1),
                            stream: format!("s{p}-{}", i % 3),
                            r#type: if i % 2 == 0 { "A" } else { "B" }.into(),
                            timestamp_ms: *ts,
                            partition: p as u32,
                            position: i as u64 + 1,
                            ..Default::default()
                        })
                        .collect()
                })
                .collect();
            Logs {
                logs,
                fetches: Mutex::new(0),
            }
        }

        fn all_sorted(&self, filter: &pb::EventFilter) -> Vec<String> {
            let filter = EventFilter::try_from(Some(filter.clone())).unwrap();
            let mut all: Vec<_> = self.logs.iter().flatten().collect();
            all.sort_by_key(|e| key(e));
            all.into_iter()
                .filter(|e| filter.matches(&storage_event(e)))
                .map(|e| e.id.clone())
                .collect()
        }
    }

    fn storage_event(e: &pb::RecordedEvent) -> cairn_storage::RecordedEvent {
        cairn_storage::RecordedEvent {
            id: e.id.clone(),
            stream: e.stream.clone(),
            event_type: e.r#type.clone(),
            data: e.data.clone(),
            metadata: e.metadata.clone(),
            correlation_id: String::new(),
            causation_id: String::new(),
            timestamp_ms: e.timestamp_ms,
            version: e.version,
            position: e.position,
        }
    }

    impl PartitionSource for Logs {
        fn fetch(
            &self,
            r: pb::ReadPartitionRequest,
        ) -> impl Future<Output = Result<pb::ReadPartitionReply, Status>> + Send {
            *self.fetches.lock().unwrap() += 1;
            let filter = EventFilter::try_from(r.filter).unwrap();
            let log = &self.logs[r.partition as usize];
            let from = r.from_position.max(1) as usize;
            let start = log
                .iter()
                .position(|e| {
                    e.position as usize >= from
                        && r.from_timestamp_ms.is_none_or(|t| e.timestamp_ms >= t)
                })
                .unwrap_or(log.len());
            let taken: Vec<_> = log[start..].iter().take(r.limit as usize).collect();
            let mut reply = pb::ReadPartitionReply {
                scanned_to: (start as u64).max(from as u64 - 1),
                end: start + taken.len() == log.len(),
                ..Default::default()
            };
            for e in taken {
                reply.scanned_to = e.position;
                reply.scanned_to_timestamp_ms = e.timestamp_ms;
                if filter.matches(&storage_event(e)) {
                    reply.events.push(e.clone());
                }
            }
            if reply.end {
                reply.scanned_to = reply.scanned_to.max(log.len() as u64);
            }
            std::future::ready(Ok(reply))
        }
    }

    fn read(partitions: usize, limit: usize, filter: pb::EventFilter) -> AllRead {
        AllRead {
            from: vec![0; partitions],
            from_ts: None,
            limit,
            filter,
        }
    }

    /// Reads everything page by page; returns the ids and the page count.
    async fn read_in_pages(logs: &Logs, mut read: AllRead) -> (Vec<String>, usize) {
        let (mut ids, mut pages) = (Vec::new(), 0);
        loop {
            let page = read_page(logs, &read).await.unwrap();
            pages += 1;
            ids.extend(page.events.iter().map(|e| e.id.clone()));
            assert!(page.events.len() <= read.limit);
            read.from = page.checkpoint;
            if page.end {
                return (ids, pages);
            }
            assert!(pages < 10_000, "no progress");
        }
    }

    fn skewed() -> Logs {
        Logs::new(&[
            &[1, 1, 2, 9, 9, 9, 10, 30],
            &[],
            &[0, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 6, 40],
            &[3, 3, 4, 20],
        ])
    }

    #[tokio::test]
    async fn pages_of_any_size_give_the_merge_order_exactly_once() {
        let logs = skewed();
        let want = logs.all_sorted(&Default::default());
        for limit in [1, 2, 3, 5, 7, 100] {
            let (ids, _) = read_in_pages(&logs, read(4, limit, Default::default())).await;
            assert_eq!(ids, want, "limit {limit}");
        }
    }

    #[tokio::test]
    async fn filters_and_timestamps_skip_but_never_lose() {
        let logs = skewed();
        let by_type = pb::EventFilter {
            types: vec!["B".into()],
            stream_prefixes: vec![],
        };
        let by_prefix = pb::EventFilter {
            types: vec![],
            stream_prefixes: vec!["s2-".into(), "s3-1".into()],
        };
        for filter in [by_type, by_prefix] {
            let want = logs.all_sorted(&filter);
            assert!(!want.is_empty());
            for limit in [1, 4, 50] {
                let (ids, _) = read_in_pages(&logs, read(4, limit, filter.clone())).await;
                assert_eq!(ids, want, "limit {limit} filter {filter:?}");
            }
        }
        let mut from_5 = read(4, 3, Default::default());
        from_5.from_ts = Some(5);
        let (ids, _) = read_in_pages(&logs, from_5).await;
        let all = logs.all_sorted(&Default::default());
        let want: Vec<_> = all
            .iter()
            .filter(|id| {
                let (p, i) = id.split_once('/').unwrap();
                let e = &logs.logs[p.parse::<usize>().unwrap()][i.parse::<usize>().unwrap() - 1];
                e.timestamp_ms >= 5
            })
            .cloned()
            .collect();
        assert_eq!(ids, want);
    }

    #[tokio::test]
    async fn a_checkpoint_resumes_after_new_events_arrive() {
        let mut logs = skewed();
        let page = read_page(&logs, &read(4, 6, Default::default()))
            .await
            .unwrap();
        let mut seen: Vec<String> = page.events.iter().map(|e| e.id.clone()).collect();
        // New events land in every partition, some older than events seen.
        for (p, log) in logs.logs.iter_mut().enumerate() {
            let position = log.len() as u64 + 1;
            log.push(pb::RecordedEvent {
                id: format!("{p}/{position}"),
                stream: format!("s{p}-new"),
                timestamp_ms: 2,
                partition: p as u32,
                position,
                ..Default::default()
            });
        }
        let mut rest = read(4, 4, Default::default());
        rest.from = page.checkpoint;
        seen.extend(read_in_pages(&logs, rest).await.0);
        let unique: HashSet<_> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "a duplicate in {seen:?}");
        let total: usize = logs.logs.iter().map(Vec::len).sum();
        assert_eq!(seen.len(), total);
    }

    #[tokio::test]
    async fn a_page_reads_about_what_it_returns() {
        let spec: Vec<Vec<i64>> = (0..16).map(|_| (0..1000).collect()).collect();
        let spec: Vec<&[i64]> = spec.iter().map(Vec::as_slice).collect();
        let logs = Logs::new(&spec);
        let page = read_page(&logs, &read(16, 160, Default::default()))
            .await
            .unwrap();
        assert_eq!(page.events.len(), 160);
        assert!(
            *logs.fetches.lock().unwrap() <= 32,
            "{} fetches",
            logs.fetches.lock().unwrap()
        );
        assert_eq!(page.checkpoint, vec![10; 16]);
        assert!(!page.end);
    }

    #[test]
    fn checkpoints_are_checked_against_the_partition_count() {
        let cp = |positions: Vec<u64>| Some(pb::Checkpoint { positions });
        let read = AllRead::new(4, cp(vec![3, 1]), None, 0, None).unwrap();
        assert_eq!(read.from, vec![3, 1, 0, 0]);
        assert_eq!(read.limit, DEFAULT_LIMIT);
        let err = AllRead::new(2, cp(vec![1, 2, 3]), None, 0, None).unwrap_err();
        assert!(err.to_string().contains("another cluster"), "{err}");
        assert_eq!(
            AllRead::new(1, None, None, 1_000_000, None).unwrap().limit,
            MAX_LIMIT
        );
    }
}
