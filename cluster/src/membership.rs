//! Membership changes: `cairn admin add-node | remove-node`.
//!
//! The metadata group records the topology (members and partition table),
//! one epoch after another; a change is one new epoch, placed afresh by
//! consistent hashing, so adding or removing one of N nodes moves about
//! 1/N of the replicas, at most one per group. Nothing else is ordered:
//! every node *follows* the newest epoch it sees and converges to it on
//! its own.
//! - **Every node** starts a replica of each group the topology gives it
//!   (empty, until the group's leader adds it).
//! - **The leader of a group** whose replicas differ from the topology's
//!   adds the new ones as learners, waits until they have caught up (from
//!   its log, or by snapshot), then makes the topology's replicas the
//!   voters (openraft's joint consensus), and drops replicas it no longer
//!   wants. A partition's leader that is not among them first hands the
//!   partition to one that is and answers (see `transfer`); the metadata
//!   group's leader (or one that finds no such successor) steps down once
//!   the change commits.
//! - **A node holding a replica the topology moved away** keeps it running
//!   (the group may still need its vote) until a replica the topology names
//!   answers with a committed membership, as new as its own or newer, that
//!   leaves it out; then it stops the replica and drops its data.
//!
//! A node joining with an empty data directory asks its peers for the
//! topology (see [`discover`]); after a restart it follows the one it
//! persisted.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_storage::{Command, GroupId, META_GROUP, NodeId, Store, TypeConfig};
use openraft::{BasicNode, ChangeMembers, LogId, Raft, RaftMetrics, ServerState, StoredMembership};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::error::ClusterError;
use crate::node::{ClusterNode, META_TOPOLOGY_KEY};
use crate::topology::{MemberChange, Topology};
use crate::transport::{RaftTransport, RpcKind, decode};

/// Node-local key of the topology this node follows.
const FOLLOWED_KEY: &str = "topology";
/// How long a peer may take to say what it knows.
const ASK_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a node looks for a newer topology and converges to it.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);
/// A node that runs a metadata replica reads the topology there; every this
/// many rounds it also asks its peers (its replica may lag or be gone).
const ASK_PEERS_EVERY: u32 = 10;
/// How long a leader waits for new replicas to catch up before it tries again.
const CATCH_UP_WAIT: Duration = Duration::from_secs(30);
/// New replicas this close to the leader's log count as caught up: the
/// joint configuration then commits once they hold its entry.
const CAUGHT_UP_ENTRIES: u64 = 1_000;

/// The topology this node followed when it last ran.
pub(crate) fn persisted(store: &Store) -> Result<Option<Topology>, ClusterError> {
    store
        .node_meta(FOLLOWED_KEY)?
        .map(|json| {
            serde_json::from_slice(&json).map_err(|e| {
                ClusterError::Identity(format!("the data directory's topology is unreadable: {e}"))
            })
        })
        .transpose()
}

/// Remembers the topology this node follows.
pub(crate) fn persist(store: &Store, topology: &Topology) -> Result<(), ClusterError> {
    let json = serde_json::to_vec(topology).expect("topology serializes");
    Ok(store.put_node_meta(FOLLOWED_KEY, &json)?)
}

/// Asks every other member of `topology` what it follows; the newest
/// answer, if any answers (a node with an empty data directory asks this of
/// its `--peers` first).
pub(crate) async fn discover(
    transport: &dyn RaftTransport,
    topology: &Topology,
    me: NodeId,
) -> Option<Topology> {
    let asks = topology
        .nodes
        .iter()
        .filter(|(id, _)| **id != me)
        .map(|(id, addr)| ask_topology(transport, *id, addr));
    futures::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .max_by_key(|t| t.epoch)
}

/// Asks node `id` at `addr` an internal question about `group`; `None`
/// when it does not answer in time (or answers with something else).
async fn ask<T: serde::de::DeserializeOwned>(
    transport: &dyn RaftTransport,
    id: NodeId,
    addr: &str,
    group: GroupId,
    kind: RpcKind,
) -> Option<T> {
    let call = transport.call(id, addr, group, kind, Vec::new());
    match tokio::time::timeout(ASK_TIMEOUT, call).await {
        Ok(Ok(reply)) => decode(&reply).ok(),
        _ => None,
    }
}

/// What the node at `addr` follows; `None` when it does not answer.
async fn ask_topology(transport: &dyn RaftTransport, id: NodeId, addr: &str) -> Option<Topology> {
    ask::<Option<Topology>>(transport, id, addr, META_GROUP, RpcKind::Topology)
        .await
        .flatten()
}

