//! openraft's network for one group: every RPC is tagged with the group id
//! and sent over the node's shared [`RaftTransport`].
//!
//! # No snapshot to a replica that holds it
//! A leader whose log is empty (truncated, see `log_truncation`) and that
//! does not yet know how far a follower matches it has no entry to probe
//! with, so openraft sends that follower a snapshot: the whole partition,
//! serialized and streamed, which the follower then drops if it already
//! applied all of it. That is what every leader did to both its followers
//! after a restart of the cluster (a leader whose vote was committed leads
//! again at once, with no new entry of its term): every partition, whatever
//! its size, serialized and sent twice while nobody needed it, and the
//! group's log replication to a follower waits for its snapshot. So before
//! streaming one, [`GroupNetwork`] asks the follower what it holds
//! ([`Held`]): a follower on the leader's vote that applied everything the
//! snapshot holds gets nothing, and the leader learns it matches there, as
//! it would have from the follower's answer to the snapshot.
//!
//! # Commit notices wait for the next message
//! An AppendEntries whose only news for a follower that just accepted one
//! is a newer commit index is answered by [`GroupNetwork`] itself and rides
//! on the next message instead (see the `commit_notice` module).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cairn_storage::{GroupId, LogDurability, NodeId, TypeConfig};
use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed,
    StreamingError, Unreachable,
};
use openraft::network::snapshot_transport::{Chunked, SnapshotTransport};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, LogId, OptionalSend, Raft, Snapshot, SnapshotMeta, Vote};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::commit_notice::{self, Accepted};
use crate::transport::{RaftTransport, RpcKind, TransportError, decode, encode};

/// Pause between a group's tries to replicate to an unreachable peer.
const UNREACHABLE_RETRY: Duration = Duration::from_millis(200);

/// What a replica holds of a group: the answer to [`RpcKind::Applied`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// The replica's vote: the leader it follows and that leader's term.
    pub vote: Vote<NodeId>,
    /// The last log id its state machine applied.
    pub applied: Option<LogId<NodeId>>,
}

impl Held {
    /// What the local replica `raft` holds.
    pub fn of(raft: &Raft<TypeConfig>) -> Held {
        let metrics = raft.metrics();
        let metrics = metrics.borrow();
        Held {
            vote: metrics.vote,
            applied: metrics.last_applied,
        }
    }

    /// Whether a replica holding this needs no snapshot `meta` from the
    /// leader on `vote`: it accepted that leader (the same vote, so its
    /// answer to a snapshot would have been this vote too) and applied
    /// everything the snapshot holds. Applied entries are committed, so
    /// its log matches the leader's at the snapshot's last log id.
    fn covers(&self, vote: &Vote<NodeId>, meta: &SnapshotMeta<NodeId, BasicNode>) -> bool {
        self.vote == *vote
            && meta
                .last_log_id
                .is_some_and(|last| self.applied >= Some(last))
    }
}

/// What one group's replica streamed to other replicas as their leader.
#[derive(Debug, Default)]
pub struct SnapshotsSent {
    count: AtomicU64,
    bytes: AtomicU64,
}

/// [`SnapshotsSent`] read at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotTotals {
    /// Snapshots sent whole.
    pub count: u64,
    /// Bytes of the chunks peers answered, as they travel (compressed),
    /// those of sends that did not finish included.
    pub bytes: u64,
}

