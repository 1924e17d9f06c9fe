//! Raft log truncation: each replica compacts its group's log as soon as no
//! replica needs the entries, so a committed event stays on disk once (in
//! the state machine), not twice.
//!
//! Snapshots cost nothing to build (the state machine is the snapshot, see
//! `cairn_storage::SnapshotBuilder`), so the log is cut by this policy, not by
//! openraft's snapshot-every-N-entries:
//! - **the leader** keeps every entry some voter has not yet matched, so a
//!   follower that was down catches up from the log, unless it lags more than
//!   [`RaftTuning::max_lag_entries`]: then it gets a snapshot instead, and
//!   the leader's log stays bounded;
//! - **a follower** keeps what it applied in the last
//!   [`RaftTuning::follower_keep`]: if it becomes leader, the other follower
//!   (in a healthy group, a few entries in flight behind it) still catches up
//!   from the log; once writes pause, followers hold no log either.

use std::collections::VecDeque;

use cairn_storage::{GroupId, NodeId, TypeConfig};
use openraft::{BasicNode, Raft, RaftMetrics, ServerState};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::node::RaftTuning;

/// The log index up to which (inclusive) this replica may drop its log, by
/// the policy in the module docs, given what it had applied
/// `tuning.follower_keep` ago; `None` while nothing may go.
pub(crate) fn truncation_point(
    metrics: &RaftMetrics<NodeId, BasicNode>,
    tuning: &RaftTuning,
    applied_keep_ago: u64,
) -> Option<u64> {
    let applied = metrics.last_applied?.index;
    let upto = if metrics.state == ServerState::Leader {
        let replication = metrics.replication.as_ref()?;
        let voters = metrics.membership_config.membership().voter_ids();
        let slowest = voters
            .filter(|id| *id != metrics.id)
            .map(|id| {
                replication
                    .get(&id)
                    .copied()
                    .flatten()
                    .map_or(0, |matched| matched.index)
            })
            .min()
            .unwrap_or(applied);
        slowest
            .min(applied)
            .max(applied.saturating_sub(tuning.max_lag_entries))
    } else {
        applied_keep_ago.min(applied)
    };
    let purged = metrics.purged.map_or(0, |p| p.index);
    (upto > purged).then_some(upto)
}

/// Runs the policy for `raft` every `tuning.truncate_every` until `stop`.
pub(crate) fn spawn(
    group: GroupId,
    raft: Raft<TypeConfig>,
    tuning: RaftTuning,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(tuning.truncate_every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // What was applied when, over the last `follower_keep`, and the
        // newest applied index at least that old.
        let mut history: VecDeque<(Instant, u64)> = VecDeque::new();
        let mut applied_keep_ago = 0;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let metrics = raft.metrics().borrow().clone();
            let now = Instant::now();
            history.push_back((now, metrics.last_applied.map_or(0, |l| l.index)));
            while let Some(&(at, applied)) = history.front()
                && now.duration_since(at) >= tuning.follower_keep
            {
                applied_keep_ago = applied;
                history.pop_front();
            }
            let Some(upto) = truncation_point(&metrics, &tuning, applied_keep_ago) else {
                continue;
            };
            // The log can only be purged up to the latest snapshot (openraft
            // caps `purge_log` there); when that is behind, build one (a
            // single write) and purge the rest next time.
            let snapshot = metrics.snapshot.map_or(0, |s| s.index);
            let mut result = Ok(());
            if snapshot < upto {
                result = raft.trigger().snapshot().await;
            }
            if result.is_ok() && snapshot > metrics.purged.map_or(0, |p| p.index) {
                result = raft.trigger().purge_log(upto).await;
            }
            if let Err(e) = result {
                debug!(group, "log truncation stops: {e}");
                return;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Arc;
    use std::time::Duration;

    use openraft::{CommittedLeaderId, LogId, Membership, StoredMembership};

    use super::*;

    fn log_id(index: u64) -> Option<LogId<NodeId>> {
        Some(LogId::new(CommittedLeaderId::new(1, 1), index))
    }

    /// Node 1 of voters {1, 2, 3}, having applied 1000 and purged up to 100.
    fn metrics(state: ServerState) -> RaftMetrics<NodeId, BasicNode> {
        let mut m = RaftMetrics::new_initial(1);
        m.state = state;
        m.last_applied = log_id(1000);
        m.purged = log_id(100);
        let voters = Membership::new(vec![BTreeSet::from([1, 2, 3])], None);
        m.membership_config = Arc::new(StoredMembership::new(log_id(1), voters));
        m
    }

    fn tuning(max_lag_entries: u64) -> RaftTuning {
        RaftTuning {
            max_lag_entries,
            follower_keep: Duration::from_secs(1),
            truncate_every: Duration::from_millis(100),
            ..RaftTuning::default()
        }
    }

    #[test]
    fn a_leader_keeps_what_its_slowest_voter_lacks_up_to_the_lag_bound() {
        let mut m = metrics(ServerState::Leader);
        m.replication = Some(BTreeMap::from([(2, log_id(1000)), (3, log_id(700))]));
        assert_eq!(truncation_point(&m, &tuning(10_000), 0), Some(700));
        // A voter the leader has heard nothing from holds the log back too...
        m.replication = Some(BTreeMap::from([(2, log_id(1000)), (3, None)]));
        assert_eq!(truncation_point(&m, &tuning(10_000), 0), None);
        // ...but no further than the lag bound: beyond it, a snapshot.
        assert_eq!(truncation_point(&m, &tuning(500), 0), Some(500));
        // All caught up: everything goes.
        m.replication = Some(BTreeMap::from([(2, log_id(1000)), (3, log_id(1000))]));
        assert_eq!(truncation_point(&m, &tuning(10_000), 0), Some(1000));
    }

    #[test]
    fn a_follower_keeps_what_it_applied_lately() {
        let m = metrics(ServerState::Follower);
        assert_eq!(truncation_point(&m, &tuning(10_000), 900), Some(900));
        assert_eq!(truncation_point(&m, &tuning(10_000), 100), None);
        assert_eq!(truncation_point(&m, &tuning(10_000), 0), None);
    }
}
