//! Long polls on a partition this node leads: read, and while nothing new is
//! there, sleep until the partition applies another entry (its applied-index
//! watch moves) rather than polling on a timer.

use std::time::Duration;

use cairn_cluster::{ClusterError, Partition};
use cairn_storage::{GroupId, NodeId, Reader};
use tokio::time::Instant;

/// Runs `read` on the leader's applied state, linearizably (leadership is
/// confirmed with a quorum first). If `found` says the result holds nothing
/// new and `wait` is not zero, waits for the partition to apply a new entry
/// and runs `read` again, until it finds something or `wait` has passed; the
/// last (empty) result is returned then. Stops waiting early, with
/// `NotLeader`, when this node stops leading the partition.
pub async fn read_waiting<T, F>(
    partition: &Partition,
    me: NodeId,
    wait: Duration,
    found: impl Fn(&T) -> bool,
    read: F,
) -> Result<T, ClusterError>
where
    T: Send + 'static,
    F: Fn(&Reader, GroupId) -> Result<T, cairn_storage::Error> + Clone + Send + Sync + 'static,
{
    let group = partition.group();
    // Mark the applied index seen before reading: the read sees at least
    // that, so an entry applied after it always wakes the wait below.
    let mut applied = partition.applied();
    applied.borrow_and_update();
    let mut leadership = partition.leadership();
    let mut result = partition.read(read.clone()).await?;
    if wait.is_zero() || found(&result) {
        return Ok(result);
    }
    let deadline = Instant::now() + wait;
    loop {
        let changed = tokio::time::timeout_at(deadline, async {
            tokio::select! {
                changed = applied.changed() => changed,
                changed = leadership.changed() => changed,
            }
            .map_err(|_| ClusterError::ShuttingDown)?;
            if leadership.borrow_and_update().current_leader != Some(me) {
                return Err(ClusterError::NotLeader {
                    group,
                    leader: None,
                });
            }
            Ok(())
        })
        .await;
        match changed {
            Err(_elapsed) => return Ok(result),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(())) => {}
        }
        // Still the leader and the entry is committed: a local read is enough.
        result = partition.read_local(read.clone()).await?;
        if found(&result) {
            return Ok(result);
        }
    }
}
