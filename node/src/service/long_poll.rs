//! Long polls on a partition this node leads: read, and while nothing new is
//! there, sleep until the partition's Raft applies another entry (a change of
//! `last_applied` in its metrics) rather than polling on a timer.

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
    F: Fn(&Reader, GroupId) -> Result<T, cairn_storage::Error> + Clone + Send + 'static,
{
    let group = partition.group();
    // Take the applied index before reading: the read sees at least what it
    // names, so an entry applied after it always wakes the wait below.
    let mut metrics = partition.metrics();
    let mut seen = metrics.borrow_and_update().last_applied;
    let mut result = partition.read(read.clone()).await?;
    if wait.is_zero() || found(&result) {
        return Ok(result);
    }
    let deadline = Instant::now() + wait;
    loop {
        let changed = tokio::time::timeout_at(deadline, async {
            loop {
                metrics
                    .changed()
                    .await
                    .map_err(|_| ClusterError::ShuttingDown)?;
                let m = metrics.borrow_and_update();
                if m.current_leader != Some(me) {
                    return Err(ClusterError::NotLeader {
                        group,
                        leader: None,
                    });
                }
                if m.last_applied != seen {
                    seen = m.last_applied;
                    return Ok(());
                }
            }
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