impl SnapshotsSent {
    /// The totals so far.
    pub fn totals(&self) -> SnapshotTotals {
        SnapshotTotals {
            count: self.count.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }
}

/// Creates the per-peer network clients of one group.
pub struct GroupNetworkFactory {
    group: GroupId,
    transport: Arc<dyn RaftTransport>,
    snapshots_sent: Arc<SnapshotsSent>,
    durability: LogDurability,
    commit_defer: Duration,
}

impl GroupNetworkFactory {
    /// The factory for `group`, sending over `transport`; every snapshot
    /// its clients stream counts in `snapshots_sent`. A commit index goes
    /// to followers only once `durability` has this node's copy of what it
    /// covers on disk, and with the next message when one goes out soon
    /// (see `commit_notice`; the group's leaders send heartbeats every
    /// `heartbeat`).
    pub fn new(
        group: GroupId,
        transport: Arc<dyn RaftTransport>,
        snapshots_sent: Arc<SnapshotsSent>,
        durability: LogDurability,
        heartbeat: Duration,
    ) -> GroupNetworkFactory {
        GroupNetworkFactory {
            group,
            transport,
            snapshots_sent,
            durability,
            commit_defer: commit_notice::defer_window(heartbeat),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for GroupNetworkFactory {
    type Network = GroupNetwork;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> GroupNetwork {
        GroupNetwork {
            group: self.group,
            target,
            addr: node.addr.clone(),
            transport: self.transport.clone(),
            snapshots_sent: self.snapshots_sent.clone(),
            durability: self.durability.clone(),
            commit_defer: self.commit_defer,
            accepted: None,
        }
    }
}

/// One group's connection to one peer.
pub struct GroupNetwork {
    group: GroupId,
    target: NodeId,
    addr: String,
    transport: Arc<dyn RaftTransport>,
    snapshots_sent: Arc<SnapshotsSent>,
    durability: LogDurability,
    /// What the peer last accepted from this client, and for how long that
    /// lets a commit notice wait (see `commit_notice`).
    accepted: Option<Accepted>,
    commit_defer: Duration,
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl GroupNetwork {
    async fn send<Req, Resp, E>(&self, kind: RpcKind, request: &Req) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let reply = self
            .transport
            .call(self.target, &self.addr, self.group, kind, encode(request))
            .await
            .map_err(|e| transport_error(&e))?;
        let reply: Result<Resp, RaftError<NodeId, E>> =
            decode(&reply).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        reply.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    /// What the peer holds of the group; `Ok(None)` when it did not say (a
    /// peer that predates [`RpcKind::Applied`] answers with an error), an
    /// error when it could not be reached (openraft backs off and tries
    /// again: nothing is serialized for a peer that is down).
    async fn held(&self) -> Result<Option<Held>, Unreachable> {
        let reply = self
            .transport
            .call(
                self.target,
                &self.addr,
                self.group,
                RpcKind::Applied,
                Vec::new(),
            )
            .await;
        match reply.and_then(|bytes| decode(&bytes)) {
            Ok(held) => Ok(Some(held)),
            Err(e) if e.unreachable => Err(Unreachable::new(&e)),
            Err(e) => {
                tracing::debug!(
                    group = self.group,
                    target = self.target,
                    "no applied state: {e}"
                );
                Ok(None)
            }
        }
    }
}

fn transport_error<E: std::error::Error>(
    e: &TransportError,
) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
    if e.unreachable {
        RPCError::Unreachable(Unreachable::new(e))
    } else {
        RPCError::Network(NetworkError::new(e))
    }
}

impl RaftNetwork<TypeConfig> for GroupNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        let now = Instant::now();
        if self
            .accepted
            .as_ref()
            .is_some_and(|a| a.defers(&rpc, now, self.commit_defer))
        {
            return Ok(AppendEntriesResponse::Success);
        }
        // Only an answered call counts (openraft drops one that times out).
        self.accepted = None;
        // A follower applies what the commit index covers: not before this
        // leader's own copy is durable (see `cairn_storage::LogDurability`).
        if let Some(committed) = rpc.leader_commit {
            self.durability
                .durable(committed.index)
                .await
                .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        }
        let sent_at = Instant::now();
        let answer = self.send(RpcKind::AppendEntries, &rpc).await;
        if let Ok(AppendEntriesResponse::Success) = answer {
            self.accepted = Some(Accepted::of(&rpc, sent_at));
        }
        answer
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let answer = self.send(RpcKind::InstallSnapshot, &rpc).await;
        if answer.is_ok() {
            let bytes = rpc.data.len() as u64;
            self.snapshots_sent
                .bytes
                .fetch_add(bytes, Ordering::Relaxed);
        }
        answer
    }

    /// Streams `snapshot` in chunks, as openraft does, unless the peer
    /// already holds it (see the module docs).
    async fn full_snapshot(
        &mut self,
        vote: Vote<NodeId>,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        if let Some(held) = self.held().await?
            && held.covers(&vote, &snapshot.meta)
        {
            tracing::debug!(
                group = self.group,
                target = self.target,
                snapshot = ?snapshot.meta.last_log_id,
                applied = ?held.applied,
                "no snapshot sent: the replica applied all it holds"
            );
            return Ok(SnapshotResponse::new(held.vote));
        }
        let mut snapshot = snapshot;
        snapshot.meta.snapshot_id = sending_id(&snapshot.meta.snapshot_id, self.target);
        let sent = Chunked::send_snapshot(self, vote, snapshot, cancel, option).await;
        if sent.is_ok() {
            self.snapshots_sent.count.fetch_add(1, Ordering::Relaxed);
        }
        sent
    }

    /// How long a group's replication to an unreachable peer waits before
    /// trying again: 200 ms, where openraft waits 500. A restarted node
    /// waited up to that long for each of its groups' leaders to notice it,
    /// a third or more of its catch-up time. Each retry reads what the peer
    /// lacks from the log (openraft does so before calling the network),
    /// which costs the survivors CPU while a peer is down: with 1000-event
    /// appends, 15% more per event at 200 ms, 40% at 100 ms (see
    /// bench/README.md, session 8).
    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(UNREACHABLE_RETRY))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        self.send(RpcKind::Vote, &rpc).await
    }
}

