//! Placement of partition replicas on nodes by consistent hashing.

use std::collections::BTreeSet;

use cairn_storage::NodeId;
use consistent_hash::{DefaultHash, Node, StaticHashRing};

/// Chooses which nodes hold the replicas of a partition.
///
/// Implementations are immutable: a new membership epoch builds a new one.
pub trait Placement: Send + Sync {
    /// The `replicas` distinct nodes (fewer if the cluster is smaller) that
    /// hold `partition`, in preference order. Deterministic for a given set of
    /// nodes, so every node computes the same table.
    fn replicas(&self, partition: u32, replicas: usize) -> Vec<NodeId>;
}

/// Virtual nodes per member on the ring: enough for an even spread of a few
/// dozen partitions over a handful of nodes.
const VNODES_PER_NODE: usize = 64;

/// Consistent-hash placement over the ring of member nodes: adding or
/// removing one of N nodes moves about 1/N of the replicas.
pub struct HashRingPlacement {
    nodes: BTreeSet<NodeId>,
}

impl HashRingPlacement {
    /// A ring over `nodes`.
    pub fn new(nodes: impl IntoIterator<Item = NodeId>) -> HashRingPlacement {
        HashRingPlacement {
            nodes: nodes.into_iter().collect(),
        }
    }
}

impl Placement for HashRingPlacement {
    fn replicas(&self, partition: u32, replicas: usize) -> Vec<NodeId> {
        let ring = StaticHashRing::new(
            DefaultHash,
            self.nodes
                .iter()
                .map(|id| Node::new(*id).quantity(VNODES_PER_NODE)),
        );
        ring.calc_candidates(&partition)
            .map(|node| node.key)
            .take(replicas.min(self.nodes.len()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_are_distinct_and_capped_by_cluster_size() {
        let p = HashRingPlacement::new([1, 2, 3, 4, 5]);
        for partition in 0..64 {
            let r = p.replicas(partition, 3);
            assert_eq!(r.len(), 3);
            let distinct: BTreeSet<_> = r.iter().collect();
            assert_eq!(distinct.len(), 3, "partition {partition}: {r:?}");
        }
        assert_eq!(HashRingPlacement::new([7]).replicas(0, 3), vec![7]);
    }

    #[test]
    fn adding_a_node_moves_about_one_nth_of_replicas() {
        let before = HashRingPlacement::new(1..=4);
        let after = HashRingPlacement::new(1..=5);
        let (mut moved, mut total) = (0, 0);
        for partition in 0..256 {
            let b: BTreeSet<_> = before.replicas(partition, 3).into_iter().collect();
            let a: BTreeSet<_> = after.replicas(partition, 3).into_iter().collect();
            moved += b.difference(&a).count();
            total += b.len();
        }
        // Ideal is 3/5 of the new node's share: 1/5 of all replicas. Allow slack.
        let fraction = moved as f64 / total as f64;
        assert!(
            fraction > 0.05 && fraction < 0.40,
            "moved fraction {fraction}"
        );
    }

    #[test]
    fn load_is_spread() {
        let p = HashRingPlacement::new(1..=3);
        let mut leaders_first = [0usize; 4];
        for partition in 0..48 {
            leaders_first[p.replicas(partition, 3)[0] as usize] += 1;
        }
        assert!(
            leaders_first[1..].iter().all(|n| *n >= 6),
            "{leaders_first:?}"
        );
    }
}
