//! One local replica of a partition: the write path (group commit of many
//! appends into one Raft entry) and linearizable reads.

use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cairn_storage::{
    AppendOutcome, Command, CommandResult, ExpectedVersion, GroupId, NodeId, Reader, StreamAppend,
    TypeConfig,
};
use openraft::error::{CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError};
use openraft::metrics::RaftServerMetrics;
use openraft::{BasicNode, Raft, RaftMetrics, ServerState};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::entry_slots::{EntrySlots, ProposalBudget};
use crate::error::ClusterError;

/// Most appends group-committed into one Raft entry.
const MAX_APPENDS_PER_ENTRY: usize = 2048;
/// Most payload bytes group-committed into one Raft entry.
const MAX_BYTES_PER_ENTRY: usize = 1 << 20;
/// Appends waiting for a proposal; beyond it callers wait (backpressure).
const QUEUE_DEPTH: usize = 16 * 1024;

type AppendReply = oneshot::Sender<Result<AppendOutcome, ClusterError>>;

/// A replica of one partition on this node.
#[derive(Clone)]
pub struct Partition {
    group: GroupId,
    raft: Raft<TypeConfig>,
    reader: Reader,
    appends: mpsc::Sender<(StreamAppend, AppendReply)>,
    /// Cancelled when this node's replica stops (the group moved away).
    removed: CancellationToken,
    /// True while the leader hands the group over: writes and linearizable
    /// reads wait, so no message refreshes the followers' leader lease.
    held: Arc<watch::Sender<bool>>,
    /// Taken by a leader transfer of the partition, one at a time.
    transferring: Arc<tokio::sync::Mutex<()>>,
    /// The term of this node's leadership and the last log index it held
    /// at its first read in that term: no read index goes below it (see
    /// [`Partition::read_index`]).
    read_floor: Arc<Mutex<(u64, u64)>>,
}

/// Holds a partition's writes and linearizable reads until dropped.
pub(crate) struct Hold(Arc<watch::Sender<bool>>);

impl Drop for Hold {
    fn drop(&mut self) {
        self.0.send_replace(false);
    }
}

impl Partition {
    /// Wraps the local Raft of `group` and starts its proposer, which shares
    /// `budget` with the node's other partitions. `removed` is cancelled
    /// when the replica stops.
    pub fn new(
        group: GroupId,
        raft: Raft<TypeConfig>,
        reader: Reader,
        budget: ProposalBudget,
        removed: CancellationToken,
    ) -> Partition {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let held = Arc::new(watch::Sender::new(false));
        tokio::spawn(
            propose_appends(group, raft.clone(), rx, budget, held.subscribe())
                .instrument(tracing::info_span!("proposer", partition = group)),
        );
        Partition {
            group,
            raft,
            reader,
            appends: tx,
            removed,
            held,
            transferring: Arc::default(),
            read_floor: Arc::default(),
        }
    }

    /// Cancelled once this node's replica of the partition stops: the
    /// partition moved to other nodes. Tasks that serve it end then.
    pub fn removed(&self) -> &CancellationToken {
        &self.removed
    }

    /// Holds writes and linearizable reads until the guard drops.
    pub(crate) fn hold(&self) -> Hold {
        self.held.send_replace(true);
        Hold(self.held.clone())
    }

    /// Taken by a leader transfer of this partition.
    pub(crate) fn transferring(&self) -> &tokio::sync::Mutex<()> {
        &self.transferring
    }

    /// Waits while the partition is held.
    async fn unheld(&self) {
        if *self.held.borrow() {
            let _ = self.held.subscribe().wait_for(|held| !held).await;
        }
    }

    /// The partition's id.
    pub fn group(&self) -> GroupId {
        self.group
    }

    /// The Raft instance.
    pub fn raft(&self) -> &Raft<TypeConfig> {
        &self.raft
    }

    /// Live Raft metrics of this replica.
    pub fn metrics(&self) -> watch::Receiver<RaftMetrics<NodeId, BasicNode>> {
        self.raft.metrics()
    }

