//! Leader transfer: `cairn admin transfer-leader` and `rebalance`.
//!
//! openraft 0.9 has no transfer call, and a follower refuses to vote while
//! it heard from its leader within the leader lease (the election timeout's
//! upper bound). So the leader hands over by falling silent: it holds the
//! partition's writes and linearizable reads (they wait, then go on at the
//! new leader), lets its successor catch up with its log, stops
//! heartbeats, and asks the successor to stand for election until the
//! lease has run out and the successor wins. Writes pause for about one
//! lease (600 ms by default); nothing acknowledged is at risk, since the
//! successor can only win with a log as complete as a majority's.

use std::time::Duration;

use cairn_storage::{GroupId, NodeId, TypeConfig};
use openraft::Raft;
use tokio::time::Instant;
use tracing::info;

use crate::error::ClusterError;
use crate::membership::matched;
use crate::node::ClusterNode;
use crate::transport::RpcKind;

/// How long the successor may take to catch up with the leader's log.
const CATCH_UP_WAIT: Duration = Duration::from_secs(5);
/// The successor this close to the leader's log catches up with the rest
/// while writes are held.
const CLOSE_ENTRIES: u64 = 16;
/// How often the successor is asked to stand once the lease has run out:
/// long enough for an election round between nodes under load.
const CAMPAIGN_EVERY: Duration = Duration::from_millis(200);

impl ClusterNode {
    /// Hands the leadership of partition `group` to node `to`, a voter of the
    /// group. Runs on the partition's leader ([`ClusterError::NotLeader`]
    /// elsewhere); returns once `to` leads.
    pub async fn transfer_leader(&self, group: GroupId, to: NodeId) -> Result<(), ClusterError> {
        let me = self.node_id();
        let partition = self
            .partition(group)
            .ok_or(ClusterError::NotReplica { group })?;
        let raft = partition.raft().clone();
        let metrics = raft.metrics().borrow().clone();
        if metrics.current_leader != Some(me) {
            return Err(ClusterError::NotLeader {
                group,
                leader: self.leader_of(group),
            });
        }
        if to == me {
            return Ok(());
        }
        let membership = metrics.membership_config.membership();
        let voting = membership.voter_ids().any(|id| id == to);
        let Some(successor) = membership.get_node(&to).filter(|_| voting) else {
            let voters: Vec<NodeId> = membership.voter_ids().collect();
            return Err(ClusterError::Refused(format!(
                "node {to} holds no voting replica of partition {group}; its replicas are on nodes {voters:?}"
            )));
        };
        let address = successor.addr.clone();
        let lease = Duration::from_millis(raft.config().election_timeout_max);

        // One transfer of a partition at a time: two would release each
        // other's hold and heartbeats.
        let _one_at_a_time = partition.transferring().try_lock().map_err(|_| {
            ClusterError::Refused(format!(
                "a transfer of partition {group}'s leadership is already under way; try again once it is done"
            ))
        })?;
        // Close to the leader's log before the hold, exactly on it during:
        // writes pause only for the last few entries, not a long catch-up.
        let successor_at = |slack: u64| {
            move |m: &openraft::RaftMetrics<NodeId, openraft::BasicNode>| {
                matched(m, to).is_some_and(|i| i + slack >= m.last_log_index.unwrap_or(0))
            }
        };
        let lagging = |_| {
            ClusterError::Refused(format!(
                "node {to} did not catch up with partition {group}'s log within {CATCH_UP_WAIT:?}; try again, or pick another node"
            ))
        };
        raft.wait(Some(CATCH_UP_WAIT))
            .metrics(successor_at(CLOSE_ENTRIES), "successor close")
            .await
            .map_err(lagging)?;
        let _held = partition.hold();
        raft.wait(Some(CATCH_UP_WAIT))
            .metrics(successor_at(0), "successor caught up")
            .await
            .map_err(lagging)?;
        let _silent = Silent::new(&raft);
        let started = Instant::now();
        let deadline = started + lease * 4;
        tokio::time::sleep(lease).await;
        let outcome = loop {
            let _ = self
                .transport()
                .call(to, &address, group, RpcKind::Campaign, Vec::new())
                .await;
            // One election round: a new leader is known here once its first
            // message arrives. Without one, stand again after the round, not
            // sooner: each stand raises the term and voids the round before.
            let led_by = raft
                .wait(Some(CAMPAIGN_EVERY))
                .metrics(
                    |m| m.current_leader.is_some_and(|l| l != me),
                    "leadership moved",
                )
                .await
                .ok()
                .and_then(|m| m.current_leader);
            match led_by {
                Some(leader) if leader == to => break Ok(()),
                Some(other) => {
                    break Err(ClusterError::Refused(format!(
                        "node {other} won partition {group}'s election instead of node {to}; try again"
                    )));
                }
                None if Instant::now() >= deadline => {
                    break Err(ClusterError::Refused(format!(
                        "node {to} did not win partition {group}'s election within {:?}; try again",
                        deadline - started
                    )));
                }
                None => {}
            }
        };
        if outcome.is_ok() {
            info!(
                group,
                from = me,
                to,
                took_ms = started.elapsed().as_millis() as u64,
                "leadership transferred"
            );
        }
        outcome
    }
}

/// A leader without heartbeats until dropped: also when the transfer's
/// caller goes away mid-way (its call cancelled), heartbeats come back.
struct Silent(Raft<TypeConfig>);

impl Silent {
    fn new(raft: &Raft<TypeConfig>) -> Silent {
        raft.runtime_config().heartbeat(false);
        Silent(raft.clone())
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.0.runtime_config().heartbeat(true);
    }
}