/// The id `snapshot_id` is sent under this time. A snapshot's bytes are
/// serialized when it is sent, so two sends of one snapshot differ; a
/// follower writes the chunks of one id into one file, and would mix
/// the two sends' chunks (a send that timed out may still have one in
/// flight when the next starts) were they under the same id. Each send
/// under its own id, the follower starts a new file for each, and a
/// chunk of another send is refused as a mismatch.
fn sending_id(snapshot_id: &str, target: NodeId) -> String {
    static SENDS: AtomicU64 = AtomicU64::new(0);
    let send = SENDS.fetch_add(1, Ordering::Relaxed);
    // The clock too: the counter starts again when the node restarts.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{snapshot_id}.{target}-{nanos:x}-{send}")
}

#[cfg(test)]
mod tests {
    use futures::future::BoxFuture;
    use openraft::CommittedLeaderId;
    use tokio::sync::mpsc;

    use super::*;
    use crate::commit_notice::tests::{log_id, request};

    /// Every send of a snapshot goes under an id of its own, which names
    /// the snapshot and the target, so a follower never writes the chunks
    /// of two sends into one file.
    #[test]
    fn each_send_of_a_snapshot_has_its_own_id() {
        let ids: Vec<String> = (0..3).map(|_| sending_id("7-T2-N1-40-ab", 3)).collect();
        for id in &ids {
            assert!(id.starts_with("7-T2-N1-40-ab.3-"), "{id}");
        }
        assert_ne!(ids[0], ids[1]);
        assert_ne!(ids[1], ids[2]);
        assert_ne!(ids[0], ids[2]);
    }

    /// Answers every AppendEntries with success, and tells which it got;
    /// while `.1` is set, records them but never answers.
    struct Recorder(
        mpsc::UnboundedSender<AppendEntriesRequest<TypeConfig>>,
        Arc<std::sync::atomic::AtomicBool>,
    );

