//! The Raft replicas a node runs: started at boot for the groups the
//! topology gives it, and later, as membership changes, started for groups
//! that move to it and stopped for groups that moved away.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use cairn_storage::{GroupId, META_GROUP, NodeId, Store, TypeConfig};
use openraft::{BasicNode, Raft};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::dispatcher::RaftDispatcher;
use crate::entry_slots::ProposalBudget;
use crate::error::ClusterError;
use crate::log_truncation;
use crate::network::{GroupNetworkFactory, SnapshotTotals, SnapshotsSent};
use crate::node::RaftTuning;
use crate::partition::Partition;
use crate::topology::Topology;
use crate::transport::RaftTransport;

/// A node's running replicas and what it takes to start another.
#[derive(Clone)]
pub(crate) struct Groups {
    me: NodeId,
    raft_config: Arc<openraft::Config>,
    transport: Arc<dyn RaftTransport>,
    store: Store,
    dispatcher: RaftDispatcher,
    budget: ProposalBudget,
    tuning: RaftTuning,
    /// Cancelled when the node stops; each replica's own token is a child.
    stop: CancellationToken,
    running: Arc<RwLock<HashMap<GroupId, Running>>>,
    /// What each group's replica here sent as leader since the node
    /// started, kept when the replica stops or moves away (a moved
    /// partition's snapshots are part of what the move cost).
    snapshots_sent: Arc<RwLock<HashMap<GroupId, Arc<SnapshotsSent>>>>,
    /// Starts and stops one at a time: a replica is never started while
    /// another of the same group shuts down or has its data dropped.
    changing: Arc<tokio::sync::Mutex<()>>,
    /// The partitions this node holds a replica of, as they come and go.
    partitions: Arc<watch::Sender<BTreeSet<GroupId>>>,
}

/// What this node keeps of one running replica beside its Raft (which the
/// dispatcher holds: messages for the group reach it there).
struct Running {
    /// `None` for the metadata group.
    partition: Option<Partition>,
    /// Ends the replica's own tasks (log truncation, proposer watchers).
    stop: CancellationToken,
}

impl Groups {
    pub(crate) fn new(
        me: NodeId,
        raft_config: Arc<openraft::Config>,
        transport: Arc<dyn RaftTransport>,
        store: Store,
        dispatcher: RaftDispatcher,
        tuning: RaftTuning,
        stop: CancellationToken,
    ) -> Groups {
        Groups {
            me,
            raft_config,
            transport,
            store,
            dispatcher,
            budget: ProposalBudget::for_this_machine(),
            tuning,
            stop,
            running: Arc::default(),
            snapshots_sent: Arc::default(),
            changing: Arc::default(),
            partitions: Arc::new(watch::Sender::new(BTreeSet::new())),
        }
    }

    /// Starts this node's replica of `group` unless it runs one. With
    /// `bootstrap`, a replica that was never initialized is initialized with
    /// the topology's replicas as voters (every founding member does the
    /// same); without, it waits for the group's leader to add it.
    pub(crate) async fn start(
        &self,
        group: GroupId,
        bootstrap: Option<&Topology>,
    ) -> Result<(), ClusterError> {
        let _one_at_a_time = self.changing.lock().await;
        if self.stop.is_cancelled() {
            return Err(ClusterError::ShuttingDown);
        }
        if self.raft(group).is_some() {
            return Ok(());
        }
        let sent = self
            .snapshots_sent
            .write()
            .expect("groups lock poisoned")
            .entry(group)
            .or_default()
            .clone();
        let raft = Raft::new(
            self.me,
            self.raft_config.clone(),
            GroupNetworkFactory::new(
                group,
                self.transport.clone(),
                sent.clone(),
                self.store.log_durability(group),
                self.tuning.heartbeat,
            ),
            self.store.leader_log_store(group, self.me),
            self.store.state_machine(group)?,
        )
        .await
        .map_err(|e| ClusterError::Raft(e.to_string()))?;
        self.dispatcher.register(group, raft.clone());
        if let Some(topology) = bootstrap
            && let Err(e) = initialize(topology, group, self.me, &raft).await
        {
            self.dispatcher.unregister(group);
            let _ = raft.shutdown().await;
            return Err(e);
        }
        let stop = self.stop.child_token();
        log_truncation::spawn(group, raft.clone(), self.tuning.clone(), stop.clone());
        let partition = (group != META_GROUP).then(|| {
            Partition::new(
                group,
                raft.clone(),
                self.store.reader(),
                self.budget.clone(),
                stop.clone(),
            )
        });
        self.running
            .write()
            .expect("groups lock poisoned")
            .insert(group, Running { partition, stop });
        if group != META_GROUP {
            self.partitions.send_modify(|p| {
                p.insert(group);
            });
        }
        Ok(())
    }

