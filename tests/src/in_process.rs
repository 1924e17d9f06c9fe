//! A cluster of nodes inside the test process. Client calls go over real
//! gRPC on ephemeral loopback ports; Raft traffic goes over a
//! [`LocalNetwork`], so tests can cut links.

use std::collections::BTreeMap;
use std::time::Duration;

use cairn_client::Client;
use cairn_cluster::{LocalNetwork, RaftDispatcher, RaftTuning};
use cairn_node::{NodeBuilder, RunningNode, ServeConfig};
use cairn_storage::{GroupId, NodeId};
use tempfile::TempDir;

use crate::wait::eventually;

/// N in-process nodes with their data directories.
pub struct TestCluster {
    network: LocalNetwork,
    nodes: BTreeMap<NodeId, RunningNode>,
    dirs: BTreeMap<NodeId, TempDir>,
    peers: BTreeMap<NodeId, String>,
    partitions: u32,
    tuning: RaftTuning,
    configure: fn(&mut ServeConfig),
    customize: fn(NodeBuilder) -> NodeBuilder,
}

/// Raft timing for tests: quick elections, log truncation every 100 ms
/// (followers keep 500 ms of entries), and a follower lagging more than
/// `max_lag` entries is sent a snapshot.
pub fn test_tuning(max_lag: u64) -> RaftTuning {
    RaftTuning {
        heartbeat: Duration::from_millis(100),
        election_timeout_min: Duration::from_millis(400),
        election_timeout_max: Duration::from_millis(800),
        max_lag_entries: max_lag,
        follower_keep: Duration::from_millis(500),
        truncate_every: Duration::from_millis(100),
    }
}

impl TestCluster {
    /// Starts `n` nodes with `partitions` partitions and waits until every
    /// group has a leader.
    pub async fn start(n: u64, partitions: u32, tuning: RaftTuning) -> TestCluster {
        TestCluster::start_with(n, partitions, tuning, |_| {}).await
    }

    /// Like [`TestCluster::start`], with `configure` applied to every node's configuration.
    pub async fn start_with(
        n: u64,
        partitions: u32,
        tuning: RaftTuning,
        configure: fn(&mut ServeConfig),
    ) -> TestCluster {
        TestCluster::start_custom(n, partitions, tuning, configure, |b| b).await
    }

    /// Like [`TestCluster::start_with`], with `customize` applied to every
    /// node's builder (to register actor types, projections, event handlers).
    pub async fn start_custom(
        n: u64,
        partitions: u32,
        tuning: RaftTuning,
        configure: fn(&mut ServeConfig),
        customize: fn(NodeBuilder) -> NodeBuilder,
    ) -> TestCluster {
        let mut listeners = BTreeMap::new();
        for id in 1..=n {
            let listener =
                std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
            listeners.insert(id, listener);
        }
        let peers: BTreeMap<_, _> = listeners
            .iter()
            .map(|(id, l)| (*id, l.local_addr().expect("bound").to_string()))
            .collect();
        let mut cluster = TestCluster {
            network: LocalNetwork::new(),
            nodes: BTreeMap::new(),
            dirs: (1..=n)
                .map(|id| (id, TempDir::new().expect("temp dir")))
                .collect(),
            peers,
            partitions,
            tuning,
            configure,
            customize,
        };
        let starts: Vec<_> = listeners
            .into_iter()
            .map(|(id, listener)| cluster.builder(id).listener(listener).start())
            .collect();
        for (id, node) in (1..=n).zip(futures::future::join_all(starts).await) {
            cluster.nodes.insert(id, node.expect("node starts"));
        }
        cluster.wait_for_leaders().await;
        cluster
    }

    fn builder(&self, id: NodeId) -> NodeBuilder {
        let mut config = ServeConfig::single(&self.peers[&id], self.dirs[&id].path());
        config.node_id = id;
        config.peers = self.peers.clone();
        config.partitions = self.partitions;
        config.snapshot_every = 10;
        (self.configure)(&mut config);
        let dispatcher = RaftDispatcher::default();
        self.network.attach(id, dispatcher.clone());
        let builder = NodeBuilder::new(config)
            .raft_tuning(self.tuning.clone())
            .raft_transport(self.network.transport(id), dispatcher);
        (self.customize)(builder)
    }

    /// The in-process network, to cut and heal links.
    pub fn network(&self) -> &LocalNetwork {
        &self.network
    }

