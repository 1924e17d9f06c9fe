//! The typed cluster status, as `cairn admin status` prints it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The cluster as one node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// The node that answered.
    pub node_id: u64,
    /// Every member and whether the answering node can reach it.
    pub nodes: Vec<NodeStatus>,
    /// One entry per partition's Raft group.
    pub partitions: Vec<GroupStatus>,
    /// The metadata Raft group, when the answering node knows it.
    pub metadata: Option<GroupStatus>,
    /// The number of partitions P.
    pub partition_count: u32,
    /// The topology epoch the answering node follows: 1 until the first
    /// membership change, one more with each.
    #[serde(default)]
    pub epoch: u64,
}

/// A member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// The node id.
    pub id: u64,
    /// The address it advertises.
    pub address: String,
    /// Whether the answering node can reach it.
    pub reachable: bool,
}

/// One Raft group (a partition, or the metadata group).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupStatus {
    /// The partition number (or the metadata group's id).
    pub id: u32,
    /// The leader's node id; `None` while no leader is known.
    pub leader: Option<u64>,
    /// The node ids the topology places a replica on.
    pub replicas: Vec<u64>,
    /// The group's voters and learners as the answering node's replica
    /// knows them (empty without one). While a membership change moves
    /// replicas they differ from `replicas`; once it is done, the voters
    /// are the replicas and there are no learners.
    #[serde(default)]
    pub voters: Vec<u64>,
    #[serde(default)]
    pub learners: Vec<u64>,
    /// The current Raft term.
    pub term: u64,
    /// The index of the last entry in the answering node's log.
    pub last_log_index: u64,
    /// The highest index known to be committed.
    pub committed_index: u64,
    /// The highest index applied to the answering node's state machine.
    pub applied_index: u64,
    /// How far each replica is behind (known on the leader only).
    pub lag: Vec<ReplicaLag>,
    /// The answering node's Raft log holds no entry at or below this index
    /// (it is truncated once no replica needs the entries).
    #[serde(default)]
    pub purged_index: u64,
    /// Snapshots the answering node streamed to other replicas as the
    /// group's leader since it started, also after its replica moved away
    /// (a replica that lags beyond the leader's log gets one: the whole
    /// partition).
    #[serde(default)]
    pub snapshots_sent: u64,
    /// The bytes of those snapshots' chunks, as they travel (compressed),
    /// those of sends that did not finish included.
    #[serde(default)]
    pub snapshot_bytes_sent: u64,
}

/// How many log entries a replica is behind its leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaLag {
    /// The replica's node id.
    pub node_id: u64,
    /// Entries it still has to replicate.
    pub entries_behind: u64,
}

/// What `compact` did on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Compacted {
    /// The node compacted.
    pub node_id: u64,
    /// Bytes of its SST files before the flush and compaction.
    pub sst_bytes_before: u64,
    /// Bytes of its SST files after.
    pub sst_bytes_after: u64,
    /// Bytes of its SST files after, by RocksDB column family: `sm` (the
    /// event store), `log` (Raft logs), `proj` (read models), `snap`, `node`.
    pub sst_bytes_by_family: BTreeMap<String, u64>,
}