/// The topology the metadata group records, read from this node's replica.
async fn recorded(node: &ClusterNode) -> Result<Option<Topology>, ClusterError> {
    let reader = node.store().reader();
    let json = tokio::task::spawn_blocking(move || reader.meta_get(META_GROUP, META_TOPOLOGY_KEY))
        .await
        .map_err(|_| ClusterError::ShuttingDown)??;
    json.map(|json| {
        serde_json::from_slice(&json)
            .map_err(|e| ClusterError::Raft(format!("recorded topology is unreadable: {e}")))
    })
    .transpose()
}

impl ClusterNode {
    /// Records the next epoch of the topology, with `change` applied, in the
    /// metadata group; replicas then move on their own (see the module
    /// docs). Runs on the metadata group's leader ([`ClusterError::NotLeader`]
    /// elsewhere). A node to add must already run and answer at its address;
    /// adding a member again at its own address changes nothing.
    pub async fn change_members(&self, change: MemberChange) -> Result<Topology, ClusterError> {
        let meta = self
            .groups()
            .raft(META_GROUP)
            .ok_or(ClusterError::NotReplica { group: META_GROUP })?;
        let _one_at_a_time = self.changing().lock().await;
        meta.ensure_linearizable()
            .await
            .map_err(|e| crate::partition::read_error(META_GROUP, e))?;
        let current = recorded(self)
            .await?
            .ok_or(ClusterError::NoLeader { group: META_GROUP })?;
        if let MemberChange::Add { id, address } = &change
            && current.address(*id) == Some(address.as_str())
        {
            // Done already (a retry of a call whose answer was lost).
            return Ok(current);
        }
        let next = current.changed(&change).map_err(ClusterError::Refused)?;
        if let MemberChange::Remove { id } = &change {
            let asks = next.nodes.iter().map(|(member, addr)| async move {
                *member == self.node_id()
                    || ask_topology(&**self.transport(), *member, addr)
                        .await
                        .is_some()
            });
            let answering = futures::future::join_all(asks)
                .await
                .into_iter()
                .filter(|a| *a)
                .count();
            if answering * 2 <= next.nodes.len() {
                return Err(ClusterError::Refused(format!(
                    "removing node {id} leaves {} members of which only {answering} answer: their groups could not change; bring the others back first",
                    next.nodes.len()
                )));
            }
        }
        if let MemberChange::Add { id, address } = &change
            && ask_topology(&**self.transport(), *id, address)
                .await
                .is_none()
        {
            return Err(ClusterError::Refused(format!(
                "node {id} does not answer at {address}: start it first (cairn serve --id {id} --listen {address} --peers <the members>), then add it"
            )));
        }
        let put = Command::MetaPut {
            key: META_TOPOLOGY_KEY.into(),
            value: serde_json::to_vec(&next)
                .expect("topology serializes")
                .into(),
        };
        meta.client_write(put)
            .await
            .map_err(|e| crate::partition::write_error(META_GROUP, e))?;
        info!(epoch = next.epoch, ?change, "membership changed");
        self.adopt(next.clone())?;
        Ok(next)
    }
}

/// Keeps this node on the newest topology: see the module docs.
pub(crate) fn spawn_follower(node: Arc<ClusterNode>) {
    tokio::spawn(async move {
        let busy: Arc<Mutex<HashSet<GroupId>>> = Arc::default();
        let mut changes = node.watch_topology();
        let mut round = 0u32;
        loop {
            round = round.wrapping_add(1);
            let follow = async {
                if let Some(newest) = newest_known(&node, round).await
                    && let Err(e) = node.adopt(newest)
                {
                    warn!("following a new topology: {e}");
                }
                converge(&node, &busy).await;
            };
            tokio::select! {
                _ = node.stopping().cancelled() => return,
                _ = follow => {}
            }
            tokio::select! {
                _ = node.stopping().cancelled() => return,
                _ = changes.changed() => {}
                _ = tokio::time::sleep(FOLLOW_EVERY) => {}
            }
        }
    });
}

/// The newest topology this node can learn of right now.
async fn newest_known(node: &ClusterNode, round: u32) -> Option<Topology> {
    let local = if node.groups().raft(META_GROUP).is_some() {
        recorded(node).await.ok().flatten()
    } else {
        None
    };
    let asked = if local.is_none() || round.is_multiple_of(ASK_PEERS_EVERY) {
        discover(&**node.transport(), &node.topology(), node.node_id()).await
    } else {
        None
    };
    local.into_iter().chain(asked).max_by_key(|t| t.epoch)
}

