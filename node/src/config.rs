//! How a node is configured: what `cairn serve` parses its flags into.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Everything a node needs to start. `peers` names every member of the
/// initial cluster, this node included; nodes started with the same `peers`
/// form the cluster by themselves once a majority is up.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// This node's id (> 0), unique in the cluster and fixed for its data directory.
    pub node_id: u64,
    /// The address to bind the gRPC server to (`host:port`).
    pub listen: String,
    /// The address other nodes and clients use to reach this node; usually `listen`.
    pub advertise: String,
    /// Where the node's RocksDB lives; created if missing.
    pub data_dir: PathBuf,
    /// Initial members: node id -> address. Must contain `node_id`.
    pub peers: BTreeMap<u64, String>,
    /// Number of partitions P, fixed when the cluster is created.
    pub partitions: u32,
    /// Replicas per partition R (capped at the number of nodes).
    pub replication: usize,
    /// Actor snapshots are taken every this many events of an actor's stream.
    pub snapshot_every: u64,
    /// Idle activations are passivated after this long.
    pub passivate_after: Duration,
    /// At most this many activations are held; the least recently used go first.
    pub max_activations: usize,
    /// Raft election timeout (see `RaftTuning::with_election_timeout`).
    pub election_timeout: Duration,
}

impl ServeConfig {
    /// A single-node cluster on `listen` with data in `data_dir`, defaults elsewhere.
    pub fn single(listen: &str, data_dir: impl Into<PathBuf>) -> ServeConfig {
        ServeConfig {
            node_id: 1,
            listen: listen.to_string(),
            advertise: listen.to_string(),
            data_dir: data_dir.into(),
            peers: BTreeMap::from([(1, listen.to_string())]),
            partitions: DEFAULT_PARTITIONS,
            replication: DEFAULT_REPLICATION,
            snapshot_every: DEFAULT_SNAPSHOT_EVERY,
            passivate_after: DEFAULT_PASSIVATE_AFTER,
            max_activations: DEFAULT_MAX_ACTIVATIONS,
            election_timeout: cairn_cluster::DEFAULT_ELECTION_TIMEOUT,
        }
    }
}

/// Default number of partitions.
pub const DEFAULT_PARTITIONS: u32 = 16;
/// Default replication factor.
pub const DEFAULT_REPLICATION: usize = 3;
/// Default actor snapshot interval, in events.
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 100;
/// Default idle time before an activation is passivated.
pub const DEFAULT_PASSIVATE_AFTER: Duration = Duration::from_secs(300);
/// Default bound on activations held by one node.
pub const DEFAULT_MAX_ACTIVATIONS: usize = 100_000;