    /// Sees the partition's last applied log index move, once per
    /// state-machine write: what a follower of the applied state waits on.
    /// [`Partition::metrics`] changes on every turn of the Raft core, several
    /// times per entry.
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.reader.watch_applied(self.group)
    }

    /// Sees the replica's vote, role, leader and membership change, and
    /// nothing else: what a watcher of leadership waits on.
    pub fn leadership(&self) -> watch::Receiver<RaftServerMetrics<NodeId, BasicNode>> {
        self.raft.server_metrics()
    }

    /// The leader this replica knows of.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.server_metrics().borrow().current_leader
    }

    /// Appends to one stream. Returns once the entry carrying it is committed
    /// by a majority (fsynced on each) and applied here. Concurrent appends to
    /// the partition share Raft entries and fsyncs.
    pub async fn append(&self, append: StreamAppend) -> Result<AppendOutcome, ClusterError> {
        let (tx, rx) = oneshot::channel();
        self.appends
            .send((append, tx))
            .await
            .map_err(|_| ClusterError::ShuttingDown)?;
        rx.await.map_err(|_| ClusterError::ShuttingDown)?
    }

    /// Soft-deletes or tombstones a stream; returns its version at deletion.
    pub async fn delete(
        &self,
        stream: String,
        expected: ExpectedVersion,
        hard: bool,
    ) -> Result<u64, ClusterError> {
        match self
            .write(Command::Delete {
                stream,
                expected,
                hard,
            })
            .await?
        {
            CommandResult::Deleted(result) => Ok(result?),
            other => Err(unexpected(other)),
        }
    }

    /// Replicates an actor snapshot taken at `version` of `stream`.
    pub async fn save_actor_snapshot(
        &self,
        stream: String,
        version: u64,
        state: Bytes,
    ) -> Result<(), ClusterError> {
        self.write(Command::SaveActorSnapshot {
            stream,
            version,
            state,
        })
        .await
        .map(|_| ())
    }

    /// Replicates several snapshots of one actor's stream in one entry.
    pub async fn save_actor_snapshots(
        &self,
        stream: String,
        snapshots: Vec<(u64, Bytes)>,
    ) -> Result<(), ClusterError> {
        self.write(Command::SaveActorSnapshots { stream, snapshots })
            .await
            .map(|_| ())
    }

    /// Proposes one command and waits for its result.
    pub async fn write(&self, command: Command) -> Result<CommandResult, ClusterError> {
        let group = self.group;
        self.unheld().await;
        self.raft
            .client_write(command)
            .await
            .map(|response| response.data)
            .map_err(|e| write_error(group, e))
    }

    /// Runs `read` against the applied state on a blocking thread,
    /// linearizably: a read after an acknowledged write sees it, also right
    /// after a failover.
    ///
    /// openraft's read index, with the read overlapped: the leadership check
    /// (a heartbeat round to the followers, which fixes the read index:
    /// everything committed when the call came) and the read start
    /// together, the read first noting the log id applied when it began. If
    /// that is at or past the read index, the read saw a state that holds
    /// every acknowledged write and was taken after the call came, and it
    /// stands; otherwise (something committed was not applied here yet) the
    /// read runs again once it is. A call then waits for the slower of the
    /// two rather than for both in turn.
    pub async fn read<T, F>(&self, read: F) -> Result<T, ClusterError>
    where
        T: Send + 'static,
        F: Fn(&Reader, GroupId) -> Result<T, cairn_storage::Error> + Send + Sync + 'static,
    {
        let read = Arc::new(read);
        let overlapped = Arc::clone(&read);
        let started = Instant::now();
        let ((read_index, confirmed), (local, read_done)) = tokio::join!(
            async { (self.read_index().await, started.elapsed()) },
            async {
                let local = self.read_local(move |reader, group| {
                    let applied = reader.applied_log_id(group)?;
                    Ok((applied, overlapped(reader, group)))
                });
                (local.await, started.elapsed())
            },
        );
        // Where a slow read waited: the heartbeat round, or the read itself.
        tracing::debug!(
            group = self.group,
            confirmed_us = confirmed.as_micros(),
            read_us = read_done.as_micros(),
            "linearizable read"
        );
        let read_index = read_index?;
        let (applied, value) = local?;
        if applied.map(|id| id.index) >= read_index {
            return value.map_err(ClusterError::from);
        }
        tracing::debug!(
            group = self.group,
            ?applied,
            ?read_index,
            "read began before the read index was applied: reading again"
        );
        self.wait_applied(read_index).await?;
        self.read_local(move |reader, group| read(reader, group))
            .await
    }

    /// Confirms leadership with a quorum and waits for the applied state to
    /// catch up with the commit point (openraft's linearizable read).
    pub async fn ensure_leader(&self) -> Result<(), ClusterError> {
        let read_index = self.read_index().await?;
        self.wait_applied(read_index).await
    }

    /// Confirms leadership with a quorum (a heartbeat round) and returns the
    /// read index: the log index a linearizable read must see applied.
    ///
    /// openraft's read index is its commit index, or the leader's first
    /// entry of its term if later. That misses entries committed before a
    /// restart: a node whose committed vote names itself comes back as the
    /// leader of the same term at once, with no entry of its own, and its
    /// commit index starts at what its state machine had kept (Cairn saves
    /// no commit index), which after a power loss may be short of what it
    /// acknowledged. So a read also waits for every entry the node held at
    /// its first read in this term: they were all in its log before any
    /// read it serves now began, and committing them is the leader's job.
    async fn read_index(&self) -> Result<Option<u64>, ClusterError> {
        let group = self.group;
        self.unheld().await;
        let read_index = self
            .raft
            .get_read_log_id()
            .await
            .map(|(read_index, _applied)| read_index.map(|id| id.index))
            .map_err(|e| read_error(group, e))?;
        // Only a log the metrics show this node leading with: a view that
        // still shows it following could name entries its leadership cuts.
        let leading = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            (m.state == ServerState::Leader)
                .then(|| (m.current_term, m.last_log_index.unwrap_or(0)))
        };
        let Some((term, last)) = leading else {
            return Ok(read_index);
        };
        let mut floor = self
            .read_floor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if floor.0 != term {
            *floor = (term, last);
        }
        Ok(read_index.max(Some(floor.1)))
    }

    /// Waits until this replica has applied the log up to `index`.
    async fn wait_applied(&self, index: Option<u64>) -> Result<(), ClusterError> {
        self.raft
            .wait(None)
            .applied_index_at_least(index, "linearizable read")
            .await
            .map(|_| ())
            .map_err(|_| ClusterError::ShuttingDown)
    }

    /// Runs `read` against this replica's applied state without confirming
    /// leadership (may be stale).
    pub async fn read_local<T, F>(&self, read: F) -> Result<T, ClusterError>
    where
        T: Send + 'static,
        F: FnOnce(&Reader, GroupId) -> Result<T, cairn_storage::Error> + Send + 'static,
    {
        let reader = self.reader.clone();
        let group = self.group;
        tokio::task::spawn_blocking(move || read(&reader, group))
            .await
            .map_err(|_| ClusterError::ShuttingDown)?
            .map_err(ClusterError::from)
    }
}