    /// Stops this node's replica of `group` and drops its data: the group
    /// went on without it. Should the group come back here, its replica
    /// starts empty, as on a new node (a replica left with its old vote and
    /// membership would stand for elections it cannot win, and refuse the
    /// leader that adds it back).
    pub(crate) async fn stop(&self, group: GroupId) {
        let _one_at_a_time = self.changing.lock().await;
        if !self.shut_down(group).await {
            return;
        }
        let store = self.store.clone();
        let dropped = tokio::task::spawn_blocking(move || store.drop_group(group))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        match dropped {
            Ok(()) => info!(
                group,
                "replica stopped and its data dropped: the group no longer includes this node"
            ),
            Err(e) => warn!(group, "replica stopped; dropping its data failed: {e}"),
        }
    }

    /// Stops every replica (the node is shutting down); none starts after.
    pub(crate) async fn stop_all(&self) {
        self.stop.cancel();
        let _one_at_a_time = self.changing.lock().await;
        for group in self.ids() {
            self.shut_down(group).await;
        }
    }

    /// Stops the local Raft of `group` and what serves it; false when none ran.
    async fn shut_down(&self, group: GroupId) -> bool {
        let Some(running) = self
            .running
            .write()
            .expect("groups lock poisoned")
            .remove(&group)
        else {
            return false;
        };
        self.partitions.send_modify(|p| {
            p.remove(&group);
        });
        running.stop.cancel();
        if let Some(raft) = self.dispatcher.unregister(group)
            && let Err(e) = raft.shutdown().await
        {
            warn!(group, "raft shutdown: {e}");
        }
        true
    }

    /// The local Raft of `group`, if this node runs one.
    pub(crate) fn raft(&self, group: GroupId) -> Option<Raft<TypeConfig>> {
        self.dispatcher.raft(group)
    }

    /// The local replica of partition `group`, if this node runs one.
    pub(crate) fn partition(&self, group: GroupId) -> Option<Partition> {
        let running = self.running.read().expect("groups lock poisoned");
        running.get(&group).and_then(|r| r.partition.clone())
    }

    /// Every group this node runs a replica of, in order.
    pub(crate) fn ids(&self) -> Vec<GroupId> {
        let running = self.running.read().expect("groups lock poisoned");
        let mut ids: Vec<_> = running.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Sees the set of local partitions change.
    pub(crate) fn watch_partitions(&self) -> watch::Receiver<BTreeSet<GroupId>> {
        self.partitions.subscribe()
    }

    /// Snapshots this node's replicas of `group` streamed as its leader
    /// since the node started, those of replicas gone since included.
    pub(crate) fn snapshots_sent(&self, group: GroupId) -> SnapshotTotals {
        let sent = self.snapshots_sent.read().expect("groups lock poisoned");
        sent.get(&group).map(|s| s.totals()).unwrap_or_default()
    }
}

/// Initializes `group` with its replicas as voters if this node never has.
/// Every founding replica does the same with the same membership, which
/// openraft allows; the preferred replica (first in the table) then stands
/// for election so leaders spread over the nodes.
async fn initialize(
    topology: &Topology,
    group: GroupId,
    me: NodeId,
    raft: &Raft<TypeConfig>,
) -> Result<(), ClusterError> {
    if raft
        .is_initialized()
        .await
        .map_err(|e| ClusterError::Raft(e.to_string()))?
    {
        return Ok(());
    }
    let members: BTreeMap<NodeId, BasicNode> = topology
        .replicas(group)
        .iter()
        .filter_map(|id| Some((*id, BasicNode::new(topology.address(*id)?))))
        .collect();
    if let Err(e) = raft.initialize(members).await {
        // Already initialized by a message from a peer that got there first.
        tracing::debug!(group, "initialize: {e}");
    }
    if topology.replicas(group).first() == Some(&me) {
        let _ = raft.trigger().elect().await;
    }
    Ok(())
}
