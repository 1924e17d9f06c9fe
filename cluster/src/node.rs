//! A node's part of the cluster: its Raft groups (the metadata group and the
//! partitions it replicates), bootstrapped from the initial member list, and
//! the topology it follows as membership changes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cairn_storage::{Command, GroupId, META_GROUP, NodeId, Store};
use openraft::{BasicNode, RaftMetrics, SnapshotPolicy};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::dispatcher::RaftDispatcher;
use crate::error::ClusterError;
use crate::groups::Groups;
use crate::membership;
use crate::network::SnapshotTotals;
use crate::partition::Partition;
use crate::topology::Topology;
use crate::transport::{PeerChannels, RaftTransport};

/// Raft tuning shared by every group of a node.
#[derive(Clone, Debug)]
pub struct RaftTuning {
    /// How often a leader sends heartbeats.
    pub heartbeat: Duration,
    /// A follower that hears nothing from a leader for
    /// `election_timeout_max + rand(election_timeout_min..election_timeout_max)`
    /// stands for election (openraft 0.9's leader lease is the first term).
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// Most entries a leader keeps for a follower that lags behind; a
    /// follower further behind catches up by snapshot instead (see the
    /// `log_truncation` module).
    pub max_lag_entries: u64,
    /// A follower keeps the entries it applied this recently, for the other
    /// follower in case it becomes leader.
    pub follower_keep: Duration,
    /// How often each replica snapshots and truncates its log.
    pub truncate_every: Duration,
}

impl RaftTuning {
    /// The default timing with an election timeout of `min`..`2 × min`:
    /// a follower stands for election after hearing nothing from a leader
    /// for 3–4 × `min`; heartbeats go every `min / 3`, at most 100 ms.
    pub fn with_election_timeout(min: Duration) -> RaftTuning {
        RaftTuning {
            heartbeat: (min / 3).min(Duration::from_millis(100)),
            election_timeout_min: min,
            election_timeout_max: min * 2,
            ..RaftTuning::default()
        }
    }
}

/// Default election timeout: openraft 0.9 starts an election only after the
/// leader lease (= election_timeout_max) *plus* a random timeout in
/// [min, max) without hearing from a leader, 0.9-1.2 s with 300 ms. With
/// 500-1000 ms it was 1.5-2 s, and failover under load measured 1.9-3.2 s.
pub const DEFAULT_ELECTION_TIMEOUT: Duration = Duration::from_millis(300);

impl Default for RaftTuning {
    fn default() -> RaftTuning {
        RaftTuning {
            heartbeat: Duration::from_millis(100),
            election_timeout_min: DEFAULT_ELECTION_TIMEOUT,
            election_timeout_max: DEFAULT_ELECTION_TIMEOUT * 2,
            max_lag_entries: 20_000,
            follower_keep: Duration::from_secs(2),
            truncate_every: Duration::from_millis(500),
        }
    }
}

/// What a node joins the cluster with.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub node_id: NodeId,
    /// Initial members (id -> address), this node included.
    pub peers: BTreeMap<NodeId, String>,
    pub partitions: u32,
    pub replication: usize,
    pub tuning: RaftTuning,
}

/// How long a leader waits for a follower to take one chunk of a snapshot,
/// and for the last one, for the follower to install it all; past that,
/// openraft sends the snapshot again from the start. Its default of
/// 200 ms is far less than an install takes (O(the partition)), and less
/// than a loaded follower sometimes took for a 3 MiB chunk: the leaders
/// of a node added under load timed out ~350 times and sent its
/// partitions again and again (bench/README.md, session 30). A broken
/// connection fails the call at once; this bounds only a call that hangs.
const INSTALL_SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(60);

/// Keys of the metadata group's map.
pub const META_TOPOLOGY_KEY: &str = "topology";
/// Pause before the metadata leader tries again to record the topology.
const TOPOLOGY_RETRY: Duration = Duration::from_secs(1);

/// This node's Raft groups and what it knows of the cluster.
pub struct ClusterNode {
    node_id: NodeId,
    /// The topology this node follows: the newest epoch it has seen.
    topology: Arc<watch::Sender<Arc<Topology>>>,
    groups: Groups,
    dispatcher: RaftDispatcher,
    transport: Arc<dyn RaftTransport>,
    channels: PeerChannels,
    store: Store,
    stop: CancellationToken,
    /// Serializes membership changes proposed through this node.
    changing: tokio::sync::Mutex<()>,
    /// Serializes adopting a newer topology.
    adopting: std::sync::Mutex<()>,
}