    impl RaftTransport for Recorder {
        fn call(
            &self,
            _target: NodeId,
            _addr: &str,
            _group: GroupId,
            _kind: RpcKind,
            payload: Vec<u8>,
        ) -> BoxFuture<'static, Result<Vec<u8>, TransportError>> {
            let request = decode(&payload).expect("an AppendEntries");
            let _ = self.0.send(request);
            if self.1.load(Ordering::Relaxed) {
                return Box::pin(futures::future::pending());
            }
            let answer: Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> =
                Ok(AppendEntriesResponse::Success);
            Box::pin(async move { Ok(encode(&answer)) })
        }
    }

    #[tokio::test]
    async fn a_commit_index_goes_out_only_once_the_leader_holds_it_durably() {
        let (tx, mut sent) = mpsc::unbounded_channel();
        let durability = LogDurability::default();
        let mut factory = GroupNetworkFactory::new(
            1,
            Arc::new(Recorder(tx, Arc::default())),
            Arc::default(),
            durability.clone(),
            Duration::from_millis(100),
        );
        let mut network = factory.new_client(2, &BasicNode::default()).await;
        let id = durability.written(5);
        let request = AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            entries: Vec::new(),
            leader_commit: Some(LogId::new(CommittedLeaderId::new(1, 1), 5)),
        };
        let call = tokio::spawn(async move {
            let option = RPCOption::new(Duration::from_secs(1));
            network.append_entries(request, option).await
        });
        let early = tokio::time::timeout(Duration::from_millis(100), sent.recv()).await;
        assert!(
            early.is_err(),
            "the commit index left before the leader's fsync"
        );
        durability.flushed(id, Ok(()));
        let answer = call.await.expect("call ran").expect("answered");
        assert!(matches!(answer, AppendEntriesResponse::Success));
        assert!(sent.try_recv().is_ok());
    }

    #[tokio::test]
    async fn a_commit_notice_waits_for_the_next_message_to_a_follower_that_just_accepted() {
        let (tx, mut sent) = mpsc::unbounded_channel();
        let silent = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let durability = LogDurability::default();
        let id = durability.written(9);
        durability.flushed(id, Ok(()));
        let mut factory = GroupNetworkFactory::new(
            1,
            Arc::new(Recorder(tx, silent.clone())),
            Arc::default(),
            durability.clone(),
            Duration::from_millis(100),
        );
        let option = || RPCOption::new(Duration::from_secs(1));

        let mut replication = factory.new_client(2, &BasicNode::default()).await;
        let answer = replication.append_entries(request(5, 2, 5), option()).await;
        assert!(matches!(answer, Ok(AppendEntriesResponse::Success)));
        assert_eq!(sent.try_recv().expect("entries sent").entries.len(), 2);

        let answer = replication.append_entries(request(7, 0, 7), option()).await;
        assert!(matches!(answer, Ok(AppendEntriesResponse::Success)));
        assert!(sent.try_recv().is_err(), "the commit notice waits");

        let answer = replication.append_entries(request(7, 1, 7), option()).await;
        assert!(matches!(answer, Ok(AppendEntriesResponse::Success)));
        let next = sent.try_recv().expect("the next entries go");
        assert_eq!(
            next.leader_commit,
            Some(log_id(7)),
            "carrying the commit index"
        );

        // A call that got no answer (openraft drops it at its timeout)
        // leaves nothing accepted: the next notice goes out.
        silent.store(true, Ordering::Relaxed);
        let call = replication.append_entries(request(8, 1, 7), option());
        assert!(
            tokio::time::timeout(Duration::from_millis(10), call)
                .await
                .is_err()
        );
        assert!(sent.try_recv().is_ok(), "the entries went out, unanswered");
        silent.store(false, Ordering::Relaxed);
        let answer = replication.append_entries(request(8, 0, 8), option()).await;
        assert!(matches!(answer, Ok(AppendEntriesResponse::Success)));
        assert!(sent.try_recv().is_ok(), "the notice after it went out");

        // A leadership check goes through a new client: it always goes out.
        let mut check = factory.new_client(2, &BasicNode::default()).await;
        let answer = check.append_entries(request(8, 0, 7), option()).await;
        assert!(matches!(answer, Ok(AppendEntriesResponse::Success)));
        assert!(sent.try_recv().is_ok(), "the leadership check went out");
    }
}