/// Drains queued appends into Raft entries: takes whatever is waiting (up to
/// the entry limits) as soon as it has a slot for another entry in flight
/// (see [`EntrySlots`]), so a lone writer pays no batching delay and many
/// writers share entries and fsyncs.
async fn propose_appends(
    group: GroupId,
    raft: Raft<TypeConfig>,
    mut queue: mpsc::Receiver<(StreamAppend, AppendReply)>,
    budget: ProposalBudget,
    mut held: watch::Receiver<bool>,
) {
    let slots = EntrySlots::new(budget);
    while let Some(first) = queue.recv().await {
        // A hold is short (a leader transfer); what queues meanwhile goes
        // out after it, in as few entries as it fits.
        let _ = held.wait_for(|held| !held).await;
        let Some(slot) = slots.take().await else {
            return;
        };
        let mut bytes = first.0.size();
        let mut batch = vec![first];
        while batch.len() < MAX_APPENDS_PER_ENTRY && bytes < MAX_BYTES_PER_ENTRY {
            match queue.try_recv() {
                Ok(next) => {
                    bytes += next.0.size();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let (appends, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        // Encoded here, once: the log, the followers and the state machine
        // all share this buffer (`cairn_storage::Appends`); the owned
        // appends are freed now, not held while the proposal is handed on.
        let command = Command::append(now_ms(), &appends);
        drop(appends);
        let group_result = raft.client_write_ff(command).await;
        tokio::spawn(async move {
            let outcome = slot
                .hold(async {
                    match group_result {
                        Ok(rx) => rx.await.map_err(|_| ClusterError::ShuttingDown),
                        Err(_) => Err(ClusterError::ShuttingDown),
                    }
                })
                .await;
            let results: Result<(), ClusterError> = match outcome {
                Ok(Ok(response)) => match response.data {
                    CommandResult::Appended(results) if results.len() == replies.len() => {
                        for (reply, result) in replies.into_iter().zip(results) {
                            let _ = reply.send(result.map_err(ClusterError::from));
                        }
                        return;
                    }
                    other => Err(unexpected(other)),
                },
                Ok(Err(e)) => Err(client_write_error(group, e)),
                Err(e) => Err(e),
            };
            if let Err(e) = results {
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        });
    }
}

/// Milliseconds since the Unix epoch by this node's clock.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn not_leader(group: GroupId, f: ForwardToLeader<NodeId, BasicNode>) -> ClusterError {
    match (f.leader_id, f.leader_node) {
        (Some(id), Some(node)) => ClusterError::NotLeader {
            group,
            leader: Some((id, node.addr)),
        },
        _ => ClusterError::NoLeader { group },
    }
}

/// A failed leadership check, in the cluster's terms.
pub(crate) fn read_error(
    group: GroupId,
    e: RaftError<NodeId, CheckIsLeaderError<NodeId, BasicNode>>,
) -> ClusterError {
    match e {
        RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)) => not_leader(group, f),
        RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)) => {
            ClusterError::NoLeader { group }
        }
        RaftError::Fatal(_) => ClusterError::ShuttingDown,
    }
}

fn client_write_error(group: GroupId, e: ClientWriteError<NodeId, BasicNode>) -> ClusterError {
    match e {
        ClientWriteError::ForwardToLeader(f) => not_leader(group, f),
        ClientWriteError::ChangeMembershipError(e) => ClusterError::Raft(e.to_string()),
    }
}

pub(crate) fn write_error(
    group: GroupId,
    e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
) -> ClusterError {
    match e {
        RaftError::APIError(e) => client_write_error(group, e),
        RaftError::Fatal(_) => ClusterError::ShuttingDown,
    }
}

fn unexpected(result: CommandResult) -> ClusterError {
    ClusterError::Raft(format!("unexpected state machine result {result:?}"))
}