impl ClusterNode {
    /// Starts a Raft instance for every group this node replicates and
    /// bootstraps groups that have never been initialized. Groups elect
    /// leaders on their own once a majority of their replicas run.
    ///
    /// A node with a fresh data directory first asks its peers for the
    /// cluster's topology: if the cluster already exists (it has other
    /// members or a later epoch than `--peers` describes), the node joins
    /// it, and runs the groups it is given once `cairn admin add-node`
    /// makes it a member. A node restarted with its data directory follows
    /// the topology it last knew.
    ///
    /// Refuses a data directory that belongs to another node id or cluster.
    pub async fn start(
        config: ClusterConfig,
        store: Store,
        transport: Arc<dyn RaftTransport>,
        channels: PeerChannels,
        dispatcher: RaftDispatcher,
    ) -> Result<Arc<ClusterNode>, ClusterError> {
        let me = config.node_id;
        let seed = Topology::new(
            1,
            config.peers.clone(),
            config.partitions,
            config.replication,
        );
        let persisted = membership::persisted(&store)?;
        let discovered = match persisted {
            Some(_) => None,
            None => membership::discover(&*transport, &seed, me).await,
        };
        if let Some(found) = &discovered
            && found.partitions != config.partitions
        {
            return Err(ClusterError::Identity(format!(
                "the cluster this node joins has {} partitions, not {}: start it with --partitions {}",
                found.partitions, config.partitions, found.partitions
            )));
        }
        check_identity(&store, &config, persisted.as_ref())?;
        let (topology, bootstrap) = match (persisted, discovered) {
            (Some(known), _) => {
                let founding = known == seed;
                (known, founding)
            }
            (None, Some(found)) if found != seed => {
                info!(epoch = found.epoch, "joining the existing cluster");
                (found, false)
            }
            _ => (seed, true),
        };
        membership::persist(&store, &topology)?;
        let topology = Arc::new(topology);
        let followed = Arc::new(watch::Sender::new(topology.clone()));
        dispatcher.follow(followed.subscribe());

        let raft_config = Arc::new(
            openraft::Config {
                cluster_name: "cairn".to_string(),
                heartbeat_interval: config.tuning.heartbeat.as_millis() as u64,
                election_timeout_min: config.tuning.election_timeout_min.as_millis() as u64,
                election_timeout_max: config.tuning.election_timeout_max.as_millis() as u64,
                // Snapshots and log purges are driven by `log_truncation`
                // alone: openraft neither builds nor purges on its own.
                snapshot_policy: SnapshotPolicy::Never,
                max_in_snapshot_log_to_keep: u64::MAX,
                // A follower answers an AppendEntries once all of it is
                // durable, and the leader has one in flight per follower, so
                // entries appended meanwhile wait for the whole of it. With
                // entries of up to ~1 MiB (group-committed batches), 8 keep
                // one under ~8 MiB: against 64, 100-event appends from 256
                // writers made 648 / 643 -> 865 / 914 appends/s with p99
                // 3.06 / 2.77 -> 1.50 / 1.13 s, single-event appends were no
                // slower and a restarted node caught up as fast
                // (bench/README.md, session 14). (256 entries of 4 MiB once
                // stalled a partition behind RPCs that always timed out.)
                max_payload_entries: 8,
                install_snapshot_timeout: INSTALL_SNAPSHOT_TIMEOUT.as_millis() as u64,
                ..Default::default()
            }
            .validate()
            .map_err(|e| ClusterError::Raft(e.to_string()))?,
        );

        let stop = CancellationToken::new();
        let groups = Groups::new(
            me,
            raft_config,
            transport.clone(),
            store.clone(),
            dispatcher.clone(),
            config.tuning.clone(),
            stop.clone(),
        );
        for group in topology.groups_of(me) {
            groups.start(group, bootstrap.then_some(&*topology)).await?;
        }
        info!(
            node_id = me,
            epoch = topology.epoch,
            groups = groups.ids().len(),
            "raft groups started"
        );
        let node = Arc::new(ClusterNode {
            node_id: me,
            topology: followed,
            groups,
            dispatcher,
            transport,
            channels,
            store,
            stop,
            changing: tokio::sync::Mutex::new(()),
            adopting: std::sync::Mutex::new(()),
        });
        node.spawn_topology_recorder();
        membership::spawn_follower(node.clone());
        Ok(node)
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Members and partition table of the newest epoch this node has seen.
    pub fn topology(&self) -> Arc<Topology> {
        self.topology.borrow().clone()
    }

    /// Sees the topology change (a membership change reached this node).
    pub fn watch_topology(&self) -> watch::Receiver<Arc<Topology>> {
        self.topology.subscribe()
    }

    /// The local replica of partition `group`, if this node holds one.
    pub fn partition(&self, group: GroupId) -> Option<Partition> {
        self.groups.partition(group)
    }

    /// Sees the set of partitions this node holds a replica of change: a
    /// membership change moves replicas between nodes. A replica that goes
    /// away cancels its [`Partition::removed`].
    pub fn watch_partitions(&self) -> watch::Receiver<BTreeSet<GroupId>> {
        self.groups.watch_partitions()
    }

    /// The tonic channels to peers, for forwarding calls.
    pub fn channels(&self) -> &PeerChannels {
        &self.channels
    }

    /// The node's store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The leader of `group` as far as this node knows: from its own replica,
    /// or `None` when it holds none or no leader is known.
    pub fn leader_of(&self, group: GroupId) -> Option<(NodeId, String)> {
        let raft = self.groups.raft(group)?;
        let metrics = raft.metrics();
        let metrics = metrics.borrow();
        let leader = metrics.current_leader?;
        // The group's membership knows a node this node's topology may not
        // have caught up with yet.
        let address = match metrics.membership_config.membership().get_node(&leader) {
            Some(node) => node.addr.clone(),
            None => self.topology().address(leader)?.to_string(),
        };
        Some((leader, address))
    }

    /// Raft metrics of every group this node runs, by group.
    pub fn metrics(&self) -> Vec<(GroupId, RaftMetrics<NodeId, BasicNode>)> {
        self.dispatcher
            .groups()
            .into_iter()
            .map(|(group, raft)| (group, raft.metrics().borrow().clone()))
            .collect()
    }

    /// The snapshots (and their bytes) this node streamed to other replicas
    /// of `group` as its leader since the node started, also while it
    /// holds no replica of it any more.
    pub fn snapshots_sent(&self, group: GroupId) -> SnapshotTotals {
        self.groups.snapshots_sent(group)
    }

    /// Stops every Raft group (the store stays open for the caller to close).
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.groups.stop_all().await;
    }

