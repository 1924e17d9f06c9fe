//! Leader routing: the client learns which node leads each partition (from
//! any node's status) and sends a stream's calls straight there, saving the
//! hop a non-leader would forward them over. The table is a hint: a stale
//! entry only costs that hop (the node forwards), and an unreachable or
//! unavailable leader sends the call down the ordinary server list.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use crate::client::Conn;
use tokio::time::Instant;

/// How old the table may get before a call refreshes it (in the background).
const REFRESH_EVERY: Duration = Duration::from_secs(2);

/// The partition a stream belongs to, among `partitions`: `xxh3_64(stream)
/// mod P`, as the cluster computes it.
pub fn partition_of(stream: &str, partitions: u32) -> u32 {
    (xxhash_rust::xxh3::xxh3_64(stream.as_bytes()) % u64::from(partitions.max(1))) as u32
}

/// Partition leaders as last seen, and channels to them.
#[derive(Default)]
pub(crate) struct Routes {
    table: RwLock<Option<Table>>,
    /// One lazily connected channel per node address.
    channels: Mutex<HashMap<String, Conn>>,
    refreshing: AtomicBool,
}

struct Table {
    partitions: u32,
    /// The leader's channel, per partition.
    leaders: Vec<Option<Conn>>,
    learned: Instant,
}

impl Routes {
    /// The leader's channel for `stream`, if known.
    pub(crate) fn leader_of(&self, stream: &str) -> Option<Conn> {
        let table = self.table.read().expect("routes poisoned");
        let table = table.as_ref()?;
        table
            .leaders
            .get(partition_of(stream, table.partitions) as usize)
            .cloned()
            .flatten()
    }

    /// Whether the table is missing or old enough to refresh; claims the
    /// refresh when it is (only one runs at a time).
    pub(crate) fn claim_refresh(&self) -> bool {
        let stale = self
            .table
            .read()
            .expect("routes poisoned")
            .as_ref()
            .is_none_or(|t| t.learned.elapsed() >= REFRESH_EVERY);
        stale && !self.refreshing.swap(true, Ordering::AcqRel)
    }

    /// Forgets the table (a routed call failed), so the next call refreshes it.
    pub(crate) fn invalidate(&self) {
        *self.table.write().expect("routes poisoned") = None;
    }

    /// Installs what a status reply says, and releases the refresh claim.
    pub(crate) fn learn(
        &self,
        status: Option<&crate::Status>,
        connect: impl Fn(&str) -> Option<Conn>,
    ) {
        if let Some(status) = status {
            let addresses: HashMap<u64, &str> = status
                .nodes
                .iter()
                .filter(|n| n.reachable)
                .map(|n| (n.id, n.address.as_str()))
                .collect();
            let mut channels = self.channels.lock().expect("channels poisoned");
            let mut channel_to = |address: &str| -> Option<Conn> {
                if let Some(conn) = channels.get(address) {
                    return Some(conn.clone());
                }
                let conn = connect(address)?;
                channels.insert(address.to_string(), conn.clone());
                Some(conn)
            };
            let mut leaders = vec![None; status.partition_count as usize];
            for p in &status.partitions {
                let leader = p
                    .leader
                    .and_then(|id| addresses.get(&id).copied())
                    .and_then(&mut channel_to);
                if let Some(slot) = leaders.get_mut(p.id as usize) {
                    *slot = leader;
                }
            }
            *self.table.write().expect("routes poisoned") = Some(Table {
                partitions: status.partition_count,
                leaders,
                learned: Instant::now(),
            });
        }
        self.refreshing.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_spread_over_every_partition() {
        // (That it equals the cluster's function is tested in cairn-tests,
        // which depends on both.)
        let spread: std::collections::HashSet<_> = (0..200)
            .map(|i| partition_of(&format!("s-{i}"), 16))
            .collect();
        assert_eq!(spread.len(), 16);
        assert_eq!(partition_of("anything", 1), 0);
    }
}