/// One round of converging this node's replicas to the topology it follows.
async fn converge(node: &Arc<ClusterNode>, busy: &Arc<Mutex<HashSet<GroupId>>>) {
    let topology = node.topology();
    let me = node.node_id();
    let mine = topology.groups_of(me);
    for group in &mine {
        if let Err(e) = node.groups().start(*group, None).await {
            warn!(group, "starting a replica: {e}");
        }
    }
    for group in node.groups().ids() {
        let Some(raft) = node.groups().raft(group) else {
            continue;
        };
        let (leading, settled) = {
            let m = raft.metrics();
            let m = m.borrow();
            let want: BTreeSet<NodeId> = topology.replicas(group).iter().copied().collect();
            let (voters, members) = members_of(&m);
            (
                m.state == ServerState::Leader,
                voters == want && members == want,
            )
        };
        // Nothing to do: a follower of a group it keeps, or a leader whose
        // group has the replicas wanted (most groups, most rounds).
        if (!leading && mine.contains(&group)) || (leading && settled) {
            continue;
        }
        if !busy.lock().expect("busy set poisoned").insert(group) {
            continue;
        }
        let (node, busy, topology) = (node.clone(), busy.clone(), topology.clone());
        tokio::spawn(async move {
            if leading {
                // Tried again next round; a change that cannot finish (a new
                // replica that does not catch up) says so every 30 s.
                if let Err(e) = lead_to(&node, &raft, group, &topology).await {
                    warn!(group, "moving replicas to epoch {}: {e}", topology.epoch);
                }
            } else {
                release_if_left(&node, &raft, group, &topology).await;
            }
            busy.lock().expect("busy set poisoned").remove(&group);
        });
    }
}

/// On the leader of `group`: makes the topology's replicas the group's
/// voters, and nothing else a member. A partition's leader that is not to
/// stay first hands the partition to a voter that stays, which then makes
/// the change: the partition is not left without a leader while one is
/// elected after this one steps down.
async fn lead_to(
    node: &ClusterNode,
    raft: &Raft<TypeConfig>,
    group: GroupId,
    topology: &Topology,
) -> Result<(), ClusterError> {
    let want: BTreeMap<NodeId, BasicNode> = topology
        .replicas(group)
        .iter()
        .filter_map(|id| Some((*id, BasicNode::new(topology.address(*id)?))))
        .collect();
    let want_ids: BTreeSet<NodeId> = want.keys().copied().collect();
    let (voters, members) = members_of(&raft.metrics().borrow());
    let me = node.node_id();
    if group != META_GROUP
        && !want_ids.contains(&me)
        && let Some(successor) = live_successor(node, group, &voters, &want).await
    {
        info!(
            group,
            to = successor,
            "handing the partition over before leaving it"
        );
        match node.transfer_leader(group, successor).await {
            Ok(()) => return Ok(()),
            // Then this leader makes the change itself, and steps down.
            Err(e) => warn!(group, "handing the partition to node {successor}: {e}"),
        }
    }
    let change_error = |e| crate::partition::write_error(group, e);
    if voters != want_ids {
        for (id, node) in &want {
            if !members.contains(id) {
                info!(group, node = id, "adding a replica");
                raft.add_learner(*id, node.clone(), false)
                    .await
                    .map_err(change_error)?;
            }
        }
        let newcomers: Vec<NodeId> = want_ids.difference(&voters).copied().collect();
        raft.wait(Some(CATCH_UP_WAIT))
            .metrics(
                |m| newcomers.iter().all(|id| caught_up(m, *id)),
                "new replicas caught up",
            )
            .await
            .map_err(|e| ClusterError::Raft(format!("new replicas of group {group}: {e}")))?;
        // A majority of the new voters must answer, or the change could not
        // commit and would hold the group's writes until they came back.
        let answering = answering(node, group, &want).await;
        if answering * 2 <= want.len() {
            return Err(ClusterError::Refused(format!(
                "only {answering} of the new replicas {want_ids:?} answer; waiting for a majority"
            )));
        }
        info!(group, voters = ?want_ids, "changing the group's voters");
        raft.change_membership(ChangeMembers::ReplaceAllVoters(want_ids.clone()), false)
            .await
            .map_err(change_error)?;
    }
    let (_, members) = members_of(&raft.metrics().borrow());
    let stray: BTreeSet<NodeId> = members.difference(&want_ids).copied().collect();
    if !stray.is_empty() {
        raft.change_membership(ChangeMembers::RemoveNodes(stray), false)
            .await
            .map_err(change_error)?;
    }
    Ok(())
}

/// How many of `want` answer now (this node among them).
async fn answering(
    node: &ClusterNode,
    group: GroupId,
    want: &BTreeMap<NodeId, BasicNode>,
) -> usize {
    let asks = want.iter().map(|(id, member)| async move {
        *id == node.node_id()
            || ask_view(&**node.transport(), *id, &member.addr, group)
                .await
                .is_some()
    });
    futures::future::join_all(asks)
        .await
        .into_iter()
        .filter(|answered| *answered)
        .count()
}

