//! The partitions this node holds a replica of change as membership
//! changes: what serves each of them (leadership watch, projections, event
//! handlers) starts when a replica arrives and ends when it leaves.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use cairn_cluster::{ClusterNode, Partition};
use cairn_storage::GroupId;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Calls `start` for every local partition: at once for those held now,
/// then for each that arrives, until `stop`. A partition that leaves and
/// comes back is started again.
pub(crate) fn follow(
    node: &Arc<ClusterNode>,
    stop: CancellationToken,
    mut start: impl FnMut(Partition) + Send + 'static,
) {
    let mut watch = node.watch_partitions();
    let mut started: HashMap<GroupId, CancellationToken> = HashMap::new();
    let mut start_new = move |node: &ClusterNode, groups: Vec<GroupId>| {
        started.retain(|_, removed| !removed.is_cancelled());
        for group in groups {
            if started.contains_key(&group) {
                continue;
            }
            if let Some(partition) = node.partition(group) {
                started.insert(group, partition.removed().clone());
                start(partition);
            }
        }
    };
    let now: Vec<GroupId> = watch.borrow_and_update().iter().copied().collect();
    start_new(node, now);
    let node = node.clone();
    tokio::spawn(
        async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    changed = watch.changed() => if changed.is_err() { return },
                }
                let groups: Vec<GroupId> = watch.borrow_and_update().iter().copied().collect();
                start_new(&node, groups);
            }
        }
        .in_current_span(),
    );
}

/// Spawns `task` for `partition`; it is dropped if the partition leaves
/// this node first.
pub(crate) fn spawn_while_local(
    partition: &Partition,
    task: impl Future<Output = ()> + Send + 'static,
) {
    let removed = partition.removed().clone();
    tokio::spawn(
        async move {
            tokio::select! {
                _ = task => {}
                _ = removed.cancelled() => {}
            }
        }
        .in_current_span(),
    );
}