    pub(crate) fn groups(&self) -> &Groups {
        &self.groups
    }

    pub(crate) fn transport(&self) -> &Arc<dyn RaftTransport> {
        &self.transport
    }

    pub(crate) fn stopping(&self) -> &CancellationToken {
        &self.stop
    }

    pub(crate) fn changing(&self) -> &tokio::sync::Mutex<()> {
        &self.changing
    }

    /// Follows `topology` if it is newer than the one followed: remembers
    /// it across restarts and answers peers' questions with it.
    pub(crate) fn adopt(&self, topology: Topology) -> Result<bool, ClusterError> {
        // One at a time: two epochs adopted at once must not end on the older.
        let _one_at_a_time = self.adopting.lock().expect("adopt lock poisoned");
        if topology.epoch <= self.topology().epoch {
            return Ok(false);
        }
        membership::persist(&self.store, &topology)?;
        let topology = Arc::new(topology);
        info!(epoch = topology.epoch, members = ?topology.nodes.keys().collect::<Vec<_>>(), "following a new topology");
        self.topology.send_replace(topology);
        Ok(true)
    }

    /// Whenever this node leads the metadata group and the group records no
    /// topology yet, record the founding one (membership and partition table).
    fn spawn_topology_recorder(&self) {
        let Some(meta) = self.groups.raft(META_GROUP) else {
            return;
        };
        let topology = self.topology();
        let reader = self.store.reader();
        let stop = self.stop.clone();
        let me = self.node_id;
        tokio::spawn(async move {
            // Leadership changes only: the full metrics watch moves on every
            // heartbeat, and each wake would read the recorded topology.
            let mut leadership = meta.server_metrics();
            let encoded = Bytes::from(serde_json::to_vec(&*topology).expect("topology serializes"));
            loop {
                let leading = leadership.borrow_and_update().current_leader == Some(me);
                let mut failed = false;
                // Read what the group records only once everything it
                // committed is applied here: a new leader's state may lag,
                // and writing the founding topology over a later one would
                // undo membership changes.
                if leading && meta.ensure_linearizable().await.is_err() {
                    failed = true;
                } else if leading {
                    let recorded = {
                        let reader = reader.clone();
                        tokio::task::spawn_blocking(move || {
                            reader.meta_get(META_GROUP, META_TOPOLOGY_KEY)
                        })
                        .await
                    };
                    match recorded {
                        Ok(Ok(Some(_))) => {}
                        Ok(Ok(None)) => {
                            let put = Command::MetaPut {
                                key: META_TOPOLOGY_KEY.into(),
                                value: encoded.clone(),
                            };
                            if let Err(e) = meta.client_write(put).await {
                                warn!("recording topology in the metadata group: {e}");
                                failed = true;
                            }
                        }
                        _ => failed = true,
                    }
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    changed = leadership.changed() => if changed.is_err() { return },
                    _ = tokio::time::sleep(TOPOLOGY_RETRY), if failed => {}
                }
            }
        });
    }
}