/// A voter of `group` that stays in `want` and answers now.
async fn live_successor(
    node: &ClusterNode,
    group: GroupId,
    voters: &BTreeSet<NodeId>,
    want: &BTreeMap<NodeId, BasicNode>,
) -> Option<NodeId> {
    for (id, member) in want {
        if *id != node.node_id()
            && voters.contains(id)
            && ask_view(&**node.transport(), *id, &member.addr, group)
                .await
                .is_some()
        {
            return Some(*id);
        }
    }
    None
}

/// Voters and all members (voters and learners) of a replica's membership.
fn members_of(m: &RaftMetrics<NodeId, BasicNode>) -> (BTreeSet<NodeId>, BTreeSet<NodeId>) {
    let membership = m.membership_config.membership();
    (
        membership.voter_ids().collect(),
        membership.nodes().map(|(id, _)| *id).collect(),
    )
}

/// Whether the leader's replication to `id` is close to its log's end: it
/// has matched some entry (it answers, and holds at least the entry that
/// made it a learner), within [`CAUGHT_UP_ENTRIES`] of the last.
fn caught_up(m: &RaftMetrics<NodeId, BasicNode>, id: NodeId) -> bool {
    matched(m, id).is_some_and(|index| index + CAUGHT_UP_ENTRIES >= m.last_log_index.unwrap_or(0))
}

/// On a leader: the last log index replica `id` has matched, if any.
pub(crate) fn matched(m: &RaftMetrics<NodeId, BasicNode>, id: NodeId) -> Option<u64> {
    let replication = m.replication.as_ref()?;
    replication.get(&id).cloned().flatten().map(|l| l.index)
}

/// What a replica knows of its group: the answer to [`RpcKind::Membership`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReplicaView {
    /// The membership it holds (possibly not yet committed).
    pub membership: StoredMembership<NodeId, BasicNode>,
    /// The last log id it applied.
    pub applied: Option<LogId<NodeId>>,
    /// The leader it follows, if it knows one.
    pub leader: Option<NodeId>,
    pub term: u64,
}

impl ReplicaView {
    /// What the local replica `raft` knows.
    pub(crate) fn of(raft: &Raft<TypeConfig>) -> ReplicaView {
        let metrics = raft.metrics();
        let m = metrics.borrow();
        ReplicaView {
            membership: (*m.membership_config).clone(),
            applied: m.last_applied,
            leader: m.current_leader,
            term: m.current_term,
        }
    }

    /// Whether it holds a committed membership that leaves `node` out.
    fn committed_without(&self, node: NodeId) -> bool {
        let log_id = self.membership.log_id();
        log_id.is_some()
            && *log_id <= self.applied
            && !self
                .membership
                .membership()
                .nodes()
                .any(|(n, _)| *n == node)
    }
}

/// Asks node `id` at `addr` what its replica of `group` knows.
async fn ask_view(
    transport: &dyn RaftTransport,
    id: NodeId,
    addr: &str,
    group: GroupId,
) -> Option<ReplicaView> {
    ask(transport, id, addr, group, RpcKind::Membership).await
}

impl ClusterNode {
    /// What the replicas of `group` the topology names know of it, asked
    /// in the topology's order: the first that answers (for a group this
    /// node holds no replica of).
    pub async fn remote_view(&self, group: GroupId) -> Option<(NodeId, ReplicaView)> {
        let topology = self.topology();
        for id in topology.replicas(group) {
            if *id == self.node_id() {
                continue;
            }
            let addr = topology.address(*id)?;
            if let Some(view) = ask_view(&**self.transport(), *id, addr, group).await {
                return Some((*id, view));
            }
        }
        None
    }
}

/// On a node the topology moved `group` away from: stops the local replica
/// once a replica the topology names holds a committed membership, at least
/// as new as this one's (this replica may have received it too), that
/// leaves this node out.
async fn release_if_left(
    node: &ClusterNode,
    raft: &Raft<TypeConfig>,
    group: GroupId,
    topology: &Topology,
) {
    let me = node.node_id();
    let mine = *raft.metrics().borrow().membership_config.log_id();
    for id in topology.replicas(group) {
        let Some(addr) = topology.address(*id) else {
            continue;
        };
        let Some(theirs) = ask_view(&**node.transport(), *id, addr, group).await else {
            continue;
        };
        if theirs.committed_without(me) && *theirs.membership.log_id() >= mine {
            // Unless a newer topology gave the group back meanwhile.
            if !node.topology().groups_of(me).contains(&group) {
                node.groups().stop(group).await;
            }
            return;
        }
    }
}