    /// Cuts the leader of `group` off from the other running nodes and
    /// returns it and them. On a busy machine an election may move the lead
    /// just before the cut; the cut is then healed and made again, until the
    /// node cut off still names itself leader right after it (cut off, it
    /// hears nothing more, so that is what held at the cut).
    pub async fn isolate_leader(&self, group: GroupId) -> (NodeId, Vec<NodeId>) {
        eventually(
            &format!("the leader of partition {group} cut off while it leads"),
            Duration::from_secs(30),
            || async {
                let leader = self.leader_of(group).await;
                let others = self.running_except(leader);
                self.network.partition(&[&[leader], &others]);
                let named = self
                    .node(leader)
                    .cluster()
                    .partition(group)
                    .and_then(|p| p.leader());
                if named == Some(leader) {
                    return Ok((leader, others));
                }
                self.network.heal();
                Err(format!(
                    "node {leader} named {named:?} as leader once cut off"
                ))
            },
        )
        .await
    }

    /// Node ids currently running.
    pub fn running(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// Node ids currently running, but `id`.
    pub fn running_except(&self, id: NodeId) -> Vec<NodeId> {
        self.nodes.keys().copied().filter(|n| *n != id).collect()
    }

    /// A running node.
    pub fn node(&self, id: NodeId) -> &RunningNode {
        &self.nodes[&id]
    }

    /// A client that talks to node `id` only.
    pub async fn client(&self, id: NodeId) -> Client {
        Client::connect(&self.peers[&id])
            .await
            .expect("client connects")
            .with_timeout(Duration::from_secs(15))
    }

    /// A client that may use every node.
    pub async fn client_any(&self) -> Client {
        let all: Vec<_> = self.peers.values().cloned().collect();
        Client::connect(&all.join(","))
            .await
            .expect("client connects")
            .with_timeout(Duration::from_secs(15))
    }

    /// Stops node `id` (its data directory stays) and cuts it off the network.
    pub async fn stop(&mut self, id: NodeId) {
        self.network.detach(id);
        if let Some(node) = self.nodes.remove(&id) {
            node.shutdown().await;
        }
    }

    /// Restarts node `id` on its old address with its old data.
    pub async fn restart(&mut self, id: NodeId) {
        let node = self.builder(id).start().await.expect("node restarts");
        self.nodes.insert(id, node);
    }

    /// Stops every running node, then starts all of them again with their
    /// data (a cluster-wide restart), and waits until every partition has
    /// a leader.
    pub async fn restart_all(&mut self) {
        let ids: Vec<NodeId> = self.peers.keys().copied().collect();
        for id in self.running() {
            self.stop(id).await;
        }
        for id in ids {
            self.restart(id).await;
        }
        self.wait_for_leaders().await;
    }

    /// The partition an actor's stream lives in.
    pub fn partition_of_actor(&self, actor_type: &str, id: &str) -> GroupId {
        cairn_cluster::partition_of(&format!("{actor_type}-{id}"), self.partitions)
    }

    /// The leader of `group` once every running replica agrees on one.
    pub async fn leader_of(&self, group: GroupId) -> NodeId {
        eventually(
            &format!("a leader of partition {group}"),
            Duration::from_secs(20),
            || async {
                let mut leaders = self
                    .nodes
                    .values()
                    .filter_map(|n| n.cluster().partition(group))
                    .map(|p| p.leader());
                let first = leaders.next().flatten().ok_or("no leader known")?;
                if !self.nodes.contains_key(&first) {
                    return Err(format!("leader {first} is not running"));
                }
                if leaders.all(|l| l == Some(first)) {
                    Ok(first)
                } else {
                    Err("replicas disagree".into())
                }
            },
        )
        .await
    }

    /// Waits until every partition has a leader all running replicas agree on.
    pub async fn wait_for_leaders(&self) {
        for group in 0..self.partitions {
            self.leader_of(group).await;
        }
    }

    /// Applied index of `group` on node `id`.
    pub fn applied(&self, id: NodeId, group: GroupId) -> u64 {
        let metrics = self.nodes[&id]
            .cluster()
            .partition(group)
            .expect("replica")
            .metrics();
        let applied = metrics.borrow().last_applied.map(|l| l.index).unwrap_or(0);
        #[allow(clippy::let_and_return)] // the borrow must end before `metrics` drops
        applied
    }

    /// How many of `group`'s log appends node `id` reported to Raft before
    /// their fsync (only a leader's own appends may be).
    pub fn early_appends(&self, id: NodeId, group: GroupId) -> u64 {
        self.nodes[&id]
            .cluster()
            .store()
            .log_durability(group)
            .early_appends()
    }

    /// Shuts every node down.
    pub async fn shutdown(mut self) {
        for id in self.running() {
            self.stop(id).await;
        }
    }
}