const NODE_ID_KEY: &str = "node_id";
const CLUSTER_KEY: &str = "cluster";

/// A data directory remembers the node id and the cluster (member ids and
/// partition count) it was created for; starting it as anything else is
/// refused. Once the cluster's membership has changed (the topology it
/// follows is past epoch 1), that topology says who the members are and
/// `--peers` only says where to find them: then only the partition count
/// must match.
fn check_identity(
    store: &Store,
    config: &ClusterConfig,
    followed: Option<&Topology>,
) -> Result<(), ClusterError> {
    let cluster = format!(
        "partitions={};members={}",
        config.partitions,
        config
            .peers
            .keys()
            .map(|id| id.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let node_id = config.node_id.to_string();
    let another_cluster = |found: &str| {
        Err(ClusterError::Identity(format!(
            "this data directory belongs to another cluster ({found}), not ({cluster}); use the --peers and --partitions it was created with, or another --data-dir"
        )))
    };
    match store.node_meta(NODE_ID_KEY)? {
        None => {
            store.put_node_meta(CLUSTER_KEY, cluster.as_bytes())?;
            store.put_node_meta(NODE_ID_KEY, node_id.as_bytes())?;
            Ok(())
        }
        Some(found) if found != node_id.as_bytes() => Err(ClusterError::Identity(format!(
            "this data directory belongs to node {}, not node {node_id}; start it with --id {} or use another --data-dir",
            String::from_utf8_lossy(&found),
            String::from_utf8_lossy(&found),
        ))),
        Some(_) => match (store.node_meta(CLUSTER_KEY)?, followed) {
            (_, Some(topology)) if topology.epoch > 1 => {
                if topology.partitions == config.partitions {
                    Ok(())
                } else {
                    another_cluster(&format!("partitions={}", topology.partitions))
                }
            }
            (Some(found), _) if found != cluster.as_bytes() => {
                another_cluster(&String::from_utf8_lossy(&found))
            }
            _ => Ok(()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_follows_the_election_timeout() {
        let t = RaftTuning::with_election_timeout(Duration::from_millis(300));
        assert_eq!(t.heartbeat, Duration::from_millis(100));
        assert_eq!(t.election_timeout_max, Duration::from_millis(600));
        let t = RaftTuning::with_election_timeout(Duration::from_millis(60));
        assert_eq!(t.heartbeat, Duration::from_millis(20));
        assert_eq!(t.election_timeout_max, Duration::from_millis(120));
        let d = RaftTuning::default();
        let same = RaftTuning::with_election_timeout(DEFAULT_ELECTION_TIMEOUT);
        let timing = |t: &RaftTuning| (t.heartbeat, t.election_timeout_min, t.election_timeout_max);
        assert_eq!(timing(&same), timing(&d));
    }
}
